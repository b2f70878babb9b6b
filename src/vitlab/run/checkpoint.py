"""The checkpoint format of a vitlab run, and rebuilding what it holds.

A checkpoint is a dict saved with ``torch.save`` and read with
``weights_only=True`` (no pickled code runs). Every checkpoint holds ``model``
(the state dict), ``model_name`` and ``model_args`` (from which any registered
model is rebuilt; before 0.3 a ViT's ``model_config``), ``config`` (the
resolved config as plain values), ``dataset`` (the fields of ``DatasetInfo``
the model needs: name, classes, channels, size, normalisation), ``epoch``,
``best_acc``, ``history`` (one dict per finished epoch), ``vitlab_version``,
``source_weights`` and, for a Transformer, ``grid_size``. ``last.pt`` adds
what resuming needs: optimizer, scheduler, grad scaler, RNG state and the
position inside a half-done epoch (``vitlab.run.position``).

Files are written atomically (``vitlab.files``): a crash, a kill or a full
disk leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..files import atomic_write, file_error

RUN_KEYS = ("model", "model_name", "config", "dataset")  # what every checkpoint of a run holds


def save(obj: dict, path: str | os.PathLike) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a vitlab checkpoint without executing pickled code."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as e:
        raise file_error("read checkpoint", path, e) from None
    if not found:
        raise UserError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            ckpt = torch.load(f, map_location=map_location, weights_only=True)
    except OSError as e:
        raise file_error("read checkpoint", path, e) from None
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise UserError(f"refused to read {path}: it holds a pickled Python object ({found.group(1)}), "
                            "which could run code; vitlab reads only tensors and plain values") from None
        raise UserError(f"cannot read checkpoint {path}: not a complete PyTorch checkpoint "
                        f"({type(e).__name__})") from None
    except Exception as e:  # torch raises several types for corrupt or foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"cannot read checkpoint {path}: not a complete PyTorch checkpoint "
                        f"({type(e).__name__}{': ' + first if first else ''})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{path} is not a vitlab checkpoint (no 'model' entry)")
    return ckpt


def require_run(ckpt: dict, path: str | os.PathLike, keys=RUN_KEYS) -> None:
    """``UserError`` unless the checkpoint holds ``keys`` (a vitlab run's)."""
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise UserError(f"{path} is not the checkpoint of a vitlab run (it holds no {', '.join(missing)}); "
                        "give the best.pt or last.pt of a run folder made by `vitlab train`")


def require_classifier(ckpt: dict, path: str | os.PathLike) -> None:
    """``UserError`` for the checkpoint of a masked-patch-prediction run: its classification
    head never trained, so its class predictions mean nothing until it is fine-tuned."""
    if (ckpt.get("config") or {}).get("train", {}).get("objective", "classification") != "classification":
        raise UserError(f"{path} is a masked-patch-prediction (pre-training) run: its classification head is "
                        f"untrained; fine-tune it first (`vitlab finetune CONFIG --weights {path}`)")


def model_args(ckpt: dict) -> dict:
    """The builder arguments of the checkpoint's model (``model_config`` before 0.3)."""
    return ckpt.get("model_args", ckpt.get("model_config", {}))


def build_model(ckpt: dict, weights: bool = True) -> nn.Module:
    """The checkpoint's model rebuilt from ``model_name`` and ``model_args``, with
    its weights unless ``weights`` is false (then on the current default device,
    e.g. under ``torch.device('meta')``)."""
    from ..models import create_model

    try:
        model = create_model(ckpt["model_name"], **model_args(ckpt))
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"cannot rebuild the checkpoint's model: {e}") from None
    if weights:
        model.load_state_dict(ckpt["model"])
    return model




def dataset_info(ckpt: dict):
    """The ``DatasetInfo`` the checkpoint's model was trained on (classes, channels,
    size, normalisation), for transforms and labels without the dataset."""
    from ..data import DatasetInfo

    d = ckpt["dataset"]
    return DatasetInfo(**{k: (tuple(v) if k in ("mean", "std") else v) for k, v in d.items()})


def config(ckpt: dict):
    """The run's config, checked as when it was read (``vitlab.config.from_dict``)."""
    from ..config import from_dict

    return from_dict(ckpt["config"])


def input_size(ckpt: dict) -> tuple[int, int, int]:
    """(channels, height, width) of the images the checkpoint's model takes: the run's
    ``data.img_size``, else the dataset's own size."""
    d = ckpt["dataset"]
    size = (ckpt.get("config") or {}).get("data", {}).get("img_size") or d["img_size"]
    return int(d["in_chans"]), int(size), int(size)


class EvalTransform:
    """The evaluation transform of a run, as ``vitlab predict`` applies it: an image
    (a PIL image, a uint8 tensor (C, H, W) or an image file's path) -> the float
    tensor (C, H, W) the model takes: the run's channels, the shorter side resized
    to its input size and centre-cropped, normalised with its mean and std."""

    def __init__(self, ckpt: dict):
        from ..data import build_eval_transform

        self.input_size = input_size(ckpt)
        self.transform = build_eval_transform(dataset_info(ckpt), self.input_size[1])

    def __call__(self, image) -> torch.Tensor:
        if isinstance(image, (str, os.PathLike)):
            from ..data import load_image

            image = load_image(image)
        return self.transform(image)

    def __repr__(self) -> str:
        return f"EvalTransform({self.transform})"
