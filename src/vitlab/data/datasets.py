"""Datasets: one table of per-dataset facts (``DATASETS``), a reader per
official file layout, and ``build_datasets``, which the trainer calls.

Layouts, under ``data.root`` or the dataset's default places:

    cifar10        cifar-10-batches-py/ data_batch_1..5, test_batch, batches.meta
                   (the official python archive), or a JPEG copy in
                   train/<class>/ and test/<class>/ folders
    cifar100       cifar-100-python/ train, test, meta
    fashion_mnist  train-images-idx3-ubyte, train-labels-idx1-ubyte,
    mnist          t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (IDX, .gz or not)
    tiny_imagenet  tiny-imagenet-200/ wnids.txt, words.txt, train/<wnid>/images/,
                   val/images/ + val/val_annotations.txt (or val/<wnid>/)
    imagefolder    train/<class>/ and val/<class>/ (or valid/, validation/, test/),
                   or one <class>/ tree split by data.val_fraction (stratified,
                   seeded with the seed given to build_datasets);
                   with data.labels=from_filename, train/ and val/ (or valid/,
                   validation/, test/) folders of files named
                   <class>_<anything>.<ext>, or one such folder (see Labels)

The archive's own top folder (``cifar-10-batches-py``, ``tiny-imagenet-200``,
torchvision's ``FashionMNIST/raw``, ...) may be left in place or be the root.

Default places (``data.root`` unset): ``~/.cache/vitlab/data/<name>``
(``$XDG_CACHE_HOME`` is honoured), then the system places of the table, e.g.
``/usr/share/datasets/fashion-mnist`` where Debian's ``dataset-fashion-mnist``
puts Fashion-MNIST. The first that holds the files is used; a download goes to
``data.root`` or the first default place. A missing dataset is a ``UserError``
of one line that says where the files must go.

Memory: CIFAR (both layouts) and the IDX datasets are held in memory as a
uint8 tensor ``.images`` (N, C, H, W) with int64 ``.targets`` (N,)
(``TensorImageDataset``); the CIFAR-10 JPEG copy is decoded once when it is
built (about 5 s for 60,000 images on 2 CPU cores; only the subset when one
is asked for). Tiny ImageNet and image folders are read from disk per item
(``ImageFileDataset``, ``.paths`` and ``.targets``). The CIFAR batches are
unpickled here rather than through ``torchvision.datasets.CIFAR10``, whose
per-file md5 check rejects anything but the exact official files; they are
read by an unpickler that admits numpy arrays and plain containers only (no
code runs from a batch file). Downloads use torchvision's utilities and check
the archive's md5.

Labels: CIFAR and IDX as stored; Tiny ImageNet by sorted wnid (as ImageFolder
would), named by the first name in words.txt; image folders (``data.labels``)
by sorted folder name (``folders``, the default), or (``from_filename``) by
the text before the last ``_`` of each file's name (``sports_car_12.jpg`` is
a ``sports_car``; Unicode NFC), classes sorted; files of the validation
folder must name classes of the training folder. An image folder's native
size is its first readable image's shorter side, at most 224; its images are
resized (shorter side) and centre-cropped to a square, and normalised with
ImageNet's mean/std.

Which images a run uses, in this order (``splits.py``):

1. the dataset's splits: its test split (CIFAR, IDX; ``info.val_split ==
   'test'``), its validation split (Tiny ImageNet, an image folder's val/;
   ``'val'``, or ``'test'`` for a test/ folder);
2. ``data.holdout: F`` (0 < F < 1; 0 = off): a seeded, stratified fraction F
   of the training split becomes the validation set and the dataset's own
   validation/test split is not used (``info.val_split == 'holdout'``); an
   image folder without a validation folder always holds out
   ``data.val_fraction`` this way (``data.holdout`` wins when set);
3. ``data.train_subset``/``data.val_subset``: N images, the first N or
   (``data.subset_mode: random``) N drawn with the given seed, in dataset
   order;
4. bad image files of what is left are found and, with ``data.bad_images:
   skip`` (the default), left out (see below);
5. the CIFAR-10 JPEG copy is decoded into memory.

Bad files: folders are listed by extension only (fast: no file is opened),
so files without an image extension are skipped and counted in one warning.
Before training, every image file a run will use (Tiny ImageNet, the CIFAR-10
JPEG copy, image folders) is decoded once (``checks.py``: in parallel, and
remembered in ``~/.cache/vitlab/image-checks/`` by path, size and time, so
that the next run only looks at the files' sizes and times): empty files,
truncated JPEGs and PNGs, and other bytes under an image extension are bad.
``data.bad_images: skip`` leaves them out, with one warning that counts
them, and lists them as ``(path, reason)`` in ``info.bad_files``; ``error``
raises ``UserError`` naming the first and the count. Images of any mode
(grey, palette, CMYK, alpha, 16-bit) and size load, converted to the
dataset's channels.
"""

