"""Image transforms (torchvision.transforms.v2 on uint8 tensors) and batch
Mixup/CutMix, built from the ``data`` section of the config.

Train, in this order (each step only when its option is on):

    resize to data.img_size           (B, C, s, s)   bilinear, antialiased
    random crop, zero padding data.crop_padding
    horizontal flip                   data.hflip
    AutoAugment                       data.auto_augment: cifar10 | imagenet | svhn
    RandAugment                       data.rand_augment ops, data.rand_augment_magnitude
    uint8 -> float32 in [0, 1], normalise with the dataset's mean/std
    random erasing                    data.random_erasing (probability)

Eval: resize (if set), to float, normalise. Mixup/CutMix act on whole batches
after collation (``batch_mixer``), as in DeiT. ``batch_augment.py`` holds the
same training transforms for whole batches of in-memory images, in this order.

Datasets whose images all have the native size skip the resize unless
``data.img_size`` asks for another size; datasets of mixed sizes
(``imagefolder``) always resize the shorter side and centre-crop to a square.

``cfg`` everywhere here is the data section of the config (any object with
its attributes: ``img_size``, ``crop_padding``, ``hflip``, ``auto_augment``,
``rand_augment``, ``rand_augment_magnitude``, ``random_erasing``, ``mixup``,
``cutmix``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..errors import UserError
from .images import convert_image

if TYPE_CHECKING:
    from .catalog import DatasetInfo

__all__ = ["AUTO_AUGMENT_POLICIES", "MAX_MAGNITUDE", "ERASING_SCALE", "ERASING_RATIO", "ERASING_VALUE",
           "check_transform_options", "build_train_transform", "dataset_eval_transform", "build_eval_transform",
           "describe_transforms", "batch_mixer", "BatchMixer"]

AUTO_AUGMENT_POLICIES = {
    "cifar10": v2.AutoAugmentPolicy.CIFAR10,
    "imagenet": v2.AutoAugmentPolicy.IMAGENET,
    "svhn": v2.AutoAugmentPolicy.SVHN,
}
MAX_MAGNITUDE = 30  # RandAugment's 31 magnitude bins: 0..30
# Random erasing (Zhong et al. 2017; torchvision's defaults): the erased fraction of the area, the box's
# aspect ratio (height / width, drawn log-uniformly) and the value written, after normalisation. Shared
# with the batched version in batch_augment.py.
ERASING_SCALE = (0.02, 0.33)
ERASING_RATIO = (0.3, 3.3)
ERASING_VALUE = 0.0


def check_transform_options(cfg) -> None:
    """Raise UserError for an augmentation option out of range."""
    if cfg.img_size is not None and cfg.img_size <= 0:
        raise UserError(f"data.img_size must be a positive number of pixels or null, got {cfg.img_size}")
    if cfg.crop_padding < 0:
        raise UserError(f"data.crop_padding must be 0 (off) or more pixels, got {cfg.crop_padding}")
    if cfg.auto_augment is not None and cfg.auto_augment.lower() not in AUTO_AUGMENT_POLICIES:
        raise UserError(f"unknown data.auto_augment policy {cfg.auto_augment!r}; valid: "
                        f"{', '.join(AUTO_AUGMENT_POLICIES)} (or null for none)")
    if cfg.rand_augment < 0:
        raise UserError(f"data.rand_augment is a number of ops, 0 (off) or more, got {cfg.rand_augment}")
    if not 0 <= cfg.rand_augment_magnitude <= MAX_MAGNITUDE:
        raise UserError(f"data.rand_augment_magnitude must be in 0..{MAX_MAGNITUDE}, "
                        f"got {cfg.rand_augment_magnitude}")
    if not 0.0 <= cfg.random_erasing <= 1.0:
        raise UserError(f"data.random_erasing is a probability in [0, 1], got {cfg.random_erasing}")
    for key in ("mixup", "cutmix"):
        if getattr(cfg, key) < 0:
            raise UserError(f"data.{key} is an alpha, 0 (off) or more, got {getattr(cfg, key)}")


def _resize(size: int, native: int, fixed_size: bool) -> list:
    if fixed_size:
        return [] if size == native else [v2.Resize((size, size), antialias=True)]
    return [v2.Resize(size, antialias=True), v2.CenterCrop(size)]


def _to_normalised_float(info: DatasetInfo) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(info.mean), list(info.std))]


def build_train_transform(cfg, info: DatasetInfo, fixed_size: bool = True) -> v2.Compose:
    """uint8 image (C, H, W) -> augmented, normalised float32 (C, s, s),
    s = data.img_size or the native size. ``fixed_size``: every image already
    has the native square size (no resize needed unless asked)."""
    check_transform_options(cfg)
    size = cfg.img_size or info.img_size
    ops = _resize(size, info.img_size, fixed_size)
    if cfg.crop_padding:
        ops.append(v2.RandomCrop(size, padding=cfg.crop_padding))
    if cfg.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if cfg.auto_augment:
        ops.append(v2.AutoAugment(AUTO_AUGMENT_POLICIES[cfg.auto_augment.lower()]))
    if cfg.rand_augment:
        ops.append(v2.RandAugment(num_ops=cfg.rand_augment, magnitude=cfg.rand_augment_magnitude,
                                  num_magnitude_bins=MAX_MAGNITUDE + 1))
    ops += _to_normalised_float(info)
    if cfg.random_erasing:
        ops.append(v2.RandomErasing(p=cfg.random_erasing, scale=ERASING_SCALE, ratio=ERASING_RATIO,
                                    value=ERASING_VALUE))
    return v2.Compose(ops)


def dataset_eval_transform(cfg, info: DatasetInfo, fixed_size: bool = True) -> v2.Compose:
    """The eval transform of a dataset's own uint8 images: resize, normalise."""
    check_transform_options(cfg)
    return v2.Compose(_resize(cfg.img_size or info.img_size, info.img_size, fixed_size)
                      + _to_normalised_float(info))


