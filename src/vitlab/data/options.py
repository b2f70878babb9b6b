"""The one check of the ``data`` section of the config: ``check_options(cfg)``
raises ``UserError`` (one line, naming the option) for a value out of range
and returns the dataset's canonical name. The config module calls it when the
config is read; ``build_datasets`` calls it again (it is cheap).

``cfg`` is the data section of the config: any object with its attributes
(``name``, ``subset_mode``, ``train_subset``, ``val_subset``,
``val_fraction``, ``holdout``, ``labels``, ``bad_images``, ``num_workers``,
``mean``, ``std`` and the augmentation options that
``transforms.check_transform_options`` checks).
"""

from __future__ import annotations

from ..errors import UserError
from .catalog import BAD_IMAGES, DATASETS, LABELS, canonical_name
from .transforms import check_transform_options

__all__ = ["check_options"]


def check_options(cfg) -> str:
    """Validate the data options (those of the dataset and those of the augmentations); return the
    canonical dataset name."""
    name = canonical_name(cfg.name)
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
