"""A reader per official file layout. Which dataset uses which readers, in
which folders, is said by the table in ``catalog.py``.

Each reader is ``read(name, folder, spec, cfg) -> Found | None``: ``name``
the dataset's canonical name (for messages and the CIFAR archive's file
names), ``folder`` where to look, ``spec`` the dataset's entry of
``catalog.DATASETS`` (the facts a reader needs: ``classes``,
``num_classes``, ``img_size``; passed in, so that this module never imports
the table that names its readers), ``cfg`` the data section of the config
(any object with its attributes; only ``cfg.labels`` is read). It returns
None when the folder does not hold its layout, and raises ``UserError`` when
the folder holds the layout but something in it is wrong.

Layouts:

    cifar10        cifar-10-batches-py/ data_batch_1..5, test_batch, batches.meta
                   (the official python archive), or a JPEG copy in
                   train/<class>/ and test/<class>/ folders
    cifar100       cifar-100-python/ train, test, meta
    fashion_mnist  train-images-idx3-ubyte, train-labels-idx1-ubyte,
    mnist          t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (IDX, .gz or not)
    tiny_imagenet  tiny-imagenet-200/ wnids.txt, words.txt, train/<wnid>/images/,
                   val/images/ + val/val_annotations.txt (or val/<wnid>/)
    imagefolder    train/<class>/ and val/<class>/ (or valid/, validation/, test/),
                   or one <class>/ tree (split later by data.val_fraction);
                   with data.labels=from_filename, train/ and val/ (or valid/,
                   validation/, test/) folders of files named
                   <class>_<anything>.<ext>, or one such folder (see Labels)

Memory: CIFAR (both layouts) and the IDX datasets are held in memory as a
uint8 tensor ``.images`` (N, C, H, W) with int64 ``.targets`` (N,)
(``TensorImageDataset``); the CIFAR-10 JPEG copy is listed here and decoded
once by ``build_datasets`` after subsetting (``Found.materialise``; about 5 s
for 60,000 images on 2 CPU cores). Tiny ImageNet and image folders are read
from disk per item (``ImageFileDataset``, ``.paths`` and ``.targets``). The
CIFAR batches are unpickled here rather than through
``torchvision.datasets.CIFAR10``, whose per-file md5 check rejects anything
but the exact official files; they are read by an unpickler that admits numpy
arrays and plain containers only (no code runs from a batch file).

Labels: CIFAR and IDX as stored; Tiny ImageNet by sorted wnid (as ImageFolder
would), named by the first name in words.txt; image folders (``data.labels``)
by sorted folder name (``folders``, the default), or (``from_filename``) by
the text before the last ``_`` of each file's name (``sports_car_12.jpg`` is
a ``sports_car``; Unicode NFC), classes sorted; files of the validation
folder must name classes of the training folder. An image folder's native
size is its first readable image's shorter side, at most 224.

Folders are listed by extension only (fast: no file is opened), so files
without an image extension are skipped and counted in one warning.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import struct
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .images import IMG_EXTENSIONS, scan_images
from .sets import ImageFileDataset, TensorImageDataset

__all__ = ["Found", "read_cifar_python", "read_cifar_jpeg", "read_idx", "read_idx_dataset", "read_tiny_imagenet",
           "read_imagefolder", "class_from_filename"]

log = logging.getLogger(__name__)


@dataclass
class Found:
    """What a reader found in a folder."""
    train: TensorImageDataset | ImageFileDataset
    val: TensorImageDataset | ImageFileDataset | None  # None: hold out data.val_fraction of train
    classes: list[str]
    img_size: int
    fixed_size: bool = True  # every image has the native square size
    materialise: bool = False  # decode the files into memory after subsetting
    val_split: str = "test"  # what val is: 'test' | 'val' (DatasetInfo.val_split)
    folder: Path | None = None  # where it was found (set by the caller)


def _check_labels(targets: torch.Tensor, num_classes: int, where) -> torch.Tensor:
    if len(targets) and (targets.min() < 0 or targets.max() >= num_classes):
        raise UserError(f"{where}: labels must lie in 0..{num_classes - 1}, found "
                        f"{int(targets.min())}..{int(targets.max())}")
    return targets


def _class_dirs(d: Path) -> list[str]:
    with os.scandir(d) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _scan_classes(d: Path, classes: Sequence[str]) -> tuple[list[str], list[int], int]:
    """Image paths, labels and skipped-file count of d/<class>/... for ``classes``."""
    paths, targets, skipped = [], [], 0
    for label, c in enumerate(classes):
        if not (d / c).is_dir():
            continue
        p, s = scan_images(d / c)
        paths += p
        targets += [label] * len(p)
        skipped += s
    return paths, targets, skipped


def _warn_skipped(name: str, d: Path, skipped: int) -> None:
    if skipped:
        log.warning("%s: skipped %d file(s) under %s without an image extension (%s)",
                    name, skipped, d, " ".join(IMG_EXTENSIONS))


# --------------------------------------------------------------------------- CIFAR: the python archive


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else: a CIFAR batch
    file cannot make the reader run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
        (f"{core}.{module}", name) for core in ("numpy.core", "numpy._core")  # numpy 1 and numpy 2 names
        for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays and plain "
                                         "containers are expected")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"cannot read {path}: {e} (a corrupt file of the CIFAR python archive; "
                        "delete the folder and fetch it again)") from None


# CIFAR's python archive: (train files, test files, meta file, class-name key, label key)
_CIFAR_PYTHON = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "label_names", "labels"),
    "cifar100": (["train"], ["test"], "meta", "fine_label_names", "fine_labels"),
}


def read_cifar_python(name: str, d: Path, spec, cfg) -> Found | None:
    """CIFAR-10 or CIFAR-100 (``name``) from the official python archive."""
    train_files, test_files, meta_file, names_key, label_key = _CIFAR_PYTHON[name]
    if not all((d / f).is_file() for f in train_files + test_files):
        return None
    classes = list(spec.classes)
    if (d / meta_file).is_file():
        meta_names = _unpickle(d / meta_file).get(names_key)
        if meta_names and len(meta_names) == spec.num_classes:
            classes = list(meta_names)

    def load(files):
        images, labels = [], []
        for f in files:
            entry = _unpickle(d / f)
            try:
                data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                labels.extend(entry[label_key])
            except (KeyError, ValueError, TypeError):
                raise UserError(f"{d / f} is not a {name} batch of the python archive "
                                f"(expected keys 'data' (N, 3072) and {label_key!r})") from None
            images.append(data)
        targets = _check_labels(torch.as_tensor(labels, dtype=torch.long), spec.num_classes, d / files[0])
        return TensorImageDataset(torch.from_numpy(np.concatenate(images)), targets, classes)

    return Found(load(train_files), load(test_files), classes, 32)


# --------------------------------------------------------------------------- CIFAR-10: a JPEG copy


def read_cifar_jpeg(name: str, d: Path, spec, cfg) -> Found | None:
    """A JPEG copy of CIFAR-10: train/<class>/ and test/<class>/ (decoded into memory after subsetting)."""
    if not ((d / "train").is_dir() and (d / "test").is_dir()):
        return None
    classes = list(spec.classes)
    found = _class_dirs(d / "train")
    if sorted(found) != sorted(classes):
        raise UserError(f"{d / 'train'} does not hold the {name} class folders: expected "
                        f"{', '.join(classes)}; found {', '.join(found) or 'none'}")
    splits = []
    for split in ("train", "test"):
        paths, targets, skipped = _scan_classes(d / split, classes)
        _warn_skipped(name, d / split, skipped)
        if not paths:
            raise UserError(f"no images in {d / split}/<class>/ (extensions: {' '.join(IMG_EXTENSIONS)})")
        splits.append(ImageFileDataset(paths, targets, classes, channels=3))
    return Found(splits[0], splits[1], classes, spec.img_size, materialise=True)


# --------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format; gzipped if its name ends in .gz)."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {path}: {e} (delete the file and fetch it again)") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad header); delete it and fetch it again")
    ndim, offset = data[3], 4 + 4 * data[3]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    dims = struct.unpack(f">{ndim}I", data[4:offset]) if len(data) >= offset else None
    if dims is None or len(data) != offset + int(np.prod(dims)) * dtype.itemsize:
        raise UserError(f"{path} is truncated or has a wrong size for its IDX header; "
                        "delete it and fetch it again")
    return np.frombuffer(data, dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx_dataset(name: str, d: Path, spec, cfg) -> Found | None:
    """The four IDX files of MNIST or Fashion-MNIST (gzipped or not)."""
    stems = [s for pair in _IDX_FILES.values() for s in pair]
    paths = {s: next((p for p in (d / s, d / f"{s}.gz") if p.is_file()), None) for s in stems}
    missing = [s for s, p in paths.items() if p is None]
    if len(missing) == len(stems):
        return None
    if missing:
        raise UserError(f"{d} holds only some of the {name} IDX files; missing: "
                        f"{', '.join(s + '[.gz]' for s in missing)}")
    splits = []
    for images_stem, labels_stem in _IDX_FILES.values():
        images, labels = read_idx(paths[images_stem]), read_idx(paths[labels_stem])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{paths[images_stem]} and {paths[labels_stem]} do not match: "
                            f"{images.shape} images, {labels.shape} labels")
        targets = _check_labels(torch.from_numpy(labels.astype(np.int64)), spec.num_classes, paths[labels_stem])
        images = torch.from_numpy(images.astype(np.uint8, copy=False)).unsqueeze(1)  # (N, 1, H, W)
        splits.append(TensorImageDataset(images, targets, spec.classes))
    return Found(splits[0], splits[1], list(spec.classes), splits[0].images.shape[-1])


# --------------------------------------------------------------------------- Tiny ImageNet


def read_tiny_imagenet(name: str, d: Path, spec, cfg) -> Found | None:
    """Tiny ImageNet's official zip, extracted (its validation split annotated or in <wnid>/ folders)."""
    if not ((d / "wnids.txt").is_file() and (d / "train").is_dir()):
        return None
    wnids = sorted({w.strip() for w in (d / "wnids.txt").read_text().split() if w.strip()})
    index = {w: i for i, w in enumerate(wnids)}
    words = {}
    if (d / "words.txt").is_file():
        for line in (d / "words.txt").read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, names = line.partition("\t")
            if wnid in index:
                words[wnid] = names.split(",")[0].strip() or wnid
    classes = [words.get(w, w) for w in wnids]

    paths, targets, skipped = [], [], 0
    for w in wnids:
        folder = d / "train" / w / "images"
        p, s = scan_images(folder if folder.is_dir() else d / "train" / w)
        paths, targets, skipped = paths + p, targets + [index[w]] * len(p), skipped + s
    if not paths:
        raise UserError(f"no images in {d / 'train'}/<wnid>/images/: the {name} archive is incomplete")

    val_dir, annotations = d / "val", d / "val" / "val_annotations.txt"
    if annotations.is_file():
        present, s = scan_images(val_dir / "images")
        skipped += s
        present = {os.path.basename(p): p for p in present}
        val_paths, val_targets = [], []
        for n, line in enumerate(annotations.read_text().splitlines(), 1):
            fields = line.split("\t")
            if len(fields) < 2:
                continue
            fname, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in index:
                raise UserError(f"{annotations} line {n}: class {wnid!r} is not in {d / 'wnids.txt'}")
            if fname not in present:
                raise UserError(f"{annotations} line {n} names {fname}, which is not in {val_dir / 'images'}")
            val_paths.append(present[fname])
            val_targets.append(index[wnid])
    elif val_dir.is_dir() and _class_dirs(val_dir):
        val_paths, val_targets, s = _scan_classes(val_dir, wnids)
        skipped += s
    else:
        raise UserError(f"{val_dir} must hold images/ and val_annotations.txt (the official layout) "
                        "or one <wnid>/ folder per class")
    _warn_skipped(name, d, skipped)
    return Found(ImageFileDataset(paths, targets, classes), ImageFileDataset(val_paths, val_targets, classes),
                 classes, spec.img_size, val_split="val")