class ToChannels(torch.nn.Module):
    """PIL image or tensor -> uint8 ``tv_tensors.Image`` with ``channels``
    channels: grey is repeated to RGB, RGB turned grey (ITU-R 601-2 luma, as
    PIL), alpha dropped."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, img):
        if isinstance(img, Image.Image):  # as datasets read files: 16-bit scaled, palettes expanded
            img = F.pil_to_tensor(convert_image(img, self.channels))
        elif not isinstance(img, torch.Tensor):
            raise TypeError(f"expected a PIL image or a tensor, got {type(img).__name__}")
        c = img.shape[-3]
        if c in (2, 4):  # drop alpha
            img = img[..., : c - 1, :, :]
            c -= 1
        if c != self.channels:
            img = (img.expand(*img.shape[:-3], 3, *img.shape[-2:]) if self.channels == 3
                   else F.rgb_to_grayscale(img.as_subclass(torch.Tensor), num_output_channels=1))
        return tv_tensors.Image(img)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def build_eval_transform(info: DatasetInfo, img_size: int | None = None) -> Callable:
    """Any image (PIL or uint8 tensor, any size, grey or colour) -> the
    model's input: ``info.in_chans`` channels, shorter side resized to
    ``img_size`` (default: the dataset's size) and centre-cropped square,
    normalised float32 (C, s, s). For ``vitlab predict``."""
    if img_size is not None and img_size <= 0:
        raise UserError(f"image size must be a positive number of pixels, got {img_size}")
    size = img_size or info.img_size
    return v2.Compose([ToChannels(info.in_chans), *_resize(size, info.img_size, fixed_size=False),
                       *_to_normalised_float(info)])


def describe_transforms(cfg) -> str:
    """One line for the log, e.g. ``train: random crop (pad 4), hflip,
    normalise | batch: mixup 0.8 | eval: normalise``."""
    check_transform_options(cfg)
    resize = [f"resize {cfg.img_size}"] if cfg.img_size else []
    train = list(resize)
    if cfg.crop_padding:
        train.append(f"random crop (pad {cfg.crop_padding})")
    if cfg.hflip:
        train.append("hflip")
    if cfg.auto_augment:
        train.append(f"autoaugment {cfg.auto_augment.lower()}")
    if cfg.rand_augment:
        train.append(f"randaugment {cfg.rand_augment} ops magnitude {cfg.rand_augment_magnitude}")
    train.append("normalise")
    if cfg.random_erasing:
        train.append(f"random erasing p={cfg.random_erasing:g}")
    batch = [f"{k} {getattr(cfg, k):g}" for k in ("mixup", "cutmix") if getattr(cfg, k) > 0]
    line = "train: " + ", ".join(train)
    if batch:
        line += " | batch: " + " or ".join(batch)
    return line + " | eval: " + ", ".join(resize + ["normalise"])


class BatchMixer:
    """(x (B, C, H, W) float, y (B,) int) -> (mixed x, soft y (B, num_classes)).
    Mixup or CutMix, one of them chosen at random per batch when both are on."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.transform(x, y.long())
        return x.as_subclass(torch.Tensor), y

    def __repr__(self) -> str:
        return f"BatchMixer({self.transform!r})"


def batch_mixer(cfg, num_classes: int) -> BatchMixer | None:
    """Mixup (data.mixup alpha) and/or CutMix (data.cutmix alpha) on whole
    batches; None when both alphas are 0."""
    check_transform_options(cfg)
    ops = []
    if cfg.mixup > 0:
        ops.append(v2.MixUp(alpha=cfg.mixup, num_classes=num_classes))
    if cfg.cutmix > 0:
        ops.append(v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes))
    if not ops:
        return None
    return BatchMixer(ops[0] if len(ops) == 1 else v2.RandomChoice(ops))