from __future__ import annotations

import difflib
import gzip
import logging
import os
import pickle
import shutil
import struct
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets.utils import download_and_extract_archive, download_url

from ..errors import UserError
from .checks import find_bad_images
from .images import IMG_EXTENSIONS, read_image, read_images, scan_images
from .splits import hold_out, subset
from .transforms import build_train_transform, check_transform_options, dataset_eval_transform

if TYPE_CHECKING:
    from ..config import DataConfig

__all__ = ["DatasetInfo", "DatasetSpec", "DATASETS", "TensorImageDataset", "ImageFileDataset",
           "build_datasets", "download_dataset", "cache_dir", "default_roots", "read_idx", "class_from_filename"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    """What the model and the trainer need to know of a dataset."""
    name: str
    num_classes: int
    in_chans: int
    img_size: int  # native size (square); data.img_size may resize
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    # the validation set: 'test' (the test split), 'val' (a validation split) or 'holdout' (held out of
    # the training images: data.holdout, or an image folder's data.val_fraction)
    val_split: str = "test"
    # (path, reason) of each unreadable image file left out (data.bad_images: skip)
    bad_files: tuple[tuple[str, str], ...] = field(default=(), repr=False)


# --------------------------------------------------------------------------- datasets


class TensorImageDataset(Dataset):
    """A whole dataset in memory. ``images``: uint8 (N, C, H, W); ``targets``:
    int64 (N,). Items: (transform(image), int label); the transform gets a
    uint8 ``tv_tensors.Image`` (C, H, W)."""

    def __init__(self, images: torch.Tensor, targets, classes: Sequence[str], transform=None):
        self.images = images
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i].as_subclass(tv_tensors.Image)
        if self.transform is not None:
            x = self.transform(x)
        return x.as_subclass(torch.Tensor), int(self.targets[i])

    def subset(self, indices: torch.Tensor) -> TensorImageDataset:
        return TensorImageDataset(self.images[indices], self.targets[indices], self.classes, self.transform)

    def __repr__(self) -> str:
        return f"TensorImageDataset({len(self)} images {tuple(self.images.shape[1:])}, {len(self.classes)} classes)"


class ImageFileDataset(Dataset):
    """Images read from files per item. ``paths``: list of file paths;
    ``targets``: int64 (N,). Items: (transform(image), int label); the
    transform gets a uint8 ``tv_tensors.Image`` (channels, H, W)."""

    def __init__(self, paths: list[str], targets, classes: Sequence[str], transform=None, channels: int = 3):
        self.paths = list(paths)
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.classes = list(classes)
        self.transform = transform
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        x = read_image(self.paths[i], self.channels).as_subclass(tv_tensors.Image)
        if self.transform is not None:
            x = self.transform(x)
        return x.as_subclass(torch.Tensor), int(self.targets[i])

    def subset(self, indices: torch.Tensor) -> ImageFileDataset:
        return ImageFileDataset([self.paths[i] for i in indices.tolist()], self.targets[indices],
                                self.classes, self.transform, self.channels)

    def load_into_memory(self) -> TensorImageDataset:
        """Decode every file once (all images must have one size)."""
        images = read_images(self.paths, self.channels)
        if not images:
            return TensorImageDataset(torch.empty(0, self.channels, 0, 0, dtype=torch.uint8), self.targets,
                                      self.classes, self.transform)
        shape = images[0].shape
        for p, img in zip(self.paths, images, strict=True):
            if img.shape != shape:
                raise UserError(f"image {p} is {img.shape[2]}x{img.shape[1]}, the others "
                                f"{shape[2]}x{shape[1]}: all images of this dataset must have one size")
        return TensorImageDataset(torch.stack(images), self.targets, self.classes, self.transform)

    def __repr__(self) -> str:
        return f"ImageFileDataset({len(self)} files, {len(self.classes)} classes)"


# --------------------------------------------------------------------------- readers


