"""``--to timm``: a folder that ``timm.create_model("local-dir:DIR", pretrained=True)``
loads with no network: ``model.safetensors`` in timm's key layout and
``config.json`` as timm's Hub folders have it (``architecture``,
``num_classes``, ``label_names``, ``model_args`` with what differs from the
architecture's defaults, ``pretrained_cfg`` with the input size, mean and std).

vitlab's ViT, hybrid and ResNet parameter names are timm's (and torchvision's),
so the key map is the identity except for the position embedding: a
'learned_2d' or 'sincos' model (and a distilled one without position
embedding) is written with the learned 1-D table it adds at its input size,
which timm's ViT holds as ``pos_embed``.

What timm's models cannot represent is refused (``refusal``): a relative
position bias, a representation layer (timm 1.0's ViT has none), a hybrid
whose ResNet-v2 is not one of timm's (stages (3, 4, 9), (2, 2, 2, 2) or
(3, 4, 6, 3), width 64, the 'imagenet' stem), a CIFAR-stem ResNet and the
VT-ResNets.
"""

from __future__ import annotations

import json

import torch

from .source import Source
from .vit import ViTOptions, position_table, vit_options

# timm ViT architectures: (patch, embed_dim, depth, num_heads) -> name. Each is 224 px,
# 3 channels, MLP ratio 4, class-token pooling, a learned position table, no layer scale.
VIT_ARCHS = {
    (16, 192, 12, 3): "vit_tiny_patch16_224",
    (16, 384, 12, 6): "vit_small_patch16_224",
    (32, 384, 12, 6): "vit_small_patch32_224",
    (16, 768, 12, 12): "vit_base_patch16_224",
    (32, 768, 12, 12): "vit_base_patch32_224",
    (8, 768, 12, 12): "vit_base_patch8_224",
    (16, 1024, 24, 16): "vit_large_patch16_224",
    (32, 1024, 24, 16): "vit_large_patch32_224",
    (14, 1280, 32, 16): "vit_huge_patch14_224",
}
DEIT_ARCHS = {  # distilled (a distillation token and head), as timm's deit_*_distilled
    (16, 192, 12, 3): "deit_tiny_distilled_patch16_224",
    (16, 384, 12, 6): "deit_small_distilled_patch16_224",
    (16, 768, 12, 12): "deit_base_distilled_patch16_224",
}
# hybrids: the ResNet-v2 stages of the backbone (fixed by the architecture) -> name, (embed_dim, depth, heads)
HYBRID_ARCHS = {
    (3, 4, 9): ("vit_base_r50_s16_224", (768, 12, 12)),
    (2, 2, 2, 2): ("vit_small_r26_s32_224", (384, 12, 6)),
    (3, 4, 6, 3): ("vit_large_r50_s32_224", (1024, 24, 16)),
}
RESNET_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")  # the same names in timm


def refusal(src: Source) -> str | None:
    """What of the source timm cannot represent, or None."""
    o = vit_options(src)
    if o is not None:
        if o.pos_embed == "relative":
            return "a relative position bias (pos_embed='relative'; timm's ViT has none)"
        if o.representation:
            return "a representation layer (representation_size; timm's ViT has none)"
        if o.conv_stem:
            return "a plain convolutional stem (stem_channels; timm's ViTs have no such stem)"
        if o.hybrid:
            a = src.args
            layers = tuple(a.get("layers", ()))
            if a.get("stem") != "imagenet" or a.get("width") != 64 or layers not in HYBRID_ARCHS:
                return (f"this hybrid's ResNet-v2 (stem={a.get('stem')!r}, width {a.get('width')}, stages "
                        f"{list(layers)}; timm's hybrids have the 'imagenet' stem, width 64 and stages "
                        f"{', '.join(str(list(k)) for k in HYBRID_ARCHS)})")
        return None
    if src.family == "resnet" and src.name in RESNET_ARCHS:
        if src.args.get("stem") == "cifar":
            return "a CIFAR-stem ResNet (stem='cifar': 3x3 stride-1 stem, no max-pool; timm has no layout for it)"
        return None
    if src.family == "vt":
        return "a VT-ResNet (timm has no Visual Transformer)"
    return f"the model {src.name!r} ({src.family}; timm has no layout for it)"


