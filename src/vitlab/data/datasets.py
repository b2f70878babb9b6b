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
                   seeded with the seed given to build_datasets)

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
would), named by the first name in words.txt; image folders by sorted folder
name. An image folder's native size is its first image's shorter side, at
most 224; its images are resized (shorter side) and centre-cropped to a
square, and normalised with ImageNet's mean/std.

Bad files: folders are listed by extension only (fast: no file is opened),
so files without an image extension are skipped and counted in one warning;
a file with an image extension that cannot be decoded raises ``UserError``
naming the file when it is read (when the dataset is built for the in-memory
CIFAR-10 JPEG copy; at that item during training for file datasets).

Subsets: ``data.train_subset``/``data.val_subset`` keep N images, the first N
or (``data.subset_mode: random``) N drawn with the given seed, in dataset order.
"""

from __future__ import annotations

import difflib
import gzip
import logging
import os
import pickle
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets.utils import download_and_extract_archive, download_url

from ..errors import UserError
from .images import IMG_EXTENSIONS, read_image, read_images, scan_images
from .transforms import build_train_transform, check_transform_options, dataset_eval_transform

if TYPE_CHECKING:
    from ..train.config import DataConfig

__all__ = ["DatasetInfo", "DatasetSpec", "DATASETS", "TensorImageDataset", "ImageFileDataset",
           "build_datasets", "download_dataset", "cache_dir", "default_roots", "read_idx"]

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
    val: TensorImageDataset | ImageFileDataset
    classes: list[str]
    img_size: int
    fixed_size: bool = True  # every image has the native square size
    materialise: bool = False  # decode the files into memory after subsetting


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
                  classes, DATASETS[name].img_size)


_VAL_DIRS = ("val", "valid", "validation", "test")
_MAX_NATIVE_SIZE = 224  # imagefolder: native size = the first image's shorter side, at most this


def _stratified_split(targets: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, a seeded random ``fraction`` (at least one image of every
    class that has two) goes to validation. Returns sorted (train, val) indices."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(targets).tolist():
        idx = torch.nonzero(targets == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = min(max(round(len(idx) * fraction), 1), len(idx) - 1) if len(idx) > 1 else 0
        val.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def _read_imagefolder(name: str, d: Path, cfg, seed) -> _Found | None:
    train_dir, val_dir = d, None
    if (d / "train").is_dir():
        train_dir = d / "train"
        val_dir = next((d / v for v in _VAL_DIRS if (d / v).is_dir()), None)
    classes = _class_dirs(train_dir)
    if not classes:
        return None
    paths, targets, skipped = _scan_classes(train_dir, classes)
    if not paths:
        raise UserError(f"no images in {train_dir}/<class>/ (extensions: {' '.join(IMG_EXTENSIONS)})")
    train = ImageFileDataset(paths, targets, classes)
    if val_dir is not None:
        extra = sorted(set(_class_dirs(val_dir)) - set(classes))
        if extra:
            raise UserError(f"{val_dir} has class folders that {train_dir} lacks: {', '.join(extra)}")
        val_paths, val_targets, s = _scan_classes(val_dir, classes)
        if not val_paths:
            raise UserError(f"no images in {val_dir}/<class>/ (extensions: {' '.join(IMG_EXTENSIONS)}); "
                            f"fill it, or remove it to hold out data.val_fraction of {train_dir}")
        skipped += s
        val = ImageFileDataset(val_paths, val_targets, classes)
    else:
        train_idx, val_idx = _stratified_split(train.targets, cfg.val_fraction, seed)
        if len(val_idx) == 0:
            raise UserError(f"too few images in {train_dir} to hold out data.val_fraction="
                            f"{cfg.val_fraction} for validation; add images or a val/<class>/ tree")
        train, val = train.subset(train_idx), train.subset(val_idx)
    _warn_skipped(name, d, skipped)
    try:
        with Image.open(paths[0]) as im:  # reads the header only
            size = min(min(im.size), _MAX_NATIVE_SIZE)
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot read image {paths[0]}: {e} (corrupt or not an image; "
                        "delete or replace the file)") from None
    return _Found(train, val, classes, size, fixed_size=False)


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
        layout="train/<class>/ and val/<class>/ (or test/<class>/) image folders, or one <class>/ tree",
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


def _subset(ds, n: int | None, mode: str, seed: int, key: str):
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


def build_datasets(cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset, DatasetInfo]:
    """(train set with train transforms, val/test set with eval transforms,
    info). Items are (float32 (C, H, W) normalised, int label); each set has
    ``.targets`` (int64 tensor), ``.classes`` and ``.transform``; in-memory
    sets also ``.images`` (uint8 (N, C, H, W))."""
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

    train = _subset(found.train, cfg.train_subset, cfg.subset_mode, seed, "train_subset")
    val = _subset(found.val, cfg.val_subset, cfg.subset_mode, seed, "val_subset")
    if found.materialise:
        train, val = train.load_into_memory(), val.load_into_memory()
    def stats(given, default):  # data.mean / data.std: one value for every channel, or one per channel
        return default if given is None else tuple(map(float, given)) * (spec.in_chans // len(given))

    info = DatasetInfo(name=name, num_classes=len(found.classes), in_chans=spec.in_chans,
                       img_size=found.img_size, mean=stats(cfg.mean, spec.mean), std=stats(cfg.std, spec.std),
                       classes=list(found.classes))
    train.transform = build_train_transform(cfg, info, found.fixed_size)
    val.transform = dataset_eval_transform(cfg, info, found.fixed_size)
    return train, val, info
