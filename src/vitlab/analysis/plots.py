"""Pictures of the analyses, in the style of the ViT paper's figures 6 and 7
(Dosovitskiy et al., ICLR 2021, arXiv:2010.11929), each with its numbers.

Every ``plot_*`` takes the PNG path (``.png``, in an existing folder), writes
the picture there and the numbers next to it, same name, ``.csv`` or ``.json``,
and returns both paths. Both files are made in memory first and each is
written atomically (``vitlab.files.atomic_write``), so a refused
model or a failure leaves no file, whole or half-written. Matplotlib draws
through its Agg canvas on a private ``Figure``: no pyplot state, no GUI.

Text is drawn with ``fonts()``: a list of font families with matplotlib's
per-glyph fallback (matplotlib >= 3.6), so that class names in Cyrillic, Greek,
Chinese, Japanese, Korean, Arabic, Hebrew, ... render wherever a font that has
their glyphs is installed.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import UserError
from ._common import grid_of, model_name, patch_pixels, require_vit
from .distance import mean_attention_distance, patch_distances
from .filters import filter_pca
from .posembed import pos_embed_similarity
from .rollout import attention_rollout

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


def plot_rollout(model, images: torch.Tensor, path: str | Path, head_fusion: str = "mean",
                 discard_ratio: float = 0.0, columns: int = 4) -> tuple[Path, Path]:
    """Attention rollout (``attention_rollout``) of each image drawn over it: per image
    the input and the input with the map on top, ``columns`` images a row. The inputs
    are shown rescaled to their own range (any normalisation reads the same). Numbers:
    ``.json`` with the maps (B, gh, gw). Returns (png, json)."""
    require_vit(model, "attention rollout")
    png_path, data_path = _targets(path, ".json")
    maps = attention_rollout(model, images, head_fusion=head_fusion, discard_ratio=discard_ratio)
    b, (h, w) = maps.shape[0], images.shape[-2:]
    cols = max(1, min(columns, b))
    rows = math.ceil(b / cols)
    fig = _figure(figsize=(3.2 * cols, 1.7 * rows + 0.4))
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(b):
        shown, grey = _displayable(images[i])
        left, right = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        for ax in (left, right):
            ax.imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=1)
        # the grid-sized map stretched over the image (whose pixel centres are at 0 .. w-1)
        right.imshow(maps[i].numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=1,
                     extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear")
        left.set_title(f"image {i + 1}", fontsize=8)
        right.set_title("rollout", fontsize=8)
    extra = f", discard {discard_ratio:g}" if discard_ratio else ""
    fig.suptitle(f"attention rollout of {model_name(model)} (heads: {head_fusion}{extra})", fontsize=9)
    data = {"analysis": "attention_rollout", "model": model_name(model), "head_fusion": head_fusion,
            "discard_ratio": discard_ratio, "grid": list(maps.shape[1:]), "maps": maps.tolist()}
    return _write(png_path, _png(fig), data_path, _json(data))


def plot_attention_distance(model, images: torch.Tensor, path: str | Path) -> tuple[Path, Path]:
    """Mean attention distance (``mean_attention_distance``) as the paper's figure 7
    (right): one dot per head, network depth on the x axis, distance in pixels on the
    y axis (up to the largest patch distance of the input). Numbers: ``.csv`` with
    columns layer, head (both counted from 1), mean_distance_px. Returns (png, csv)."""
    require_vit(model, "mean attention distance")
    png_path, data_path = _targets(path, ".csv")
    dist = mean_attention_distance(model, images)  # (layers, heads)
    layers, heads = dist.shape
    hw = tuple(images.shape[-2:])
    grid = grid_of(model, *hw)
    farthest = patch_distances(grid, patch_pixels(hw, grid)).max().item()

    fig = _figure(figsize=(5.6, 4.0))
    ax = fig.subplots()
    colours = _colormap("viridis")(np.linspace(0, 1, heads))
    depth = np.arange(1, layers + 1)
    for j in range(heads):
        ax.scatter(depth, dist[:, j].numpy(), s=14, color=colours[j], label=f"head {j + 1}")
    ax.set(xlabel="network depth (layer)", ylabel="mean attention distance (pixels)",
           ylim=(0, max(farthest, float(dist.max())) * 1.05), xlim=(0.5, layers + 0.5),
           title=f"{model_name(model)}, {images.shape[0]} image(s) of {hw[0]}x{hw[1]} px")
    ax.set_xticks(depth if layers <= 16 else depth[::max(1, layers // 12)])
    ax.grid(alpha=0.3)
    if heads <= 16:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()

    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["layer", "head", "mean_distance_px"])
    for i in range(layers):
        for j in range(heads):
            out.writerow([i + 1, j + 1, repr(float(dist[i, j]))])
    return _write(png_path, _png(fig), data_path, buf.getvalue().encode())


def plot_pos_embed_similarity(model, path: str | Path) -> tuple[Path, Path]:
    """Position embedding similarity (``pos_embed_similarity``) as the paper's figure 7
    (center): a tile per patch, laid out as the patch grid, showing that patch's cosine
    similarity with every patch. Numbers: ``.json`` with the grid and the (N, N)
    matrix, rows and columns in raster order. Returns (png, json)."""
    require_vit(model, "position embedding similarity")
    png_path, data_path = _targets(path, ".json")
    sim = pos_embed_similarity(model)
    gh, gw = model.grid_size()
    # one mosaic image, tiles separated by a blank (NaN) line: a single imshow however big the grid
    mosaic = np.full((gh * (gh + 1) - 1, gw * (gw + 1) - 1), np.nan)
    for i in range(gh):
        for j in range(gw):
            r, c = i * (gh + 1), j * (gw + 1)
            mosaic[r:r + gh, c:c + gw] = sim[i * gw + j].reshape(gh, gw).numpy()
    fig = _figure(figsize=(5.4, 4.6))
    ax = fig.subplots()
    im = ax.imshow(mosaic, cmap=_colormap("viridis").with_extremes(bad="white"), vmin=-1, vmax=1,
                   interpolation="nearest")
    step_r, step_c = max(1, gh // 8), max(1, gw // 8)
    ax.set_xticks([j * (gw + 1) + (gw - 1) / 2 for j in range(0, gw, step_c)], range(1, gw + 1, step_c))
    ax.set_yticks([i * (gh + 1) + (gh - 1) / 2 for i in range(0, gh, step_r)], range(1, gh + 1, step_r))
    ax.set(xlabel="input patch column", ylabel="input patch row",
           title=f"position embedding similarity, {model_name(model)}")
    ax.tick_params(length=0, labelsize=7)
    fig.colorbar(im, ax=ax, label="cosine similarity", shrink=0.85)
    fig.tight_layout()
    data = {"analysis": "pos_embed_similarity", "model": model_name(model),
            "pos_embed": getattr(model, "pos_embed_type", None), "grid": [gh, gw], "similarity": sim.tolist()}
    return _write(png_path, _png(fig), data_path, _json(data))


def plot_filter_components(model, path: str | Path, k: int = 28, columns: int = 7) -> tuple[Path, Path]:
    """Principal components of the patch-embedding filters (``patch_filter_components``)
    as the paper's figure 7 (left): one tile per component, ``columns`` a row; RGB for 3
    channels, else the channels side by side in grey. Each tile is scaled
    symmetrically (mid-grey is 0). Numbers: ``.json`` with the components (k, C, p, p)
    and their explained variance ratios. Returns (png, json)."""
    require_vit(model, "patch filter components")
    png_path, data_path = _targets(path, ".json")
    comps, ratio = filter_pca(model, k)
    c, p, q = comps.shape[1:]
    tiles = []
    for comp in comps:
        t = 0.5 + 0.5 * comp / comp.abs().max().clamp_min(1e-12)  # 0 -> 0.5, keeps the sign visible
        tiles.append(t.permute(1, 2, 0).numpy() if c == 3 else torch.cat(list(t), dim=1).numpy()[..., None])
    th, tw, depth = tiles[0].shape
    cols = max(1, min(columns, k))
    rows = math.ceil(k / cols)
    mosaic = np.ones((rows * (th + 1) - 1, cols * (tw + 1) - 1, depth))  # white gaps
    for n, t in enumerate(tiles):
        r, col = (n // cols) * (th + 1), (n % cols) * (tw + 1)
        mosaic[r:r + th, col:col + tw] = t
    fig = _figure(figsize=(1.0 + 0.9 * cols * max(1.0, tw / th), 0.9 * rows + 0.8))
    ax = fig.subplots()
    ax.imshow(mosaic if c == 3 else mosaic[..., 0], cmap=None if c == 3 else "gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"patch embedding filters of {model_name(model)}: first {k} principal components "
                 f"({100 * float(ratio.sum()):.0f}% of the variance)", fontsize=8)
    fig.tight_layout()
    data = {"analysis": "patch_filter_components", "model": model_name(model), "k": k, "shape": [c, p, q],
            "explained_variance_ratio": ratio.tolist(), "components": comps.tolist()}
    return _write(png_path, _png(fig), data_path, _json(data))


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


# ------------------------------------------------------------------------------------------------
def _targets(path: str | Path, data_suffix: str) -> tuple[Path, Path]:
    """The PNG path and the numbers' path next to it; checked before any work."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"{path}: give a .png path for the picture (the numbers go next to it as {data_suffix})")
    if not path.parent.is_dir():
        what = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise UserError(f"{path.parent} {what}; give a .png path in an existing folder")
    return path, path.with_suffix(data_suffix)


def _write(png_path: Path, png: bytes, data_path: Path, data: bytes) -> tuple[Path, Path]:
    from ..files import atomic_write

    atomic_write(data_path, lambda f: f.write(data))
    atomic_write(png_path, lambda f: f.write(png))
    return png_path, data_path


def _figure(**kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _json(data: dict) -> bytes:
    return (json.dumps(data) + "\n").encode()


def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def _displayable(image: torch.Tensor) -> tuple[np.ndarray, bool]:
    """An input image (C, H, W) as (H, W, 3) or (H, W) in [0, 1], rescaled to its own
    range; grey (the channel mean) unless it has 3 channels. Returns (array, grey)."""
    x = image.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    if x.shape[0] == 3:
        return x.permute(1, 2, 0).numpy(), False
    return x.mean(dim=0).numpy(), True
