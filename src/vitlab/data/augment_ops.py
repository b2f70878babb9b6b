"""The pixel operations of AutoAugment and RandAugment on whole batches, each
image with its own magnitude, equal to torchvision's functionals on each image:
shears, translations and rotations (one ``grid_sample`` for the five affine
operations, nearest-neighbour sampling and zero fill, as torchvision's),
brightness, colour (saturation), contrast, sharpness, posterize, solarize,
autocontrast, equalize and invert. Which operations an image gets, and at
which magnitude, is planned in ``batch_augment.py``; random erasing's boxes
are drawn and filled there too.

Images are uint8 (B, C, H, W) with C = 1 or 3, or float in [0, 1]; a uint8
batch is worked on as float32 holding whole grey levels (``to_work``), every
operation ending with the truncation that torchvision's uint8 kernels do, so
that each operation gives torchvision's result on each image (to float
rounding: ``tests/test_batch_augment.py`` says which are exact and which
within one grey level). A float batch follows torchvision's float kernels.

``apply_ops(x, op, mag, integer)`` applies operation ``op[i]`` (an index into
``OP_NAMES``, -1: none) at signed magnitude ``mag[i]`` to image i of the
work batch. On the CPU the images are grouped by operation, one batched call
per operation present. On an accelerator every operation runs on the whole
batch and each image keeps its own result (``torch.where``): no step needs
to know on the host which operations are present, so with ``op`` and ``mag``
already on the device a batch never waits on the host (the work is a few
elementwise passes over small images). Both give the same pixels. The
sampling grid of the geometric operations is computed without TF32, whatever
the global setting, so that it is the float32 grid of the CPU and of
torchvision. ``apply_op`` is one named operation on a whole batch of images,
for tests and users.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as nnf

__all__ = ["OPS", "OP_NAMES", "OP_INDEX", "apply_op", "apply_ops", "to_work", "from_work"]

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
OP_NAMES = tuple(OPS)  # an operation's index: its place here
OP_INDEX = {name: i for i, name in enumerate(OP_NAMES)}
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


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
    """(B, 2, 3) float32 sampling matrices of the geometric operations ``op`` (indices into ``OP_NAMES``)
    with signed magnitudes ``mag`` (float64), all on the CPU. Shears are about the top-left corner (the
    origin of the official AutoAugment), translations move whole pixels (the magnitude truncated), and a
    rotation by m degrees turns the image counter-clockwise."""
    zero = torch.zeros_like(mag)
    is_ = {n: op == OP_INDEX[n] for n in _GEOMETRIC}
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
    scaled = theta.to(dev).transpose(1, 2)  # (B, 3, 2)
    scaled = torch.stack([scaled[..., 0] / (0.5 * w), scaled[..., 1] / (0.5 * h)], -1)
    with full_float32_matmul(dev):
        grid = pixels.view(1, h * w, 3).expand(b, -1, -1).bmm(scaled).view(b, h, w, 2)
    return nnf.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


@contextlib.contextmanager
def full_float32_matmul(device: torch.device):
    """Matrix products in full float32 inside, TF32 off on CUDA whatever the global switch
    (``train.tf32``): TF32's 10-bit mantissa would move sampling points across pixel borders."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


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
    # a histogram per row by scatter_add into a fixed size (bincount would ask the host for the largest value)
    hist = torch.zeros(b * c * 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(0, (flat + rows * 256).flatten(), torch.ones_like(flat).flatten())
    hist = hist.view(b * c, 256)
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


def apply_ops(x: torch.Tensor, op: torch.Tensor, mag: torch.Tensor, integer: bool,
              masked: bool | None = None) -> torch.Tensor:
    """Image i of ``x`` (B, C, H, W) float work gets operation ``op[i]`` (an index into ``OP_NAMES``; -1 or
    Identity: none) with signed magnitude ``mag[i]`` (float64). Grouped (one batched call per operation
    present, the geometric ones together; ``op`` and ``mag`` on the CPU) or ``masked`` (every operation on
    the whole batch, no host read; the default off the CPU): the same pixels."""
    bound = 255.0 if integer else 1.0
    _, _, h, w = x.shape
    if masked if masked is not None else x.device.type != "cpu":
        return _apply_ops_masked(x, op.to(x.device), mag.to(x.device), bound, integer)
    geometric = torch.isin(op, torch.tensor([OP_INDEX[n] for n in _GEOMETRIC]))
    groups = [(geometric, None)] + [(op == OP_INDEX[n], n) for n in _POINTWISE]
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


def _apply_ops_masked(x: torch.Tensor, op: torch.Tensor, mag: torch.Tensor, bound: float,
                      integer: bool) -> torch.Tensor:
    """``apply_ops`` without the host: every operation on the whole batch, each image keeping the
    result of its own (``op`` and ``mag`` on the device of ``x``)."""
    _, _, h, w = x.shape
    geometric = (op >= OP_INDEX[_GEOMETRIC[0]]) & (op <= OP_INDEX[_GEOMETRIC[-1]])
    moved = _affine(x, _geometric_matrices(op, mag, h, w))
    out = torch.where(geometric[:, None, None, None], moved, x)
    for name, fn in _POINTWISE.items():
        chosen = (op == OP_INDEX[name])[:, None, None, None]
        out = torch.where(chosen, fn(x, mag, bound, integer), out)
    return out


def to_work(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(a float32 copy of ``x`` to work on, whether ``x`` is uint8: work in whole grey levels 0..255)."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images (B, 1 or 3, H, W), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise TypeError(f"expected uint8 or float images, got {x.dtype}")
    return x.to(torch.float32, copy=True), x.dtype == torch.uint8


def from_work(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The work batch ``x`` back in the dtype of the images it came from."""
    return x.to(like.dtype)


def apply_op(x: torch.Tensor, name: str, magnitude) -> torch.Tensor:
    """One AutoAugment/RandAugment operation ``name`` (a key of ``OPS``) on every image of ``x`` (B, C, H,
    W) uint8 or float in [0, 1], with the signed ``magnitude`` (a number, or one per image) as torchvision
    takes it: shear factor, pixels, degrees, factor - 1, bits, or threshold fraction."""
    if name not in OPS:
        raise ValueError(f"unknown operation {name!r}; valid: {', '.join(OPS)}")
    work, integer = to_work(x)
    mag = torch.as_tensor(magnitude, dtype=torch.float64).cpu().expand(len(x)).clone()
    op = torch.full((len(x),), OP_INDEX[name])
    return from_work(apply_ops(work, op, mag, integer), x)

