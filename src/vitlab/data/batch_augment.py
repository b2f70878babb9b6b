"""The training transforms of ``transforms.py`` for whole batches of images
on any device: random crop with padding, horizontal flip, AutoAugment
(CIFAR-10, ImageNet and SVHN policies), RandAugment, normalisation and
random erasing, in that order, each image with its own random draw.

They follow torchvision.transforms.v2 (the per-image path), with the same
distributions: AutoAugment (Cubuk et al., CVPR 2019) draws one of the
policy's 25 sub-policies per image, then applies each of its two operations
with the operation's probability, at its magnitude bin (of 10), with a random
sign for the signed operations; RandAugment (Cubuk et al., 2020) applies
``num_ops`` operations, each drawn uniformly from 14 (Identity included), at
one fixed magnitude bin of 31, signed at random. Geometric operations use
nearest-neighbour sampling and zero fill, as torchvision's.

Images are uint8 (B, C, H, W) with C = 1 or 3, or float in [0, 1]; a uint8
batch is worked on as float32 holding whole grey levels, every operation
ending with the truncation that torchvision's uint8 kernels do, so that each
operation gives torchvision's result on each image (to float rounding:
``tests/test_batch_augment.py`` says which are exact and which within one
grey level). A float batch follows torchvision's float kernels.

Randomness: each transform's ``draw(n, generator)`` takes the random numbers
of ``n`` images at once from a CPU ``torch.Generator`` (the same numbers
whatever the device), and ``apply(x, params)`` uses row i of each for image
i, so the caller can draw a whole epoch up front and index the rows by
sample: ``train/loader.py`` does that, which keeps the augmentation of a
sample a function of (seed, epoch, sample index) alone. Images are grouped
by operation in each step (one batched call per operation, the five affine
operations in one ``grid_sample``), and the grouping is worked out on the
CPU, so a CUDA batch never waits on the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as nnf

from .transforms import _MAX_MAGNITUDE, AUTO_AUGMENT_POLICIES, ERASING_RATIO, ERASING_SCALE, ERASING_VALUE

if TYPE_CHECKING:
    from ..config import DataConfig
    from .datasets import DatasetInfo

__all__ = ["OPS", "AUTO_AUGMENT_SUB_POLICIES", "apply_op", "BatchAutoAugment", "BatchRandAugment",
           "BatchRandomErasing", "BatchTransforms", "unbatched_transforms"]

# --------------------------------------------------------------------------- the operations

# Every operation's magnitudes: (largest magnitude, signed); the bins run linearly from 0 to the largest
# (translations: a fraction 150/331 of the image side). Posterize's bins go from 8 bits down to 4,
# Solarize's threshold from 1 (nothing inverted) down to 0 (everything); the last three take no magnitude.
OPS = {
    "Identity": (None, False),
    "ShearX": (0.3, True),
    "ShearY": (0.3, True),
    "TranslateX": (150.0 / 331.0, True),  # x image width
    "TranslateY": (150.0 / 331.0, True),  # x image height
    "Rotate": (30.0, True),  # degrees
    "Brightness": (0.9, True),  # factor 1 + magnitude
    "Color": (0.9, True),  # saturation
    "Contrast": (0.9, True),
    "Sharpness": (0.9, True),
    "Posterize": (None, False),
    "Solarize": (None, False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
    "Invert": (None, False),
}
_NAMES = tuple(OPS)
_INDEX = {name: i for i, name in enumerate(_NAMES)}
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_RAND_AUGMENT_OPS = _NAMES[:14]  # all but Invert, in torchvision's order


def _bins(name: str, num_bins: int, height: int, width: int) -> torch.Tensor:
    """The magnitude of each bin of ``name`` (float64, zeros for the operations without one), from the
    float32 values torchvision computes, so that thresholds and shifts land on the same grey levels and
    pixels."""
    top, _ = OPS[name]
    if name in ("TranslateX", "TranslateY"):
        top *= width if name == "TranslateX" else height
    if top is not None:
        return torch.linspace(0.0, top, num_bins).double()
    if name == "Posterize":  # bits, 8 -> 4, rounded half to even
        return (8 - torch.arange(num_bins) / ((num_bins - 1) / 4)).round().double()
    if name == "Solarize":
        return torch.linspace(1.0, 0.0, num_bins).double()
    return torch.zeros(num_bins, dtype=torch.float64)


def _magnitudes(names, num_bins: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(table (len(names), num_bins) float64, signed (len(names),) bool) for the operations ``names``."""
    table = torch.stack([_bins(n, num_bins, height, width) for n in names])
    return table, torch.tensor([OPS[n][1] for n in names])


