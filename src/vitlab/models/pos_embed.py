"""Position embeddings of the Vision Transformer: the tables of every
``pos_embed`` kind for a patch grid, and their resampling to another grid.

Paper: Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale", ICLR 2021 (arXiv:2010.11929): section 3.1 (the
learned 1-D table), section 3.2 (2D interpolation of the table for
fine-tuning at a higher resolution), section 4.5 and appendix D.4 (the
ablation of 1-D, 2-D and relative embeddings).

Checked against big_vision's ``posemb_sincos_2d`` (the fixed sin-cos table),
timm's ``resample_abs_pos_embed`` (resampling a learned table) and Swin / BEiT
(Liu et al. 2021, arXiv:2103.14030; Bao et al. 2021, arXiv:2106.08254) for the
relative position bias on the attention logits.

Only functions of tensors live here: the learned tables are parameters of the
model (``VisionTransformer``: ``pos_embed``, ``pos_embed_x``, ``pos_embed_y``,
``pos_embed_cls``) and the relative bias tables parameters of each block's
attention (``layers.Attention``), under the names checkpoints use.

    kind          tokens get                                   resampled by
    'none'        nothing
    'learned'     learned_table: a 1-D table (1, P+N, D)       resample_grid (2D, patch part)
    'learned_2d'  learned_2d_table: concat(X[col], Y[row])     resample_grid (1-D, each axis)
    'sincos'      sincos_table: fixed (1, P+N, D)              computed for any grid
    'relative'    nothing; relative_bias on the logits         resample_rel_table (2D, per head)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The position-embedding options (the paper's ablation, section 4.5 and appendix D.4).
POS_EMBEDS = ("none", "learned", "learned_2d", "sincos", "relative")
# the parameters of a relative position bias, in each block's attention
REL_PARAMS = ("relative_position_bias_table", "relative_position_bias_cls")


# ------------------------------------------------------------------------------------------------
# resampling
# ------------------------------------------------------------------------------------------------
def resample_grid(posemb: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                  mode: str = "bicubic") -> torch.Tensor:
    """Resample patch position embeddings (1, gh*gw, D) to a new grid by 2D
    interpolation, as the paper does for fine-tuning at a higher resolution.
    Prefix (class token) entries must be removed by the caller."""
    if tuple(old_grid) == tuple(new_grid):
        return posemb
    d = posemb.shape[-1]
    dtype = posemb.dtype
    grid = posemb.reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_grid, mode=mode, antialias=mode in ("bilinear", "bicubic"),
                         align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d).to(dtype)


def resample_rel_table(table: torch.Tensor, new_grid: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resample a relative-position bias table (heads, 2gh-1, 2gw-1) to the table of
    another patch grid, (heads, 2gh'-1, 2gw'-1), by 2D interpolation of each head's
    table (``resample_grid``, heads as channels). Offset (0, 0) stays at the centre;
    the other offsets scale with the grid."""
    heads, th, tw = table.shape
    size = (2 * new_grid[0] - 1, 2 * new_grid[1] - 1)
    if (th, tw) == size:
        return table
    flat = table.reshape(heads, th * tw).T[None]  # (1, th*tw, heads)
    return resample_grid(flat, (th, tw), size, mode)[0].T.reshape(heads, *size)


# ------------------------------------------------------------------------------------------------
# tables added to the tokens
# ------------------------------------------------------------------------------------------------
def learned_table(pos_embed: torch.Tensor, num_prefix_tokens: int, build_grid: tuple[int, int],
                  grid: tuple[int, int]) -> torch.Tensor:
    """'learned': the 1-D table (1, P+N, D) of the build grid, for ``grid``: the
    prefix tokens' entries as they are, the patch part resampled (bicubic) when
    the grids differ."""
    if tuple(grid) == tuple(build_grid):
        return pos_embed
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    return torch.cat([prefix, resample_grid(patches, build_grid, grid)], dim=1)


