"""Data: the datasets a user names (one table, ``DATASETS``), their readers,
transforms and batch Mixup/CutMix.

    from vitlab.data import build_datasets
    train_set, val_set, info = build_datasets(cfg.data, seed=cfg.train.seed)

See ``datasets.py`` for the file layouts, default places, memory use and the
policy on bad files; ``transforms.py`` for the order of augmentations.
"""

from .datasets import (DATASETS, DatasetInfo, DatasetSpec, ImageFileDataset, TensorImageDataset,
                       build_datasets, cache_dir, default_roots, download_dataset, read_idx)
from .images import IMG_EXTENSIONS, load_image, read_image, scan_images
from .transforms import (AUTO_AUGMENT_POLICIES, BatchMixer, batch_mixer, build_eval_transform,
                         build_train_transform, describe_transforms)

__all__ = [
    "DATASETS", "DatasetInfo", "DatasetSpec", "TensorImageDataset", "ImageFileDataset",
    "build_datasets", "build_train_transform", "build_eval_transform", "describe_transforms",
    "batch_mixer", "BatchMixer", "load_image", "read_image", "scan_images", "read_idx",
    "download_dataset", "cache_dir", "default_roots", "IMG_EXTENSIONS", "AUTO_AUGMENT_POLICIES",
]
