"""What an export reads: the checkpoint of a run, the model rebuilt from it, and
the facts every format carries beside the weights (class names, input size,
normalisation), all from the checkpoint (``run.checkpoint.dataset_info`` and
the saved config), never from the dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import UserError, choose
from ..models import model_family
from ..models.layers import pair
from ..run import checkpoint

CHECKPOINTS = ("best", "last")  # the checkpoints of a run folder, --checkpoint
INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"  # of the ONNX graph and in preprocess.json
RESIZE = "shorter side to the input size (bilinear, antialiased), then a centre crop"


@dataclass
class Source:
    """A checkpoint's model (float32, CPU, eval mode) and what its inputs are."""
    path: Path  # the checkpoint file
    model: nn.Module
    name: str  # the registered model name
    args: dict  # its builder arguments (``model_args``)
    family: str  # 'vit', 'hybrid', 'resnet', 'vt', ...
    classes: list[str]
    in_chans: int
    size: tuple[int, int]  # input (H, W) the model was trained at
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str
    notes: list[str] = field(default_factory=list)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, *self.size)

    def example(self, batch: int = 2) -> torch.Tensor:
        """A random input batch of the model's shape (the exporters' example input)."""
        return torch.randn(batch, *self.input_size, generator=torch.Generator().manual_seed(0))

    def preprocess(self) -> dict:
        """Labels and preprocessing, as ``preprocess.json`` and the ONNX / pt2 metadata hold them."""
        return {
            "classes": list(self.classes),
            "input_size": list(self.input_size),
            "channels": "grey" if self.in_chans == 1 else "RGB" if self.in_chans == 3 else self.in_chans,
            "resize": RESIZE,
            "interpolation": "bilinear",
            "scale": "pixel values / 255",
            "mean": list(self.mean),
            "std": list(self.std),
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
            "model": self.name,
            "model_args": {k: list(v) if isinstance(v, tuple) else v for k, v in self.args.items()},
            "dataset": self.dataset,
            "vitlab_version": __version__,
        }


def checkpoint_path(source: str | os.PathLike, which: str = "best") -> Path:
    """The checkpoint file of ``source``: a run folder's ``best.pt`` (``last.pt`` with
    ``which='last'``), or the checkpoint file itself."""
    if which not in CHECKPOINTS:
        raise choose("--checkpoint", which, CHECKPOINTS)
    path = Path(source)
    if path.is_dir():
        path = path / f"{which}.pt"
        if not path.is_file():
            raise UserError(
                f"{source} holds no {which}.pt: give a run folder made by `vitlab train` or a checkpoint file")
    return path


def read(source: str | os.PathLike, which: str = "best") -> Source:
    """The checkpoint of a run folder or file (``checkpoint_path``), its model and facts."""
    path = checkpoint_path(source, which)
    ckpt = checkpoint.load(path)
    checkpoint.require_run(ckpt, path)
    info = checkpoint.dataset_info(ckpt)
    model = checkpoint.build_model(ckpt).float().eval()
    name, args = ckpt["model_name"], dict(checkpoint.model_args(ckpt))
    data = (ckpt.get("config") or {}).get("data") or {}
    size = pair(args["img_size"]) if args.get("img_size") else pair(data.get("img_size") or info.img_size)
    return Source(path=path, model=model, name=name, args=args, family=model_family(name),
                  classes=list(info.classes), in_chans=info.in_chans, size=size, mean=tuple(info.mean),
                  std=tuple(info.std), dataset=info.name)
