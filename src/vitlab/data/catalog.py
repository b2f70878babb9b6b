"""The datasets a user can name: one table of per-dataset facts
(``DATASETS``), what it says (``DatasetSpec``, the ``DatasetInfo`` a built
dataset is described by, the valid ``data.labels`` and ``data.bad_images``),
where each dataset is looked for, and its download.

The table names each dataset's readers (``readers.py``, in order of
preference) and the folders under a root that they look in. The readers get
the facts they need (``DatasetSpec``) as an argument and never import this
module, so the dependency runs one way: catalog -> readers.

Default places (``data.root`` unset): ``~/.cache/vitlab/data/<name>``
(``$XDG_CACHE_HOME`` is honoured), then the system places of the table, e.g.
``/usr/share/datasets/fashion-mnist`` where Debian's ``dataset-fashion-mnist``
puts Fashion-MNIST. The first that holds the files is used; a download goes to
``data.root`` or the first default place. The archive's own top folder
(``cifar-10-batches-py``, ``tiny-imagenet-200``, torchvision's
``FashionMNIST/raw``, ...) may be left in place or be the root.

Downloads use torchvision's utilities and check the archive's md5.

An image folder's images are resized (shorter side) and centre-cropped to a
square, and normalised with ImageNet's mean/std.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torchvision.datasets.utils import download_and_extract_archive, download_url

from ..errors import UserError, did_you_mean
from .readers import (Found, read_cifar_jpeg, read_cifar_python, read_idx_dataset, read_imagefolder,
                      read_tiny_imagenet)

__all__ = ["DatasetInfo", "DatasetSpec", "DATASETS", "LABELS", "BAD_IMAGES", "canonical_name", "cache_dir",
           "default_roots", "download_dataset"]

LABELS = ("folders", "from_filename", "none")  # data.labels of an image folder ('none': unlabelled images)
BAD_IMAGES = ("skip", "error")  # data.bad_images


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
    readers: tuple[Callable[..., Found | None], ...]  # reader(name, folder, spec, cfg) -> Found | None
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
        readers=(read_cifar_python, read_cifar_jpeg),
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
        readers=(read_cifar_python,),
        subdirs=("", "cifar-100-python"),
        downloads=(("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
    ),
    "fashion_mnist": DatasetSpec(
        num_classes=10, in_chans=1, img_size=28, mean=(0.2860,), std=(0.3530,),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
        layout=_IDX_LAYOUT,
        readers=(read_idx_dataset,),
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
        readers=(read_idx_dataset,),
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
        readers=(read_tiny_imagenet,),
        subdirs=("", "tiny-imagenet-200"),
        downloads=(("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"),),
    ),
    "imagefolder": DatasetSpec(
        num_classes=None, in_chans=3, img_size=None, mean=_IMAGENET_MEAN, std=_IMAGENET_STD, classes=None,
        layout="train/<class>/ and val/<class>/ (or test/<class>/) image folders, or one <class>/ tree "
               "(with data.labels=from_filename: train/ and test/ folders of <class>_<n>.<ext> files, or one)",
        readers=(read_imagefolder,),
        default_root=False,
    ),
}


def canonical_name(name: str) -> str:
    """The table's key for a ``data.name`` (any case, ``-`` for ``_``); ``UserError`` naming the closest
    key and the valid ones when there is none."""
    key = str(name).lower().replace("-", "_")
    if key not in DATASETS:
        raise UserError(f"unknown data.name {name!r}{did_you_mean(key, DATASETS)}; valid: {', '.join(DATASETS)}")
    return key


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
