"""Fitting mapped tensors to a model: the fine-tuning rules (position
embeddings resampled, head replaced, input channels adapted, representation
layer and distillation token dropped), a shape check per tensor, and the
strict-load report.

Position embeddings of every ``pos_embed`` kind follow the model's patch grid:
the 1-D table ('learned') by 2D interpolation of its patch part, the X and Y
tables ('learned_2d') by 1-D interpolation each, and each layer's relative
bias table ('relative', (heads, 2gh-1, 2gw-1)) by 2D interpolation per head.
'sincos' and 'none' hold nothing to resample. The checkpoint's grid of the
last two follows from the tables' shapes."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import UserError
from ..models.layers import pair
from ..models.pos_embed import resample_grid, resample_rel_table
from .layouts import Mapped
from .read import Tensor
from .report import Changes, LoadReport

log = logging.getLogger("vitlab.weights")

# Checkpoint keys that mark a feature the model may not have (vitlab's ViT has an option for
# each; the layouts it cannot represent are refused in ``layouts``); they explain a failed load.
_UNSUPPORTED = {
    "fc_norm.": "a norm after pooling (timm fc_norm): build the model with fc_norm=True",
    ".ls1.": "layer scale (ls1, ls2): build the model with layer_scale set (e.g. 1e-5)",
    "conv_root": "a ResNet stem (a hybrid ViT: load it into vit_r50_b16)",
    "patch_embed.backbone.": "a ResNet stem (a hybrid ViT: load it into vit_r50_b16)",
    "pos_embed_x": "2-D learned position embeddings (pos_embed='learned_2d')",
    ".relative_position_bias_table": "relative position biases (pos_embed='relative')",
}
# Model keys that mark an option the checkpoint was not trained with; they explain missing tensors.
_MISSING = {
    "fc_norm.": ("a norm after pooling (fc_norm=True), the checkpoint a final norm on the tokens: "
                 "build the model with fc_norm=False (MAE's fine-tuning instead starts fc_norm afresh, "
                 "which strict=False does)"),
    ".ls1.": "layer scale (layer_scale), the checkpoint none: build the model with layer_scale=None",
    "dist_token": "a distillation token (distilled=True), the checkpoint none: build it with distilled=False",
}
_PREFIX_TOKENS = ("cls_token", "dist_token")  # in their order in the sequence
_TOKEN_NAMES = {"cls_token": "class token", "dist_token": "distillation token"}


def _shape_error(key: str, src: str, got, want) -> UserError:
    where = key if src == key else f"{key} (checkpoint {src})"
    return UserError(f"shape mismatch for {where}: checkpoint {tuple(got)} vs model {tuple(want)}")


def fit(model: nn.Module, mapped: Mapped, meta: dict, layout: str, origin: str,
        unexpected: list[str], strict: bool, interpolation: str, note: Changes) -> LoadReport:
    """Load ``mapped`` into ``model`` by the fine-tuning rules; each adaptation is a line of ``note``."""
    target = model.state_dict()
    mapped = dict(mapped)
    plan: dict[str, Tensor] = {}
    unexpected = list(unexpected)
    head = _head_prefix(model)
    hw, hb = f"{head}.weight", f"{head}.bias"
    head_rule = False  # the head is decided by the fine-tuning rule, not loaded
    is_vit = hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens")

    if is_vit:
        ckpt_tokens = [t for t in _PREFIX_TOKENS if t in mapped]
        if "cls_token" in mapped and "cls_token" not in target:
            mapped.pop("cls_token")
            note("class token dropped: the model has none (pool='avg', class_token=False)")
        if "dist_token" in mapped and "dist_token" not in target:
            mapped.pop("dist_token")
            note("distillation token dropped: the model is not distilled (distilled=False); "
                 "its class token now attends without it")
            for w in ("weight", "bias"):
                if mapped.pop(f"head_dist.{w}", None) is not None and w == "weight":
                    note("distillation head (head_dist) dropped: the model classifies the class token only")
        if "pos_embed" in mapped:
            pos, src = mapped.pop("pos_embed")
            if "pos_embed" in target:
                plan["pos_embed"] = _fit_pos(model, pos, src, ckpt_tokens, meta, interpolation, note)
            else:
                kind = getattr(model, "pos_embed_type", None)
                why = ("the model uses fixed sin-cos position embeddings" if kind == "sincos" else
                       f"the model has pos_embed={kind!r}, without a 1-D position table")
                unexpected.append(f"{src} ({why})")
        _fit_pos_2d(mapped, target, plan, ckpt_tokens, interpolation, note)
        _fit_relative(mapped, target, plan, interpolation, note)
        if "pre_logits.fc.weight" in mapped and "pre_logits.fc.weight" not in target:
            mapped.pop("pre_logits.fc.weight")
            mapped.pop("pre_logits.fc.bias", None)
            note("representation layer (pre_logits) dropped: the model has none")
            if hw in target:
                head_rule = True
                note("head replaced, zero-initialised: the checkpoint's head was trained on the dropped "
                     "representation layer")
    first = f"{getattr(model, 'first_conv', '')}.weight"
    if first in mapped and first in target:
        w, src = mapped[first]
        want = target[first].shape
        if w.ndim == 4 and w.shape[1] != want[1] and (w.shape[0], *w.shape[2:]) == (want[0], *want[2:]):
            mapped[first] = (_adapt_in_chans(w, want[1]), src)
            note("input convolution %s adapted from %d to %d input channels (%s)", model.first_conv, w.shape[1],
                 want[1], "summed over the colour channels" if want[1] == 1 else "repeated and rescaled")
    if hw in target and not head_rule:
        want = target[hw].shape
        if hw not in mapped:
            head_rule = True
            note("head zero-initialised (%d classes): the checkpoint has no classification head", want[0])
        elif mapped[hw][0].shape[0] != want[0]:
            head_rule = True
            note("head replaced: %d classes -> %d classes, zero-initialised", mapped[hw][0].shape[0], want[0])
    if head_rule or hw not in target:
        had = mapped.pop(hw, None)
        mapped.pop(hb, None)
        # a distilled model's second head follows the head
        had_dist = mapped.pop("head_dist.weight", None)
        mapped.pop("head_dist.bias", None)
        if (had is not None or had_dist is not None) and hw not in target:
            note("checkpoint head dropped: the model has no head (num_classes=0)")

    unexpected += [src for key, (_, src) in mapped.items() if key not in target]
    # a feature the model lacks (a hybrid's ResNet stem, layer scale, ...) explains what follows
    hint = next((why for k in unexpected for mark, why in _UNSUPPORTED.items() if mark in k), None)
    hint = f"; the checkpoint has {hint}" if hint else ""
    if hint and strict:
        raise UserError(f"{origin} ({layout} layout) does not fit the model {_model_name(model)}: "
                        f"{len(unexpected)} checkpoint tensors unused ({_few(unexpected)}){hint}")
    for key, (t, src) in mapped.items():
        if key not in target:
            continue
        if t.shape != target[key].shape:
            raise _shape_error(key, src, t.shape, target[key].shape)
        plan[key] = t
    heads = (hw, hb, "head_dist.weight", "head_dist.bias")
    missing = [k for k in target if k not in plan and not (head_rule and k in heads)]
    if missing and not hint:
        hint = next((why for k in missing for mark, why in _MISSING.items() if mark in k), None)
        hint = f"; the model has {hint}" if hint else ""
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model tensors missing from the checkpoint ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} checkpoint tensors unused ({_few(unexpected)})")
        msg = f"{origin} ({layout} layout) does not fit the model {_model_name(model)}: " + "; ".join(parts) + hint
        if strict:
            raise UserError(msg + "; pass strict=False to load what fits")
        note("%s", msg + ("; the missing ones keep the model's initial values" if missing else ""),
             level=logging.WARNING)

    result = model.load_state_dict(plan, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    if head_rule:
        if hasattr(model, "zero_head"):
            model.zero_head()
        else:
            with torch.no_grad():
                for k in (hw, hb):
                    model.get_parameter(k).zero_()
    log.info("loaded %d tensors from %s (%s layout)", len(plan), origin, layout)
    return LoadReport(source=origin, layout=layout, loaded=len(plan), changes=tuple(note.lines),
                      head_loaded=hw in plan, missing=tuple(missing), unused=tuple(unexpected))


def _head_prefix(model: nn.Module) -> str:
    """Name of the classification head: the module ``get_classifier()`` returns ('head' otherwise)."""
    get = getattr(model, "get_classifier", None)
    if get is not None:
        head = get()
        for name, m in model.named_modules():
            if m is head and name:
                return name
    return "head"


def _model_name(model: nn.Module) -> str:
    return repr(getattr(model, "model_name", type(model).__name__))


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


def _fit_pos(model: nn.Module, pos: Tensor, src: str, ckpt_tokens: list[str], meta: dict,
             interpolation: str, note: Changes) -> Tensor:
    """Checkpoint position table (1, [P+] N, D) -> the model's (1, P'+N', D).

    ``ckpt_tokens``: the checkpoint's prefix tokens ('cls_token', 'dist_token'),
    whose entries, when the table has them, come first in that order. The model's
    prefix entries are taken by token; a token the checkpoint has without an entry
    (big_vision, timm ``no_embed_class``) gets zeros, which is what those models
    compute; a token the checkpoint lacks keeps the model's own entry."""
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

    # Does the table hold the prefix tokens' entries? Yes when the rest forms a grid;
    # else it covers the patches only (big_vision, timm no_embed_class).
    k = len(ckpt_tokens)
    if k and grid_for(n - k):
        entries = {t: pos[:, i:i + 1] for i, t in enumerate(ckpt_tokens)}
        patches, old_grid = pos[:, k:], grid_for(n - k)
    elif grid_for(n):
        entries, patches, old_grid = {}, pos, grid_for(n)
    else:
        tokens = " and ".join(_TOKEN_NAMES[t] for t in ckpt_tokens) or "no prefix token"
        raise UserError(f"cannot infer the patch grid of {src} {tuple(pos.shape)} (with {tokens}); "
                        f"it is not square and does not match the model's grid {model_grid}")

    if old_grid != model_grid:
        patches = resample_grid(patches, old_grid, model_grid, mode=interpolation)
        note("position embeddings resampled from grid %dx%d to %dx%d (%s)", *old_grid, *model_grid, interpolation)
    model_tokens = [t for t in _PREFIX_TOKENS if getattr(model, t, None) is not None]
    dropped = [t for t in entries if t not in model_tokens]
    if dropped:
        note("position-embedding entries of the %s dropped: the model has no such token",
             " and ".join(_TOKEN_NAMES[t] for t in dropped))
    zeroed = [t for t in model_tokens if t in ckpt_tokens and t not in entries]
    if zeroed:
        note("%s given zero position embeddings: the checkpoint's table covers the patches only",
             " and ".join(_TOKEN_NAMES[t] for t in zeroed))
    prefix = []
    for i, t in enumerate(model_tokens):
        if t in entries:
            prefix.append(entries[t])
        elif t in ckpt_tokens:  # a token without an entry: no position is added to it
            prefix.append(torch.zeros_like(pos[:, :1]))
        else:
            prefix.append(model.pos_embed.detach()[:, i:i + 1].cpu())
    return torch.cat([p.to(patches.dtype) for p in prefix] + [patches], dim=1)