def _mlp_ratio(dim: int, hidden: int) -> float:
    """The MLP ratio r with int(dim * r) == hidden (timm's Block computes the width so)."""
    r = hidden / dim
    return r if int(dim * r) == hidden else (hidden + 0.5) / dim


def _size(hw: tuple[int, int]) -> int | list[int]:
    return hw[0] if hw[0] == hw[1] else list(hw)


def _vit(src: Source, o: ViTOptions) -> tuple[str, dict, dict, dict]:
    """(architecture, its defaults, the wanted arguments, the state dict) of a ViT or hybrid."""
    state = {k: v for k, v in src.model.state_dict().items()}
    learned = o.pos_embed == "learned" or (o.pos_embed == "none" and not o.distilled)
    if not learned:  # timm holds one learned 1-D table (or none): write the table the model adds
        for k in ("pos_embed_x", "pos_embed_y", "pos_embed_cls"):
            state.pop(k, None)
        state["pos_embed"] = position_table(src.model)
        src.notes.append(f"pos_embed={o.pos_embed!r} written as the learned table it adds at "
                         f"{src.size[0]}x{src.size[1]} px")
    want = {
        "img_size": _size(o.img_size), "in_chans": src.in_chans, "embed_dim": o.embed_dim, "depth": o.depth,
        "num_heads": o.num_heads, "mlp_ratio": _mlp_ratio(o.embed_dim, o.mlp_dim),
        "global_pool": "token" if o.pool == "cls" else "avg", "class_token": o.class_token,
        "pos_embed": "none" if o.pos_embed == "none" and not o.distilled else "learn",
        "init_values": o.layer_scale,
    }
    defaults = {"img_size": 224, "in_chans": 3, "mlp_ratio": 4.0, "global_pool": "token", "class_token": True,
                "pos_embed": "learn", "init_values": None}
    if o.hybrid:
        arch, (dim, depth, heads) = HYBRID_ARCHS[tuple(src.args["layers"])]
        defaults |= {"embed_dim": dim, "depth": depth, "num_heads": heads}
    else:
        want["patch_size"] = _size(o.patch_size)
        key = (o.patch_size[0], o.embed_dim, o.depth, o.num_heads)
        table = DEIT_ARCHS if o.distilled else VIT_ARCHS
        arch = table.get(key) if o.patch_size[0] == o.patch_size[1] else None
        arch = arch or ("deit_base_distilled_patch16_224" if o.distilled else "vit_base_patch16_224")
        patch, dim, depth, heads = next(k for k, v in table.items() if v == arch)
        defaults |= {"patch_size": patch, "embed_dim": dim, "depth": depth, "num_heads": heads}
    # fc_norm: timm's default (None) puts the norm after pooling exactly when pooling is 'avg'
    if o.fc_norm != (want["global_pool"] == "avg"):
        want["fc_norm"] = o.fc_norm
    return arch, defaults, want, state


def build(src: Source) -> tuple[dict[str, torch.Tensor], dict]:
    """(the state dict in timm's names, config.json) of a source ``refusal`` accepts."""
    o = vit_options(src)
    if o is not None:
        arch, defaults, want, state = _vit(src, o)
        first_conv = "patch_embed.backbone.stem.conv" if o.hybrid else "patch_embed.proj"
        classifier = ["head", "head_dist"] if o.distilled else "head"
        pool, fixed, features = want["global_pool"], True, o.embed_dim
    else:  # a ResNet
        arch, defaults, want = src.name, {"in_chans": 3}, {"in_chans": src.in_chans}
        state = dict(src.model.state_dict())
        first_conv, classifier, pool, fixed, features = "conv1", "fc", "avg", False, src.model.num_features
    model_args = {k: v for k, v in want.items() if k not in defaults or v != defaults[k]}
    config = {
        "architecture": arch,
        "num_classes": len(src.classes),
        "num_features": features,
        "global_pool": pool,
        "label_names": list(src.classes),
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": "vitlab",
            "custom_load": False,
            "input_size": list(src.input_size),
            "fixed_input_size": fixed,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": list(src.mean),
            "std": list(src.std),
            "num_classes": len(src.classes),
            "pool_size": None,
            "first_conv": first_conv,
            "classifier": classifier,
            "description": f"vitlab {src.name} trained on {src.dataset}",
        },
    }
    return {k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
            for k, v in state.items()}, config


def config_text(config: dict) -> str:
    return json.dumps(config, indent=2) + "\n"
