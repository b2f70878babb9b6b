"""Load pretrained ViT weights from other codebases into a vitlab model.

``load_pretrained(model, source)`` reads a file (``.npz``, ``.safetensors``,
``.pth``/``.pt``/``.bin``, or a Hugging Face model folder) or takes a state
dict, detects its layout, maps every tensor to vitlab's names with one
explicit key map per layout, checks every shape, and loads it.

Layouts (detected from the key names):

- ``timm`` / ``vitlab``: vitlab's parameter names are timm's
  (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.N.attn.qkv``,
  ``norm``, ``head``, ``pre_logits.fc``), so the map is the identity. A vitlab
  training checkpoint ``{"model": state_dict, "model_config": {...}, ...}``
  and timm's ``{"state_dict": ...}`` are unwrapped; ``module.`` (DDP) and
  ``_orig_mod.`` (torch.compile) prefixes are removed.
- ``hf``: Hugging Face transformers ``ViTForImageClassification`` /
  ``ViTModel``, with or without the ``vit.`` prefix, in the names written to
  files (``encoder.layer.N.attention.attention.query``) and in the names of
  transformers >= 5 in memory (``layers.N.attention.q_proj``). Separate q, k, v
  are concatenated into ``qkv``; ``pooler.dense`` (dense + tanh on the class
  token) is the representation layer ``pre_logits.fc``; ``classifier`` is the
  head.
- ``google``: the original ``.npz`` of google-research/vision_transformer
  (``Transformer/encoderblock_N/MultiHeadDotProductAttention_1/query/kernel``,
  ``embedding/kernel``, ``cls``, ``Transformer/posembed_input/pos_embedding``,
  ``Transformer/encoder_norm``, ``pre_logits``, ``head``), optionally under
  ``opt/target/``.
- ``big_vision``: google-research/big_vision ``.npz`` (``params/`` or
  ``params/img/`` prefix; blocks ``LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0``; a top-level ``pos_embedding`` without a class-token
  entry, the class token being concatenated after the position embedding;
  layers stacked along a leading axis when trained with ``scan``). Pooling
  'gap' maps to vitlab's 'avg' (final norm, then mean) and 'tok' to 'cls';
  the attention-pooling head ('map') has no vitlab counterpart.

What happens when the checkpoint and the model differ (each case is logged
with the ``logging`` module, logger ``vitlab.weights``):

- Patch grid: the patch part of the position embedding is resampled to the
  model's grid by 2D interpolation (bicubic by default, with antialiasing, as
  timm's ``resample_abs_pos_embed``); the class-token entry is kept aside. The
  checkpoint's grid is taken from a vitlab checkpoint's ``model_config``, else
  the model's grid when the token counts agree, else assumed square.
- Class token: a checkpoint with a class token loaded into an 'avg' model (no
  class token) drops the class token and the class entry of ``pos_embed``.
  A position table without a class entry (big_vision, timm
  ``no_embed_class``) loaded into a 'cls' model gives the class token a zero
  position embedding, which is what those models compute.
- Head: a head whose class count differs from the model's is not loaded; the
  model keeps a zero-initialised head (``model.zero_head()``), the paper's
  fine-tuning rule. So does a model loaded from a checkpoint without a head.
- Input channels: patch-embedding filters for another number of input
  channels are adapted: summed over the colour channels for a one-channel
  model (grey images such as Fashion-MNIST), repeated cyclically and rescaled
  otherwise (as timm's ``adapt_input_conv``).
- Representation layer: a ``pre_logits`` layer absent from the model is
  dropped, and the head trained on top of it is zero-initialised too.
- Any other tensor whose shape differs raises ``UserError`` naming the key and
  both shapes. With ``strict=True`` (default) tensors the model lacks, or model
  tensors the checkpoint lacks, raise too; ``strict=False`` logs them and keeps
  the model's values.

Loading never executes pickled code: ``torch.load(weights_only=True)``,
``safetensors`` and ``numpy.load(allow_pickle=False)``. Note the Google and
big_vision models use the tanh approximation of GELU and HF's converted
configs LayerNorm eps 1e-12, so their logits differ from vitlab's (exact GELU,
eps 1e-6) in the last digits; timm's and vitlab's agree exactly.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .models.vit import _pair, resample_grid

log = logging.getLogger(__name__)

Tensor = torch.Tensor
# vitlab key -> (tensor, name of the checkpoint tensor(s) it came from)
Mapped = dict[str, tuple[Tensor, str]]

_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")

# Checkpoint keys that mark a feature vitlab's ViT does not have; used to
# explain a failed strict load.
_UNSUPPORTED = {
    "fc_norm.": ("a norm after average pooling (timm fc_norm); vitlab's 'avg' applies the final "
                 "norm before the mean"),
    "norm_pre.": "a norm before the blocks (CLIP-style pre_norm)",
    "reg_token": "register tokens",
    "dist_token": "a distillation token (DeiT distilled)",
    "head_dist.": "a distillation head (DeiT distilled)",
    ".ls1.": "layer scale",
    ".q_norm.": "query/key normalisation",
    "attn_pool.": "an attention-pooling head",
    "MAPHead_0": "an attention-pooling head (big_vision pool_type 'map')",
    "conv_root": "a ResNet stem (hybrid ViT)",
}


# ------------------------------------------------------------------------------------------------
# public entry point
# ------------------------------------------------------------------------------------------------
def load_pretrained(model: nn.Module, source: Any, *, strict: bool = True,
                    interpolation: str = "bicubic") -> nn.Module:
    """Load ``source`` (a path or a state dict, in timm, Hugging Face, Google
    ``.npz``, big_vision or vitlab layout) into ``model`` and return it.

    Args:
        model: a vitlab ``VisionTransformer``. Any other module loads a
            checkpoint in its own names (a vitlab checkpoint of a ResNet, say)
            with the shape checks, without the ViT rules.
        source: path to ``.npz``, ``.safetensors``, ``.pth``/``.pt``/``.bin``
            (or a Hugging Face folder holding ``model.safetensors`` or
            ``pytorch_model.bin``), or a state dict / vitlab checkpoint dict.
        strict: raise when tensors are missing or left over (besides the head
            and representation-layer rules in the module docstring).
        interpolation: 'bicubic' (default), 'bilinear' or 'nearest', for
            resampling position embeddings to the model's patch grid.

    Raises:
        UserError: missing or corrupt file, unknown layout, a shape mismatch
            (the message names the key and both shapes), or with ``strict``
            missing / unexpected tensors.
    """
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
    state, meta, origin = _read(source)
    state = _unwrap(state, meta, origin)
    layout, mapped, unused = _map(state, origin, set(model.state_dict()))
    _fit(model, mapped, meta, layout, origin, unused, strict, interpolation)
    return model


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def _read(source: Any) -> tuple[Mapping, dict, str]:
    """-> (flat or wrapped state dict, metadata dict, description of the source)."""
    if isinstance(source, Mapping):
        return source, {}, "the given state dict"
    if not isinstance(source, (str, os.PathLike)):
        raise UserError(f"weights source must be a path or a state dict, got {type(source).__name__}")
    path = Path(source).expanduser()
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise UserError(f"{path} is a folder without model.safetensors or pytorch_model.bin; "
                            "give the weights file itself")
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    origin = str(path)
    if suffix == ".npz":
        return _read_npz(path), {}, origin
    if suffix == ".safetensors":
        return _read_safetensors(path), {}, origin
    if suffix in _TORCH_SUFFIXES:
        return _read_torch(path), {}, origin
    raise UserError(f"unknown weights format {suffix or '(no suffix)'!r} of {path}: "
                    "use .npz, .safetensors, .pth, .pt or .bin")


def _read_npz(path: Path) -> dict[str, Tensor]:
    import zipfile
    if not zipfile.is_zipfile(path):
        raise UserError(f"cannot read {path} as a NumPy .npz archive (not a zip archive); "
                        "is the file complete and really an .npz?")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: _np_to_torch(f[k]) for k in f.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled arrays), OSError, ...
        raise UserError(f"cannot read {path} as a NumPy .npz archive ({_reason(e)}); "
                        "is the file complete and really an .npz?") from None


def _np_to_torch(a: np.ndarray) -> Tensor:
    if a.dtype.kind == "V" and a.dtype.itemsize == 2:  # bfloat16 saved by JAX as raw 2-byte values
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16).float()
    if a.dtype == object:
        raise ValueError("object arrays are not weights")
    return torch.from_numpy(np.ascontiguousarray(a))


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError, OSError
        raise UserError(f"cannot read {path} as a safetensors file ({_reason(e)}); "
                        "is the file complete?") from None


def _read_torch(path: Path) -> Any:
    import pickle
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found or "Unsupported global" in str(e):
            what = f" ({found.group(1)})" if found else ""
            raise UserError(
                f"{path} holds pickled Python objects besides tensors{what}, and vitlab never runs "
                "pickled code; if you trust the file, re-save only its state dict, e.g. "
                "torch.save(torch.load(path, weights_only=False)['model'], 'clean.pth')") from None
        raise UserError(f"cannot read {path} as a PyTorch checkpoint (not a valid pickle); "
                        "is the file complete?") from None
    except Exception as e:  # RuntimeError (bad zip), EOFError, OSError, ...
        raise UserError(f"cannot read {path} as a PyTorch checkpoint ({_reason(e)}); "
                        "is the file complete?") from None


def _reason(e: Exception) -> str:
    """First sentence of an exception's message, on one line."""
    text = " ".join(str(e).split())
    text = re.split(r"(?<=[a-z)])\. ", text, maxsplit=1)[0][:160].rstrip(".")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _unwrap(state: Any, meta: dict, origin: str) -> dict[str, Tensor]:
    """Take the state dict out of a training checkpoint; keep its metadata in
    ``meta``; strip DDP / torch.compile prefixes; make every value a tensor."""
    if not isinstance(state, Mapping):
        raise UserError(f"{origin} holds a {type(state).__name__}, not a state dict")
    for key in ("model", "state_dict"):
        inner = state.get(key)
        if isinstance(inner, Mapping):
            meta.update({k: v for k, v in state.items() if k != key})
            state = inner
            break
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if not isinstance(k, str):
            raise UserError(f"{origin} is not a state dict (key {k!r} is not a name)")
        for p in ("module.", "_orig_mod."):
            if k.startswith(p):
                k = k[len(p):]
        if isinstance(v, np.ndarray):
            v = _np_to_torch(v)
        if not isinstance(v, Tensor):
            raise UserError(f"{origin} is not a state dict: {k!r} holds a {type(v).__name__}, not a tensor")
        out[k] = v
    if not out:
        raise UserError(f"{origin} holds no tensors")
    return out