@dataclass
class _Found:
    """What a reader found in a folder."""
    train: TensorImageDataset | ImageFileDataset
    val: TensorImageDataset | ImageFileDataset | None  # None: hold out data.val_fraction of train
    classes: list[str]
    img_size: int
    fixed_size: bool = True  # every image has the native square size
    materialise: bool = False  # decode the files into memory after subsetting
    val_split: str = "test"  # what val is: 'test' | 'val' (DatasetInfo.val_split)
    folder: Path | None = None  # where it was found (set by _find)


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


def _read_cifar_python(name: str, d: Path, cfg, seed) -> _Found | None:
    train_files, test_files, meta_file, names_key, label_key = _CIFAR_PYTHON[name]
    if not all((d / f).is_file() for f in train_files + test_files):
        return None
    spec = DATASETS[name]
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

    return _Found(load(train_files), load(test_files), classes, 32)


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


def _read_cifar_jpeg(name: str, d: Path, cfg, seed) -> _Found | None:
    if not ((d / "train").is_dir() and (d / "test").is_dir()):
        return None
    classes = list(DATASETS[name].classes)
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
    return _Found(splits[0], splits[1], classes, DATASETS[name].img_size, materialise=True)


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


def _read_idx_dataset(name: str, d: Path, cfg, seed) -> _Found | None:
    stems = [s for pair in _IDX_FILES.values() for s in pair]
    paths = {s: next((p for p in (d / s, d / f"{s}.gz") if p.is_file()), None) for s in stems}
    missing = [s for s, p in paths.items() if p is None]
    if len(missing) == len(stems):
        return None
    if missing:
        raise UserError(f"{d} holds only some of the {name} IDX files; missing: "
                        f"{', '.join(s + '[.gz]' for s in missing)}")
    spec = DATASETS[name]
    splits = []
    for images_stem, labels_stem in _IDX_FILES.values():
        images, labels = read_idx(paths[images_stem]), read_idx(paths[labels_stem])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{paths[images_stem]} and {paths[labels_stem]} do not match: "
                            f"{images.shape} images, {labels.shape} labels")
        targets = _check_labels(torch.from_numpy(labels.astype(np.int64)), spec.num_classes, paths[labels_stem])
        images = torch.from_numpy(images.astype(np.uint8, copy=False)).unsqueeze(1)  # (N, 1, H, W)
        splits.append(TensorImageDataset(images, targets, spec.classes))
    return _Found(splits[0], splits[1], list(spec.classes), splits[0].images.shape[-1])


def _check_labels(targets: torch.Tensor, num_classes: int, where) -> torch.Tensor:
    if len(targets) and (targets.min() < 0 or targets.max() >= num_classes):
        raise UserError(f"{where}: labels must lie in 0..{num_classes - 1}, found "
                        f"{int(targets.min())}..{int(targets.max())}")
    return targets


def _read_tiny_imagenet(name: str, d: Path, cfg, seed) -> _Found | None:
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
    return _Found(ImageFileDataset(paths, targets, classes), ImageFileDataset(val_paths, val_targets, classes),
                  classes, DATASETS[name].img_size, val_split="val")


_VAL_DIRS = ("val", "valid", "validation", "test")
_MAX_NATIVE_SIZE = 224  # imagefolder: native size = the first image's shorter side, at most this
LABELS = ("folders", "from_filename")  # data.labels of an image folder
BAD_IMAGES = ("skip", "error")  # data.bad_images


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


