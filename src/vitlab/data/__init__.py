"""Data: the datasets a user names (one table, ``DATASETS``), their readers,
transforms and batch Mixup/CutMix.

    from vitlab.data import build_datasets, check_options
    check_options(cfg.data)  # when the config is read: UserError for a bad option
    train_set, val_set, info = build_datasets(cfg.data, seed=cfg.train.seed)

The modules, each with one job (no import cycles among them, and none
imports the config module, the trainer or anything above them):

    catalog.py        the table of datasets, their default places and downloads
    options.py        check_options: the one check of the data options
    datasets.py       build_datasets: find, split, subset, leave out bad files
    readers.py        a reader per file layout (labels, memory use)
    sets.py           TensorImageDataset, ImageFileDataset
    splits.py         hold-out and subsets
    checks.py         finding unreadable images, and remembering what was found
    images.py         one place that turns a file into pixels
    transforms.py     per-image transforms (the order of augmentations), Mixup/CutMix
    batch_augment.py  the same augmentations planned per image, on whole batches
    augment_ops.py    the batched pixel operations (equal to torchvision's)
    loader.py         the batches of an epoch
"""

from .augment_ops import apply_op
from .batch_augment import (BatchAutoAugment, BatchRandAugment, BatchRandomErasing, BatchTransforms,
                            unbatched_transforms)
from .catalog import DATASETS, DatasetInfo, DatasetSpec, cache_dir, canonical_name, default_roots, download_dataset
from .checks import find_bad_images
from .datasets import build_datasets
from .images import IMG_EXTENSIONS, check_image, load_image, read_image, scan_images
from .options import check_options
from .readers import class_from_filename, read_idx
from .sets import ImageFileDataset, TensorImageDataset
from .transforms import (AUTO_AUGMENT_POLICIES, BatchMixer, batch_mixer, build_eval_transform,
                         build_train_transform, describe_transforms)

__all__ = [
    "DATASETS", "DatasetInfo", "DatasetSpec", "TensorImageDataset", "ImageFileDataset",
    "build_datasets", "build_train_transform", "build_eval_transform", "describe_transforms",
    "batch_mixer", "BatchMixer", "load_image", "read_image", "scan_images", "read_idx",
    "download_dataset", "cache_dir", "default_roots", "IMG_EXTENSIONS", "AUTO_AUGMENT_POLICIES",
    "check_image", "find_bad_images", "class_from_filename",
    "BatchTransforms", "BatchAutoAugment", "BatchRandAugment", "BatchRandomErasing", "apply_op",
    "unbatched_transforms", "canonical_name", "check_options",
]
