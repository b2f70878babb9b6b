"""Hybrid Vision Transformer: a ResNet's feature map cut into 1x1 patches.

Paper: Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale", ICLR 2021 (arXiv:2010.11929), section 3.1
"Hybrid Architecture": the input sequence is formed from the feature map of a
CNN instead of raw image patches; with patches of 1x1 pixel the sequence is
the flattened feature map, projected to the Transformer width. Section 4.1:
the paper's ResNets replace BatchNorm with GroupNorm and use standardized
convolutions (as BiT, Kolesnikov et al. 2020), and R50+ViT-B/16 removes
ResNet-50's stage 4 and puts its blocks into stage 3, giving stages of
(3, 4, 9) bottlenecks and an output stride of 16 (a 14x14 grid at 224 px).

Checked against timm's ``vit_base_r50_s16_224`` (``vision_transformer_hybrid.py``,
whose backbone is ``resnetv2.ResNetV2`` with ``preact=False``,
``stem_type='same'`` and ``StdConv2dSame(eps=1e-8)``) and against the key
layout of Google's ``R50+ViT-B_16.npz`` as timm's ``.npz`` loader reads it.
Module and parameter names are timm's, so timm state dicts load one to one;
``vitlab.weights`` maps the Google layout (``conv_root``, ``blockN/unitM``).
The tests compare logits with timm's on random weights.

The model, top to bottom (shapes for R50+ViT-B/16 at 224 px):

    image (B, 3, 224, 224)
      -> HybridEmbed
           backbone (ResNetV2)
             stem: std-conv 7x7/2 (64) + GN + ReLU         (B, 64, 112, 112)
                   max-pool 3x3/2, TF 'SAME' padding        (B, 64, 56, 56)
             stage 0: 3 bottlenecks, stride 1               (B, 256, 56, 56)
             stage 1: 4 bottlenecks, stride 2               (B, 512, 28, 28)
             stage 2: 9 bottlenecks, stride 2               (B, 1024, 14, 14)
           proj: 1x1 conv 1024 -> 768 (the paper's "patch" projection)
           flatten                                          (B, 196, 768)
      -> the ViT of ``vit.py`` unchanged: class token, position embedding,
         12 pre-norm blocks, final LayerNorm, head          (B, 1000)

Every convolution of the backbone is weight-standardised (each filter
normalised to zero mean and unit variance over its inputs before use) and
pads like TensorFlow's 'SAME': the output is ceil(size / stride) and the
padding, computed from the input size at run time, puts the odd pixel at the
bottom/right. That is what the Google weights were trained with; PyTorch's
symmetric padding would shift every stride-2 layer by half a pixel on even
inputs. The numerics are timm's: w / sqrt(var + 1e-8) and GroupNorm eps 1e-5.
Google's JAX code (``vit_jax/models_resnet.py``) divides by (std + 1e-5) and
uses Flax's GroupNorm eps 1e-6; with a GroupNorm after every conv the two
differ in the last digits only.

``stem='cifar'`` is for small images (vitlab's own, not the paper's): one
3x3 stride-1 std-conv + GN + ReLU and no max-pool, and every stage strides
by 2, so ``layers=(2, 2)`` turns a 32 px image into an 8x8 grid (output
stride 4), the token count of the CIFAR ViT with patch 4.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .layers import pair
from .vit import VisionTransformer

STEMS = ("imagenet", "cifar")
GN_GROUPS = 32  # BiT's GroupNorm; fewer where the channels are not a multiple (see GroupNormAct)


# ------------------------------------------------------------------------------------------------
# layers
# ------------------------------------------------------------------------------------------------
def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding of one spatial dimension: (before, after).

    The output has ceil(size / stride) positions; the input is padded just
    enough for the last window to fit, the odd pixel (if any) after.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], value: float = 0.0) -> torch.Tensor:
    """Pad (B, C, H, W) for a 'SAME' window of ``kernel`` and ``stride``."""
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


class StdConv2dSame(nn.Conv2d):
    """Conv2d (no bias) with weight standardisation and TF 'SAME' padding.

    Weight standardisation (Qiao et al. 2019): each output filter is
    normalised over its (in, kh, kw) entries to zero mean and unit variance
    (biased variance, + eps) at every call; the stored weight is the raw one.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, eps: float = 1e-8):
        # A stride-1 odd kernel pads (k - 1) / 2 on each side whatever the size: the conv does it
        # itself. Strided convs pad at run time, as the padding depends on the input size.
        dynamic = stride > 1 or kernel_size % 2 == 0
        padding = 0 if dynamic else (kernel_size - 1) // 2
        super().__init__(in_chans, out_chans, kernel_size, stride=stride, padding=padding, bias=False)
        self.dynamic = dynamic
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, correction=0)
        return (self.weight - mean) * torch.rsqrt(var + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic:
            x = pad_same(x, self.kernel_size, self.stride)
        return F.conv2d(x, self.standardized_weight(), None, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding=SAME, eps={self.eps}")


class GroupNormAct(nn.GroupNorm):
    """GroupNorm (eps 1e-5), then ReLU unless ``act=False``.

    One module (timm's ``GroupNormAct``), so the parameters are named
    ``norm.weight`` / ``norm.bias`` as in timm. Groups: gcd(32, channels),
    i.e. BiT's 32 whenever the channels are a multiple of 32 (all of R50's
    and the CIFAR hybrid's), and still a divisor of the channels of smaller
    backbones (8 channels: 8 groups; 48 channels: 16).
    """

    def __init__(self, channels: int, act: bool = True, eps: float = 1e-5):
        super().__init__(math.gcd(GN_GROUPS, channels), channels, eps=eps)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.relu(x, inplace=True) if self.act else x

    def extra_repr(self) -> str:
        return super().extra_repr() + f", act={'relu' if self.act else 'none'}"


class MaxPool2dSame(nn.Module):
    """Max-pool with TF 'SAME' padding; pads with -inf so a pad never wins the max."""

    def __init__(self, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = (self.kernel_size,) * 2, (self.stride,) * 2
        return F.max_pool2d(pad_same(x, k, s, value=-math.inf), k, s)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


class Downsample(nn.Module):
    """Projection shortcut: 1x1 std-conv (with the block's stride) + GN, no activation."""

    def __init__(self, in_chans: int, out_chans: int, stride: int):
        super().__init__()
        self.conv = StdConv2dSame(in_chans, out_chans, 1, stride=stride)
        self.norm = GroupNormAct(out_chans, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """Post-activation bottleneck (ResNet v1.5: the stride is on the 3x3 conv).

        x -> 1x1 conv (out/4) + GN + ReLU -> 3x3 conv (out/4, stride) + GN + ReLU
          -> 1x1 conv (out) + GN -> + shortcut(x) -> ReLU

    The shortcut is the identity, or a projection (``Downsample``) in the
    first block of a stage, where the width and the size change.
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1, project: bool = False):
        super().__init__()
        mid = out_chans // 4
        self.downsample = Downsample(in_chans, out_chans, stride) if project else None
        self.conv1 = StdConv2dSame(in_chans, mid, 1)
        self.norm1 = GroupNormAct(mid)
        self.conv2 = StdConv2dSame(mid, mid, 3, stride=stride)
        self.norm2 = GroupNormAct(mid)
        self.conv3 = StdConv2dSame(mid, out_chans, 1)
        self.norm3 = GroupNormAct(out_chans, act=False)  # the ReLU comes after the sum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm1(self.conv1(x))
        x = self.norm2(self.conv2(x))
        x = self.norm3(self.conv3(x))
        return F.relu(x + shortcut, inplace=True)


class ResNetStage(nn.Module):
    """``depth`` bottlenecks; the first one strides and projects the shortcut."""

    def __init__(self, in_chans: int, out_chans: int, depth: int, stride: int):
        super().__init__()
        self.blocks = nn.Sequential(*[
            Bottleneck(in_chans if j == 0 else out_chans, out_chans, stride if j == 0 else 1, project=j == 0)
            for j in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


# ------------------------------------------------------------------------------------------------
# backbone and embedding
# ------------------------------------------------------------------------------------------------
class ResNetV2(nn.Module):
    """The hybrid's CNN: a stem and ``len(layers)`` stages of bottlenecks.

    Stage i has ``layers[i]`` blocks and 4 * width * 2^i output channels
    (256, 512, 1024 for width 64). Strides: the 'imagenet' stem reduces by 4
    (conv /2, max-pool /2), then stage 0 keeps the size and every later stage
    halves it (R50's (3, 4, 9): output stride 16). The 'cifar' stem keeps the
    size and every stage halves it ((2, 2): output stride 4). forward gives
    the last stage's map (B, 4 * width * 2^(len(layers)-1), H', W'); timm's
    final ``norm`` is the identity without pre-activation and is left out.
    """

    def __init__(self, layers: tuple[int, ...], in_chans: int = 3, width: int = 64, stem: str = "imagenet"):
        super().__init__()
        if stem == "imagenet":
            self.stem = nn.Sequential(OrderedDict([
                ("conv", StdConv2dSame(in_chans, width, 7, stride=2)),
                ("norm", GroupNormAct(width)),
                ("pool", MaxPool2dSame(3, stride=2)),
            ]))
            strides, stage_strides = [2, 2], [1] + [2] * (len(layers) - 1)
        else:  # 'cifar'
            self.stem = nn.Sequential(OrderedDict([
                ("conv", StdConv2dSame(in_chans, width, 3, stride=1)),
                ("norm", GroupNormAct(width)),
            ]))
            strides, stage_strides = [], [2] * len(layers)
        self.strides = tuple(strides + stage_strides)  # every size change, in order (see feature_size)

        stages, chans = [], width
        for i, (depth, stride) in enumerate(zip(layers, stage_strides)):
            out = 4 * width * 2 ** i
            stages.append(ResNetStage(chans, out, depth, stride))
            chans = out
        self.stages = nn.Sequential(*stages)
        self.num_features = chans
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """timm's ResNetV2 init: convs Kaiming-normal (fan_out, ReLU gain), GroupNorms (1, 0).
        Weight standardisation makes the scale of the raw conv weights irrelevant in the
        forward pass. Google's ``ResidualUnit`` starts the last GroupNorm of each branch
        (``gn3``, here ``norm3``) at scale 0, and so does timm's hybrid in effect (its ViT
        init calls ``ResNetV2.init_weights()``, which zeroes it by default); vitlab keeps
        scale 1, so that every parameter gets a gradient from the first step."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_size(self, h: int, w: int) -> tuple[int, int]:
        """Size of the output map for an (h, w) input: each 'SAME' stride-2 layer gives ceil(size / 2)."""
        for s in self.strides:
            h, w = -(-h // s), -(-w // s)
        return h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class HybridEmbed(nn.Module):
    """CNN features as tokens: backbone -> 1x1 conv ``proj`` -> (B, N, D).

    Provides what ``VisionTransformer`` expects of an embedding layer:
    ``grid_size`` (the token grid at the build-time image size),
    ``num_patches``, ``first_conv`` (the input convolution, adapted by
    ``load_pretrained`` to other channel counts) and ``grid_for(h, w)``.
    The grid is computed from the strides, not by running the backbone, so
    building on the meta device costs nothing.
    """

    first_conv = "backbone.stem.conv"

    def __init__(self, img_size: int | tuple[int, int], in_chans: int, embed_dim: int,
                 layers: tuple[int, ...], stem: str, width: int):
        super().__init__()
        self.img_size = pair(img_size)
        self.backbone = ResNetV2(layers, in_chans=in_chans, width=width, stem=stem)
        # the paper's patch embedding with patches of one "pixel" of the feature map
        self.proj = nn.Conv2d(self.backbone.num_features, embed_dim, kernel_size=1)
        self.grid_size = self.grid_for(*self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def grid_for(self, h: int, w: int) -> tuple[int, int]:
        """The token grid of an (h, w) input (any size: 'SAME' padding never drops pixels)."""
        return self.backbone.feature_size(h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.backbone(x))  # (B, D, gh, gw)
        return x.flatten(2).transpose(1, 2)  # (B, gh*gw, D), rows in raster order


# ------------------------------------------------------------------------------------------------
# builder
# ------------------------------------------------------------------------------------------------
def _check_layers(layers) -> tuple[int, ...]:
    if isinstance(layers, int) or not isinstance(layers, (tuple, list)):
        raise ValueError(f"layers must be a list of block counts per stage, e.g. (3, 4, 9), got {layers!r}")
    if not layers:
        raise ValueError("layers must name at least one stage, e.g. (3, 4, 9); got an empty list")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
        raise ValueError(f"layers must be positive block counts, got {list(layers)}")
    return tuple(layers)


def vit_hybrid(img_size: int | tuple[int, int] = 224, in_chans: int = 3, num_classes: int = 1000,
               layers: tuple[int, ...] = (3, 4, 9), stem: str = "imagenet", width: int = 64,
               embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_dim: int = 3072,
               pool: str = "cls", pos_embed: str = "learned", dropout: float = 0.0, attn_dropout: float = 0.0,
               drop_path: float = 0.0, representation_size: int | None = None,
               weight_init: str = "jax") -> VisionTransformer:
    """A hybrid ViT: ResNet-v2 stages (``layers``, ``stem``, ``width``) whose
    output map, projected to ``embed_dim``, is the token sequence of a
    ``VisionTransformer`` (the other arguments are the ViT's, see its docstring).

    Defaults are R50+ViT-B/16 (``vit_r50_b16``): stages (3, 4, 9), width 64,
    'imagenet' stem, 224 px, a 14x14 grid. ``dropout`` and ``drop_path`` act
    on the Transformer only, as in the paper and timm. The backbone keeps its
    own initialisation (see ``ResNetV2.init_weights``); ``weight_init`` sets
    the Transformer's and the 1x1 projection's.
    """
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    layers = _check_layers(layers)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be 1 or more, got {in_chans}")
    size = pair(img_size)
    if min(size) < 1:
        raise ValueError(f"img_size must be positive, got {img_size!r}")
    embed = HybridEmbed(size, in_chans, embed_dim, layers, stem, width)
    return VisionTransformer(
        img_size=size, patch_size=1, in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim,
        depth=depth, num_heads=num_heads, mlp_dim=mlp_dim, pool=pool, pos_embed=pos_embed, dropout=dropout,
        attn_dropout=attn_dropout, drop_path=drop_path, representation_size=representation_size,
        weight_init=weight_init, patch_embed=embed)
