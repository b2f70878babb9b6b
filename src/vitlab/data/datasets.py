"""``build_datasets``, which the trainer calls: the options checked, the
dataset found in its roots (or downloaded), its validation set and subsets
taken, its unreadable files left out, and its transforms set.

The datasets, their default places and downloads are in ``catalog.py``; the
file layouts, labels and memory use in ``readers.py``; the hold-out and
subsets in ``splits.py``; the finding of unreadable files in ``checks.py``.

Which images a run uses, in this order:

1. the dataset's splits: its test split (CIFAR, IDX; ``info.val_split ==
   'test'``), its validation split (Tiny ImageNet, an image folder's val/;
   ``'val'``, or ``'test'`` for a test/ folder);
2. ``data.holdout: F`` (0 < F < 1; 0 = off): a seeded, stratified fraction F
   of the training split becomes the validation set and the dataset's own
   validation/test split is not used (``info.val_split == 'holdout'``); an
   image folder without a validation folder always holds out
   ``data.val_fraction`` this way (``data.holdout`` wins when set), seeded
   with the seed given to ``build_datasets``;
3. ``data.train_subset``/``data.val_subset``: N images, the first N or
   (``data.subset_mode: random``) N drawn with the given seed, in dataset
   order;
4. bad image files of what is left are found and, with ``data.bad_images:
   skip`` (the default), left out (see below);
5. the CIFAR-10 JPEG copy is decoded into memory.

A missing dataset is a ``UserError`` of one line that says where the files
must go.

Bad files: before training, every image file a run will use (Tiny ImageNet,
the CIFAR-10 JPEG copy, image folders) is decoded once (``checks.py``: in
parallel, and remembered in ``~/.cache/vitlab/image-checks/`` by path, size
and time, so that the next run only looks at the files' sizes and times):
empty files, truncated JPEGs and PNGs, and other bytes under an image
extension are bad. ``data.bad_images: skip`` leaves them out, with one
warning that counts them, and lists them as ``(path, reason)`` in
``info.bad_files``; ``error`` raises ``UserError`` naming the first and the
count. Images of any mode (grey, palette, CMYK, alpha, 16-bit) and size load,
converted to the dataset's channels.

``cfg`` is the data section of the config (any object with its attributes).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .catalog import DATASETS, DatasetInfo, default_roots, download_dataset
from .checks import find_bad_images
from .options import check_options
from .readers import Found
from .sets import ImageFileDataset
from .splits import hold_out, subset
from .transforms import build_train_transform, dataset_eval_transform

__all__ = ["build_datasets"]

log = logging.getLogger(__name__)


def _find(name: str, roots: list[Path], cfg) -> Found | None:
    spec = DATASETS[name]
    for root in roots:
        for read in spec.readers:  # in the table's order of preference
            for sub in spec.subdirs:
                folder = root / sub if sub else root
                if not folder.is_dir():
                    continue
                found = read(name, folder, spec, cfg)
                if found is not None:
                    log.info("%s: reading %s", name, folder)
                    found.folder = folder
                    return found
    return None


def _missing(name: str, roots: list[Path], cfg) -> UserError:
    spec = DATASETS[name]
    fetch = ", or pass --set data.download=true to fetch it" if spec.downloads else ""
    if cfg.root:
        root = roots[0]
        if not root.exists():
            return UserError(f"data.root {root} does not exist: put {name} there ({spec.layout}){fetch}")
        return UserError(f"no {name} files in data.root {root}: expected {spec.layout}{fetch}")
    places = " or ".join(str(r) for r in roots)
    return UserError(f"{name} not found in {places}: put {spec.layout} in {roots[0]} "
                     f"or set data.root{fetch}")


def _leave_out_bad(name: str, sets: list[ImageFileDataset], mode: str, folder: Path):
    """The sets without their unreadable files, and those files as (path, reason)."""
    bad = find_bad_images([p for ds in sets for p in ds.paths], sets[0].channels, folder=folder)
    if not bad:
        return sets, ()
    total = sum(len(ds) for ds in sets)
    first = f"{bad[0][0]} ({bad[0][1]})"
    if mode == "error":
        raise UserError(f"{len(bad)} of {total} image files under {folder} cannot be read, the first: {first}; "
                        "delete or replace them, or set data.bad_images=skip to leave them out")
    log.warning("%s: left out %d of %d image files under %s that cannot be read (the first: %s); "
                "data.bad_images=error stops on them instead", name, len(bad), total, folder, first)
    gone = {p for p, _ in bad}
    kept = []
    for ds, what in zip(sets, ("training", "validation"), strict=True):
        idx = torch.tensor([i for i, p in enumerate(ds.paths) if p not in gone], dtype=torch.long)
        if len(idx) == 0:
            raise UserError(f"no image of the {what} set under {folder} can be read (the first: {first})")
        kept.append(ds.subset(idx))
    return kept, tuple(bad)


def build_datasets(cfg, seed: int) -> tuple[Dataset, Dataset, DatasetInfo]:
    """(train set with train transforms, validation set with eval transforms,
    info). ``cfg``: the data section of the config (any object with its
    attributes). Items are (float32 (C, H, W) normalised, int label); each set
    has ``.targets`` (int64 tensor), ``.classes`` and ``.transform``; in-memory
    sets also ``.images`` (uint8 (N, C, H, W)), file sets ``.paths``.

    Order: the dataset's splits; ``data.holdout`` (or an image folder's
    ``data.val_fraction``) held out of the training split, stratified and
    seeded with ``seed``; then ``data.train_subset``/``data.val_subset``;
    then unreadable image files are left out (``data.bad_images``); then the
    CIFAR-10 JPEG copy is decoded into memory. ``info.val_split`` says what
    the validation set is ('test', 'val' or 'holdout') and
    ``info.bad_files`` lists the files left out as (path, reason)."""
    name = check_options(cfg)
    spec = DATASETS[name]
    if cfg.root:
        roots = [Path(cfg.root).expanduser()]
    elif spec.default_root:
        roots = default_roots(name)
    else:
        raise UserError(f"{name} needs data.root: a folder with {spec.layout}")

    found = _find(name, roots, cfg)
    if found is None:
        if not (cfg.download and spec.downloads):
            raise _missing(name, roots, cfg)
        download_dataset(name, roots[0])
        found = _find(name, roots[:1], cfg)
        if found is None:
            raise UserError(f"downloaded {name} into {roots[0]}, but its files are not there as expected "
                            f"({spec.layout}); delete the folder and try again")

    train, val, val_split = found.train, found.val, found.val_split
    if cfg.holdout or val is None:
        key = "holdout" if cfg.holdout else "val_fraction"
        train, val = hold_out(train, getattr(cfg, key), seed, key, str(found.folder))
        val_split = "holdout"
    train = subset(train, cfg.train_subset, cfg.subset_mode, seed, "train_subset")
    val = subset(val, cfg.val_subset, cfg.subset_mode, seed, "val_subset")
    bad_files = ()
    if isinstance(train, ImageFileDataset) and isinstance(val, ImageFileDataset):
        (train, val), bad_files = _leave_out_bad(name, [train, val], cfg.bad_images, found.folder)
    if found.materialise:
        train, val = train.load_into_memory(), val.load_into_memory()

    def stats(given, default):  # data.mean / data.std: one value for every channel, or one per channel
        return default if given is None else tuple(map(float, given)) * (spec.in_chans // len(given))

    info = DatasetInfo(name=name, num_classes=len(found.classes), in_chans=spec.in_chans,
                       img_size=found.img_size, mean=stats(cfg.mean, spec.mean), std=stats(cfg.std, spec.std),
                       classes=list(found.classes), val_split=val_split, bad_files=bad_files)
    train.transform = build_train_transform(cfg, info, found.fixed_size)
    val.transform = dataset_eval_transform(cfg, info, found.fixed_size)
    return train, val, info