def learned_2d_table(pos_x: torch.Tensor, pos_y: torch.Tensor, pos_cls: torch.Tensor | None,
                     build_grid: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """'learned_2d': the X table (1, gw, D/2) over the columns and the Y table
    (1, gh, D/2) over the rows, each resampled by 1-D interpolation (a 1 x g
    grid) to ``grid``; patch (row i, col j) gets concat(X[j], Y[i]). The prefix
    tokens' own vectors ``pos_cls`` (1, P, D), if any, come first: (1, P+N, D)."""
    gh, gw = grid
    px = resample_grid(pos_x, (1, build_grid[1]), (1, gw))[0]  # (gw, D/2)
    py = resample_grid(pos_y, (1, build_grid[0]), (1, gh))[0]  # (gh, D/2)
    table = torch.cat([px[None].expand(gh, gw, -1), py[:, None].expand(gh, gw, -1)], dim=-1)
    table = table.reshape(1, gh * gw, 2 * px.shape[-1])
    if pos_cls is not None:
        table = torch.cat([pos_cls, table], dim=1)
    return table


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sin-cos position table, (gh*gw, dim), rows in raster order.

    As big_vision's ``posemb_sincos_2d``: a quarter of the channels each for
    sin(x), cos(x), sin(y), cos(y), with geometric frequencies.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need embed_dim divisible by 4, got {dim}")
    gh, gw = grid
    y, x = torch.meshgrid(torch.arange(gh, dtype=torch.float32),
                          torch.arange(gw, dtype=torch.float32), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    x = x.flatten()[:, None] * omega[None, :]  # (N, D/4)
    y = y.flatten()[:, None] * omega[None, :]
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)


def sincos_table(grid: tuple[int, int], dim: int, num_prefix_tokens: int) -> torch.Tensor:
    """'sincos': the table added to the tokens, (1, P+N, D): zeros for the
    prefix tokens, then ``sincos_2d`` of the patch grid."""
    table = sincos_2d(grid, dim)
    if num_prefix_tokens:
        table = torch.cat([torch.zeros(num_prefix_tokens, dim), table])
    return table[None]


# ------------------------------------------------------------------------------------------------
# relative position bias (on the attention logits)
# ------------------------------------------------------------------------------------------------
def relative_position_index(grid: tuple[int, int], device=None) -> torch.Tensor:
    """(N, N) index into a flattened (2gh-1, 2gw-1) table: entry (p, q) is the
    offset of query patch p from key patch q, (row_p - row_q, col_p - col_q),
    shifted to start at 0 (as Swin's ``relative_position_index``)."""
    gh, gw = grid
    y, x = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    y, x = y.flatten(), x.flatten()
    dy = y[:, None] - y[None, :] + gh - 1  # (N, N), in [0, 2gh-2]
    dx = x[:, None] - x[None, :] + gw - 1
    return dy * (2 * gw - 1) + dx


def relative_bias(table: torch.Tensor, cls: torch.Tensor | None, num_prefix_tokens: int,
                  index: torch.Tensor) -> torch.Tensor:
    """The bias (heads, P+N, P+N) on the attention logits: ``table`` (heads,
    2gh-1, 2gw-1) looked up at ``index`` (``relative_position_index`` of the
    same grid) for the patches and, with ``cls`` (heads, 3), BEiT's three
    prefix-token entries: a prefix token attending to a patch (column 0), a
    patch attending to a prefix token (1), a prefix token attending to a
    prefix token (2). Without ``cls``: (heads, N, N), the patches only."""
    bias = table.flatten(1)[:, index]  # (heads, n, n) over the patches
    if cls is not None:  # prefix tokens first: their rows, their columns, their own entries
        h, n, p = bias.shape[0], bias.shape[-1], num_prefix_tokens
        top = torch.cat([cls[:, 2, None, None].expand(h, p, p), cls[:, 0, None, None].expand(h, p, n)],
                        dim=2)  # (h, p, p+n)
        rest = torch.cat([cls[:, 1, None, None].expand(h, n, p), bias], dim=2)  # (h, n, p+n)
        bias = torch.cat([top, rest], dim=1)
    return bias