def _inverse_affine(angle, translate_x, translate_y, shear_x, shear_y, centre_x, centre_y) -> torch.Tensor:
    """(B, 2, 3) float64: for each image the matrix that takes an output pixel, in coordinates with the
    origin at the image centre, to the input pixel it samples, for the map T C R S C^-1 (T: the
    translation, C: a shift of the origin to ``centre``, R: the rotation by ``angle`` degrees, S: the
    shears, in degrees). Arguments are (B,) float64 tensors. R and S have determinant 1, so R S = [a b; c d]
    inverts as [d -b; -c a]."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    cx, cy = centre_x + translate_x, centre_y + translate_y
    row0 = torch.stack([d, -b, centre_x - d * cx - (-b) * cy], -1)
    row1 = torch.stack([-c, a, centre_y - (-c) * cx - a * cy], -1)
    return torch.stack([row0, row1], 1)


def _geometric_matrices(op: torch.Tensor, mag: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 2, 3) float32 sampling matrices of the geometric operations ``op`` (indices into ``_NAMES``)
    with signed magnitudes ``mag`` (float64), all on the CPU. Shears are about the top-left corner (the
    origin of the official AutoAugment), translations move whole pixels (the magnitude truncated), and a
    rotation by m degrees turns the image counter-clockwise."""
    zero = torch.zeros_like(mag)
    is_ = {n: op == _INDEX[n] for n in _GEOMETRIC}
    shear = torch.rad2deg(torch.atan(mag))  # official AutoAugment shears by the magnitude itself: angle atan(m)
    shift = torch.trunc(mag)
    corner_x, corner_y = zero - width * 0.5, zero - height * 0.5  # shears: centre at the top-left corner
    shearing = is_["ShearX"] | is_["ShearY"]
    theta = _inverse_affine(
        angle=torch.where(is_["Rotate"], -torch.remainder(mag, 360.0), zero),
        translate_x=torch.where(is_["TranslateX"], shift, zero),
        translate_y=torch.where(is_["TranslateY"], shift, zero),
        shear_x=torch.where(is_["ShearX"], shear, zero),
        shear_y=torch.where(is_["ShearY"], shear, zero),
        centre_x=torch.where(shearing, corner_x, zero),
        centre_y=torch.where(shearing, corner_y, zero))
    return theta.float()


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` (B, C, H, W) float resampled (nearest neighbour, zero outside) through its own
    matrix of ``theta`` (B, 2, 3) float32 (pixel units, origin at the image centre)."""
    b, _, h, w = x.shape
    dev = x.device
    xs = torch.arange(w, dtype=torch.float32, device=dev) - (w - 1) * 0.5  # pixel centres
    ys = torch.arange(h, dtype=torch.float32, device=dev) - (h - 1) * 0.5
    pixels = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=dev)], -1)
    # grid_sample wants [-1, 1] across the image: divide the matrix by the half sides first
    scaled = theta.to(dev).transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], device=dev)  # (B, 3, 2)
    grid = pixels.view(1, h * w, 3).expand(b, -1, -1).bmm(scaled).view(b, h, w, 2)
    return nnf.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _per_image(v: torch.Tensor, x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return v.to(dtype).to(x.device).view(-1, 1, 1, 1)


def _finish(x: torch.Tensor, bound: float, integer: bool) -> torch.Tensor:
    """Clamp to the valid range; uint8 work truncates to whole grey levels (as a cast to uint8 does)."""
    x = x.clamp_(0, bound)
    return x.floor_() if integer else x


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a * b + c, float32, rounded once: the rounding of torch's vectorised ``add(c, a, alpha=b)``, which
    torchvision's blends use (the float64 product of two float32 numbers is exact)."""
    return (a.double() * b.double() + c.double()).float()


def _blend(img: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor, bound: float, integer: bool):
    """ratio * img + (1 - ratio) * other, per image ratio (B,) float64."""
    r, s = _per_image(ratio, img), _per_image(1.0 - ratio, img)
    return _finish(_fma(other, s, img * r), bound, integer)


def _grey(x: torch.Tensor, integer: bool) -> torch.Tensor:
    """(B, 1, H, W) luma of RGB (ITU-R 601-2), floored for uint8 work."""
    r, g, b = x.unbind(1)
    grey = r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)
    return grey.floor_() if integer else grey


def _brightness(x, m, bound, integer):
    return _finish(x * _per_image(1.0 + m, x), bound, integer)


def _color(x, m, bound, integer):
    if x.shape[1] == 1:  # saturation of a grey image: unchanged (as PIL)
        return x
    return _blend(x, _grey(x, integer), 1.0 + m, bound, integer)


def _contrast(x, m, bound, integer):
    grey = _grey(x, integer) if x.shape[1] == 3 else x
    return _blend(x, grey.mean(dim=(-3, -2, -1), keepdim=True), 1.0 + m, bound, integer)


def _sharpness(x, m, bound, integer):
    """Blend with a smoothed image (3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13); border pixels unchanged."""
    b, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    kernel = torch.full((3, 3), 1.0 / 13.0, device=x.device)
    kernel[1, 1] = 5.0 / 13.0
    smooth = nnf.conv2d(x, kernel.expand(c, 1, 3, 3), groups=c)  # (B, C, H-2, W-2)
    if integer:
        smooth = smooth.round_()
    out = x.clone()
    inner = x[..., 1:-1, 1:-1]
    out[..., 1:-1, 1:-1] = _fma(smooth - inner, _per_image(1.0 - (1.0 + m), x), inner)
    return _finish(out, bound, integer)


def _posterize(x, m, bound, integer):
    bits = _per_image(m, x)
    if integer:  # keep the top `bits` bits
        step = torch.exp2(8.0 - bits)
        return torch.floor(x / step) * step
    levels = torch.exp2(bits)
    return torch.minimum(torch.floor(x * levels), levels - 1).clamp_(min=0) * (1.0 / levels)


def _solarize(x, m, bound, integer):
    threshold = _per_image(bound * m, x)  # compared in float32, as torchvision's uint8 >= float
    return torch.where(x >= threshold, bound - x, x)


def _autocontrast(x, m, bound, integer):
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    flat = hi == lo  # a constant channel stays as it is
    scale = (hi - lo).mul_(1.0 / bound).masked_fill_(flat, 1.0)
    lo = lo.masked_fill(flat, 0.0)
    out = ((x - lo) / scale).clamp_(0, bound)
    return out.floor_() if integer else out


def _equalize(x, m, bound, integer):
    """Histogram equalisation of each channel of each image, with PIL's look-up table: the cumulative
    count below each grey level, in steps of (pixels not at the channel's top level) / 255; a channel
    with no such step stays as it is. Float images are first cut to 256 levels, as torchvision does."""
    b, c, h, w = x.shape
    levels = x if integer else (x * (256.0 - 1e-3)).floor_()
    flat = levels.reshape(b * c, h * w).long()  # (R, HW), R = B*C rows
    rows = torch.arange(b * c, device=x.device)[:, None]
    hist = torch.bincount((flat + rows * 256).flatten(), minlength=b * c * 256).view(b * c, 256)
    at_top = hist.gather(1, flat.amax(1, keepdim=True))
    step = (h * w - at_top) // 255  # (R, 1)
    below = hist.cumsum(1) - hist  # pixels strictly below each level
    lut = ((below + step // 2) // step.clamp(min=1)).clamp_(max=255)
    out = torch.where(step > 0, lut.gather(1, flat), flat).view(b, c, h, w).float()
    return out if integer else out * (1.0 / 255)


def _invert(x, m, bound, integer):
    return bound - x


_POINTWISE = {"Brightness": _brightness, "Color": _color, "Contrast": _contrast, "Sharpness": _sharpness,
              "Posterize": _posterize, "Solarize": _solarize, "AutoContrast": _autocontrast,
              "Equalize": _equalize, "Invert": _invert}


def _apply_ops(x: torch.Tensor, op: torch.Tensor, mag: torch.Tensor, integer: bool) -> torch.Tensor:
    """Image i of ``x`` (B, C, H, W) float work gets operation ``op[i]`` (an index into ``_NAMES``; -1 or
    Identity: none) with signed magnitude ``mag[i]``; ``op`` and ``mag`` (float64) on the CPU. One batched
    call per operation present (the geometric ones together)."""
    bound = 255.0 if integer else 1.0
    _, _, h, w = x.shape
    geometric = torch.isin(op, torch.tensor([_INDEX[n] for n in _GEOMETRIC]))
    groups = [(geometric, None)] + [(op == _INDEX[n], n) for n in _POINTWISE]
    for chosen, name in groups:
        idx = chosen.nonzero().squeeze(1)
        if len(idx) == 0:
            continue
        dev_idx = idx.to(x.device, non_blocking=True)
        part = x.index_select(0, dev_idx)
        if name is None:
            part = _affine(part, _geometric_matrices(op[idx], mag[idx], h, w))
        else:
            part = _POINTWISE[name](part, mag[idx], bound, integer)
        x.index_put_((dev_idx,), part)
    return x


def _to_work(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images (B, 1 or 3, H, W), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise TypeError(f"expected uint8 or float images, got {x.dtype}")
    return x.to(torch.float32, copy=True), x.dtype == torch.uint8


def _from_work(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.to(like.dtype)


def apply_op(x: torch.Tensor, name: str, magnitude) -> torch.Tensor:
    """One AutoAugment/RandAugment operation ``name`` (a key of ``OPS``) on every image of ``x`` (B, C, H,
    W) uint8 or float in [0, 1], with the signed ``magnitude`` (a number, or one per image) as torchvision
    takes it: shear factor, pixels, degrees, factor - 1, bits, or threshold fraction."""
    if name not in OPS:
        raise ValueError(f"unknown operation {name!r}; valid: {', '.join(OPS)}")
    work, integer = _to_work(x)
    mag = torch.as_tensor(magnitude, dtype=torch.float64).cpu().expand(len(x)).clone()
    op = torch.full((len(x),), _INDEX[name])
    return _from_work(_apply_ops(work, op, mag, integer), x)


# --------------------------------------------------------------------------- AutoAugment and RandAugment

def _parse_policy(text: str) -> tuple:
    """'Invert .1 - Contrast .2 6; ...' -> ((('Invert', .1, None), ('Contrast', .2, 6)), ...): per sub-policy
    two (operation, probability, magnitude bin or '-' for none) triples."""
    policy = []
    for sub in text.split(";"):
        f = sub.split()
        policy.append(tuple((f[k], float(f[k + 1]), None if f[k + 2] == "-" else int(f[k + 2])) for k in (0, 3)))
    return tuple(policy)


# The policies found by AutoAugment (Cubuk et al. 2019, appendix), as torchvision lists them.
AUTO_AUGMENT_SUB_POLICIES = {
    "cifar10": _parse_policy(
        "Invert .1 - Contrast .2 6; Rotate .7 2 TranslateX .3 9; Sharpness .8 1 Sharpness .9 3;"
        "ShearY .5 8 TranslateY .7 9; AutoContrast .5 - Equalize .9 -; ShearY .2 7 Posterize .3 7;"
        "Color .4 3 Brightness .6 7; Sharpness .3 9 Brightness .7 9; Equalize .6 - Equalize .5 -;"
        "Contrast .6 7 Sharpness .6 5; Color .7 7 TranslateX .5 8; Equalize .3 - AutoContrast .4 -;"
        "TranslateY .4 3 Sharpness .2 6; Brightness .9 6 Color .2 8; Solarize .5 2 Invert 0 -;"
        "Equalize .2 - AutoContrast .6 -; Equalize .2 - Equalize .6 -; Color .9 9 Equalize .6 -;"
        "AutoContrast .8 - Solarize .2 8; Brightness .1 3 Color .7 0; Solarize .4 5 AutoContrast .9 -;"
        "TranslateY .9 9 TranslateY .7 9; AutoContrast .9 - Solarize .8 3; Equalize .8 - Invert .1 -;"
        "TranslateY .7 9 AutoContrast .9 -"),
    "imagenet": _parse_policy(
        "Posterize .4 8 Rotate .6 9; Solarize .6 5 AutoContrast .6 -; Equalize .8 - Equalize .6 -;"
        "Posterize .6 7 Posterize .6 6; Equalize .4 - Solarize .2 4; Equalize .4 - Rotate .8 8;"
        "Solarize .6 3 Equalize .6 -; Posterize .8 5 Equalize 1 -; Rotate .2 3 Solarize .6 8;"
        "Equalize .6 - Posterize .4 6; Rotate .8 8 Color .4 0; Rotate .4 9 Equalize .6 -;"
        "Equalize 0 - Equalize .8 -; Invert .6 - Equalize 1 -; Color .6 4 Contrast 1 8;"
        "Rotate .8 8 Color 1 2; Color .8 8 Solarize .8 7; Sharpness .4 7 Invert .6 -;"
        "ShearX .6 5 Equalize 1 -; Color .4 0 Equalize .6 -; Equalize .4 - Solarize .2 4;"
        "Solarize .6 5 AutoContrast .6 -; Invert .6 - Equalize 1 -; Color .6 4 Contrast 1 8;"
        "Equalize .8 - Equalize .6 -"),
    "svhn": _parse_policy(
        "ShearX .9 4 Invert .2 -; ShearY .9 8 Invert .7 -; Equalize .6 - Solarize .6 6;"
        "Invert .9 - Equalize .6 -; Equalize .6 - Rotate .9 3; ShearX .9 4 AutoContrast .8 -;"
        "ShearY .9 8 Invert .4 -; ShearY .9 5 Solarize .2 6; Invert .9 - AutoContrast .8 -;"
        "Equalize .6 - Rotate .9 3; ShearX .9 4 Solarize .3 3; ShearY .8 8 Invert .7 -;"
        "Equalize .9 - TranslateY .6 6; Invert .9 - Equalize .6 -; Contrast .3 3 Rotate .8 4;"
        "Invert .8 - TranslateY 0 2; ShearY .7 6 Solarize .4 8; Invert .6 - Rotate .8 4;"
        "ShearY .3 7 TranslateX .9 3; ShearX .1 6 Invert .6 -; Solarize .7 2 TranslateY .6 7;"
        "ShearY .8 4 Invert .8 -; ShearX .7 9 TranslateY .8 3; ShearY .8 5 AutoContrast .7 -;"
        "ShearX .7 2 Invert .1 -"),
}
assert set(AUTO_AUGMENT_SUB_POLICIES) == set(AUTO_AUGMENT_POLICIES)


class _Batched:
    """A batched random transform: ``draw(n, generator)`` -> {name: (n, ...) CPU tensor}, the random
    numbers of n images; ``apply(x, params)`` with one row per image of x; ``x = t(x, generator)`` both."""

    def draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        work, integer = _to_work(x)
        return _from_work(self._apply(work, params, integer), x)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(len(x), generator))

    def _apply(self, x: torch.Tensor, params: dict, integer: bool) -> torch.Tensor:
        raise NotImplementedError


class _OpSequence(_Batched):
    """A transform that applies a planned sequence of operations: ``plan(params, height, width)`` ->
    [(op index per image, magnitude per image), ...], one entry per step (op -1: no operation)."""

    def plan(self, params: dict, height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def _apply(self, x, params, integer):
        for op, mag in self.plan(params, x.shape[-2], x.shape[-1]):
            x = _apply_ops(x, op, mag, integer)
        return x


class BatchAutoAugment(_OpSequence):
    """AutoAugment with the policy ``policy`` ('cifar10' | 'imagenet' | 'svhn'), as
    ``torchvision.transforms.v2.AutoAugment`` (nearest interpolation, zero fill) for each image."""

    def __init__(self, policy: str):
        if policy not in AUTO_AUGMENT_SUB_POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; valid: {', '.join(AUTO_AUGMENT_SUB_POLICIES)}")
        self.policy = policy
        subs = AUTO_AUGMENT_SUB_POLICIES[policy]
        self.ops = torch.tensor([[_INDEX[s[0]] for s in sub] for sub in subs])  # (P, 2)
        self.prob = torch.tensor([[s[1] for s in sub] for sub in subs], dtype=torch.float32)  # (P, 2)
        self.bin = torch.tensor([[s[2] or 0 for s in sub] for sub in subs])  # (P, 2)

    def draw(self, n, generator):
        return {"aa_policy": torch.randint(len(self.ops), (n,), generator=generator),
                "aa_coin": torch.rand(n, 2, generator=generator),  # apply step k when coin <= probability
                "aa_sign": torch.rand(n, 2, generator=generator)}  # negate when <= 0.5 (signed operations)

    def plan(self, params: dict, height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per step, (operation index into ``OPS`` or -1 for none (B,), signed magnitude (B,) float64)."""
        table, signed = _magnitudes(_NAMES, 10, height, width)
        pol = params["aa_policy"]
        steps = []
        for k in range(2):
            op = self.ops[pol, k]
            mag = table[op, self.bin[pol, k]]
            mag = torch.where(signed[op] & (params["aa_sign"][:, k] <= 0.5), -mag, mag)
            steps.append((torch.where(params["aa_coin"][:, k] <= self.prob[pol, k], op, -1), mag))
        return steps

    def __repr__(self) -> str:
        return f"BatchAutoAugment({self.policy!r})"


class BatchRandAugment(_OpSequence):
    """RandAugment: ``num_ops`` operations per image, each drawn uniformly from 14 (Identity included),
    at bin ``magnitude`` of ``num_bins``, as ``torchvision.transforms.v2.RandAugment``."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_bins: int = _MAX_MAGNITUDE + 1):
        if num_ops < 0 or not 0 <= magnitude < num_bins:
            raise ValueError(f"RandAugment needs num_ops >= 0 and 0 <= magnitude < {num_bins}")
        self.num_ops, self.magnitude, self.num_bins = num_ops, magnitude, num_bins
        self.ops = torch.tensor([_INDEX[n] for n in _RAND_AUGMENT_OPS])

    def draw(self, n, generator):
        return {"ra_op": torch.randint(len(self.ops), (n, self.num_ops), generator=generator),
                "ra_sign": torch.rand(n, self.num_ops, generator=generator)}

    def plan(self, params: dict, height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        table, signed = _magnitudes(_NAMES, self.num_bins, height, width)
        steps = []
        for k in range(self.num_ops):
            op = self.ops[params["ra_op"][:, k]]
            mag = table[op, self.magnitude]
            steps.append((op, torch.where(signed[op] & (params["ra_sign"][:, k] <= 0.5), -mag, mag)))
        return steps

    def __repr__(self) -> str:
        return f"BatchRandAugment(num_ops={self.num_ops}, magnitude={self.magnitude})"


class BatchRandomErasing(_Batched):
    """Random erasing, as ``torchvision.transforms.v2.RandomErasing``: with probability ``p`` a box of
    ``scale`` of the image's area and aspect ratio (height / width) drawn log-uniformly from ``ratio`` is
    set to ``value``; of 10 tries, the first box that fits is taken, and none when none fits."""

    tries = 10

    def __init__(self, p: float = 0.5, scale=ERASING_SCALE, ratio=ERASING_RATIO, value: float = ERASING_VALUE):
        self.p, self.scale, self.ratio, self.value = p, tuple(scale), tuple(ratio), float(value)

    def draw(self, n, generator):
        log_ratio = torch.log(torch.tensor(self.ratio))
        return {"re_coin": torch.rand(n, generator=generator),
                "re_scale": torch.empty(n, self.tries).uniform_(*self.scale, generator=generator),
                "re_log_ratio": torch.empty(n, self.tries).uniform_(*log_ratio.tolist(), generator=generator),
                "re_place": torch.rand(n, 2, dtype=torch.float64, generator=generator)}

    def boxes(self, params: dict, height: int, width: int) -> tuple[torch.Tensor, ...]:
        """(erase (B,) bool, top, left, box height, box width (B,) long), on the CPU."""
        area = height * width * params["re_scale"].double()
        aspect = torch.exp(params["re_log_ratio"]).double()
        h = torch.sqrt(area * aspect).round().long()  # rounded half to even, as Python's round
        w = torch.sqrt(area / aspect).round().long()
        fits = (h < height) & (w < width)
        first = fits.int().argmax(1, keepdim=True)  # the first try that fits
        h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
        erase = (params["re_coin"] < self.p) & fits.any(1)
        top = (params["re_place"][:, 0] * (height - h + 1)).long().clamp_(max=height - h)
        left = (params["re_place"][:, 1] * (width - w + 1)).long().clamp_(max=width - w)
        return erase, top, left, h, w

    def _apply(self, x, params, integer):
        b, _, height, width = x.shape
        erase, top, left, h, w = (t.to(x.device) for t in self.boxes(params, height, width))
        rows = torch.arange(height, device=x.device)
        cols = torch.arange(width, device=x.device)
        inside_r = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (B, H)
        inside_c = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (B, W)
        box = (inside_r[:, :, None] & inside_c[:, None, :] & erase[:, None, None]).unsqueeze(1)
        return x.masked_fill(box, self.value)

    def apply(self, x, params):
        """On normalised float images (the step comes after normalisation)."""
        return self._apply(x, params, False)

    def __repr__(self) -> str:
        return f"BatchRandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, value={self.value})"


# --------------------------------------------------------------------------- the whole pipeline

def unbatched_transforms(cfg: DataConfig, info: DatasetInfo) -> list[str]:
    """The configured training transforms that have no batched form (empty: ``BatchTransforms`` does
    them all)."""
    missing = []
    if cfg.img_size not in (None, info.img_size):
        missing.append(f"data.img_size={cfg.img_size} (resizing from {info.img_size} px)")
    return missing


class BatchTransforms:
    """A whole batch through the transforms of ``transforms.py``, in its order: uint8 (B, C, H, W) on any
    device -> random crop (zero padding ``data.crop_padding``), horizontal flip, AutoAugment, RandAugment
    -> float32 / 255, normalised with ``info.mean``/``info.std`` -> random erasing. ``train=False``:
    only the normalisation. ``draw`` takes every random number of n images, crop offsets and flips
    first (both always drawn, so the stream is the same whatever the options), then those of the
    augmentations that are on."""

    def __init__(self, cfg: DataConfig, info: DatasetInfo, train: bool, device="cpu"):
        dev = torch.device(device)
        self.pad = cfg.crop_padding if train else 0
        self.flip = bool(cfg.hflip and train)
        self.steps: list[_Batched] = []
        if train and cfg.auto_augment:
            self.steps.append(BatchAutoAugment(cfg.auto_augment.lower()))
        if train and cfg.rand_augment:
            self.steps.append(BatchRandAugment(cfg.rand_augment, cfg.rand_augment_magnitude))
        self.erasing = BatchRandomErasing(cfg.random_erasing) if train and cfg.random_erasing else None
        self.mean = torch.tensor(info.mean, device=dev).view(1, -1, 1, 1)
        self.std = torch.tensor(info.std, device=dev).view(1, -1, 1, 1)

    def draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        params = {"crop": torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator),
                  "flip": torch.rand(n, generator=generator) < 0.5}
        for step in self.steps + ([self.erasing] if self.erasing else []):
            params.update(step.draw(n, generator))
        return params

    def __call__(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"expected uint8 images (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if self.steps and images.shape[1] not in (1, 3):
            raise ValueError(f"AutoAugment and RandAugment need 1 or 3 channels, got {images.shape[1]}")
        x, dev = images, images.device
        if self.pad:  # image i: the window at offset (top, left) = params["crop"][i] of the padded image
            b, c, h, w = x.shape
            windows = nnf.pad(x, (self.pad,) * 4).unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2p+1, 2p+1, H, W)
            off = params["crop"].to(dev)
            x = windows.permute(0, 2, 3, 1, 4, 5)[torch.arange(b, device=dev), off[:, 0], off[:, 1]]
        if self.flip:
            x = torch.where(params["flip"].to(dev)[:, None, None, None], x.flip(-1), x)
        x = x.float()  # whole grey levels 0..255
        for step in self.steps:
            x = step._apply(x, params, True)
        x = (x.div_(255) - self.mean.to(dev)) / self.std.to(dev)
        if self.erasing:
            x = self.erasing.apply(x, params)
        return x

    def __repr__(self) -> str:
        parts = ([f"random crop (pad {self.pad})"] if self.pad else []) + (["hflip"] if self.flip else [])
        parts += [repr(s) for s in self.steps] + ["normalise"] + ([repr(self.erasing)] if self.erasing else [])
        return f"BatchTransforms({', '.join(parts)})"
