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
      -> [class token] [distillation token]              (B, P+N, D), P prefix tokens (0-2)
         + position embedding, dropout                   (``pos_embed``: see VisionTransformer;
      -> depth x Block (pre-norm):                         'relative': a bias on the logits instead)
             x = x + DropPath(ls1 * Attention(LayerNorm(x)))   ls1, ls2: layer scale (optional,
             x = x + DropPath(ls2 * Mlp(LayerNorm(x)))         CaiT / DeiT-III), else 1
                                                         Mlp: D -> mlp_dim -> D, exact GELU
      -> LayerNorm (eps 1e-6; none with fc_norm)          forward_features returns this
      -> pool: class token ('cls') or mean of the patch tokens ('avg')
      -> [fc_norm: LayerNorm after pooling]              (MAE / BEiT-style average pooling)
      -> [representation layer: Linear + tanh]            (pre-logits, as in the paper's
      -> Linear head                                        ImageNet-21k models)

A distilled model (DeiT, Touvron et al., ICML 2021, arXiv:2012.12877; checked
against timm's ``deit.py``) has a second head ``head_dist`` on the
distillation token; its output is the mean of the two heads' logits.

This file holds the model and its size table; the blocks it is built of
(``PatchEmbed``, ``Block``, ``Attention``, ``Mlp``, ``DropPath``,
``LayerScale``, the init helpers) are in ``layers.py``, and the position
embeddings of every ``pos_embed`` kind, with their resampling, in
``pos_embed.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from .head import LinearHead
from .layers import Block, LayerScale, PatchEmbed, lecun_normal_, trunc_normal_, xavier_uniform_qkv_
from .pos_embed import POS_EMBEDS, REL_PARAMS, learned_2d_table, learned_table, sincos_table

# Model sizes of the paper (Table 1) plus Ti (DeiT/big_vision). One table; the
# registry decodes names such as ``vit_b16`` from it.
SIZES: dict[str, dict[str, int]] = {
    "ti": dict(embed_dim=192, depth=12, num_heads=3, mlp_dim=768),
    "s": dict(embed_dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "b": dict(embed_dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "l": dict(embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096),
    "h": dict(embed_dim=1280, depth=32, num_heads=16, mlp_dim=5120),
}


class VisionTransformer(LinearHead, nn.Module):
    """ViT. Defaults are ViT-B/16 at 224 px with 1000 classes.

    Args:
        img_size: int or (H, W); each divisible by ``patch_size``.
        patch_size: int or (ph, pw).
        in_chans: input channels (1 for grey images, 3 for RGB).
        num_classes: head outputs; 0 gives no head (``forward`` returns pooled features).
        embed_dim, depth, num_heads, mlp_dim: the size (see ``SIZES``).
        pool: 'cls' (class token, as the paper) or 'avg' (global average of the
            patch tokens after the final norm; the class token, if any, is not
            averaged, as timm's ``global_pool='avg'``).
        class_token: whether the sequence starts with a class token. None (default):
            with pool='cls', none with pool='avg'. True with pool='avg' is timm's
            ``class_token=True, global_pool='avg'`` (MAE, BEiT fine-tuning): the class
            token attends and is attended to, but the head reads the patch mean.
        fc_norm: put the final LayerNorm after pooling (``fc_norm``) instead of
            on every token before it (``norm`` is then the identity and
            ``forward_features`` returns un-normed tokens), as timm's ``fc_norm``
            in MAE / BEiT-style average-pooled models. Default False.
        pos_embed: how the model learns where a patch is; the paper's ablation
            (section 4.5, appendix D.4), see below.
        dropout: after the embeddings and inside the MLP and attention output.
        attn_dropout: on the attention weights.
        drop_path: stochastic-depth rate, grown linearly over the blocks up to this value.
        layer_scale: if set, the initial value (e.g. 1e-5, 1e-6) of per-channel learned
            scales ``ls1``, ``ls2`` on the attention and MLP branches of every block
            (CaiT, DeiT-III, DINOv2; timm's ``init_values``). None (default): none.
        distilled: DeiT's distillation token (``dist_token``, after the class token)
            and a second head ``head_dist`` on it; ``forward`` returns the mean of
            the two heads' logits, in training too (timm's behaviour unless it
            trains against a teacher, which vitlab does not). Needs pool='cls'.
        representation_size: if set, a Linear + tanh pre-logits layer of this width.
        weight_init: 'jax' (the official code's) or 'timm' (see ``init_weights``).
        patch_embed: an embedding layer to use instead of ``PatchEmbed`` (the
            hybrid's CNN stem, ``vitlab.models.hybrid``); for code, not configs.

    Position embeddings (``pos_embed``), each trained with the model and resampled
    for another resolution by ``vitlab.load_pretrained`` and in ``forward``:

    - 'none': no position information at all; the Transformer sees a bag of
      patches (with pool='avg' the model is invariant to their order).
    - 'learned': the paper's default, a 1-D table ``pos_embed`` (1, P+N, D)
      over the tokens in raster order, the prefix tokens' entries (class,
      distillation) first.
      Resampled by 2D interpolation of the patch part.
    - 'learned_2d': two learned tables, ``pos_embed_x`` (1, gw, D/2) over the
      columns and ``pos_embed_y`` (1, gh, D/2) over the rows; patch (row i,
      col j) gets concat(X[j], Y[i]): the first D/2 channels say the column,
      the last D/2 the row (the order of the sin-cos table). The prefix tokens
      have their own learned D-vectors ``pos_embed_cls`` (1, P, D), as they
      have their own entries in the 1-D table. D must be even. Resampled by 1-D
      interpolation of X and of Y.
    - 'sincos': the fixed 2-D sin-cos table of big_vision (no parameters;
      the prefix tokens get zeros). Computed for any grid.
    - 'relative': nothing is added to the tokens; every layer has a learned
      bias per head on the attention logits, indexed by the offset (dy, dx)
      of query and key patch, as Swin and BEiT (see ``layers.Attention``), with
      learned per-head biases of its own for the class token's row, column
      and self-attention. Resampled by 2D interpolation of each head's
      (2gh-1, 2gw-1) table. The paper's relative variant differs in one
      respect: its bias comes from the query attending to learned offset
      embeddings; this is the content-independent bias in common use since.
      With pool='cls' the last block's patch-to-patch table cannot change the
      output (only the class token's row is read) and gets no gradient.

    Initialisation: learned tables normal(.02) ('jax') or truncated normal(.02)
    ('timm'); the relative tables truncated normal(.02) in both schemes, as
    Swin's, so that attention depends on position from the first step.

    The paper's result (appendix D.4, ViT-B/16, ImageNet 5-shot linear accuracy):
    no position embedding is clearly worse (about 61% against 64%), while 1-D,
    2-D and relative embeddings are about equal; the authors suggest that at the
    level of patches how position is encoded matters little, and a learned 1-D
    table learns the 2-D layout by itself (figure 7). ``docs/pos_embed_ablation.md``
    runs the ablation on small datasets.
    """

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int | tuple[int, int] = 16,
                 in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_dim: int = 3072,
                 pool: str = "cls", class_token: bool | None = None, fc_norm: bool = False,
                 pos_embed: str = "learned", dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0, layer_scale: float | None = None,
                 distilled: bool = False, representation_size: int | None = None, weight_init: str = "jax",
                 patch_embed: nn.Module | None = None):
        super().__init__()
        if pool not in ("cls", "avg"):
            raise ValueError(f"pool must be 'cls' or 'avg', got {pool!r}")
        class_token = pool == "cls" if class_token is None else bool(class_token)
        if pool == "cls" and not class_token:
            raise ValueError("pool='cls' classifies the class token: class_token=False needs pool='avg'")
        if layer_scale is not None and not layer_scale > 0:
            raise ValueError(f"layer_scale is the initial value of the scales, e.g. 1e-5 (None: no layer "
                             f"scale); got {layer_scale!r}")
        if distilled and pool != "cls":
            raise ValueError("distilled=True reads the class and distillation tokens: it needs pool='cls'")
        if distilled and (fc_norm or representation_size):
            raise ValueError("distilled=True has two heads on the normed tokens: it takes no fc_norm "
                             "or representation_size")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {', '.join(map(repr, POS_EMBEDS))}, got {pos_embed!r}")
        if pos_embed == "learned_2d" and embed_dim % 2:
            raise ValueError(f"pos_embed='learned_2d' needs an even embed_dim (D/2 channels each for the X and "
                             f"Y embeddings), got {embed_dim}")
        if weight_init not in ("jax", "timm"):
            raise ValueError(f"weight_init must be 'jax' or 'timm', got {weight_init!r}")
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.pool = pool
        self.pos_embed_type = pos_embed
        self.distilled = bool(distilled)

        # A hybrid passes its own embedding (CNN features cut into 1x1 patches); any such layer
        # maps (B, C, H, W) to (B, N, D) and has grid_size, num_patches and grid_for(h, w).
        self.patch_embed = patch_embed or PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.first_conv = f"patch_embed.{self.patch_embed.first_conv}"  # adapted to other channel counts on load
        # prefix tokens, in this order: class token, distillation token
        self.num_prefix_tokens = int(class_token) + int(self.distilled)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if self.distilled else None
        n_pos = self.patch_embed.num_patches + self.num_prefix_tokens
        gh, gw = self.patch_embed.grid_size
        # pos_embed is the 1-D table of 'learned' and None otherwise (checkpoints and analyses rely on it)
        self.register_parameter("pos_embed", None)
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, embed_dim))
        elif pos_embed == "learned_2d":
            self.pos_embed_x = nn.Parameter(torch.zeros(1, gw, embed_dim // 2))  # over the columns
            self.pos_embed_y = nn.Parameter(torch.zeros(1, gh, embed_dim // 2))  # over the rows
            self.pos_embed_cls = (nn.Parameter(torch.zeros(1, self.num_prefix_tokens, embed_dim))
                                  if self.num_prefix_tokens else None)  # one entry per prefix token
        elif pos_embed == "sincos":  # fixed; a buffer kept out of the state dict, rebuilt from the grid
            self.register_buffer("pos_table", sincos_table(self.patch_embed.grid_size, embed_dim,
                                                           self.num_prefix_tokens), persistent=False)
        self.pos_drop = nn.Dropout(dropout)

        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        rel_grid = (gh, gw) if pos_embed == "relative" else None  # each block's attention has its own table
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_dim, dropout, attn_dropout, r, rel_grid, self.num_prefix_tokens,
                  layer_scale) for r in rates])
        # the final norm: on every token (``norm``), or on the pooled vector (``fc_norm``)
        self.norm = nn.Identity() if fc_norm else nn.LayerNorm(embed_dim, eps=1e-6)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if fc_norm else nn.Identity()

        if representation_size:
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(embed_dim, representation_size))
            self.pre_logits.add_module("act", nn.Tanh())
            self.num_features = representation_size
        else:
            self.pre_logits = nn.Identity()
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = None
        if self.distilled:
            self.head_dist = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
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
        The 'learned_2d' tables are initialised as the 1-D table; the 'relative'
        bias tables (class-token entries included) truncated normal(.02), cut at
        +-2 as timm's, in both schemes (Swin's initialisation). In both schemes
        the distillation token is truncated normal(.02) (DeiT's; not zero, so
        that it starts apart from the class token), the distillation head is
        treated as the head, and the layer scales start at ``layer_scale``.
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
                    lecun_normal_(m.weight)
                elif name.endswith("attn.qkv"):
                    xavier_uniform_qkv_(m.weight)
                else:
                    nn.init.xavier_uniform_(m.weight)
                    if ".mlp." in name and m.bias is not None:
                        nn.init.normal_(m.bias, std=1e-6)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        tables = [getattr(self, k, None) for k in ("pos_embed", "pos_embed_x", "pos_embed_y", "pos_embed_cls")]
        for t in (t for t in tables if t is not None):
            if mode == "jax":
                nn.init.normal_(t, std=0.02)
            else:
                trunc_normal_(t, std=0.02, bound=2.0)
        for blk in self.blocks:
            for t in (getattr(blk.attn, k, None) for k in REL_PARAMS):
                if t is not None:
                    trunc_normal_(t, std=0.02, bound=2.0)
            for ls in (blk.ls1, blk.ls2):
                if isinstance(ls, LayerScale):
                    nn.init.constant_(ls.gamma, ls.init)
        if self.dist_token is not None:
            trunc_normal_(self.dist_token, std=0.02, bound=2.0)
        if mode == "jax":
            self.zero_head()
        elif self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def no_weight_decay(self) -> set[str]:
        """Parameter names kept out of weight decay besides biases and norms: the
        class token (and distillation token) and the position embeddings of every
        kind ('learned_2d': its X, Y and class-token tables; 'relative': every
        block's bias tables). Layer scales are vectors, left out by shape."""
        return {"pos_embed", "cls_token"} | ({"dist_token"} if self.distilled else set()) | {
            n for n, _ in self.named_parameters() if n.startswith("pos_embed_") or n.endswith(REL_PARAMS)}

    # -- heads ----------------------------------------------------------------------------------
    def zero_head(self) -> None:
        """Zero the head (and the distillation head)."""
        super().zero_head()
        if isinstance(self.head_dist, nn.Linear):
            nn.init.zeros_(self.head_dist.weight)
            nn.init.zeros_(self.head_dist.bias)

    def reset_classifier(self, num_classes: int) -> None:
        """Swap the head (and the distillation head) for zero-initialised ones with
        ``num_classes`` outputs (0: none)."""
        if self.distilled:
            device = next(self.parameters()).device
            self.head_dist = (nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0
                              else nn.Identity())
        super().reset_classifier(num_classes)  # zero_head() zeros both

    # -- forward --------------------------------------------------------------------------------
    def position_embeddings(self, grid: tuple[int, int] | None = None) -> torch.Tensor | None:
        """The position embeddings added to the tokens for a patch grid (default: the
        build grid), (1, P+N, D), prefix tokens first; resampled (bicubic) when the
        grid differs from the build grid. None for 'none' and 'relative', which add
        nothing to the tokens."""
        grid = tuple(self.patch_embed.grid_size if grid is None else grid)
        build = tuple(self.patch_embed.grid_size)
        kind = self.pos_embed_type
        if kind in ("none", "relative"):
            return None
        if kind == "sincos":
            if grid == build:
                return self.pos_table
            return sincos_table(grid, self.embed_dim, self.num_prefix_tokens).to(self.pos_table)
        if kind == "learned":
            return learned_table(self.pos_embed, self.num_prefix_tokens, build, grid)
        return learned_2d_table(self.pos_embed_x, self.pos_embed_y, self.pos_embed_cls, build, grid)

    def embed(self, x: torch.Tensor, corrupt=None) -> torch.Tensor:
        """Image (B, C, H, W) -> token sequence (B, P+N, D), class token, distillation
        token, patches, with position embeddings. ``corrupt``: a function applied to the
        patch embeddings (B, N, D) before the rest (masked patch prediction)."""
        grid = self.patch_embed.grid_for(*x.shape[-2:])
        # the residual stream in the parameters' dtype: under autocast the patch projection gives bf16, and
        # without a class token or a position table to add in float32 the whole stream would stay bf16
        x = self.patch_embed(x)
        x = x.to(self.blocks[0].norm1.weight.dtype if len(self.blocks) else x.dtype)
        if corrupt is not None:
            x = corrupt(x)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token) if t is not None]
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        pos = self.position_embeddings(grid)
        return self.pos_drop(x if pos is None else x + pos)

    def forward_features(self, x: torch.Tensor, corrupt=None) -> torch.Tensor:
        """Image -> normed token sequence (B, P+N, D), prefix tokens first (not
        normed with fc_norm, whose norm comes after pooling). ``corrupt``: see ``embed``."""
        grid = self.patch_embed.grid_for(*x.shape[-2:])  # for the relative bias
        x = self.embed(x, corrupt)
        for blk in self.blocks:
            x = blk(x, grid=grid)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, P+N, D) -> logits (B, num_classes), or the pooled features
        (B, num_features) with ``pre_logits``. Distilled: the mean of the class
        head on the class token and of ``head_dist`` on the distillation token
        (``pre_logits``: the mean of the two tokens), as timm's DeiT."""
        if self.distilled:
            x, x_dist = x[:, 0], x[:, 1]
            if pre_logits:
                return (x + x_dist) / 2
            return (self.head(x) + self.head_dist(x_dist)) / 2
        x = x[:, 0] if self.pool == "cls" else x[:, self.num_prefix_tokens:].mean(dim=1)  # (B, D)
        x = self.pre_logits(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Softmax attention weights, one (B, heads, N, N) tensor per block
        (rows sum to 1). Uses the manual attention path for this call only;
        normal forward passes keep the fused kernel."""
        grid = self.patch_embed.grid_for(*x.shape[-2:])
        x = self.embed(x)
        maps = []
        for blk in self.blocks:
            x, attn = blk(x, return_attn=True, grid=grid)
            maps.append(attn)
        return maps

    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size
