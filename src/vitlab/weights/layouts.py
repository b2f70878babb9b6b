"""Checkpoint layouts: detection from the key names, and one explicit key map
per layout from the checkpoint's names to vitlab's."""

from __future__ import annotations

import re
from typing import Callable

import torch

from ..errors import UserError
from .read import Tensor, reason
from .report import Changes

# vitlab key -> (tensor, name of the checkpoint tensor(s) it came from)
Mapped = dict[str, tuple[Tensor, str]]


# Architectures whose state dicts are recognised in order to refuse them by name, when the
# checkpoint is not in the model's own names: (what, a pattern of their key names).
_FOREIGN = [
    ("a Swin Transformer", r"(^|\.)layers\.\d+\.blocks\.\d+\."),
    ("a ConvNeXt", r"(^|\.)(stages\.\d+\.blocks\.\d+\.conv_dw\.|downsample_layers\.|stages\.\d+\.\d+\.dwconv\.)"),
    ("a BEiT (separate q_bias / v_bias and a relative position table per (offset, head))",
     r"(^|\.)blocks\.\d+\.attn\.q_bias$|^rel_pos_bias\."),
    ("an EVA (rotary position embeddings)", r"(^|\.)rope\.|\.attn\.q_proj\.weight$"),
    ("a CLIP image tower", r"(^|\.)transformer\.resblocks\.\d+\."),
    ("a torchvision ViT", r"^encoder\.layers\.encoder_layer_\d+\."),
    ("a ResNet (torchvision / timm names)", r"^layer[1-4]\.\d+\.conv1\.weight$"),  # see _ADVICE
    ("an EfficientNet / MobileNet", r"^conv_stem\.weight$|^features\.\d+\.block\."),
    ("a Hugging Face model other than ViT and DeiT", r"^(swin|convnext|beit|dinov2|vit_mae|clip|resnet|"
                                                       r"regnet|efficientnet|mobilevit|levit|data2vec_vision)\."),
]
# Features of other ViTs that vitlab's ViT cannot represent: (what, a pattern of their key names).
_NOT_REPRESENTABLE = [
    ("register tokens", r"(^|\.)(reg_token|register_tokens)$"),
    ("query/key normalisation (q_norm, k_norm)", r"\.(q_norm|k_norm)\."),
    ("a norm before the blocks (norm_pre, CLIP-style)", r"^norm_pre\."),
    ("an attention-pooling head (global_pool='map')", r"^attn_pool\.|(^|/)MAPHead_0/"),
    ("a SwiGLU MLP", r"\.mlp\.(w12|w1|w2|w3)\."),
    ("a norm inside the attention or MLP branch (scale_attn_norm / scale_mlp_norm)",
     r"\.attn\.norm\.|\.mlp\.norm\."),
    ("a norm after the patch embedding", r"^patch_embed\.norm\."),
]
_ADVICE = {"a ResNet (torchvision / timm names)": "load it into a vitlab ResNet (resnet18, resnet34, resnet50, "
                                                     "resnet101) of the same depth"}
_LOADS = ("vitlab loads ViT weights (timm, Hugging Face ViT / DeiT, Google and big_vision .npz, "
          "vitlab) into its ViTs and torchvision ResNet weights into its ResNets")


def refuse_unsupported(keys, origin: str, model_keys: set[str]) -> None:
    """One clear line for a checkpoint vitlab cannot represent: another architecture
    (Swin, ConvNeXt, a ResNet into a ViT, ...) unless it is in the model's own names,
    or a ViT with a feature vitlab's ViT lacks (register tokens, q/k norm, ...)."""
    keys = list(keys)
    own = model_keys and len(model_keys.intersection(keys)) >= len(model_keys) / 2
    for what, pattern in [] if own else _FOREIGN:  # own names: a torchvision ResNet into a vitlab ResNet
        rx = re.compile(pattern)
        found = next((k for k in keys if rx.search(k)), None)
        if found:
            raise UserError(f"{origin}: this is {what} state dict (key {found!r}), not one vitlab can "
                            f"load into this model; {_ADVICE.get(what, _LOADS)}")
    for what, pattern in _NOT_REPRESENTABLE:
        rx = re.compile(pattern)
        found = next((k for k in keys if rx.search(k) and k not in model_keys), None)
        if found:
            raise UserError(f"{origin}: the checkpoint's ViT has {what} (key {found!r}), which vitlab's "
                            "ViT cannot represent")


def map_layout(state: dict[str, Tensor], origin: str, model_keys: set[str],
               note: Changes) -> tuple[str, Mapped, list[str]]:
    """Detect the layout and map to vitlab names. -> (layout, mapped, unused source keys).
    What the map leaves out on purpose (a mask token, arrays outside the model) goes to ``note``."""
    keys = state.keys()
    refuse_unsupported(keys, origin, model_keys)
    if "patch_embed.proj.weight" in keys or any(k.startswith("blocks.") for k in keys):
        return "timm/vitlab", _map_timm(state, note), []
    if model_keys and len(model_keys.intersection(keys)) >= len(model_keys) / 2:
        return "vitlab", {k: (v, k) for k, v in state.items()}, []  # the model's own names (any model)
    for p in ("vit.", "deit.", ""):
        if f"{p}embeddings.patch_embeddings.projection.weight" in keys:
            return ("hf",) + _map_hf(state, p, note)
    for p in ("", "opt/target/", "params/", "params/img/", "img/"):
        if f"{p}embedding/kernel" in keys:
            return _map_npz(state, p, note)
    sample = ", ".join(list(keys)[:4])
    raise UserError(f"{origin}: unknown weights layout (first keys: {sample}); expected a timm, "
                    "Hugging Face ViT, Google/big_vision .npz or vitlab checkpoint")


