"""Model registry: one table from name to (builder, default arguments, family).

ViT names are decoded from the paper's size table (``vit.SIZES``): ``vit_b16``
is size B with patch 16. ``vit`` is the generic ViT that takes every size
field. Every builder has an explicit signature (no ``**kwargs``): its
parameters are the model's options, which ``create_model`` checks and a
config's ``model:`` section may set; parameters typed as modules (the ViT's
``patch_embed``) are for code, not for configs.
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any, Callable

from torch import nn

from ..errors import did_you_mean
from . import conv_stem, hybrid, resnet, vt
from .vit import SIZES, VisionTransformer


class _Entry(typing.NamedTuple):
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any]
    description: str
    family: str


_TABLE: dict[str, _Entry] = {}
# family -> what it is, in the order `vitlab models` lists them
FAMILIES = {"vit": "Vision Transformers", "hybrid": "hybrids: a convolutional stem (ResNet-v2 or plain), then a ViT",
            "resnet": "ResNet baselines", "vt": "VT-ResNets: ResNet stages, then token-based VT modules"}


def _options_of(builder) -> dict[str, inspect.Parameter]:
    hints = _hints(builder)
    return {k: p for k, p in inspect.signature(builder).parameters.items() if not _is_module(hints.get(k))}


def _hints(builder) -> dict[str, Any]:
    return typing.get_type_hints(builder.__init__ if inspect.isclass(builder) else builder)


def _is_module(hint) -> bool:
    args = typing.get_args(hint) or (hint,)
    return any(inspect.isclass(a) and issubclass(a, nn.Module) for a in args)


def register(name: str, builder: Callable[..., nn.Module], description: str, family: str,
             **defaults: Any) -> None:
    if name in _TABLE:
        raise ValueError(f"model {name!r} is registered twice")
    params = inspect.signature(builder).parameters.values()
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
        raise TypeError(f"the builder of {name!r} takes *args or **kwargs; give it an explicit signature")
    _TABLE[name] = _Entry(builder, defaults, description, family)
    unknown = set(defaults) - set(_options_of(builder))
    if unknown:
        raise TypeError(f"defaults of {name!r} name no option of its builder: {sorted(unknown)}")


# The paper's models (ImageNet, 224 px, 1000 classes).
for _name in ["vit_ti16", "vit_s16", "vit_s32", "vit_b16", "vit_b32", "vit_b8",
              "vit_l16", "vit_l32", "vit_h14"]:
    _size, _patch = re.fullmatch(r"vit_([a-z]+)(\d+)", _name).groups()
    register(_name, VisionTransformer, f"ViT-{_size.capitalize()}/{_patch} (paper size)", "vit",
             img_size=224, patch_size=int(_patch), num_classes=1000, **SIZES[_size])

register("vit", VisionTransformer, "generic ViT: every size field is an argument (default B/16, 224 px)",
         "vit")

# DeiT distilled (Touvron et al., ICML 2021): the Ti, S and B ViTs with a distillation token and
# head, timm's init; the checkpoints of timm's deit_*_distilled_patch16_224 load into them.
for _size, _title in (("ti", "Ti"), ("s", "S"), ("b", "B")):
    register(f"deit_{_size}16_distilled", VisionTransformer,
             f"DeiT-{_title}/16 distilled: ViT-{_title}/16 + distillation token and head", "vit",
             img_size=224, patch_size=16, num_classes=1000, distilled=True, weight_init="timm", **SIZES[_size])

# Small ViTs people train from scratch on small datasets.
register("vit_cifar", VisionTransformer,
         "CIFAR ViT: 7 layers, width 384, MLP 384, 12 heads, patch 4, 32 px (6.3M params)", "vit",
         img_size=32, patch_size=4, num_classes=10, embed_dim=384, depth=7, num_heads=12, mlp_dim=384)
register("vit_tiny_imagenet", VisionTransformer,
         "Tiny-ImageNet ViT: 6 layers, width 384, MLP 1536, 6 heads, patch 8, 64 px", "vit",
         img_size=64, patch_size=8, num_classes=200, embed_dim=384, depth=6, num_heads=6, mlp_dim=1536)
register("vit_tiny_imagenet_b23", VisionTransformer,
         "Tiny-ImageNet ViT: 8 layers, width 512, MLP 2048, 8 heads, patch 16, 64 px", "vit",
         img_size=64, patch_size=16, num_classes=200, embed_dim=512, depth=8, num_heads=8, mlp_dim=2048)
register("vit_mnist", VisionTransformer,
         "MNIST/Fashion-MNIST ViT: 6 layers, width 64, MLP 128, 2 heads, patch 7, 28 px, 1 channel", "vit",
         img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=64, depth=6, num_heads=2,
         mlp_dim=128)

# ResNet baselines (torchvision's blocks); stem='cifar' for 32-64 px inputs.
for _depth in (18, 34, 50, 101):
    register(f"resnet{_depth}", getattr(resnet, f"resnet{_depth}"),
             f"ResNet-{_depth} (torchvision's blocks; stem 'imagenet' or 'cifar')", "resnet")

# The paper's hybrid: a ResNet-v2 (BiT) stem whose feature map is cut into 1x1 patches.
register("vit_r50_b16", hybrid.vit_hybrid,
         "R50+ViT-B/16 hybrid: ResNet-v2 stages (3, 4, 9), output stride 16, 224 px", "hybrid",
         img_size=224, layers=(3, 4, 9), stem="imagenet", width=64, **SIZES["b"])
register("vit_hybrid_cifar", hybrid.vit_hybrid,
         "CIFAR hybrid: ResNet-v2 stem + stages (2, 2), 8x8 grid at 32 px, then the CIFAR ViT's "
         "7 layers of width 384", "hybrid",
         img_size=32, num_classes=10, layers=(2, 2), stem="cifar", width=32, embed_dim=384, depth=7,
         num_heads=12, mlp_dim=384)

# A plain convolutional stem before the ViT (Xiao et al. 2021, "Early Convolutions Help Transformers See Better").
register("vit_c4gf", conv_stem.vit_conv_stem,
         "ViT_C-4GF: 3x3 stride-2 conv stem (48, 96, 192, 384) + 11 layers of ViT-S, 224 px", "hybrid",
         img_size=224)
register("vit_mnist_conv", conv_stem.vit_conv_stem,
         "MNIST/Fashion-MNIST ViT with a conv stem (16, 32, 64; 4x4 grid) + vit_mnist's 6 layers, 28 px, 1 channel",
         "hybrid", img_size=28, in_chans=1, num_classes=10, stem_channels=(16, 32, 64), embed_dim=64, depth=6,
         num_heads=2, mlp_dim=128)

# VT-ResNet (Wu et al.): ResNet stages 1-3, then VT modules in place of stage 4.
for _depth, _n in ((18, 2), (34, 3), (50, 3)):
    register(f"vt_resnet{_depth}", getattr(vt, f"vt_resnet{_depth}"),
             f"VT-ResNet-{_depth}: ResNet-{_depth} stages 1-3 + {_n} VT modules, 16 tokens of 1024 channels", "vt")


def list_models(family: str | None = None) -> list[str]:
    """Every registered model name (of one family: 'vit', 'hybrid', 'resnet', 'vt'), sorted."""
    return sorted(n for n, e in _TABLE.items() if family is None or e.family == family)


def model_description(name: str) -> str:
    return _lookup(name).description


def model_family(name: str) -> str:
    return _lookup(name).family


def model_defaults(name: str) -> dict[str, Any]:
    """The resolved default arguments of a registered model: its row's defaults
    over its builder's."""
    entry = _lookup(name)
    return {k: entry.defaults.get(k, p.default) for k, p in model_options(name).items()}


def model_options(name: str) -> dict[str, inspect.Parameter]:
    """The builder parameters of a registered model that a config may set."""
    return _options_of(_lookup(name).builder)


def option_types(name: str) -> dict[str, Any]:
    """Type annotation of each option of a registered model (``Any`` where none is given)."""
    hints = _hints(_lookup(name).builder)
    return {k: hints.get(k, Any) for k in model_options(name)}


def _lookup(name: str) -> _Entry:
    if name not in _TABLE:
        raise ValueError(f"unknown model {name!r}{did_you_mean(name, _TABLE)}; `vitlab models` lists them")
    return _TABLE[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` replace its default arguments.

    The model gets ``model_name`` and ``model_args`` (every option, resolved),
    from which checkpoints rebuild it: ``create_model(m.model_name, **m.model_args)``.

    >>> create_model("vit_s16", num_classes=10, img_size=384)
    """
    entry = _lookup(name)
    options = model_options(name)
    for key in overrides:
        if key not in options:
            hint = did_you_mean(key, options) or f"; its options: {', '.join(options)}"
            raise ValueError(f"model {name!r} takes no argument {key!r}{hint}")
    args = model_defaults(name) | overrides
    model = entry.builder(**args)
    model.model_name = name
    model.model_args = args
    return model
