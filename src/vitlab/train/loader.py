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
- in-memory datasets (IDX, CIFAR archives) whose training transforms are only
  random crop with padding, horizontal flip and normalisation are augmented a
  whole batch at a time on tensors, on the training device (``TensorBatches``);
  on a small CPU this is many times faster than per-image transforms;
- every other dataset goes through a ``DataLoader`` with its per-image
  torchvision transforms, each image's randomness seeded with (seed, epoch,
  index), so that neither the number of worker processes nor a resume in the
  middle of an epoch changes what an image becomes.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset


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
    base, _ = _unwrap(ds)
    images = getattr(base, "images", None)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        return False
    if data_cfg.img_size not in (None, info.img_size):
        return False
    if train and (data_cfg.auto_augment or data_cfg.rand_augment or data_cfg.random_erasing):
        return False
    return True


class TensorBatches:
    """Batches of an in-memory uint8 image tensor, cropped, flipped and
    normalised a batch at a time on ``device``."""

    def __init__(self, ds: Dataset, batch_size: int, *, train: bool, data_cfg, info, device,
                 seed: int, epoch: int, rank: int = 0, world: int = 1, skip: int = 0,
                 drop_last: bool = False):
        # skip: samples of the epoch's order already trained on (see the module docstring)
        base, idx = _unwrap(ds)
        self.images = base.images if idx is None else base.images[idx]  # (N, C, H, W) uint8
        targets = torch.as_tensor(base.targets, dtype=torch.long)
        self.targets = targets if idx is None else targets[idx]
        self.device = torch.device(device)
        self.batch_size, self.train = batch_size, train
        self.pad = data_cfg.crop_padding if train else 0
        self.flip = data_cfg.hflip and train
        self.mean = torch.tensor(info.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(info.std, device=self.device).view(1, -1, 1, 1)
        n = len(self.images)
        g = epoch_generator(seed, epoch)
        order = torch.randperm(n, generator=g) if train else torch.arange(n)
        # All the epoch's random numbers are drawn up front, so skipping batches is free.
        self.offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)
        self.flips = torch.rand(n, generator=g) < 0.5
        order = shard(order, rank, world, skip, pad=train)
        nb = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
        self.batches = [order[i * batch_size:(i + 1) * batch_size] for i in range(nb)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for sel in self.batches:
            x = self.images[sel].to(self.device, non_blocking=True).float().div_(255)
            if self.pad:
                b, c, h, w = x.shape
                x = torch.nn.functional.pad(x, (self.pad,) * 4)
                off = self.offsets[sel].to(self.device)
                rows = (off[:, 0, None] + torch.arange(h, device=self.device))[:, None, :, None]
                cols = (off[:, 1, None] + torch.arange(w, device=self.device))[:, None, None, :]
                bi = torch.arange(b, device=self.device)[:, None, None, None]
                ci = torch.arange(c, device=self.device)[None, :, None, None]
                x = x[bi, ci, rows, cols]
            if self.flip:
                f = self.flips[sel].to(self.device)[:, None, None, None]
                x = torch.where(f, x.flip(-1), x)
            yield (x - self.mean) / self.std, self.targets[sel].to(self.device)


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
    loader = DataLoader(_SeededItems(ds, seed, epoch) if train else ds, batch_size=batch_size, sampler=order,
                        num_workers=num_workers, generator=g, pin_memory=torch.device(device).type == "cuda",
                        persistent_workers=False)
    return _DeviceLoader(loader, device)
