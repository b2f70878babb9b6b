"""Hybrid ViT (placeholder: being written)."""

from __future__ import annotations

from torch import nn


def vit_hybrid(img_size: int | tuple[int, int] = 224, in_chans: int = 3, num_classes: int = 1000,
               layers: tuple[int, ...] = (3, 4, 9), stem: str = "imagenet", width: int = 64,
               embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_dim: int = 3072,
               pool: str = "cls", pos_embed: str = "learned", dropout: float = 0.0, attn_dropout: float = 0.0,
               drop_path: float = 0.0, representation_size: int | None = None,
               weight_init: str = "jax") -> nn.Module:
    raise NotImplementedError