def _map_timm(state: dict[str, Tensor], note: Changes) -> Mapped:
    """timm's names are vitlab's. Besides: Facebook's DeiT-III / CaiT checkpoints name the
    layer scales ``blocks.N.gamma_1`` / ``gamma_2`` (timm: ``ls1.gamma`` / ``ls2.gamma``), and
    masked-image-modelling checkpoints (DINOv2, MAE) hold a ``mask_token`` used in
    pretraining only, which is dropped."""
    out: Mapped = {}
    for k, v in state.items():
        if k == "mask_token":
            note("mask token dropped: it is used in masked-image pretraining only")
            continue
        m = re.fullmatch(r"(blocks\.\d+\.)gamma_([12])", k)
        out[f"{m.group(1)}ls{m.group(2)}.gamma" if m else k] = (v, k)
    return out


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
            raise UserError(f"unexpected tensor shape in checkpoint: {shapes} ({reason(e)})") from None
        self.used.update(sources)
        self.out[target] = (t, name)

    def leftover(self, prefix: str = "") -> list[str]:
        return [k for k in self.state if k not in self.used and k.startswith(prefix)]


def _block_indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _map_hf(state: dict[str, Tensor], p: str, note: Changes) -> tuple[Mapped, list[str]]:
    """``ViTModel`` / ``ViTForImageClassification`` (prefix ``vit.``) and ``DeiTModel`` /
    ``DeiTForImageClassificationWithTeacher`` (prefix ``deit.``; ``distillation_token``,
    ``cls_classifier``, ``distillation_classifier``: a distilled vitlab ViT)."""
    r = _Rules(state)
    e = f"{p}embeddings."
    r.add("cls_token", e + "cls_token")
    r.add("dist_token", e + "distillation_token")
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
        r.add(f"head.{w}", f"cls_classifier.{w}")  # DeiT with its distillation head
        r.add(f"head_dist.{w}", f"distillation_classifier.{w}")
    # The mask token is used only for masked-image pretraining.
    if e + "mask_token" in state:
        r.used.add(e + "mask_token")
        note("mask token dropped: it is used in masked-image pretraining only")
    return r.out, r.leftover()


def _map_npz(state: dict[str, Tensor], p: str, note: Changes) -> tuple[str, Mapped, list[str]]:
    """Google vision_transformer and big_vision Flax layouts. Flax kernels are
    (in, out); attention kernels split the heads: q/k/v (D, H, hd), out (H, hd, D)."""
    keys = state.keys()
    outside = [k for k in keys if not k.startswith(p)]
    if outside:
        note("ignored %d arrays outside %r (e.g. %s)", len(outside), p, outside[0])
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
    # In a hybrid (R50+ViT-B/16) embedding/kernel is the 1x1 projection (1, 1, 1024, D) of the
    # ResNet's feature map; the same rule maps it.
    r.add("patch_embed.proj.weight", f"{p}embedding/kernel", conv)
    r.add("patch_embed.proj.bias", f"{p}embedding/bias")
    if f"{p}conv_root/kernel" in keys:
        _map_npz_resnet(r, p, conv)
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


def _map_npz_resnet(r: _Rules, p: str, conv: Callable[[Tensor], Tensor]) -> None:
    """The ResNet of a Google hybrid .npz (R50+ViT-B_16.npz; key names as timm's
    ``vision_transformer._load_weights`` reads them) -> vitlab's (timm's) names:

        conv_root/kernel                      -> patch_embed.backbone.stem.conv.weight
        gn_root/{scale,bias}                  -> patch_embed.backbone.stem.norm.{weight,bias}
        block{i+1}/unit{j+1}/conv{r}/kernel   -> ...stages.{i}.blocks.{j}.conv{r}.weight
        block{i+1}/unit{j+1}/gn{r}/{scale,bias} -> ...stages.{i}.blocks.{j}.norm{r}.{weight,bias}
        block{i+1}/unit{j+1}/conv_proj/kernel -> ...stages.{i}.blocks.{j}.downsample.conv.weight
        block{i+1}/unit{j+1}/gn_proj/{scale,bias} -> ...stages.{i}.blocks.{j}.downsample.norm.{weight,bias}

    Kernels are HWIO (-> OIHW); GroupNorm parameters are (C,) (or (1, 1, 1, C))."""

    def vec(t: Tensor) -> Tensor:
        if t.ndim > 1 and any(d != 1 for d in t.shape[:-1]):
            raise ValueError("expected a vector")
        return t.reshape(-1)

    keys = r.state.keys()
    bb = "patch_embed.backbone."
    r.add(bb + "stem.conv.weight", f"{p}conv_root/kernel", conv)
    r.add(bb + "stem.norm.weight", f"{p}gn_root/scale", vec)
    r.add(bb + "stem.norm.bias", f"{p}gn_root/bias", vec)
    for i in _block_indices(keys, re.escape(p) + r"block(\d+)/"):
        for j in _block_indices(keys, re.escape(f"{p}block{i}/") + r"unit(\d+)/"):
            s, t = f"{p}block{i}/unit{j}/", f"{bb}stages.{i - 1}.blocks.{j - 1}."
            for n in (1, 2, 3):
                r.add(t + f"conv{n}.weight", f"{s}conv{n}/kernel", conv)
                r.add(t + f"norm{n}.weight", f"{s}gn{n}/scale", vec)
                r.add(t + f"norm{n}.bias", f"{s}gn{n}/bias", vec)
            r.add(t + "downsample.conv.weight", f"{s}conv_proj/kernel", conv)
            r.add(t + "downsample.norm.weight", f"{s}gn_proj/scale", vec)
            r.add(t + "downsample.norm.bias", f"{s}gn_proj/bias", vec)