# --------------------------------------------------------------------------- image folders


_VAL_DIRS = ("val", "valid", "validation", "test")
_MAX_NATIVE_SIZE = 224  # imagefolder: native size = the first image's shorter side, at most this


def class_from_filename(path: str | os.PathLike) -> str | None:
    """The class a file's name gives with ``data.labels: from_filename``: the
    text before the last ``_`` of its stem (``sports_car_12.jpg`` ->
    ``sports_car``), NFC-normalised; None when there is none."""
    cls, sep, _ = Path(path).stem.rpartition("_")
    return unicodedata.normalize("NFC", cls) if sep and cls else None


def _scan_named(d: Path) -> tuple[list[str], list[str], int]:
    """Image paths under d (recursively, sorted), their classes from the file
    names, and the skipped-file count."""
    paths, skipped = scan_images(d)
    names = []
    for p in paths:
        c = class_from_filename(p)
        if c is None:
            raise UserError(f"no class in the file name {p}: with data.labels=from_filename files are named "
                            "<class>_<anything>.<ext> (cat_0001.png); rename or remove it")
        names.append(c)
    return paths, names, skipped


def _native_size(paths: list[str], where: Path) -> int:
    """The shorter side (at most 224) of the first image whose header reads;
    unreadable files are found and handled later (data.bad_images)."""
    first_error = None
    for p in paths:
        try:
            with Image.open(p) as im:  # reads the header only
                return min(min(im.size), _MAX_NATIVE_SIZE)
        except (OSError, SyntaxError, ValueError) as e:
            first_error = first_error or f"{p}: {(str(e).splitlines() or [type(e).__name__])[0]}"
    raise UserError(f"no image under {where} can be read (the first: {first_error}); "
                    "the files are corrupt or not images")


