"""The training transforms of ``transforms.py`` for whole batches of images
on any device: random crop with padding, horizontal flip, AutoAugment
(CIFAR-10, ImageNet and SVHN policies), RandAugment, normalisation and
random erasing, in that order, each image with its own random draw. This
module plans which operation each image gets, at which magnitude; the
pixel operations themselves are in ``augment_ops.py``.

They follow torchvision.transforms.v2 (the per-image path), with the same
distributions: AutoAugment (Cubuk et al., CVPR 2019) draws one of the
policy's 25 sub-policies per image, then applies each of its two operations
with the operation's probability, at its magnitude bin (of 10), with a random
sign for the signed operations; RandAugment (Cubuk et al., 2020) applies
``num_ops`` operations, each drawn uniformly from 14 (Identity included), at
one fixed magnitude bin of 31, signed at random.

Randomness: each transform's ``draw(n, generator)`` takes the random numbers
of ``n`` images at once from a CPU ``torch.Generator`` (the same numbers
whatever the device), and ``apply(x, params)`` uses row i of each for image
i, so the caller can draw a whole epoch up front and index the rows by
sample: ``data/loader.py`` does that, which keeps the augmentation of a
sample a function of (seed, epoch, sample index) alone. Images are grouped
by operation in each step (``augment_ops.apply_ops``).

``cfg`` is the data section of the config (any object with its attributes:
``crop_padding``, ``hflip``, ``auto_augment``, ``rand_augment``,
``rand_augment_magnitude``, ``random_erasing``, ``img_size``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as nnf

from .augment_ops import OP_INDEX, OP_NAMES, OPS, apply_ops, from_work, to_work
from .transforms import AUTO_AUGMENT_POLICIES, ERASING_RATIO, ERASING_SCALE, ERASING_VALUE, MAX_MAGNITUDE

if TYPE_CHECKING:
    from .catalog import DatasetInfo

__all__ = ["AUTO_AUGMENT_SUB_POLICIES", "magnitude_bins", "BatchAutoAugment", "BatchRandAugment",
           "BatchRandomErasing", "BatchTransforms", "unbatched_transforms"]

# --------------------------------------------------------------------------- magnitudes

_RAND_AUGMENT_OPS = OP_NAMES[:14]  # all but Invert, in torchvision's order


def magnitude_bins(name: str, num_bins: int, height: int, width: int) -> torch.Tensor:
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
    table = torch.stack([magnitude_bins(n, num_bins, height, width) for n in names])
    return table, torch.tensor([OPS[n][1] for n in names])


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
        work, integer = to_work(x)
        return from_work(self._apply(work, params, integer), x)

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
        return self.apply_steps(x, self.plan(params, x.shape[-2], x.shape[-1]), integer)

    @staticmethod
    def apply_steps(x, steps: list[tuple[torch.Tensor, torch.Tensor]], integer: bool) -> torch.Tensor:
        """The planned steps on the work batch ``x``."""
        for op, mag in steps:
            x = apply_ops(x, op, mag, integer)
        return x


class BatchAutoAugment(_OpSequence):
    """AutoAugment with the policy ``policy`` ('cifar10' | 'imagenet' | 'svhn'), as
    ``torchvision.transforms.v2.AutoAugment`` (nearest interpolation, zero fill) for each image."""

    def __init__(self, policy: str):
        if policy not in AUTO_AUGMENT_SUB_POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; valid: {', '.join(AUTO_AUGMENT_SUB_POLICIES)}")
        self.policy = policy
        subs = AUTO_AUGMENT_SUB_POLICIES[policy]
        self.ops = torch.tensor([[OP_INDEX[s[0]] for s in sub] for sub in subs])  # (P, 2)
        self.prob = torch.tensor([[s[1] for s in sub] for sub in subs], dtype=torch.float32)  # (P, 2)
        self.bin = torch.tensor([[s[2] or 0 for s in sub] for sub in subs])  # (P, 2)

    def draw(self, n, generator):
        return {"aa_policy": torch.randint(len(self.ops), (n,), generator=generator),
                "aa_coin": torch.rand(n, 2, generator=generator),  # apply step k when coin <= probability
                "aa_sign": torch.rand(n, 2, generator=generator)}  # negate when <= 0.5 (signed operations)

    def plan(self, params: dict, height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per step, (operation index into ``OPS`` or -1 for none (B,), signed magnitude (B,) float64)."""
        table, signed = _magnitudes(OP_NAMES, 10, height, width)
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

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_bins: int = MAX_MAGNITUDE + 1):
        if num_ops < 0 or not 0 <= magnitude < num_bins:
            raise ValueError(f"RandAugment needs num_ops >= 0 and 0 <= magnitude < {num_bins}")
        self.num_ops, self.magnitude, self.num_bins = num_ops, magnitude, num_bins
        self.ops = torch.tensor([OP_INDEX[n] for n in _RAND_AUGMENT_OPS])

    def draw(self, n, generator):
        return {"ra_op": torch.randint(len(self.ops), (n, self.num_ops), generator=generator),
                "ra_sign": torch.rand(n, self.num_ops, generator=generator)}

    def plan(self, params: dict, height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        table, signed = _magnitudes(OP_NAMES, self.num_bins, height, width)
        steps = []
        for k in range(self.num_ops):
            op = self.ops[params["ra_op"][:, k]]
            mag = table[op, self.magnitude]
            steps.append((op, torch.where(signed[op] & (params["ra_sign"][:, k] <= 0.5), -mag, mag)))
        return steps

    def __repr__(self) -> str:
        return f"BatchRandAugment(num_ops={self.num_ops}, magnitude={self.magnitude})"


@functools.lru_cache
def _log_ratio(ratio: tuple[float, float]) -> tuple[float, ...]:
    """The float32 logs of the aspect-ratio bounds, as torchvision takes them (worked out once)."""
    return tuple(torch.log(torch.tensor(ratio)).tolist())


class BatchRandomErasing(_Batched):
    """Random erasing, as ``torchvision.transforms.v2.RandomErasing``: with probability ``p`` a box of
    ``scale`` of the image's area and aspect ratio (height / width) drawn log-uniformly from ``ratio`` is
    set to ``value``; of 10 tries, the first box that fits is taken, and none when none fits."""

    tries = 10

    def __init__(self, p: float = 0.5, scale=ERASING_SCALE, ratio=ERASING_RATIO, value: float = ERASING_VALUE):
        self.p, self.scale, self.ratio, self.value = p, tuple(scale), tuple(ratio), float(value)

    def draw(self, n, generator):
        return {"re_coin": torch.rand(n, generator=generator),
                "re_scale": torch.empty(n, self.tries).uniform_(*self.scale, generator=generator),
                "re_log_ratio": torch.empty(n, self.tries).uniform_(*_log_ratio(self.ratio), generator=generator),
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
        return self.erase(x, self.boxes(params, x.shape[-2], x.shape[-1]))

    def erase(self, x: torch.Tensor, boxes: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Fill the ``boxes`` (of ``boxes()``) of the images of ``x``."""
        _, _, height, width = x.shape
        erase, top, left, h, w = (t.to(x.device) for t in boxes)
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

def unbatched_transforms(cfg, info: DatasetInfo) -> list[str]:
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

    def __init__(self, cfg, info: DatasetInfo, train: bool, device="cpu"):
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

    def plan(self, params: dict[str, torch.Tensor], height: int, width: int) -> dict[str, torch.Tensor]:
        """What happens to each image, from its random numbers (``draw``), as tensors with one row per
        image: the crop offset, the flip, each step's operation and magnitude, the erasing box. Made on
        the CPU for a whole epoch at once, then moved to the device in one go: a batch takes its rows."""
        plan = {"crop": params["crop"], "flip": params["flip"]}
        for k, step in enumerate(self.steps):
            for j, (op, mag) in enumerate(step.plan(params, height, width)):
                plan[f"op{k}.{j}"], plan[f"mag{k}.{j}"] = op, mag
        if self.erasing:
            for name, t in zip(("erase", "top", "left", "box_h", "box_w"),
                               self.erasing.boxes(params, height, width)):
                plan[name] = t
        return plan

    def __call__(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.apply_plan(images, self.plan(params, images.shape[-2], images.shape[-1]))

    def apply_plan(self, images: torch.Tensor, plan: dict[str, torch.Tensor]) -> torch.Tensor:
        """The transforms of ``plan`` (rows of ``plan()``, one per image, best on the images' device)."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"expected uint8 images (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if self.steps and images.shape[1] not in (1, 3):
            raise ValueError(f"AutoAugment and RandAugment need 1 or 3 channels, got {images.shape[1]}")
        x, dev = images, images.device
        if self.pad:  # image i: the window at offset (top, left) = plan["crop"][i] of the padded image
            b, c, h, w = x.shape
            windows = nnf.pad(x, (self.pad,) * 4).unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2p+1, 2p+1, H, W)
            off = plan["crop"].to(dev)
            x = windows.permute(0, 2, 3, 1, 4, 5)[torch.arange(b, device=dev), off[:, 0], off[:, 1]]
        if self.flip:
            x = torch.where(plan["flip"].to(dev)[:, None, None, None], x.flip(-1), x)
        x = x.float()  # whole grey levels 0..255
        for k, step in enumerate(self.steps):
            steps, j = [], 0
            while f"op{k}.{j}" in plan:
                steps.append((plan[f"op{k}.{j}"], plan[f"mag{k}.{j}"]))
                j += 1
            x = step.apply_steps(x, steps, True)
        x = (x.div_(255) - self.mean.to(dev)) / self.std.to(dev)
        if self.erasing:
            x = self.erasing.erase(x, tuple(plan[n] for n in ("erase", "top", "left", "box_h", "box_w")))
        return x

    def __repr__(self) -> str:
        parts = ([f"random crop (pad {self.pad})"] if self.pad else []) + (["hflip"] if self.flip else [])
        parts += [repr(s) for s in self.steps] + ["normalise"] + ([repr(self.erasing)] if self.erasing else [])
        return f"BatchTransforms({', '.join(parts)})"