# ------------------------------------------------------------------------------------------------
# layouts: one explicit key map each
# ------------------------------------------------------------------------------------------------
def _map(state: dict[str, Tensor], origin: str, model_keys: set[str]) -> tuple[str, Mapped, list[str]]:
    """Detect the layout and map to vitlab names. -> (layout, mapped, unused source keys)."""
    keys = state.keys()
    if "patch_embed.proj.weight" in keys or any(k.startswith("blocks.") for k in keys):
        return "timm/vitlab", {k: (v, k) for k, v in state.items()}, []
    if model_keys and len(model_keys.intersection(keys)) >= len(model_keys) / 2:
        return "vitlab", {k: (v, k) for k, v in state.items()}, []  # the model's own names (any model)
    for p in ("vit.", ""):
        if f"{p}embeddings.patch_embeddings.projection.weight" in keys:
            return ("hf",) + _map_hf(state, p)
    for p in ("", "opt/target/", "params/", "params/img/", "img/"):
        if f"{p}embedding/kernel" in keys:
            return _map_npz(state, p)
    sample = ", ".join(list(keys)[:4])
    raise UserError(f"{origin}: unknown weights layout (first keys: {sample}); expected a timm, "
                    "Hugging Face ViT, Google/big_vision .npz or vitlab checkpoint")