def read_imagefolder(name: str, d: Path, spec, cfg) -> Found | None:
    """A user's image folders: classes from folder names, or (``cfg.labels == 'from_filename'``) file names."""
    train_dir, val_dir = d, None
    if (d / "train").is_dir():
        train_dir = d / "train"
        val_dir = next((d / v for v in _VAL_DIRS if (d / v).is_dir()), None)
    by_name = cfg.labels == "from_filename"
    exts = " ".join(IMG_EXTENSIONS)
    if cfg.labels == "none":  # unlabelled images (self-supervised pre-training): one class, every image under d
        paths, skipped = scan_images(train_dir)
        if not paths:
            return None
        val = None
        if val_dir is not None:
            val_paths, s = scan_images(val_dir)
            skipped += s
            val = ImageFileDataset(val_paths, [0] * len(val_paths), ["image"]) if val_paths else None
        _warn_skipped(name, d, skipped)
        return Found(ImageFileDataset(paths, [0] * len(paths), ["image"]), val, ["image"],
                     _native_size(paths, train_dir), fixed_size=False, val_split="val")
    if by_name:
        paths, names, skipped = _scan_named(train_dir)
        if not paths:
            return None
        classes = sorted(set(names))
        index = {c: i for i, c in enumerate(classes)}
        targets = [index[c] for c in names]
    else:
        classes = _class_dirs(train_dir)
        if not classes:
            return None
        paths, targets, skipped = _scan_classes(train_dir, classes)
        if not paths:
            raise UserError(f"no images in {train_dir}/<class>/ (extensions: {exts})")
    train, val = ImageFileDataset(paths, targets, classes), None
    if val_dir is not None:
        if by_name:
            val_paths, val_names, s = _scan_named(val_dir)
            unknown = next(((p, c) for p, c in zip(val_paths, val_names) if c not in index), None)
            if unknown:
                raise UserError(f"{unknown[0]}: its class {unknown[1]!r} is not one of the {len(classes)} "
                                f"classes named by the files of {train_dir}; rename or remove it")
            val_targets = [index[c] for c in val_names]
            val_where = f"{val_dir}/<class>_<n>.<ext>"
        else:
            extra = sorted(set(_class_dirs(val_dir)) - set(classes))
            if extra:
                raise UserError(f"{val_dir} has class folders that {train_dir} lacks: {', '.join(extra)}")
            val_paths, val_targets, s = _scan_classes(val_dir, classes)
            val_where = f"{val_dir}/<class>/"
        if not val_paths:
            raise UserError(f"no images in {val_where} (extensions: {exts}); fill it, or remove it to hold "
                            f"out data.val_fraction of {train_dir}")
        skipped += s
        val = ImageFileDataset(val_paths, val_targets, classes)
    _warn_skipped(name, d, skipped)
    return Found(train, val, classes, _native_size(paths, train_dir), fixed_size=False,
                 val_split="test" if val_dir is not None and val_dir.name == "test" else "val")
