"""Data: the datasets a user names (one table, ``DATASETS``), their readers,
transforms and batch Mixup/CutMix.

    from vitlab.data import build_datasets
    train_set, val_set, info = build_datasets(cfg.data, seed=cfg.train.seed)

See ``datasets.py`` for the file layouts, labels, default places, memory use,
the order in which validation is held out and subsets are taken, and the
policy on bad files; ``splits.py`` for hold-out and subsets; ``checks.py``
for how unreadable images are found and remembered; ``transforms.py`` for
the order of augmentations; ``batch_augment.py`` for the same augmentations on
whole batches on the training device.
"""

from .batch_augment import (BatchAutoAugment, BatchRandAugment, BatchRandomErasing, BatchTransforms,
                            apply_op, unbatched_transforms)
from .checks import find_bad_images
from .datasets import (DATASETS, DatasetInfo, DatasetSpec, ImageFileDataset, TensorImageDataset,
                       build_datasets, cache_dir, class_from_filename, default_roots, download_dataset, read_idx)
from .images import IMG_EXTENSIONS, check_image, load_image, read_image, scan_images
from .transforms import (AUTO_AUGMENT_POLICIES, BatchMixer, batch_mixer, build_eval_transform,
                         build_train_transform, describe_transforms)

__all__ = [
    "DATASETS", "DatasetInfo", "DatasetSpec", "TensorImageDataset", "ImageFileDataset",
    "build_datasets", "build_train_transform", "build_eval_transform", "describe_transforms",
    "batch_mixer", "BatchMixer", "load_image", "read_image", "scan_images", "read_idx",
    "download_dataset", "cache_dir", "default_roots", "IMG_EXTENSIONS", "AUTO_AUGMENT_POLICIES",
    "check_image", "find_bad_images", "class_from_filename",
    "BatchTransforms", "BatchAutoAugment", "BatchRandAugment", "BatchRandomErasing", "apply_op",
    "unbatched_transforms",
]
