"""Model registry: one table from name to (builder, default arguments).

ViT names are decoded from the paper's size table (``vit.SIZES``): ``vit_b16``
is size B with patch 16. ``vit`` is the generic ViT that takes every size
field. Other architectures add their rows to ``_TABLE``.
"""

from __future__ import annotations

import difflib
import inspect
import re
from typing import Any, Callable

from torch import nn

from .vit import SIZES, VisionTransformer

# name -> (builder, defaults, one-line description)
_TABLE: dict[str, tuple[Callable[..., nn.Module], dict[str, Any], str]] = {}


def register(name: str, builder: Callable[..., nn.Module], description: str, **defaults: Any) -> None:
    if name in _TABLE:
        raise ValueError(f"model {name!r} is registered twice")
    _TABLE[name] = (builder, defaults, description)


# The paper's models (ImageNet, 224 px, 1000 classes).
for _name in ["vit_ti16", "vit_s16", "vit_s32", "vit_b16", "vit_b32", "vit_b8",
              "vit_l16", "vit_l32", "vit_h14"]:
    _size, _patch = re.fullmatch(r"vit_([a-z]+)(\d+)", _name).groups()
    register(_name, VisionTransformer, f"ViT-{_size.capitalize()}/{_patch} (paper size)",
             img_size=224, patch_size=int(_patch), num_classes=1000, **SIZES[_size])

register("vit", VisionTransformer, "generic ViT: every size field is an argument (default B/16, 224 px)")

# Small ViTs people train from scratch on small datasets.
register("vit_cifar", VisionTransformer,
         "CIFAR ViT: 7 layers, width 384, MLP 384, 12 heads, patch 4, 32 px (6.3M params)",
         img_size=32, patch_size=4, num_classes=10, embed_dim=384, depth=7, num_heads=12, mlp_dim=384)
register("vit_tiny_imagenet", VisionTransformer,
         "Tiny-ImageNet ViT: 6 layers, width 384, MLP 1536, 6 heads, patch 8, 64 px",
         img_size=64, patch_size=8, num_classes=200, embed_dim=384, depth=6, num_heads=6, mlp_dim=1536)
register("vit_tiny_imagenet_b23", VisionTransformer,
         "Tiny-ImageNet ViT: 8 layers, width 512, MLP 2048, 8 heads, patch 16, 64 px",
         img_size=64, patch_size=16, num_classes=200, embed_dim=512, depth=8, num_heads=8, mlp_dim=2048)
register("vit_mnist", VisionTransformer,
         "MNIST/Fashion-MNIST ViT: 6 layers, width 64, MLP 128, 2 heads, patch 7, 28 px, 1 channel",
         img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=64, depth=6, num_heads=2,
         mlp_dim=128)


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_TABLE)


def model_description(name: str) -> str:
    return _lookup(name)[2]


def model_defaults(name: str) -> dict[str, Any]:
    return dict(_lookup(name)[1])


def _lookup(name: str):
    if name not in _TABLE:
        close = difflib.get_close_matches(name, _TABLE, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; `vitlab models` lists them")
    return _TABLE[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` replace its default arguments.

    >>> create_model("vit_s16", num_classes=10, img_size=384)
    """
    builder, defaults, _ = _lookup(name)
    accepted = inspect.signature(builder).parameters
    for key in overrides:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"model {name!r} takes no argument {key!r}{hint}")
    model = builder(**{**defaults, **overrides})
    model.model_name = name
    return model
