"""Visual Transformer (VT): tokenizers, the token transformer, the projector, VT-ResNet.

Paper: Wu et al., "Visual Transformers: Token-based Image Representation and
Processing for Computer Vision", arXiv:2006.03677 (2020); ICCV 2021 version
"Visual Transformers: Where Do Transformers Really Belong in Vision Models?".
Equations below are the paper's, with X (HW x C) a feature map and T (L x C_T)
the visual tokens; every module here computes them per image, so nothing
depends on the batch size.

    X (B, C, H, W) -> tokenizer -> T (B, L, C_T) -> transformer -> T_out
                   -> projector(X, T_out) -> X_out (B, C, H, W)       (next module's input)

- Filter-based tokenizer, eq. (1): A = softmax_HW(X W_A) (HW x L, each column a
  spatial attention summing to 1 over the pixels), T = A^T X: every token is a
  convex combination of pixels. Then the value projection W_V: C -> C_T.
- Recurrent tokenizer, eq. (2): W_R = T_in W_{T->R} (the previous tokens pick
  the filters), T = softmax_HW(X W_R)^T X, then W_V. ``recurrent_half``: the
  appendix's variant re-tokenises only the first half of the tokens (from the
  first half of T_in) and keeps the second half of T_in as it is.
- Pooling tokenizer (the paper's ablation baseline): the map average-pooled to
  an L-cell grid (16 tokens: 4x4), then W_V.
- Transformer, eqs. (3)-(4): T' = T_in + softmax_L((T_in K)(T_in Q)^T) T_in;
  T_out = T' + ReLU(T' F1) F2. The paper's own form: no class token, no
  LayerNorm, no GELU, no value projection (the attention mixes the tokens
  themselves).
- Projector, eq. (5): X_out = X_in + softmax_L((X_in W_Q)(T W_K)^T) T W_V.

What the main text leaves open, and the defaults chosen here:

- ``key_channels`` (the width of K and Q in the transformer): C_T / 2, the
  width given for the arXiv version and used by careful reimplementations.
- ``attn_scale``: the attention logits of the transformer and the projector
  are divided by sqrt(key width), as in every Transformer since Vaswani et al.;
  the equations write no scale, but with 512-wide keys unscaled logits
  saturate the softmax at initialisation. ``attn_scale=False`` gives the
  equations as written. The tokenizers' logits are not scaled (eq. 1 as written).
- ``heads``: 1, the equations' single attention; more heads split K, Q and
  the tokens' channels.
- The projector's value projection W_V (C_T -> C) is needed whenever the
  tokens are wider than the feature map (1024 against 256 in VT-ResNet-18);
  where C_T = C it is left out, as eq. (5) writes T.
- ``pos_encoding``: the appendix's position encoding P = downsample(A)^T W_{A->P}
  from the tokenizer's attention maps, pooled to 7x7 and projected to C_T, is
  added to the tokens (the appendix concatenates a narrow code; adding keeps
  the token width). Off by default, as in the paper's main results.
- ``norm``: False, no normalisation layer inside the VT modules, as the
  equations (the ResNet stages before them keep their batch norms).
  ``norm=True`` puts a LayerNorm after each residual sum of the transformer
  (post-norm), as torch's ``nn.TransformerEncoderLayer``, on which the code
  listing of the arXiv version builds its transformer. Without normalisation
  the token path has no bound on its scale: SGD at lr 0.1 from the first step
  diverged on CIFAR-10 (a NaN loss at step 7; with ``norm=True`` the loss
  still rose above 100 within 15 steps); a 1-epoch warmup with gradient
  clipping at norm 5 trained stably, and the presets use them
  (configs/cifar10_vt_resnet18.yaml).
- The last VT module has no projector: the classifier reads the tokens ("a
  standard average pool and fully-connected layer" over the tokens), so a
  feature map projected after it would be computed for nothing.

VT-ResNet (the paper's section 4.1): ResNet stages 1-3 (torchvision's blocks,
``vitlab.models.resnet``), the last stage replaced by as many VT modules as it
had blocks (2 for R18, 3 for R34 and R50), L = 16 tokens of C_T = 1024
channels, the feature map at the stage-4 output (14x14 at 224 px) with C = 256
channels (see VT-ResNet-50 below), the first module filter-based and the
later ones recurrent (``tokenizer='pooling'``: every module pools, the
paper's ablation); the head averages the output tokens and applies a linear
layer. ``stem='cifar'`` (``vitlab.models.resnet``) suits 32-64 px inputs: the
VT then works on an 8x8 map at 32 px.

Parameters and MACs against the paper (224 px, 1000 classes; vitlab's counts
are pinned in tests/test_vt.py):

    model           paper (Table 2 / 8)       vitlab
    ResNet-18       1.814 GMACs, 11.7M        1.814 GMACs, 11.69M
    VT-ResNet-18    1.579 GMACs, 11.6M        1.544 GMACs, 11.48M  (-2.2%, -1.0%)
    VT-ResNet-34    3.299 GMACs, 21.8M        3.246 GMACs, 21.13M  (-1.6%, -3.1%)
    VT-ResNet-50    3.412 GMACs, 21.4M        3.554 GMACs, 21.76M  (+4.2%, +1.7%)

Remaining differences: the value projection W_V runs on the L tokens after
the pooling (A^T X W_V), which gives the same numbers as projecting every
pixel first (A^T (X W_V)) for 16/196 of the multiply-accumulates; an
implementation that projects the pixels counts about 51M more MACs per
tokenizer at 256 -> 1024 channels. The paper gives no widths for K, Q, W_Q
and W_K beyond the equations, so a few percent either way follow from those
choices. VT-ResNet-50: the paper states a VT channel size of 1024 (the
stage-3 output); at that width each projector's X W_Q alone costs
196 x 1024 x 1024 = 205M MACs, and the model has 28.46M parameters and
3.992 GMACs (``channels=1024``: +33% and +17% against Table 8), so Table 8's
counts imply a narrower VT. vitlab's default reads the stage-3 output through
a 1x1 convolution (+ BN + ReLU) to ``channels=256``, the width of the R18/R34
VTs; ``channels=1024`` gives the width as stated.
"""


