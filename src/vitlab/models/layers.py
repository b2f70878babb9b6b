"""The building blocks of vitlab's Transformers: patch embedding, attention,
MLP, drop path, layer scale, the pre-norm encoder block, and the
initialisation helpers.

Paper: Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale", ICLR 2021 (arXiv:2010.11929), section 3.1 and
equations (1)-(3): patch embedding, multi-head self-attention (Vaswani et al.
2017), an MLP with GELU, pre-norm residual blocks. Stochastic depth: Huang et
al., ECCV 2016; layer scale: Touvron et al., "Going deeper with Image
Transformers" (CaiT), ICCV 2021.

Checked against google-research/vision_transformer and timm's ``layers``
(``PatchEmbed``, ``Attention``, ``Mlp``, ``DropPath``, ``LayerScale``) and
``vision_transformer.Block``; parameter names are timm's, so timm state dicts
map one to one. The relative position bias of ``Attention`` is computed by
``pos_embed``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .pos_embed import relative_bias, relative_position_index, resample_rel_table


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def pair(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """An int or an (H, W) pair -> (H, W) as ints (an int is used for both)."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"expected an int or a pair (H, W), got {x!r}")
        return int(x[0]), int(x[1])
    return int(x), int(x)


@torch.no_grad()
def trunc_normal_(w: torch.Tensor, std: float = 0.02, bound: float | None = None) -> torch.Tensor:
    """Normal(0, std) cut at +-``bound`` (default 2 std), drawn by the inverse
    CDF in one pass. ``bound`` is absolute: timm's ``trunc_normal_(std=.02)``
    cuts at +-2, i.e. 100 std, which leaves the normal distribution as it is."""
    bound = 2 * std if bound is None else bound
    lo = math.erf(-bound / std / math.sqrt(2))  # CDF bounds mapped to [-1, 1]
    w.uniform_(lo, -lo).erfinv_().mul_(std * math.sqrt(2))
    return w.clamp_(-bound, bound)  # erfinv(+-1) is infinite; uniform_ may return the lower end


def lecun_normal_(w: torch.Tensor) -> torch.Tensor:
    """LeCun normal, truncated at 2 std, as JAX's ``lecun_normal``: variance 1 / fan_in
    (fan_in: the entries of one output filter), the std divided by 0.8796..., the
    std of a unit normal truncated at +-2, so that the truncated draw keeps it."""
    return trunc_normal_(w, std=math.sqrt(1.0 / w[0].numel()) / 0.87962566103423978)