def _read_imagefolder(name: str, d: Path, cfg, seed) -> _Found | None:
    train_dir, val_dir = d, None
    if (d / "train").is_dir():
        train_dir = d / "train"
        val_dir = next((d / v for v in _VAL_DIRS if (d / v).is_dir()), None)
    by_name = cfg.labels == "from_filename"
    exts = " ".join(IMG_EXTENSIONS)
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
    return _Found(train, val, classes, _native_size(paths, train_dir), fixed_size=False,
                  val_split="test" if val_dir is not None and val_dir.name == "test" else "val")


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class DatasetSpec:
    """Facts of one dataset."""
    num_classes: int | None  # None: one per class folder
    in_chans: int
    img_size: int | None  # native size; None: the first image's shorter side (at most 224)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None  # None: read from the files
    layout: str  # what the root must hold, for messages
    readers: tuple[Callable, ...]  # reader(name, folder, cfg, seed) -> _Found | None
    subdirs: tuple[str, ...] = ("",)  # folders under the root also searched ("": the root)
    system_roots: tuple[str, ...] = ()  # default places after ~/.cache/vitlab/data/<name>
    downloads: tuple[tuple[str, str], ...] = ()  # (url, md5) of the official files
    default_root: bool = True  # False: data.root must be given


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_IDX_LAYOUT = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
               "t10k-labels-idx1-ubyte.gz (IDX files, gzipped or not)")
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        num_classes=10, in_chans=3, img_size=32,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        layout="cifar-10-batches-py/ with data_batch_1..5 and test_batch (the official python archive), "
               "or train/<class>/ and test/<class>/ image folders",
        readers=(_read_cifar_python, _read_cifar_jpeg),
        subdirs=("", "cifar-10-batches-py", "cifar10-jpeg"),
        downloads=(("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
    ),
    "cifar100": DatasetSpec(
        num_classes=100, in_chans=3, img_size=32,
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        classes=tuple("apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
                      "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
                      "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
                      "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain "
                      "mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain "
                      "plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
                      "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank "
                      "telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree "
                      "wolf woman worm".split()),
        layout="cifar-100-python/ with train, test and meta (the official python archive)",
        readers=(_read_cifar_python,),
        subdirs=("", "cifar-100-python"),
        downloads=(("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
    ),
    "fashion_mnist": DatasetSpec(
        num_classes=10, in_chans=1, img_size=28, mean=(0.2860,), std=(0.3530,),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
        layout=_IDX_LAYOUT,
        readers=(_read_idx_dataset,),
        subdirs=("", "FashionMNIST/raw"),
        system_roots=("/usr/share/datasets/fashion-mnist",),
        downloads=((_FASHION_URL + "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                   (_FASHION_URL + "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                   (_FASHION_URL + "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                   (_FASHION_URL + "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
    ),
    "mnist": DatasetSpec(
        num_classes=10, in_chans=1, img_size=28, mean=(0.1307,), std=(0.3081,),
        classes=tuple("0123456789"),
        layout=_IDX_LAYOUT,
        readers=(_read_idx_dataset,),
        subdirs=("", "MNIST/raw"),
        downloads=((_MNIST_URL + "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                   (_MNIST_URL + "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
                   (_MNIST_URL + "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                   (_MNIST_URL + "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
    ),
    "tiny_imagenet": DatasetSpec(
        num_classes=200, in_chans=3, img_size=64,
        mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821),
        classes=None,  # wnids.txt (sorted, as ImageFolder would) named by words.txt
        layout="tiny-imagenet-200/ with wnids.txt, words.txt, train/<wnid>/images/*.JPEG, "
               "val/images/*.JPEG and val/val_annotations.txt (the official zip)",
        readers=(_read_tiny_imagenet,),
        subdirs=("", "tiny-imagenet-200"),
        downloads=(("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"),),
    ),
    "imagefolder": DatasetSpec(
        num_classes=None, in_chans=3, img_size=None, mean=_IMAGENET_MEAN, std=_IMAGENET_STD, classes=None,
        layout="train/<class>/ and val/<class>/ (or test/<class>/) image folders, or one <class>/ tree "
               "(with data.labels=from_filename: train/ and test/ folders of <class>_<n>.<ext> files, or one)",
        readers=(_read_imagefolder,),
        default_root=False,
    ),
}


# --------------------------------------------------------------------------- places and downloads


def cache_dir() -> Path:
    """``~/.cache/vitlab/data`` (``$XDG_CACHE_HOME/vitlab/data`` when set)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "vitlab" / "data"


def default_roots(name: str) -> list[Path]:
    """Where ``name`` is looked for when ``data.root`` is unset, in order."""
    spec = DATASETS[name]
    if not spec.default_root:
        return []
    return [cache_dir() / name, *(Path(p) for p in spec.system_roots)]


def download_dataset(name: str, root: str | os.PathLike) -> Path:
    """Fetch the official files of ``name`` into ``root`` (md5-checked;
    archives are extracted and then removed)."""
    spec = DATASETS[name]
    root = Path(root).expanduser()
    if not spec.downloads:
        raise UserError(f"{name} cannot be downloaded: put {spec.layout} in data.root")
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {root} for the {name} download: {e.strerror or e}") from None
    for url, md5 in spec.downloads:
        filename = url.rsplit("/", 1)[-1]
        try:
            if filename.endswith((".tar.gz", ".tgz", ".zip")):
                download_and_extract_archive(url, download_root=str(root), filename=filename, md5=md5,
                                             remove_finished=True)
            else:
                download_url(url, str(root), filename=filename, md5=md5)
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
            if created:  # leave nothing half-written behind
                shutil.rmtree(root, ignore_errors=True)
            reason = (str(e).splitlines() or [type(e).__name__])[0]
            raise UserError(f"download of {url} failed ({reason}); without a network, put "
                            f"{spec.layout} in {root}") from None
    return root


# --------------------------------------------------------------------------- build


def _canonical_name(name: str) -> str:
    key = str(name).lower().replace("-", "_")
    if key not in DATASETS:
        close = difflib.get_close_matches(key, list(DATASETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown data.name {name!r}{hint}; valid: {', '.join(DATASETS)}")
    return key


def _check(cfg: DataConfig) -> str:
    """Validate the data options; return the canonical dataset name."""
    name = _canonical_name(cfg.name)
    if cfg.subset_mode not in ("first", "random"):
        raise UserError(f"unknown data.subset_mode {cfg.subset_mode!r}; valid: first, random")
    for key in ("train_subset", "val_subset"):
        n = getattr(cfg, key)
        if n is not None and n <= 0:
            raise UserError(f"data.{key} must be a positive number of images or null (all), got {n}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise UserError(f"data.val_fraction must lie between 0 and 1 (exclusive), got {cfg.val_fraction}")
    if cfg.holdout != 0 and not 0.0 < cfg.holdout < 1.0:
        raise UserError(f"data.holdout must lie between 0 and 1 (exclusive), or be 0 (off), got {cfg.holdout}")
    if cfg.labels not in LABELS:
        raise UserError(f"unknown data.labels {cfg.labels!r}; valid: {', '.join(LABELS)}")
    if cfg.labels != "folders" and name != "imagefolder":
        raise UserError(f"data.labels={cfg.labels} applies to data.name=imagefolder; {name} has its own labels")
    if cfg.bad_images not in BAD_IMAGES:
        raise UserError(f"unknown data.bad_images {cfg.bad_images!r}; valid: {', '.join(BAD_IMAGES)}")
    if cfg.num_workers < 0:
        raise UserError(f"data.num_workers must be 0 or more, got {cfg.num_workers}")
    for key in ("mean", "std"):
        v = getattr(cfg, key)
        if v is not None and (len(v) not in (1, DATASETS[name].in_chans) or (key == "std" and min(v) <= 0)):
            raise UserError(f"data.{key} must be one value or one per channel"
                            f"{' (all above 0)' if key == 'std' else ''}, got {list(v)}")
    check_transform_options(cfg)
    return name


def _find(name: str, roots: list[Path], cfg, seed) -> _Found | None:
    spec = DATASETS[name]
    for root in roots:
        for read in spec.readers:  # in the table's order of preference
            for sub in spec.subdirs:
                folder = root / sub if sub else root
                if not folder.is_dir():
                    continue
                found = read(name, folder, cfg, seed)
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


def build_datasets(cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset, DatasetInfo]:
    """(train set with train transforms, validation set with eval transforms,
    info). Items are (float32 (C, H, W) normalised, int label); each set has
    ``.targets`` (int64 tensor), ``.classes`` and ``.transform``; in-memory
    sets also ``.images`` (uint8 (N, C, H, W)), file sets ``.paths``.

    Order: the dataset's splits; ``data.holdout`` (or an image folder's
    ``data.val_fraction``) held out of the training split, stratified and
    seeded with ``seed``; then ``data.train_subset``/``data.val_subset``;
    then unreadable image files are left out (``data.bad_images``); then the
    CIFAR-10 JPEG copy is decoded into memory. ``info.val_split`` says what
    the validation set is ('test', 'val' or 'holdout') and
    ``info.bad_files`` lists the files left out as (path, reason)."""
    name = _check(cfg)
    spec = DATASETS[name]
    if cfg.root:
        roots = [Path(cfg.root).expanduser()]
    elif spec.default_root:
        roots = default_roots(name)
    else:
        raise UserError(f"{name} needs data.root: a folder with {spec.layout}")

    found = _find(name, roots, cfg, seed)
    if found is None:
        if not (cfg.download and spec.downloads):
            raise _missing(name, roots, cfg)
        download_dataset(name, roots[0])
        found = _find(name, roots[:1], cfg, seed)
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