from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .head import LinearHead
from .layers import trunc_normal_
from .resnet import BLOCKS, ResNet

TOKENIZERS = ("filter", "pooling")
POS_GRID = (7, 7)  # the attention maps are pooled to this grid for the position encoding


def _token_grid(num_tokens: int) -> tuple[int, int]:
    """The most square grid with ``num_tokens`` cells (16 -> 4x4, 32 -> 4x8)."""
    h = max(d for d in range(1, math.isqrt(num_tokens) + 1) if num_tokens % d == 0)
    return h, num_tokens // h


def _softmax_attention(logits: torch.Tensor, dim: int) -> torch.Tensor:
    return logits.float().softmax(dim=dim).to(logits.dtype)


class FilterTokenizer(nn.Module):
    """Eq. (1): tokens from a fixed set of L spatial attentions (point-wise filters W_A)."""

    def __init__(self, channels: int, num_tokens: int, token_channels: int):
        super().__init__()
        self.attn = nn.Linear(channels, num_tokens, bias=False)  # W_A: C -> L
        self.value = nn.Linear(channels, token_channels, bias=False)  # W_V: C -> C_T

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None):
        """x: pixels (B, HW, C) -> tokens (B, L, C_T), attention A (B, HW, L)."""
        a = _softmax_attention(self.attn(x), dim=1)  # softmax over HW
        return self.value(a.transpose(1, 2) @ x), a  # A^T X: (B, L, C) -> W_V


class RecurrentTokenizer(nn.Module):
    """Eq. (2): the previous module's tokens choose the spatial filters, W_R = T_in W_{T->R}."""

    def __init__(self, channels: int, num_tokens: int, token_channels: int, half: bool = False):
        super().__init__()
        self.num_tokens, self.half = num_tokens, half
        self.t2r = nn.Linear(token_channels, channels, bias=False)  # W_{T->R}: C_T -> C
        self.value = nn.Linear(channels, token_channels, bias=False)  # W_V: C -> C_T

    def forward(self, x: torch.Tensor, tokens: torch.Tensor):
        """x: pixels (B, HW, C), tokens: T_in (B, L, C_T) -> new tokens (B, L, C_T), A (B, HW, L')."""
        kept = None
        if self.half:  # re-tokenise the first half, keep the second half of T_in
            n = self.num_tokens // 2
            tokens, kept = tokens[:, :n], tokens[:, n:]
        w_r = self.t2r(tokens)  # (B, L', C): one filter per token
        a = _softmax_attention(x @ w_r.transpose(1, 2), dim=1)  # (B, HW, L'), softmax over HW
        new = self.value(a.transpose(1, 2) @ x)
        return (new if kept is None else torch.cat([new, kept], dim=1)), a


class PoolingTokenizer(nn.Module):
    """The ablation baseline: the feature map average-pooled to an L-cell grid, then W_V."""

    def __init__(self, channels: int, num_tokens: int, token_channels: int):
        super().__init__()
        self.grid = _token_grid(num_tokens)
        self.value = nn.Linear(channels, token_channels, bias=False)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None, *, size: tuple[int, int]):
        b, _, c = x.shape
        pooled = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(b, c, *size), self.grid)  # (B, C, gh, gw)
        return self.value(pooled.flatten(2).transpose(1, 2)), None