@torch.no_grad()
def xavier_uniform_qkv_(w: torch.Tensor) -> torch.Tensor:
    """Xavier-uniform of a fused qkv weight (3D, D) as the official code's three
    separate D x D query, key and value matrices: bound sqrt(6 / (D + D))."""
    bound = math.sqrt(6.0 / (w.shape[1] + w.shape[0] // 3))
    return nn.init.uniform_(w, -bound, bound)


# ------------------------------------------------------------------------------------------------
# layers
# ------------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Split the image into patches and project each linearly: a conv with
    kernel = stride = patch is exactly the paper's linear projection of
    flattened patches."""

    first_conv = "proj"

    def __init__(self, img_size, patch_size, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = pair(img_size)
        self.patch_size = pair(patch_size)
        for s, p in zip(self.img_size, self.patch_size):
            if s % p:
                raise ValueError(f"image size {self.img_size} is not divisible by patch size {self.patch_size}")
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def grid_for(self, h: int, w: int) -> tuple[int, int]:
        """The patch grid of an (h, w) input."""
        return h // self.patch_size[0], w // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size[0] or w % self.patch_size[1]:
            raise ValueError(f"input size {(h, w)} is not divisible by patch size {self.patch_size}")
        # kernel = stride = patch, so the conv is a matrix product of the flattened
        # patches with the flattened kernel: the same numbers, but on the CPU the
        # product (and its backward) is several times faster than the conv kernel.
        b, c = x.shape[:2]
        (ph, pw), gh, gw = self.patch_size, h // self.patch_size[0], w // self.patch_size[1]
        x = x.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * ph * pw)
        return F.linear(x, self.proj.weight.flatten(1), self.proj.bias)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention. The normal path calls the fused
    ``F.scaled_dot_product_attention``; ``return_attn=True`` takes the manual
    path and also returns the softmax weights (B, heads, N, N) for analysis.

    With ``rel_grid`` (pos_embed='relative') the layer has a learned bias per
    head added to the attention logits, as Swin and BEiT: a table
    ``relative_position_bias_table`` (heads, 2gh-1, 2gw-1) over the offsets
    (row_q - row_k, col_q - col_k) of two patches of the ``rel_grid`` grid and,
    with a class token, ``relative_position_bias_cls`` (heads, 3): the class
    token attending to a patch, a patch attending to the class token, the class
    token attending to itself (BEiT's three extra entries). A second prefix
    token (DeiT's distillation token) shares the class token's three biases.
    Both paths add the same (heads, N, N) bias: the fused one as a float
    ``attn_mask``. The bias is computed by ``pos_embed.relative_bias``.
    """

    def __init__(self, dim: int, num_heads: int, attn_dropout: float = 0.0, dropout: float = 0.0,
                 rel_grid: tuple[int, int] | None = None, num_prefix_tokens: int = 0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)  # qkv bias, as the paper's models
        self.attn_drop = nn.Dropout(attn_dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        self.rel_grid = None if rel_grid is None else (int(rel_grid[0]), int(rel_grid[1]))
        self.num_prefix_tokens = num_prefix_tokens
        if self.rel_grid is not None:
            gh, gw = self.rel_grid
            self.relative_position_bias_table = nn.Parameter(torch.zeros(num_heads, 2 * gh - 1, 2 * gw - 1))
            self.relative_position_bias_cls = (nn.Parameter(torch.zeros(num_heads, 3)) if num_prefix_tokens
                                               else None)
            # the index of the build grid, kept out of the state dict (it follows from the grid)
            self.register_buffer("relative_position_index", relative_position_index(self.rel_grid),
                                 persistent=False)

    def relative_bias(self, grid: tuple[int, int] | None = None) -> torch.Tensor | None:
        """The bias (heads, N, N) added to the logits for a patch grid (default: the
        build grid; another grid resamples the table, bicubic); None without one."""
        if self.rel_grid is None:
            return None
        table = self.relative_position_bias_table
        if grid is None or tuple(grid) == self.rel_grid:
            index = self.relative_position_index
        else:
            table = resample_rel_table(table, grid)
            index = relative_position_index(grid, device=table.device)
        return relative_bias(table, self.relative_position_bias_cls, self.num_prefix_tokens, index)

    def forward(self, x: torch.Tensor, return_attn: bool = False, grid: tuple[int, int] | None = None):
        """x (B, N, D); ``grid``: the patch grid of the tokens (needed with a relative
        bias when it is not the build grid)."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, hd)
        bias = self.relative_bias(grid)
        if bias is not None:
            if bias.shape[-1] != n:
                raise ValueError(f"relative position bias for {bias.shape[-1]} tokens does not fit {n} tokens; "
                                 f"pass the patch grid of the input")
            bias = bias.to(q.dtype)[None]  # (1, heads, N, N)
        attn = None
        if return_attn:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
            if bias is not None:
                attn = attn + bias
            attn = attn.softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        else:
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.0)
        x = self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, d)))
        return (x, attn) if return_attn else x


class Mlp(nn.Module):
    """D -> hidden -> D with exact (erf) GELU, dropout after each dense layer."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch, x * gamma with gamma (D,)
    starting at a small value (CaiT, Touvron et al. 2021; DeiT-III; DINOv2): a
    deep model starts close to the identity. Named as timm's (``ls1.gamma``)."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.init = init
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"init={self.init}"


class Block(nn.Module):
    """Pre-norm Transformer encoder block, with optional layer scale on both branches."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0,
                 rel_grid: tuple[int, int] | None = None, num_prefix_tokens: int = 0,
                 layer_scale: float | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_dropout, dropout, rel_grid, num_prefix_tokens)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_dim, dropout)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_attn: bool = False, grid: tuple[int, int] | None = None):
        if return_attn:
            y, attn = self.attn(self.norm1(x), return_attn=True, grid=grid)
            x = x + self.drop_path(self.ls1(y))
            return x + self.drop_path(self.ls2(self.mlp(self.norm2(x)))), attn
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), grid=grid)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
