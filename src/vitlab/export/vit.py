"""What a vitlab ViT (or hybrid) is, option by option, read from the built
model, and the one position table it adds to its tokens; the timm and Hugging
Face exporters decide from these what their layouts can represent."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..models.layers import LayerScale
from .source import Source


@dataclass(frozen=True)
class ViTOptions:
    img_size: tuple[int, int]
    patch_size: tuple[int, int]  # (1, 1) for a hybrid
    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    pool: str  # 'cls' or 'avg'
    class_token: bool
    fc_norm: bool
    pos_embed: str  # 'none', 'learned', 'learned_2d', 'sincos' or 'relative'
    layer_scale: float | None
    distilled: bool
    representation: bool  # a pre-logits layer (Linear + tanh)
    hybrid: bool
    conv_stem: bool  # a plain convolutional stem (models/conv_stem.py), not a ResNet-v2


def vit_options(src: Source) -> ViTOptions | None:
    """The options of the source's ViT or hybrid; None for any other model."""
    m = src.model
    if src.family not in ("vit", "hybrid") or not hasattr(m, "blocks"):
        return None
    blk = m.blocks[0] if len(m.blocks) else None
    ls = blk.ls1 if blk is not None else None
    return ViTOptions(
        img_size=tuple(src.size),
        patch_size=tuple(getattr(m.patch_embed, "patch_size", (1, 1))),
        embed_dim=m.embed_dim,
        depth=len(m.blocks),
        num_heads=blk.attn.num_heads if blk is not None else 1,
        mlp_dim=blk.mlp.fc1.out_features if blk is not None else 0,
        pool=m.pool,
        class_token=m.cls_token is not None,
        fc_norm=isinstance(m.fc_norm, nn.LayerNorm),
        pos_embed=m.pos_embed_type,
        layer_scale=float(ls.init) if isinstance(ls, LayerScale) else None,
        distilled=bool(m.distilled),
        representation=not isinstance(m.pre_logits, nn.Identity),
        hybrid=src.family == "hybrid",
        conv_stem=hasattr(m.patch_embed, "pixel_filters"),
    )


@torch.no_grad()
def position_table(model: nn.Module) -> torch.Tensor:
    """The position embedding (1, P+N, D) the model adds to its tokens at its build
    grid, prefix tokens first: the learned table, the 2-D table put together, the
    fixed sin-cos table, or zeros for 'none'. Written as a learned 1-D table it
    gives the same tokens at this input size."""
    table = model.position_embeddings()
    if table is None:
        n = model.patch_embed.num_patches + model.num_prefix_tokens
        table = torch.zeros(1, n, model.embed_dim)
    return table.detach().float().clone()