class TokenTransformer(nn.Module):
    """Eqs. (3)-(4) on the L tokens."""

    def __init__(self, channels: int, key_channels: int, heads: int = 1, attn_scale: bool = True,
                 norm: bool = False):
        super().__init__()
        # norm: LayerNorm after each residual sum (post-norm); see the module docstring
        self.norm1 = nn.LayerNorm(channels) if norm else nn.Identity()
        self.norm2 = nn.LayerNorm(channels) if norm else nn.Identity()
        if key_channels % heads or channels % heads:
            raise ValueError(f"heads ({heads}) must divide token_channels ({channels}) and "
                             f"key_channels ({key_channels})")
        self.heads = heads
        self.scale = (key_channels // heads) ** -0.5 if attn_scale else 1.0
        self.key = nn.Linear(channels, key_channels, bias=False)  # K
        self.query = nn.Linear(channels, key_channels, bias=False)  # Q
        self.f1 = nn.Linear(channels, channels, bias=False)
        self.f2 = nn.Linear(channels, channels, bias=False)

    def forward(self, t: torch.Tensor, return_attn: bool = False):
        b, n, c = t.shape
        h = self.heads
        k = self.key(t).reshape(b, n, h, -1).transpose(1, 2)  # (B, h, L, dk)
        q = self.query(t).reshape(b, n, h, -1).transpose(1, 2)
        attn = _softmax_attention((k @ q.transpose(-2, -1)) * self.scale, dim=-1)  # (B, h, L, L), over L
        mixed = attn @ t.reshape(b, n, h, -1).transpose(1, 2)  # the tokens themselves, no value projection
        t = self.norm1(t + mixed.transpose(1, 2).reshape(b, n, c))  # T'
        t = self.norm2(t + self.f2(F.relu(self.f1(t))))  # T_out
        return (t, attn) if return_attn else t


class Projector(nn.Module):
    """Eq. (5): every pixel reads the tokens it attends to, added to the feature map."""

    def __init__(self, channels: int, token_channels: int, attn_scale: bool = True):
        super().__init__()
        self.scale = channels ** -0.5 if attn_scale else 1.0
        self.query = nn.Linear(channels, channels, bias=False)  # W_Q: C -> C
        self.key = nn.Linear(token_channels, channels, bias=False)  # W_K: C_T -> C
        # eq. (5) adds T itself, which needs C_T = C; otherwise a value projection maps it to C
        self.value = (nn.Identity() if token_channels == channels
                      else nn.Linear(token_channels, channels, bias=False))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: pixels (B, HW, C), t: tokens (B, L, C_T) -> pixels (B, HW, C)."""
        attn = _softmax_attention((self.query(x) @ self.key(t).transpose(1, 2)) * self.scale, dim=-1)
        return x + attn @ self.value(t)  # (B, HW, L) @ (B, L, C)


class VTModule(nn.Module):
    """Tokenizer -> transformer -> projector (the last module of a stack has none)."""

    def __init__(self, channels: int, num_tokens: int, token_channels: int, tokenizer: str,
                 key_channels: int, heads: int, attn_scale: bool, recurrent_half: bool, pos_encoding: bool,
                 project: bool, norm: bool = False):
        super().__init__()
        if tokenizer == "filter":
            self.tokenizer = FilterTokenizer(channels, num_tokens, token_channels)
        elif tokenizer == "recurrent":
            self.tokenizer = RecurrentTokenizer(channels, num_tokens, token_channels, recurrent_half)
        elif tokenizer == "pooling":
            self.tokenizer = PoolingTokenizer(channels, num_tokens, token_channels)
        else:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
        self.kind = tokenizer
        self.pos = None
        if pos_encoding:
            if tokenizer == "pooling":
                raise ValueError("pos_encoding needs attention maps: use the filter tokenizer")
            self.pos = nn.Linear(POS_GRID[0] * POS_GRID[1], token_channels, bias=False)  # W_{A->P}
        self.transformer = TokenTransformer(token_channels, key_channels, heads, attn_scale, norm)
        self.projector = Projector(channels, token_channels, attn_scale) if project else None

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None, size: tuple[int, int]):
        """x: pixels (B, HW, C) of an (H, W) map; tokens: the previous module's (recurrent)."""
        kwargs = {"size": size} if self.kind == "pooling" else {}
        t, a = self.tokenizer(x, tokens, **kwargs)
        if self.pos is not None:
            maps = a.transpose(1, 2).reshape(a.shape[0], a.shape[2], *size)  # (B, L', H, W)
            p = self.pos(F.adaptive_avg_pool2d(maps, POS_GRID).flatten(2))  # (B, L', C_T)
            t = t + F.pad(p, (0, 0, 0, t.shape[1] - p.shape[1]))  # kept tokens (half) get none
        t = self.transformer(t)
        return (self.projector(x, t) if self.projector is not None else x), t


class VTResNet(LinearHead, nn.Module):
    """ResNet stages 1-3, then VT modules in place of stage 4, then the token head."""

    head_name = "fc"
    first_conv = "conv1"

    def __init__(self, block: str, layers: list[int], num_modules: int, in_chans: int = 3,
                 num_classes: int = 1000, stem: str = "imagenet", tokenizer: str = "filter", num_tokens: int = 16,
                 token_channels: int = 1024, channels: int | None = None, key_channels: int | None = None,
                 heads: int = 1, attn_scale: bool = True, recurrent: bool = True, recurrent_half: bool = False,
                 pos_encoding: bool = False, norm: bool = False, zero_init_residual: bool = False):
        super().__init__()
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
        if num_tokens < 1 or token_channels < 1 or num_modules < 1:
            raise ValueError("num_tokens, token_channels and the number of VT modules must be positive")
        if recurrent_half and num_tokens < 2:
            raise ValueError("recurrent_half needs at least 2 tokens")
        # stages 1-3 are a ResNet's, with its names (conv1, bn1, layer1-3) and initialisation
        base = ResNet(block, list(layers) + [1], in_chans, 0, stem, zero_init_residual)
        self.conv1, self.bn1, self.relu, self.maxpool = base.conv1, base.bn1, base.relu, base.maxpool
        self.layer1, self.layer2, self.layer3 = base.layer1, base.layer2, base.layer3
        stage3 = 256 * BLOCKS[block]  # stage-3 output channels: 256 (R18/34) or 1024 (R50)
        channels = channels or stage3
        # a VT narrower than the stage-3 output reads it through a 1x1 conv + BN + ReLU
        self.reduce = (nn.Identity() if channels == stage3 else nn.Sequential(
            nn.Conv2d(stage3, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)))
        key_channels = key_channels or token_channels // 2
        self.vt = nn.ModuleList([
            VTModule(channels, num_tokens, token_channels,
                     "pooling" if tokenizer == "pooling" else ("recurrent" if i and recurrent else "filter"),
                     key_channels, heads, attn_scale, recurrent_half, pos_encoding,
                     project=i < num_modules - 1, norm=norm)
            for i in range(num_modules)])
        self.num_features = token_channels
        self.num_classes = num_classes
        self.fc = nn.Linear(token_channels, num_classes) if num_classes > 0 else nn.Identity()
        self._init_vt()

    def _init_vt(self) -> None:
        """VT layers: truncated normal(.02) weights (timm's Transformer init); the head as
        torchvision's ResNet head (PyTorch's default Linear init)."""
        for m in self.vt.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> the last VT module's tokens (B, L, C_T)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.reduce(self.layer3(self.layer2(self.layer1(x))))  # (B, C, H/16, W/16)
        size = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # pixels (B, HW, C)
        tokens = None
        for module in self.vt:
            x, tokens = module(x, tokens, size)
        return tokens

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)  # the average of the output tokens
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        return set()


def _builder(block: str, layers: list[int], num_modules: int, depth: int):
    def build(in_chans: int = 3, num_classes: int = 1000, stem: str = "imagenet", tokenizer: str = "filter",
              num_tokens: int = 16, token_channels: int = 1024, channels: int = 256, key_channels: int | None = None,
              heads: int = 1, attn_scale: bool = True, recurrent: bool = True, recurrent_half: bool = False,
              pos_encoding: bool = False, norm: bool = False, zero_init_residual: bool = False) -> VTResNet:
        return VTResNet(block, layers, num_modules, in_chans, num_classes, stem, tokenizer, num_tokens,
                        token_channels, channels, key_channels, heads, attn_scale, recurrent, recurrent_half,
                        pos_encoding, norm, zero_init_residual)

    build.__name__ = build.__qualname__ = f"vt_resnet{depth}"
    build.__doc__ = f"VT-ResNet-{depth}: ResNet-{depth} stages 1-3, then {num_modules} VT modules."
    return build


vt_resnet18 = _builder("basic", [2, 2, 2], 2, 18)
vt_resnet34 = _builder("basic", [3, 4, 6], 3, 34)
vt_resnet50 = _builder("bottleneck", [3, 4, 6], 3, 50)