def _fit_pos_2d(mapped: Mapped, target: dict, plan: dict, ckpt_tokens: list[str], interpolation: str,
                note: Changes) -> None:
    """'learned_2d': the X table (1, gw, D/2) and the Y table (1, gh, D/2), each
    resampled to the model's grid by 1-D interpolation (a 1 x g grid); the prefix
    tokens' own vectors (1, P, D) are kept for the tokens the model has."""
    if "pos_embed_x" not in target:
        return
    for key in ("pos_embed_x", "pos_embed_y"):
        if key not in mapped:
            continue
        t, src = mapped.pop(key)
        want = target[key].shape
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] != 1 or t.shape[-1] != want[-1]:
            raise _shape_error(key, src, t.shape, want)
        old = t.shape[1]
        if old != want[1]:
            t = resample_grid(t, (1, old), (1, want[1]), mode=interpolation)
            note("%s resampled from %d to %d positions (%s)", key, old, want[1], interpolation)
        plan[key] = t
    if "pos_embed_cls" in mapped:
        t, src = mapped["pos_embed_cls"]
        want = [k for k in _PREFIX_TOKENS if k in target]
        keep = [i for i, k in enumerate(ckpt_tokens) if k in want]
        if len(keep) < len(want) or t.ndim != 3 or t.shape[1] != len(ckpt_tokens):
            return  # the shape check reports it
        if not keep:
            mapped.pop("pos_embed_cls")
            note("prefix tokens' position embeddings dropped: the model has no class token")
        elif len(keep) < t.shape[1]:
            mapped["pos_embed_cls"] = (t[:, keep], src)
            note("distillation token's position embedding dropped: the model is not distilled")


