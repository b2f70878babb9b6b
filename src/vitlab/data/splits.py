"""Which images a run uses: validation held out of the training set
(stratified, seeded) and the quick-run subsets.

Both work on any dataset with ``.targets`` (int64 (N,)) and
``.subset(indices)``. ``build_datasets`` applies them in this order: hold
out (``data.holdout``, or ``data.val_fraction`` for an image folder without a
validation split), then ``data.train_subset`` / ``data.val_subset``.
"""

from __future__ import annotations

import logging

import torch

from ..errors import UserError

__all__ = ["stratified_split", "hold_out", "subset"]

log = logging.getLogger(__name__)


def stratified_split(targets: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, a seeded random ``fraction`` (at least one image of every
    class that has two, never all of a class) goes to validation. Returns
    sorted (train, val) indices; per class the validation count is
    ``round(fraction * n)`` clamped to 1..n-1."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(targets).tolist():
        idx = torch.nonzero(targets == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = min(max(round(len(idx) * fraction), 1), len(idx) - 1) if len(idx) > 1 else 0
        val.append(idx[:k])
        train.append(idx[k:])
    if not train:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def hold_out(ds, fraction: float, seed: int, key: str, where: str):
    """(train, val): a stratified ``fraction`` of ``ds`` (seeded) becomes the
    validation set. ``key`` names the option and ``where`` the data in the
    error raised when no class has two images."""
    train_idx, val_idx = stratified_split(ds.targets, fraction, seed)
    if len(val_idx) == 0:
        raise UserError(f"too few images in {where} to hold out data.{key}={fraction} for validation "
                        "(no class has two images)")
    return ds.subset(train_idx), ds.subset(val_idx)


def subset(ds, n: int | None, mode: str, seed: int, key: str):
    """The first ``n`` images of ``ds``, or (``mode='random'``) ``n`` drawn with
    ``seed`` in dataset order; all of them when ``n`` is None or too large."""
    if n is None or n >= len(ds):
        return ds
    if mode == "first":
        idx = torch.arange(n)
    else:
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    sub = ds.subset(idx)
    if mode == "first":
        have, all_ = len(torch.unique(sub.targets)), len(torch.unique(ds.targets))
        if have < all_ and n >= all_:
            log.warning("data.%s=%d: the first %d images hold only %d of %d classes (the files are sorted "
                        "by class); set data.subset_mode=random for a mixed subset", key, n, n, have, all_)
    return sub
