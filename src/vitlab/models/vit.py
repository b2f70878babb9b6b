"""Vision Transformer (ViT), written from scratch.

Paper: Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale", ICLR 2021 (arXiv:2010.11929).

Checked against: google-research/vision_transformer (``models_vit.py``),
google-research/big_vision (``models/vit.py``) and timm
(``vision_transformer.py``). Parameter names follow timm's so that timm state
dicts map one to one; ``vitlab.weights`` maps the other layouts.

The model, top to bottom:

    image (B, C, H, W)
      -> PatchEmbed: conv, kernel = stride = patch      (B, N, D), N = H/p * W/p
      -> [class token] + position embedding, dropout     (B, N+1, D)
      -> depth x Block (pre-norm):
             x = x + DropPath(Attention(LayerNorm(x)))
             x = x + DropPath(Mlp(LayerNorm(x)))           Mlp: D -> mlp_dim -> D, exact GELU
      -> LayerNorm (eps 1e-6)                             forward_features returns this
      -> pool: class token ('cls') or mean of tokens ('avg', no class token)
      -> [representation layer: Linear + tanh]            (pre-logits, as in the paper's
      -> Linear head                                        ImageNet-21k models)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .head import LinearHead

# Model sizes of the paper (Table 1) plus Ti (DeiT/big_vision). One table; the
# registry decodes names such as ``vit_b16`` from it.
SIZES: dict[str, dict[str, int]] = {
    "ti": dict(embed_dim=192, depth=12, num_heads=3, mlp_dim=768),
    "s": dict(embed_dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "b": dict(embed_dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "l": dict(embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096),
    "h": dict(embed_dim=1280, depth=32, num_heads=16, mlp_dim=5120),
}


@torch.no_grad()
def trunc_normal_(w: torch.Tensor, std: float = 0.02, bound: float | None = None) -> torch.Tensor:
    """Normal(0, std) cut at +-``bound`` (default 2 std), drawn by the inverse
    CDF in one pass. ``bound`` is absolute: timm's ``trunc_normal_(std=.02)``
    cuts at +-2, i.e. 100 std, which leaves the normal distribution as it is."""
    bound = 2 * std if bound is None else bound
    lo = math.erf(-bound / std / math.sqrt(2))  # CDF bounds mapped to [-1, 1]
    w.uniform_(lo, -lo).erfinv_().mul_(std * math.sqrt(2))
    return w.clamp_(-bound, bound)  # erfinv(+-1) is infinite; uniform_ may return the lower end


def _pair(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"expected an int or a pair (H, W), got {x!r}")
        return int(x[0]), int(x[1])
    return int(x), int(x)


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


class PatchEmbed(nn.Module):
    """Split the image into patches and project each linearly: a conv with
    kernel = stride = patch is exactly the paper's linear projection of
    flattened patches."""

    first_conv = "proj"

    def __init__(self, img_size, patch_size, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
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
    path and also returns the softmax weights (B, heads, N, N) for analysis."""

    def __init__(self, dim: int, num_heads: int, attn_dropout: float = 0.0, dropout: float = 0.0):
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

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, hd)
        attn = None
        if return_attn:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
            attn = attn.softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        else:
            x = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
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


