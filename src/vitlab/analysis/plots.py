"""Pictures of the analyses, in the style of the ViT paper's figures 6 and 7
(Dosovitskiy et al., ICLR 2021, arXiv:2010.11929), each with its numbers.

Every ``plot_*`` takes the PNG path (``.png``, in an existing folder), writes
the picture there and the numbers next to it, same name, ``.csv`` or ``.json``,
and returns both paths. Both files are made in memory first and each is
written atomically (``figures``), so a refused model or a failure leaves no
file, whole or half-written. Matplotlib draws through its Agg canvas on a
private ``Figure``: no pyplot state, no GUI.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ._common import counted, grid_of, model_name, patch_pixels, require_vit
from .distance import mean_attention_distance, patch_distances
from .filters import filter_pca, filters_seen
from .posembed import pos_embed_similarity
from .rollout import attention_rollout
from ..plotting import new_figure, png_bytes
from .figures import colormap, displayable, json_bytes, picture_paths, short, write_picture

def plot_rollout(model, images: torch.Tensor, path: str | Path, head_fusion: str = "mean",
                 discard_ratio: float = 0.0, columns: int = 4,
                 labels: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Attention rollout (``attention_rollout``) of each image drawn over it: per image
    the input and the input with the map on top, ``columns`` images a row, titled with
    its label where ``labels`` (one per image, e.g. the true class) are given. The inputs
    are shown rescaled to their own range (any normalisation reads the same). Numbers:
    ``.json`` with the maps (B, gh, gw) and the labels. Returns (png, json)."""
    require_vit(model, "attention rollout")
    png_path, data_path = picture_paths(path, ".json")
    if labels is not None and len(labels) != images.shape[0]:
        raise ValueError(f"plot_rollout needs one label per image, got {len(labels)} for {images.shape[0]} images")
    maps = attention_rollout(model, images, head_fusion=head_fusion, discard_ratio=discard_ratio)
    b, (h, w) = maps.shape[0], images.shape[-2:]
    cols = max(1, min(columns, b))
    rows = math.ceil(b / cols)
    fig = new_figure(figsize=(3.2 * cols, 1.7 * rows + 0.4))
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(b):
        shown, grey = displayable(images[i])
        left, right = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        for ax in (left, right):
            ax.imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=1)
        # the grid-sized map stretched over the image (whose pixel centres are at 0 .. w-1)
        right.imshow(maps[i].numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=1,
                     extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear")
        left.set_title(f"image {i + 1}" if labels is None else short(labels[i]), fontsize=8)
        right.set_title("rollout", fontsize=8)
    extra = f", discard {discard_ratio:g}" if discard_ratio else ""
    fig.suptitle(f"attention rollout of {model_name(model)} (heads: {head_fusion}{extra})", fontsize=9)
    data = {"analysis": "attention_rollout", "model": model_name(model), "head_fusion": head_fusion,
            "discard_ratio": discard_ratio, "grid": list(maps.shape[1:]),
            **({} if labels is None else {"labels": [str(c) for c in labels]}), "maps": maps.tolist()}
    return write_picture(png_path, png_bytes(fig), data_path, json_bytes(data))


def plot_attention_distance(model, images: torch.Tensor, path: str | Path) -> tuple[Path, Path]:
    """Mean attention distance (``mean_attention_distance``) as the paper's figure 7
    (right): one dot per head, network depth on the x axis, distance in pixels on the
    y axis (up to the largest patch distance of the input). Numbers: ``.csv`` with
    columns layer, head (both counted from 1), mean_distance_px. Returns (png, csv)."""
    require_vit(model, "mean attention distance")
    png_path, data_path = picture_paths(path, ".csv")
    dist = mean_attention_distance(model, images)  # (layers, heads)
    layers, heads = dist.shape
    hw = tuple(images.shape[-2:])
    grid = grid_of(model, *hw)
    farthest = patch_distances(grid, patch_pixels(hw, grid)).max().item()

    fig = new_figure(figsize=(5.6, 4.0))
    ax = fig.subplots()
    colours = colormap("viridis")(np.linspace(0, 1, heads))
    depth = np.arange(1, layers + 1)
    for j in range(heads):
        ax.scatter(depth, dist[:, j].numpy(), s=14, color=colours[j], label=f"head {j + 1}")
    ax.set(xlabel="network depth (layer)", ylabel="mean attention distance (pixels)",
           ylim=(0, max(farthest, float(dist.max())) * 1.05), xlim=(0.5, layers + 0.5),
           title=f"{model_name(model)}, {counted(images.shape[0], 'image')} of {hw[0]}x{hw[1]} px")
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
    return write_picture(png_path, png_bytes(fig), data_path, buf.getvalue().encode())


def plot_pos_embed_similarity(model, path: str | Path) -> tuple[Path, Path]:
    """Position embedding similarity (``pos_embed_similarity``) as the paper's figure 7
    (center): a tile per patch, laid out as the patch grid, showing that patch's cosine
    similarity with every patch. Numbers: ``.json`` with the grid and the (N, N)
    matrix, rows and columns in raster order. Returns (png, json)."""
    require_vit(model, "position embedding similarity")
    png_path, data_path = picture_paths(path, ".json")
    sim = pos_embed_similarity(model)
    gh, gw = model.grid_size()
    # one mosaic image, tiles separated by a blank (NaN) line: a single imshow however big the grid
    mosaic = np.full((gh * (gh + 1) - 1, gw * (gw + 1) - 1), np.nan)
    for i in range(gh):
        for j in range(gw):
            r, c = i * (gh + 1), j * (gw + 1)
            mosaic[r:r + gh, c:c + gw] = sim[i * gw + j].reshape(gh, gw).numpy()
    fig = new_figure(figsize=(5.4, 4.6))
    ax = fig.subplots()
    im = ax.imshow(mosaic, cmap=colormap("viridis").with_extremes(bad="white"), vmin=-1, vmax=1,
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
    return write_picture(png_path, png_bytes(fig), data_path, json_bytes(data))


def plot_filter_components(model, path: str | Path, k: int = 28, columns: int = 7) -> tuple[Path, Path]:
    """Principal components of the patch-embedding filters (``patch_filter_components``)
    as the paper's figure 7 (left): one tile per component, ``columns`` a row; RGB for 3
    channels, else the channels side by side in grey. Each tile is scaled
    symmetrically (mid-grey is 0). Numbers: ``.json`` with the components (k, C, p, p)
    and their explained variance ratios. Returns (png, json)."""
    require_vit(model, "patch filter components")
    png_path, data_path = picture_paths(path, ".json")
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
    fig = new_figure(figsize=(1.0 + 0.9 * cols * max(1.0, tw / th), 0.9 * rows + 0.8))
    ax = fig.subplots()
    ax.imshow(mosaic if c == 3 else mosaic[..., 0], cmap=None if c == 3 else "gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{filters_seen(model)} of {model_name(model)}: first {k} principal components "
                 f"({100 * float(ratio.sum()):.0f}% of the variance)", fontsize=8)
    fig.tight_layout()
    data = {"analysis": "patch_filter_components", "model": model_name(model), "k": k, "shape": [c, p, q],
            "explained_variance_ratio": ratio.tolist(), "components": comps.tolist()}
    return write_picture(png_path, png_bytes(fig), data_path, json_bytes(data))