class _Rules:
    """Applies ``target <- fn(sources...)`` rules and records what was used."""

    def __init__(self, state: dict[str, Tensor]):
        self.state = state
        self.used: set[str] = set()
        self.out: Mapped = {}

    def add(self, target: str, sources: str | list[str], fn: Callable[..., Tensor] = lambda t: t) -> None:
        sources = [sources] if isinstance(sources, str) else sources
        present = [s for s in sources if s in self.state]
        if not present:
            return
        name = sources[0] if len(sources) == 1 else "+".join(sources)
        if len(present) < len(sources):
            missing = [s for s in sources if s not in self.state]
            raise UserError(f"checkpoint has {present[0]!r} but not {missing[0]!r}: incomplete checkpoint")
        try:
            t = fn(*[self.state[s] for s in sources])
        except (RuntimeError, ValueError, IndexError) as e:
            shapes = ", ".join(f"{s} {tuple(self.state[s].shape)}" for s in sources)
            raise UserError(f"unexpected tensor shape in checkpoint: {shapes} ({_reason(e)})") from None
        self.used.update(sources)
        self.out[target] = (t, name)

    def leftover(self, prefix: str = "") -> list[str]:
        return [k for k in self.state if k not in self.used and k.startswith(prefix)]


def _block_indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _map_hf(state: dict[str, Tensor], p: str) -> tuple[Mapped, list[str]]:
    r = _Rules(state)
    e = f"{p}embeddings."
    r.add("cls_token", e + "cls_token")
    r.add("pos_embed", e + "position_embeddings")
    r.add("patch_embed.proj.weight", e + "patch_embeddings.projection.weight")
    r.add("patch_embed.proj.bias", e + "patch_embeddings.projection.bias")
    cat = lambda *t: torch.cat(t, 0)  # noqa: E731  q, k, v -> qkv rows
    old = _block_indices(state, re.escape(p) + r"encoder\.layer\.(\d+)\.")
    new = _block_indices(state, re.escape(p) + r"layers\.(\d+)\.")
    for i in old:  # names in the files on the Hub (and in transformers < 5)
        s, t = f"{p}encoder.layer.{i}.", f"blocks.{i}."
        for w in ("weight", "bias"):
            r.add(t + f"norm1.{w}", s + f"layernorm_before.{w}")
            qkv = [s + f"attention.attention.{n}.{w}" for n in ("query", "key", "value")]
            r.add(t + f"attn.qkv.{w}", qkv, cat)
            r.add(t + f"attn.proj.{w}", s + f"attention.output.dense.{w}")
            r.add(t + f"norm2.{w}", s + f"layernorm_after.{w}")
            r.add(t + f"mlp.fc1.{w}", s + f"intermediate.dense.{w}")
            r.add(t + f"mlp.fc2.{w}", s + f"output.dense.{w}")
    for i in new:  # names of transformers >= 5 in memory
        s, t = f"{p}layers.{i}.", f"blocks.{i}."
        for w in ("weight", "bias"):
            r.add(t + f"norm1.{w}", s + f"layernorm_before.{w}")
            r.add(t + f"attn.qkv.{w}", [s + f"attention.{n}_proj.{w}" for n in ("q", "k", "v")], cat)
            r.add(t + f"attn.proj.{w}", s + f"attention.o_proj.{w}")
            r.add(t + f"norm2.{w}", s + f"layernorm_after.{w}")
            r.add(t + f"mlp.fc1.{w}", s + f"mlp.fc1.{w}")
            r.add(t + f"mlp.fc2.{w}", s + f"mlp.fc2.{w}")
    for w in ("weight", "bias"):
        r.add(f"norm.{w}", f"{p}layernorm.{w}")
        r.add(f"pre_logits.fc.{w}", f"{p}pooler.dense.{w}")
        r.add(f"head.{w}", f"classifier.{w}")
    # The mask token is used only for masked-image pretraining.
    r.used.add(e + "mask_token")
    return r.out, r.leftover()


