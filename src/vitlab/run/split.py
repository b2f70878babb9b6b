"""The evaluation split of a run: the whole validation/test split of the dataset a
checkpoint was trained on, as ``vitlab eval`` and ``vitlab analyze`` read it.

``data.*`` overrides (``data.root=...``, ``data.val_subset=1000``) apply; other
sections are refused, since they would not change what the checkpoint is.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..errors import UserError
from . import checkpoint


class EvalSplit(NamedTuple):
    cfg: object  # the run's config (vitlab.config.Config) with the overrides applied
    dataset: object  # the validation/test set, eval transforms
    info: object  # its DatasetInfo


def check_data_overrides(overrides, command: str) -> None:
    for o in overrides:
        if not str(o).startswith("data."):
            raise UserError(f"{command} takes data.* settings only, got {str(o).split('=')[0]!r}")


def eval_split(ckpt: dict, overrides=(), command: str = "eval") -> EvalSplit:
    """The checkpoint's whole validation/test split (not the ``data.val_subset`` a quick
    training run validated on), with ``data.*`` ``overrides`` applied; its channels and
    classes must be the model's."""
    from ..config import apply_overrides, check
    from ..data import build_datasets

    check_data_overrides(overrides, command)
    cfg = checkpoint.config(ckpt)
    cfg.data.val_subset = None
    apply_overrides(cfg, overrides)
    check(cfg)
    cfg.data.train_subset = 1  # the training split is not needed
    _, val_ds, info = build_datasets(cfg.data, cfg.train.seed)
    want = ckpt["dataset"]
    hint = ("; to evaluate every image of a folder of class folders, give it as the data folder "
            "(vitlab eval CHECKPOINT --data DIR)") if command == "eval" and cfg.data.name == "imagefolder" else ""
    for what, have, need in (("channels", info.in_chans, want["in_chans"]),
                             ("classes", info.num_classes, want["num_classes"])):
        if have != need:
            raise UserError(f"the dataset {info.name} has {have} {what} but the checkpoint's model was trained "
                            f"on {need}; check the --set data.* settings{hint}")
    if want.get("classes") and list(info.classes) != list(want["classes"]):  # the same number, other names
        extra = [c for c in info.classes if c not in want["classes"]] or list(info.classes)
        raise UserError(f"the dataset {info.name} has classes that are not the checkpoint's: {', '.join(extra[:10])}"
                        f" (the checkpoint's: {', '.join(want['classes'][:10])}"
                        f"{', ...' if len(want['classes']) > 10 else ''}); check the --set data.* settings{hint}")
    if len(val_ds) == 0:
        raise UserError(f"the validation split of {info.name} holds no images")
    return EvalSplit(cfg, val_ds, info)


def split_batches(split: EvalSplit, batch_size: int, device: torch.device, dataset=None):
    """Batches of (images, labels) of the split (or of ``dataset``, a part of it) on ``device``,
    in order, with the eval transforms."""
    from ..data.loader import make_batches

    return make_batches(split.dataset if dataset is None else dataset, batch_size, train=False,
                        data_cfg=split.cfg.data, info=split.info, device=device, seed=0, epoch=0,
                        num_workers=split.cfg.data.num_workers)
