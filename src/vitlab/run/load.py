"""A trained run in Python: its model and what it needs to be used.

    model, info = vitlab.load_run("runs/fashion_mnist_vit-...")
    x = info.transform(PIL.Image.open("shoe.png")).unsqueeze(0)
    print(info.classes[model(x).argmax(1).item()])

``info.transform`` is the run's evaluation transform, the one ``vitlab
predict`` applies, so the model sees what it saw in validation.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import UserError, choose
from .checkpoint import EvalTransform, build_model, input_size, require_classifier, require_run
from .checkpoint import load as read_checkpoint
from .runtime import resolve_device

CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class RunInfo:
    """What a run's model needs around it."""
    classes: list[str]  # the class names, in the order of the model's outputs
    transform: Callable  # a PIL image, uint8 tensor (C, H, W) or image path -> the model's input (C, H, W)
    input_size: tuple[int, int, int]  # (channels, height, width) the transform gives
    mean: tuple[float, ...]  # the normalisation the transform applies, per channel
    std: tuple[float, ...]
    model_name: str  # the registered model name (vitlab.create_model)
    config: dict  # the run's resolved config, as plain values
    checkpoint: Path  # the file read
    epoch: int  # epochs finished when it was written (best.pt: the best epoch)


def load_run(path: str | os.PathLike, checkpoint: str = "best",
             device: str | torch.device = "cpu") -> tuple[nn.Module, RunInfo]:
    """The model of a trained run, in eval mode on ``device``, and its ``RunInfo``.

    ``path``: a run folder (its ``best.pt``, or ``last.pt`` with ``checkpoint="last"``;
    a folder without ``best.pt``, where no epoch finished yet, gives its ``last.pt``
    with a warning) or a checkpoint file (``checkpoint`` is then not used).

    Raises ``UserError`` (one line) for a missing path, a file that is not a vitlab
    run's checkpoint or holds pickled objects, and a masked-patch-prediction run,
    whose classification head never trained."""
    file = _checkpoint_file(Path(path), checkpoint)
    ckpt = _read(file)
    dev = resolve_device(device, "device")
    model = _build(ckpt, file).to(dev).eval()
    d = ckpt["dataset"]
    info = RunInfo(classes=list(d["classes"]), transform=_transform(ckpt, file),
                   input_size=input_size(ckpt), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   model_name=ckpt["model_name"], config=ckpt["config"], checkpoint=file,
                   epoch=int(ckpt.get("epoch", 0)))
    return model, info



def _checkpoint_file(path: Path, which: str) -> Path:
    """The checkpoint file ``path`` stands for."""
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    if not exists:
        raise UserError(f"run folder or checkpoint not found: {path}")
    if not is_dir:
        return path
    if which not in CHECKPOINTS:
        raise choose("checkpoint", which, CHECKPOINTS)
    file = path / f"{which}.pt"
    if file.is_file():
        return file
    last = path / "last.pt"
    if which == "best" and last.is_file():
        warnings.warn(f"{path} holds no best.pt (no epoch finished yet): loaded its last.pt", stacklevel=3)
        return last
    raise UserError(f"{path} holds no {which}.pt: give a run folder made by `vitlab train` or a checkpoint file")


def _read(file: Path) -> dict:
    ckpt = read_checkpoint(file)
    require_run(ckpt, file)
    require_classifier(ckpt, file)
    return ckpt


def _build(ckpt: dict, file: Path) -> nn.Module:
    try:
        return build_model(ckpt)
    except RuntimeError as e:  # weights that do not fit the model the checkpoint names
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load {file}: its weights do not fit its model ({first})") from None


def _transform(ckpt: dict, file: Path) -> Callable:
    try:
        return EvalTransform(ckpt)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{file} holds no usable dataset facts for its transform ({type(e).__name__}: {e})") from None