def _map_npz(state: dict[str, Tensor], p: str) -> tuple[str, Mapped, list[str]]:
    """Google vision_transformer and big_vision Flax layouts. Flax kernels are
    (in, out); attention kernels split the heads: q/k/v (D, H, hd), out (H, hd, D)."""
    keys = state.keys()
    outside = [k for k in keys if not k.startswith(p)]
    if outside:
        log.info("ignored %d arrays outside %r (e.g. %s)", len(outside), p, outside[0])
    tr = f"{p}Transformer/"
    stacked = f"{tr}encoderblock/LayerNorm_0/scale" in keys  # big_vision scan=True: layers on axis 0
    if stacked:
        depth = state[f"{tr}encoderblock/LayerNorm_0/scale"].shape[0]
        blocks = [(i, f"{tr}encoderblock/") for i in range(depth)]
    else:
        found = _block_indices(keys, re.escape(tr) + r"encoderblock_(\d+)/")
        blocks = [(i, f"{tr}encoderblock_{i}/") for i in found]
    first = blocks[0][1] if blocks else ""
    if f"{first}MultiHeadDotProductAttention_1/query/kernel" in keys:
        layout, (mha, ln2, mlp) = "google", (1, 2, 3)
    else:
        layout, (mha, ln2, mlp) = "big_vision", (0, 1, 0)

    def nd(t: Tensor, n: int) -> Tensor:
        if t.ndim != n:
            raise ValueError(f"expected {n} dims")
        return t

    dense = lambda t: nd(t, 2).T  # noqa: E731  (in, out) -> (out, in)
    conv = lambda t: nd(t, 4).permute(3, 2, 0, 1)  # noqa: E731  HWIO -> OIHW
    heads_in = lambda t: nd(t, 3).reshape(t.shape[0], -1).T  # noqa: E731  (D, H, hd) -> (H*hd, D)
    heads_bias = lambda t: nd(t, 2).reshape(-1)  # noqa: E731  (H, hd) -> (H*hd,)
    heads_out = lambda t: nd(t, 3).reshape(-1, t.shape[-1]).T  # noqa: E731  (H, hd, D) -> (D, H*hd)
    qkv_w = lambda *t: torch.cat([heads_in(x) for x in t], 0)  # noqa: E731
    qkv_b = lambda *t: torch.cat([heads_bias(x) for x in t], 0)  # noqa: E731

    r = _Rules(state)
    r.add("patch_embed.proj.weight", f"{p}embedding/kernel", conv)
    r.add("patch_embed.proj.bias", f"{p}embedding/bias")
    r.add("cls_token", f"{p}cls")
    for k in (f"{tr}posembed_input/pos_embedding", f"{p}pos_embedding", f"{tr}pos_embedding"):
        r.add("pos_embed", k)
    same = lambda t: t  # noqa: E731

    def layer(f: Callable[..., Tensor], i: int) -> Callable[..., Tensor]:
        """A stacked checkpoint holds every layer along axis 0: index it first."""
        return (lambda *t: f(*[x[i] for x in t])) if stacked else f

    for i, b in blocks:
        t, a = f"blocks.{i}.", f"{b}MultiHeadDotProductAttention_{mha}/"
        r.add(t + "norm1.weight", f"{b}LayerNorm_0/scale", layer(same, i))
        r.add(t + "norm1.bias", f"{b}LayerNorm_0/bias", layer(same, i))
        r.add(t + "attn.qkv.weight", [f"{a}{n}/kernel" for n in ("query", "key", "value")], layer(qkv_w, i))
        r.add(t + "attn.qkv.bias", [f"{a}{n}/bias" for n in ("query", "key", "value")], layer(qkv_b, i))
        r.add(t + "attn.proj.weight", f"{a}out/kernel", layer(heads_out, i))
        r.add(t + "attn.proj.bias", f"{a}out/bias", layer(same, i))
        r.add(t + "norm2.weight", f"{b}LayerNorm_{ln2}/scale", layer(same, i))
        r.add(t + "norm2.bias", f"{b}LayerNorm_{ln2}/bias", layer(same, i))
        for j in (0, 1):
            r.add(t + f"mlp.fc{j + 1}.weight", f"{b}MlpBlock_{mlp}/Dense_{j}/kernel", layer(dense, i))
            r.add(t + f"mlp.fc{j + 1}.bias", f"{b}MlpBlock_{mlp}/Dense_{j}/bias", layer(same, i))
        if stacked:  # name the layer in messages: "Transformer/encoderblock/...[3]"
            for k in [k for k in r.out if k.startswith(t)]:
                r.out[k] = (r.out[k][0], f"{r.out[k][1]}[{i}]")
    r.add("norm.weight", f"{tr}encoder_norm/scale")
    r.add("norm.bias", f"{tr}encoder_norm/bias")
    r.add("pre_logits.fc.weight", f"{p}pre_logits/kernel", dense)
    r.add("pre_logits.fc.bias", f"{p}pre_logits/bias")
    r.add("head.weight", f"{p}head/kernel", dense)
    r.add("head.bias", f"{p}head/bias")
    return layout, r.out, r.leftover(p)


