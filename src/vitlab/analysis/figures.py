"""Drawing helpers shared by the analysis pictures: the picture's paths, and
atomic writes of a picture with its numbers.

Text is drawn with ``vitlab.plotting.fonts()`` (``with_fonts`` wraps a drawing
function in it), so class names in any script render. Every picture is made in
memory and written atomically (``vitlab.files``) beside its numbers (``.csv`` or ``.json``, same
name), so a refused model or a failure leaves no file, whole or half-written.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..files import write_bytes
from ..plotting import fonts


def with_fonts(draw):
    """Decorator: run a drawing function inside ``fonts()``."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with fonts():
            return draw(*args, **kwargs)
    return wrapper


def picture_paths(path: str | Path, data_suffix: str) -> tuple[Path, Path]:
    """The PNG path and the numbers' path next to it; checked before any work."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"{path}: give a .png path for the picture (the numbers go next to it as {data_suffix})")
    if not path.parent.is_dir():
        what = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise UserError(f"{path.parent} {what}; give a .png path in an existing folder")
    return path, path.with_suffix(data_suffix)


def write_picture(png_path: Path, png: bytes, data_path: Path, data: bytes) -> tuple[Path, Path]:
    write_bytes(data_path, data)
    write_bytes(png_path, png)
    return png_path, data_path


def short(name: str, width: int = 20) -> str:
    """A class name cut to ``width`` characters for a picture's title (the numbers have it whole)."""
    name = str(name)
    return name if len(name) <= width else name[:width - 1] + "…"


def json_bytes(data: dict) -> bytes:
    return (json.dumps(data) + "\n").encode()


def colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def displayable(image: torch.Tensor) -> tuple[np.ndarray, bool]:
    """An input image (C, H, W) as (H, W, 3) or (H, W) in [0, 1], rescaled to its own
    range; grey (the channel mean) unless it has 3 channels. Returns (array, grey)."""
    x = image.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    if x.shape[0] == 3:
        return x.permute(1, 2, 0).numpy(), False
    return x.mean(dim=0).numpy(), True