def _fit_relative(mapped: Mapped, target: dict, plan: dict, interpolation: str, note: Changes) -> None:
    """'relative': each layer's bias table (heads, 2gh-1, 2gw-1), resampled to the
    model's grid by 2D interpolation of every head's table; the class token's
    biases are dropped when the model has no class token."""
    resampled = None
    for key in [k for k in mapped if k.endswith(".attn.relative_position_bias_table") and k in target]:
        t, src = mapped.pop(key)
        want = target[key].shape
        if t.ndim != 3 or t.shape[0] != want[0] or t.shape[1] % 2 == 0 or t.shape[2] % 2 == 0:
            raise _shape_error(key, src, t.shape, want)
        if t.shape[1:] != want[1:]:
            resampled = (tuple(t.shape[1:]), tuple(want[1:]))
            t = resample_rel_table(t, ((want[1] + 1) // 2, (want[2] + 1) // 2), mode=interpolation)
        plan[key] = t
    if resampled:
        (h0, w0), (h1, w1) = resampled
        note("relative position bias tables resampled from grid %dx%d to %dx%d (%s)",
             (h0 + 1) // 2, (w0 + 1) // 2, (h1 + 1) // 2, (w1 + 1) // 2, interpolation)
    dropped = [k for k in mapped if k.endswith(".attn.relative_position_bias_cls") and k not in target
               and k.replace("_cls", "_table") in target]
    for k in dropped:
        mapped.pop(k)
    if dropped:
        note("class-token relative position biases dropped: the model has no class token")


def _meta_grid(meta: dict) -> tuple[int, int] | None:
    """The patch grid a vitlab checkpoint was trained at: saved as ``grid_size``
    since 0.3; computed from the ViT's arguments in older checkpoints."""
    grid = meta.get("grid_size")
    if isinstance(grid, (tuple, list)) and len(grid) == 2:
        return int(grid[0]), int(grid[1])
    cfg = meta.get("model_args", meta.get("model_config"))
    if not isinstance(cfg, Mapping) or "img_size" not in cfg or "patch_size" not in cfg:
        return None
    try:
        img, patch = pair(cfg["img_size"]), pair(cfg["patch_size"])
        return img[0] // patch[0], img[1] // patch[1]
    except (TypeError, ValueError):
        return None