# ------------------------------------------------------------------------------------------------
# fitting the mapped tensors to the model
# ------------------------------------------------------------------------------------------------
def _shape_error(key: str, src: str, got, want) -> UserError:
    where = key if src == key else f"{key} (checkpoint {src})"
    return UserError(f"shape mismatch for {where}: checkpoint {tuple(got)} vs model {tuple(want)}")


def _fit(model: nn.Module, mapped: Mapped, meta: dict, layout: str, origin: str,
         unexpected: list[str], strict: bool, interpolation: str) -> None:
    target = model.state_dict()
    mapped = dict(mapped)
    plan: dict[str, Tensor] = {}
    unexpected = list(unexpected)
    head_rule = False  # the head is decided by the fine-tuning rule, not loaded
    is_vit = hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens")

    if is_vit:
        ckpt_cls = "cls_token" in mapped
        if ckpt_cls and "cls_token" not in target:
            mapped.pop("cls_token")
            log.info("class token dropped: the model pools by average ('avg') and has none")
        if "pos_embed" in mapped:
            pos, src = mapped.pop("pos_embed")
            if "pos_embed" in target:
                plan["pos_embed"] = _fit_pos(model, pos, src, ckpt_cls, meta, interpolation)
            else:
                unexpected.append(f"{src} (the model uses fixed sin-cos position embeddings)")
        if "patch_embed.proj.weight" in mapped and "patch_embed.proj.weight" in target:
            w, src = mapped["patch_embed.proj.weight"]
            want = target["patch_embed.proj.weight"].shape
            if w.ndim == 4 and w.shape[1] != want[1] and (w.shape[0], *w.shape[2:]) == (want[0], *want[2:]):
                mapped["patch_embed.proj.weight"] = (_adapt_in_chans(w, want[1]), src)
                log.info("patch embedding adapted from %d to %d input channels", w.shape[1], want[1])
        if "pre_logits.fc.weight" in mapped and "pre_logits.fc.weight" not in target:
            mapped.pop("pre_logits.fc.weight")
            mapped.pop("pre_logits.fc.bias", None)
            log.info("representation layer (pre_logits) dropped: the model has none")
            if "head.weight" in target:
                head_rule = True
                log.info("head zero-initialised: the checkpoint's head was trained on the dropped "
                         "representation layer")
        if "head.weight" in target and not head_rule:
            want = target["head.weight"].shape
            if "head.weight" not in mapped:
                head_rule = True
                log.info("head zero-initialised: the checkpoint has no classification head")
            elif mapped["head.weight"][0].shape[0] != want[0]:
                head_rule = True
                log.info("head zero-initialised: checkpoint has %d classes, the model %d",
                         mapped["head.weight"][0].shape[0], want[0])
        if head_rule or "head.weight" not in target:
            had = mapped.pop("head.weight", None)
            mapped.pop("head.bias", None)
            if had is not None and "head.weight" not in target:
                log.info("checkpoint head dropped: the model has no head (num_classes=0)")

    for key, (t, src) in mapped.items():
        if key not in target:
            unexpected.append(src)
            continue
        if t.shape != target[key].shape:
            raise _shape_error(key, src, t.shape, target[key].shape)
        plan[key] = t
    missing = [k for k in target if k not in plan and not (head_rule and k.startswith("head."))]
    if missing or unexpected:
        msg = f"{origin} ({layout} layout) does not fit the model: "
        parts = []
        if missing:
            parts.append(f"{len(missing)} model tensors missing from the checkpoint ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} checkpoint tensors unused ({_few(unexpected)})")
        msg += "; ".join(parts)
        hint = next((why for k in unexpected for mark, why in _UNSUPPORTED.items() if mark in k), None)
        if hint:
            msg += f"; the checkpoint has {hint}, which vitlab's ViT does not"
        if strict:
            raise UserError(msg + "; pass strict=False to load what fits")
        log.warning(msg)

    result = model.load_state_dict(plan, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    if head_rule:
        if hasattr(model, "zero_head"):
            model.zero_head()
        else:
            with torch.no_grad():
                for k in ("head.weight", "head.bias"):
                    model.get_parameter(k).zero_()
    log.info("loaded %d tensors from %s (%s layout)", len(plan), origin, layout)


def _adapt_in_chans(w: Tensor, chans: int) -> Tensor:
    """Patch-embedding filters (D, C, p, p) for ``chans`` input channels. To
    one channel: the sum over the colour channels, so that a grey image (equal
    channels) gives the response the RGB filters gave it. Otherwise the
    channels repeat cyclically, scaled by C / chans to keep the response size."""
    c = w.shape[1]
    if chans == 1:
        return w.sum(dim=1, keepdim=True)
    return w.repeat(1, -(-chans // c), 1, 1)[:, :chans] * (c / chans)


def _few(names: list[str], n: int = 4) -> str:
    more = f", +{len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _fit_pos(model: nn.Module, pos: Tensor, src: str, ckpt_cls: bool, meta: dict,
             interpolation: str) -> Tensor:
    """Checkpoint position table (1, [1+] N, D) -> the model's (1, [1+] N', D)."""
    want = model.state_dict()["pos_embed"].shape
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[-1] != want[-1]:
        raise _shape_error("pos_embed", src, pos.shape, want)
    n = pos.shape[1]
    model_grid = tuple(model.patch_embed.grid_size)
    meta_grid = _meta_grid(meta)

    def grid_for(count: int) -> tuple[int, int] | None:
        for g in (meta_grid, model_grid):
            if g and g[0] * g[1] == count:
                return g
        s = math.isqrt(count)
        return (s, s) if count > 0 and s * s == count else None

    # Does the table hold a class-token entry? Yes when the rest forms a grid;
    # else it covers the patches only (big_vision, timm no_embed_class).
    if ckpt_cls and grid_for(n - 1):
        cls_pos, patches, old_grid = pos[:, :1], pos[:, 1:], grid_for(n - 1)
    elif grid_for(n):
        cls_pos, patches, old_grid = None, pos, grid_for(n)
    else:
        raise UserError(f"cannot infer the patch grid of {src} {tuple(pos.shape)} "
                        f"({'with' if ckpt_cls else 'without'} a class token); it is not square "
                        f"and does not match the model's grid {model_grid}")

    if old_grid != model_grid:
        patches = resample_grid(patches, old_grid, model_grid, mode=interpolation)
        log.info("position embeddings resampled from grid %dx%d to %dx%d (%s)",
                 *old_grid, *model_grid, interpolation)
    if model.num_prefix_tokens == 0:
        if cls_pos is not None:
            log.info("class-token entry of the position embeddings dropped: the model has no class token")
        return patches
    if cls_pos is None:
        # No class entry: those models add no position to the class token.
        cls_pos = torch.zeros_like(pos[:, :1]) if ckpt_cls else model.pos_embed.detach()[:, :1].cpu()
    return torch.cat([cls_pos.to(patches.dtype), patches], dim=1)


def _meta_grid(meta: dict) -> tuple[int, int] | None:
    cfg = meta.get("model_config")
    if not isinstance(cfg, Mapping) or "img_size" not in cfg or "patch_size" not in cfg:
        return None
    try:
        img, patch = _pair(cfg["img_size"]), _pair(cfg["patch_size"])
        return img[0] // patch[0], img[1] // patch[1]
    except (TypeError, ValueError):
        return None