class Block(nn.Module):
    """Pre-norm Transformer encoder block."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_dropout, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_dim, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        if return_attn:
            y, attn = self.attn(self.norm1(x), return_attn=True)
            x = x + self.drop_path(y)
            return x + self.drop_path(self.mlp(self.norm2(x))), attn
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(LinearHead, nn.Module):
    """ViT. Defaults are ViT-B/16 at 224 px with 1000 classes.

    Args:
        img_size: int or (H, W); each divisible by ``patch_size``.
        patch_size: int or (ph, pw).
        in_chans: input channels (1 for grey images, 3 for RGB).
        num_classes: head outputs; 0 gives no head (``forward`` returns pooled features).
        embed_dim, depth, num_heads, mlp_dim: the size (see ``SIZES``).
        pool: 'cls' (class token, as the paper) or 'avg' (global average of the
            patch tokens after the final norm; no class token).
        pos_embed: 'learned' (normal, std .02) or 'sincos' (fixed 2D table).
        dropout: after the embeddings and inside the MLP and attention output.
        attn_dropout: on the attention weights.
        drop_path: stochastic-depth rate, grown linearly over the blocks up to this value.
        representation_size: if set, a Linear + tanh pre-logits layer of this width.
        weight_init: 'jax' (the official code's) or 'timm' (see ``init_weights``).
        patch_embed: an embedding layer to use instead of ``PatchEmbed`` (the
            hybrid's CNN stem, ``vitlab.models.hybrid``); for code, not configs.
    """

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int | tuple[int, int] = 16,
                 in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_dim: int = 3072,
                 pool: str = "cls", pos_embed: str = "learned", dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0,
                 representation_size: int | None = None, weight_init: str = "jax",
                 patch_embed: nn.Module | None = None):
        super().__init__()
        if pool not in ("cls", "avg"):
            raise ValueError(f"pool must be 'cls' or 'avg', got {pool!r}")
        if pos_embed not in ("learned", "sincos"):
            raise ValueError(f"pos_embed must be 'learned' or 'sincos', got {pos_embed!r}")
        if weight_init not in ("jax", "timm"):
            raise ValueError(f"weight_init must be 'jax' or 'timm', got {weight_init!r}")
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.pool = pool
        self.pos_embed_type = pos_embed

        # A hybrid passes its own embedding (CNN features cut into 1x1 patches); any such layer
        # maps (B, C, H, W) to (B, N, D) and has grid_size, num_patches and grid_for(h, w).
        self.patch_embed = patch_embed or PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.first_conv = f"patch_embed.{self.patch_embed.first_conv}"  # adapted to other channel counts on load
        self.num_prefix_tokens = 1 if pool == "cls" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if pool == "cls" else None
        n_pos = self.patch_embed.num_patches + self.num_prefix_tokens
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, embed_dim))
        else:  # fixed; a buffer kept out of the state dict, rebuilt from the grid
            self.register_parameter("pos_embed", None)
            self.register_buffer("pos_table", self._sincos(self.patch_embed.grid_size), persistent=False)
        self.pos_drop = nn.Dropout(dropout)

        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_dim, dropout, attn_dropout, r) for r in rates])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

        if representation_size:
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(embed_dim, representation_size))
            self.pre_logits.add_module("act", nn.Tanh())
            self.num_features = representation_size
        else:
            self.pre_logits = nn.Identity()
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(weight_init)

    # -- initialisation -------------------------------------------------------------------------
    def init_weights(self, mode: str = "jax") -> None:
        """Initialise every parameter of the Transformer (a hybrid's CNN backbone
        keeps its own initialisation; only its 1x1 projection is set here).

        'jax' is the official code's scheme (google-research/vision_transformer):
        Xavier-uniform dense layers (q, k and v each as a D x D matrix), LeCun-normal
        patch embedding, MLP biases normal(1e-6), other biases zero, a zero head,
        position embedding normal(.02), zero class token. 'timm' is timm's
        ``init_weights_vit_timm``: linear weights truncated normal(.02) cut at +-2
        (absolute, as timm), zero biases, the patch embedding's PyTorch default
        (Kaiming-uniform), position embedding truncated normal(.02), class token
        normal(1e-6). LayerNorms start at (1, 0) in both. ``zero_head()`` is applied
        by ``vitlab.load_pretrained`` when a new head is made for fine-tuning.
        """
        for name, m in self.named_modules():
            if name.startswith("patch_embed.") and name != "patch_embed.proj":
                continue  # a hybrid's backbone
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                if mode == "timm" and isinstance(m, nn.Conv2d):
                    m.reset_parameters()
                    continue
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
                if mode == "timm":
                    trunc_normal_(m.weight, std=0.02, bound=2.0)
                elif isinstance(m, nn.Conv2d):  # LeCun normal, truncated at 2 std
                    trunc_normal_(m.weight, std=math.sqrt(1.0 / m.weight[0].numel()) / 0.87962566103423978)
                elif name.endswith("attn.qkv"):
                    bound = math.sqrt(6.0 / (m.in_features + m.out_features // 3))
                    nn.init.uniform_(m.weight, -bound, bound)
                else:
                    nn.init.xavier_uniform_(m.weight)
                    if ".mlp." in name and m.bias is not None:
                        nn.init.normal_(m.bias, std=1e-6)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if mode == "jax":
            self.zero_head()
            if self.pos_embed is not None:
                nn.init.normal_(self.pos_embed, std=0.02)
        else:
            if self.pos_embed is not None:
                trunc_normal_(self.pos_embed, std=0.02, bound=2.0)
            if self.cls_token is not None:
                nn.init.normal_(self.cls_token, std=1e-6)

    def no_weight_decay(self) -> set[str]:
        """Parameter names kept out of weight decay besides biases and norms."""
        return {"pos_embed", "cls_token"}

    # -- forward --------------------------------------------------------------------------------
    def _sincos(self, grid: tuple[int, int]) -> torch.Tensor:
        table = sincos_2d(grid, self.embed_dim)
        if self.num_prefix_tokens:
            table = torch.cat([torch.zeros(self.num_prefix_tokens, self.embed_dim), table])
        return table[None]  # (1, N(+1), D)

    def _pos_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embeddings for a patch grid; resampled when the input size
        differs from the one the model was built for."""
        if self.pos_embed is None:
            if grid == self.patch_embed.grid_size:
                return self.pos_table
            return self._sincos(grid).to(self.pos_table)
        if grid == self.patch_embed.grid_size:
            return self.pos_embed
        prefix, patches = self.pos_embed[:, :self.num_prefix_tokens], self.pos_embed[:, self.num_prefix_tokens:]
        return torch.cat([prefix, resample_grid(patches, self.patch_embed.grid_size, grid)], dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) -> token sequence (B, N(+1), D) with position embeddings."""
        grid = self.patch_embed.grid_for(*x.shape[-2:])
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + self._pos_for(grid))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> normed token sequence (B, N(+1), D)."""
        return self.norm(self.blocks(self.embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.pool == "cls" else x.mean(dim=1)
        x = self.pre_logits(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Softmax attention weights, one (B, heads, N, N) tensor per block
        (rows sum to 1). Uses the manual attention path for this call only;
        normal forward passes keep the fused kernel."""
        x = self.embed(x)
        maps = []
        for blk in self.blocks:
            x, attn = blk(x, return_attn=True)
            maps.append(attn)
        return maps

    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size
