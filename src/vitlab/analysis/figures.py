"""Drawing helpers shared by the analysis pictures: fonts for text in any script,
the picture's paths, a private Agg figure, and atomic writes of a picture with
its numbers.

Text is drawn with ``fonts()``: a list of font families with matplotlib's
per-glyph fallback (matplotlib >= 3.6), so that class names in Cyrillic, Greek,
Chinese, Japanese, Korean, Arabic, Hebrew, ... render wherever a font that has
their glyphs is installed. Every picture is made in memory and written
atomically (``vitlab.files``) beside its numbers (``.csv`` or ``.json``, same
name), so a refused model or a failure leaves no file, whole or half-written.
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import UserError
from ..files import write_bytes
from ..plotting import new_figure

# Font families in order of preference; each glyph is drawn with the first one that has it.
# DejaVu Sans (matplotlib's default, shipped with it) comes first, so Latin, Greek and Cyrillic
# text looks the same on every machine; the others add the scripts it lacks when installed
# (Debian: fonts-noto-cjk, fonts-wqy-microhei, fonts-droid-fallback, fonts-noto-core).
FONT_FAMILIES = (
    "DejaVu Sans", "Noto Sans",
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK HK", "Noto Sans CJK KR",
    "Source Han Sans", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback",
    "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Devanagari", "Noto Sans Bengali", "Noto Sans Tamil",
    "Noto Sans Thai", "Noto Sans Armenian", "Noto Sans Georgian", "Noto Sans Ethiopic",
)


def font_families() -> list[str]:
    """The families of ``FONT_FAMILIES`` that are installed, in that order (DejaVu Sans at
    least). Fonts installed after matplotlib built its font cache are registered first,
    so a font added with apt is used without deleting that cache."""
    return list(_installed_families())


@functools.cache
def _installed_families() -> tuple[str, ...]:
    from matplotlib import font_manager

    fm = font_manager.fontManager
    known = {f.fname for f in fm.ttflist}
    for path in font_manager.findSystemFonts():
        if path not in known:
            try:
                fm.addfont(path)
            except (OSError, RuntimeError, ValueError):  # a file FreeType cannot read: not ours to fix
                pass
    installed = {f.name for f in fm.ttflist}
    return tuple(f for f in FONT_FAMILIES if f in installed) or ("DejaVu Sans",)


@contextlib.contextmanager
def fonts() -> Iterator[None]:
    """Draw (make and save figures) with ``font_families()``; matplotlib's settings are
    restored afterwards. Text objects take their font when they are made and tick labels
    are made while saving, so wrap both."""
    import matplotlib

    with matplotlib.rc_context({"font.family": font_families()}):
        yield


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


def draw_confusion(conf: torch.Tensor, classes: list[str], path: str | Path, title: str = "",
                   normalised: bool = False) -> None:
    """The confusion matrix ``conf`` (true class x predicted class, counts) as a PNG, coloured
    by the fraction of each true class; up to 30 classes, each cell also shows its count, or
    with ``normalised`` its fraction of the row (the row-normalised matrix)."""
    k = len(classes)
    norm = conf.float() / conf.sum(1, keepdim=True).clamp(min=1)
    size = min(4 + 0.45 * k, 30)
    fig = new_figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        ax.set_xticks(range(k), classes, rotation=90)
        ax.set_yticks(range(k), classes)
        for i in range(k):
            for j in range(k):
                if conf[i, j]:
                    ax.text(j, i, f"{norm[i, j]:.2f}" if normalised else int(conf[i, j]), ha="center",
                            va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    default = "confusion matrix (rows normalised: fraction of each true class)" if normalised else "confusion matrix"
    ax.set(xlabel="predicted", ylabel="true", title=title or default)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
