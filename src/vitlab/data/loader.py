"""Batches for one epoch, reproducible from (seed, epoch) alone.

The order of the samples and all augmentation randomness of an epoch come
from a generator seeded with (seed, epoch), so a run resumed after an
interruption sees exactly the batches it would have seen, also from the
middle of an epoch (the first ``skip`` samples of the epoch's order are left out).

Several processes (``world`` > 1): the training order is cut into ``world``
interleaved shards, rank r taking samples r, r + world, ...; the order (what
is left of it after ``skip``) is first padded with the epoch's first samples
to a multiple of ``world``, as ``DistributedSampler`` does, so every rank runs
the same number of steps (a few images are seen twice in such an epoch).
Rank r's k-th batch and the other ranks' k-th batches together are exactly
the k-th batch of one process with ``world`` times the batch size, so the
samples consumed after k steps are the first k x batch x world of the order,
whatever the world size: ``skip`` counts samples, and a run stopped with one
number of processes resumes with another. Evaluation is not padded: each
sample is seen by exactly one rank.

Two paths:
- in-memory datasets (IDX, CIFAR archives, the decoded CIFAR-10 JPEG copy) are
  augmented a whole batch at a time on tensors, on the training device
  (``TensorBatches`` with ``data.batch_augment.BatchTransforms``: random crop,
  flip, AutoAugment, RandAugment, normalisation, random erasing, in the order
  of ``data/transforms.py`` and with its distributions); on a small CPU this is
  many times faster than per-image transforms. Every random number of the
  epoch is drawn up front from the (seed, epoch) generator, one row per sample
  of the dataset, and a batch uses the rows of its samples: what a sample
  becomes depends on (seed, epoch, its index) alone, not on the batch it falls
  in, the rank that loads it or where the epoch was resumed;
- every other dataset goes through a ``DataLoader`` with its per-image
  torchvision transforms, each image's randomness seeded with (seed, epoch,
  index), so that neither the number of worker processes nor a resume in the
  middle of an epoch changes what an image becomes.

``data.device_augment`` chooses for the training batches: null takes the
batched path wherever the data is in memory and every configured transform
has a batched form (all but a resize to another ``data.img_size``); false
always takes the DataLoader path; true insists on the batched path and stops
with a ``UserError`` where it cannot be had. Evaluation batches (normalisation
only) take the tensor path whenever the data is in memory at its native size.
The two paths draw different random numbers, so a run keeps its path when it
is resumed only if ``data.device_augment`` (saved with the run) picks the same.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .batch_augment import BatchTransforms, unbatched_transforms
from ..errors import UserError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def shard(order: torch.Tensor, rank: int, world: int, skip: int = 0, pad: bool = True) -> torch.Tensor:
    """Rank ``rank``'s share of an epoch's sample ``order`` after its first ``skip``
    samples: every ``world``-th, the rest padded (``pad``) with the epoch's first
    samples to a multiple of ``world`` so that every rank gets as many."""
    rest = order[skip:]
    short = (-len(rest)) % world if pad else 0
    if short and len(order):
        rest = torch.cat([rest, order.repeat(-(-short // len(order)))[:short]])
    return rest[rank::world]


def _unwrap(ds: Dataset) -> tuple[Dataset, torch.Tensor | None]:
    """The base dataset and the indices into it of a (possibly nested) Subset."""
    idx = None
    while isinstance(ds, Subset):
        sub = torch.as_tensor(ds.indices, dtype=torch.long)
        idx = sub if idx is None else sub[idx]
        ds = ds.dataset
    return ds, idx


def fast_path_ok(ds: Dataset, data_cfg, train: bool, info) -> bool:
    """Whether ``ds`` takes the batched tensor path (see the module docstring);
    ``UserError`` where ``data.device_augment`` is true and it cannot."""
    base, _ = _unwrap(ds)
    images = getattr(base, "images", None)
    in_memory = isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4
    missing = unbatched_transforms(data_cfg, info) if in_memory else []
    choice = getattr(data_cfg, "device_augment", None)
    if not train:
        return in_memory and not missing
    if choice is False:
        return False
    if choice and not in_memory:
        raise UserError("data.device_augment=true needs a dataset held in memory, but these training images "
                        "are read from files one at a time; set data.device_augment to null or false")
    if choice and missing:
        raise UserError(f"data.device_augment=true, but {missing[0]} has no batched form; "
                        "set data.device_augment to null or false")
    return in_memory and not missing


def _bases(*sets: Dataset) -> list:
    """The distinct in-memory base datasets under ``sets`` (a holdout shares its training set's)."""
    found = []
    for ds in sets:
        base, _ = _unwrap(ds)
        if isinstance(getattr(base, "images", None), torch.Tensor) and all(base is not b for b in found):
            found.append(base)
    return found


def place_data(train_ds: Dataset, val_ds: Dataset, data_cfg, info, device) -> str:
    """Where the training images live and how they are augmented, and the line that says so. With
    ``data.device_resident`` (None: on a GPU where the images take under half of its free memory),
    in-memory datasets that take the batched path are moved to ``device`` once: their uint8 images
    and labels stay there, and a batch is indexed there with no copy from the host."""
    device = torch.device(device)
    batched = fast_path_ok(train_ds, data_cfg, True, info)
    if not batched:
        if getattr(data_cfg, "device_resident", None):
            raise UserError("data.device_resident=true needs the batched path (images in memory, every transform "
                            "batched); set data.device_resident to null or false")
        return "training images: read and augmented one at a time (DataLoader)"
    if device.type == "cpu":
        return "training images: in memory, augmented in batches on the training device"
    bases = _bases(train_ds, val_ds)
    size = sum(b.images.numel() * b.images.element_size() + b.targets.numel() * 8 for b in bases)
    choice = getattr(data_cfg, "device_resident", None)
    if choice is None:
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
        choice = size < free / 2
    if not choice:
        return f"training images: in host memory, copied to {device} a batch at a time and augmented there"
    for b in bases:
        b.images = b.images.to(device)
        b.targets = torch.as_tensor(b.targets, dtype=torch.long).to(device)
    return (f"training images: held on {device} ({size / 2**20:,.0f} MiB, device-resident), augmented in "
            "batches there")


class TensorBatches:
    """Batches of an in-memory uint8 image tensor, augmented and normalised a
    batch at a time on ``device`` (``BatchTransforms``)."""

    def __init__(self, ds: Dataset, batch_size: int, *, train: bool, data_cfg, info, device,
                 seed: int, epoch: int, rank: int = 0, world: int = 1, skip: int = 0,
                 drop_last: bool = False):
        # skip: samples of the epoch's order already trained on (see the module docstring)
        base, idx = _unwrap(ds)
        self.device = torch.device(device)
        # (N, C, H, W) uint8 and (N,) int64; on the device already where the data is device-resident
        self.images, self.targets = base.images, torch.as_tensor(base.targets, dtype=torch.long)
        self.index = None if idx is None else idx.to(self.device)
        self.batch_size, self.train = batch_size, train
        self.transforms = BatchTransforms(data_cfg, info, train, self.device)
        n = len(self.images) if idx is None else len(idx)
        g = epoch_generator(seed, epoch)
        order = torch.randperm(n, generator=g) if train else torch.arange(n)
        # All the epoch's random numbers are drawn up front, one row per sample, so skipping is free; what
        # they mean for each sample (the plan) is worked out on the CPU and goes to the device in one copy
        # per epoch, with the epoch's order: a batch then only indexes tensors that are already there.
        h, w = self.images.shape[-2:]
        self.plan = {k: v.to(self.device) for k, v in self.transforms.plan(self.transforms.draw(n, g), h, w).items()}
        order = shard(order, rank, world, skip, pad=train).to(self.device)
        nb = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
        self.batches = [order[i * batch_size:(i + 1) * batch_size] for i in range(nb)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for sel in self.batches:  # positions in this dataset (a subset's), on the device
            rows = sel if self.index is None else self.index[sel]  # rows of the base tensors
            if self.images.device != self.device:  # held on the host: this batch's images go over
                rows = rows.cpu()
                x = self.images[rows].to(self.device, non_blocking=True)
                y = self.targets[rows].to(self.device, non_blocking=True)
            else:
                x, y = self.images[rows], self.targets[rows]
            yield self.transforms.apply_plan(x, {k: v[sel] for k, v in self.plan.items()}), y


class _DeviceLoader:
    def __init__(self, loader: DataLoader, device):
        self.loader, self.device = loader, torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _SeededItems(Dataset):
    """Each item's random transforms drawn from a generator seeded with
    (seed, epoch, index): the same augmentation whichever worker process loads
    the item and wherever the epoch was resumed. The caller's torch RNG state
    is left as it was."""

    def __init__(self, ds: Dataset, seed: int, epoch: int):
        self.ds, self.base = ds, (seed * 1_000_003 + epoch) * 1_000_000_007

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        g = torch.default_generator  # the CPU generator the transforms draw from
        state = g.get_state()  # (torch.manual_seed would also visit every accelerator: 50x slower)
        g.manual_seed((self.base + int(i)) % (1 << 63))
        try:
            return self.ds[i]
        finally:
            g.set_state(state)


def make_batches(ds: Dataset, batch_size: int, *, train: bool, data_cfg, info, device, seed: int,
                 epoch: int, rank: int = 0, world: int = 1, skip: int = 0, num_workers: int = 0):
    """An iterable of (images, labels) batches on ``device`` for one epoch: rank
    ``rank`` of ``world``'s share, without the first ``skip`` samples of the
    epoch's order."""
    if fast_path_ok(ds, data_cfg, train, info):
        return TensorBatches(ds, batch_size, train=train, data_cfg=data_cfg, info=info, device=device,
                             seed=seed, epoch=epoch, rank=rank, world=world, skip=skip)
    g = epoch_generator(seed, epoch)
    order = torch.randperm(len(ds), generator=g) if train else torch.arange(len(ds))
    order = shard(order, rank, world, skip, pad=train).tolist()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    loader = DataLoader(_SeededItems(ds, seed, epoch) if train else ds, batch_size=batch_size, sampler=order,
                        num_workers=min(num_workers, cpus),  # no more workers than CPUs: results do not change
                        generator=g, pin_memory=torch.device(device).type == "cuda", persistent_workers=False)
    return _DeviceLoader(loader, device)
