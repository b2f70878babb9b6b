"""The errors of a classifier on a labelled split, for every model (ViT or CNN):
what it predicts for each image, galleries of images with their predictions,
the most confident mistakes, per-class accuracy and the confusion matrix.

Computing and drawing are apart: ``predict_split``, ``error_summary`` and
``confusion_matrix`` (``vitlab.metrics``, shared with ``vitlab eval``),
``gallery_indices``, ``class_spread_indices`` (the rollout's images: one class
after another), ``confident_mistakes`` and ``prediction_rows`` return CPU
tensors and lists; each ``plot_*`` draws one PNG and writes its numbers next
to it as ``.csv`` (same name), as the pictures of ``plots`` do, and returns
both paths. Pictures are drawn with ``figures.fonts()``, so class names in any
script render where a font for it is installed.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

import torch

from ..metrics import confusion_png
from ..plotting import new_figure, png_bytes
from ._common import counted
from .figures import picture_paths, short, with_fonts, write_picture


def gallery_indices(n: int, count: int) -> torch.Tensor:
    """``count`` indices spread evenly over a split of ``n`` images (first and last
    included), so that a split stored class by class still shows every part of it."""
    if count >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, count).round().long().unique()


def class_spread_indices(targets: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` indices of a labelled split taken round-robin over its classes, in class order:
    the first image of every class, then the second of every class, and so on (each class's
    images in split order). Deterministic, and ``min(count, classes)`` classes are shown
    however the split is ordered."""
    targets = torch.as_tensor(targets).long().flatten()
    if count < 1 or len(targets) == 0:
        return torch.empty(0, dtype=torch.long)
    order = torch.argsort(targets, stable=True)  # grouped by class, split order within a class
    _, sizes = torch.unique_consecutive(targets[order], return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes
    klass = torch.arange(len(sizes)).repeat_interleave(sizes)  # the class's place among the classes
    turn = torch.arange(len(order)) - starts.repeat_interleave(sizes)  # the image's place in its class
    return order[torch.argsort(turn * len(sizes) + klass, stable=True)][:count]


def confident_mistakes(preds: dict[str, torch.Tensor], count: int) -> torch.Tensor:
    """Indices of the (up to) ``count`` wrong predictions with the highest confidence,
    most confident first (ties: lower index first)."""
    wrong = (preds["pred"] != preds["target"]).nonzero().flatten()
    order = preds["confidence"][wrong].sort(descending=True, stable=True).indices
    return wrong[order][:count]


def prediction_rows(preds: dict[str, torch.Tensor], indices: torch.Tensor, classes: Sequence[str]) -> list[dict]:
    """One dict per index: index, true, predicted (class names), confidence, correct."""
    rows = []
    for i in indices.tolist():
        t, p = int(preds["target"][i]), int(preds["pred"][i])
        rows.append({"index": i, "true": classes[t], "predicted": classes[p],
                     "confidence": float(preds["confidence"][i]), "correct": t == p})
    return rows


def denormalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Model inputs (B, C, H, W), normalised with the dataset's ``mean`` and ``std``, back
    to pixel values in [0, 1] for display."""
    c = images.shape[1]
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, c, 1, 1)
    return (images.detach().float().cpu() * s + m).clamp(0, 1)


# ------------------------------------------------------------------------------------------------ drawing
@with_fonts
def plot_gallery(images: torch.Tensor, rows: list[dict], path: str | Path, mean: Sequence[float],
                 std: Sequence[float], title: str = "", columns: int = 8) -> tuple[Path, Path]:
    """A grid of images (normalised model inputs (B, C, H, W), shown de-normalised with the
    dataset's ``mean`` and ``std``), each titled with its predicted class, the confidence
    and the true class; wrong predictions have a red title and a red frame. ``rows`` are
    those of ``prediction_rows``, one per image. Numbers: ``.csv`` with columns index,
    true, predicted, confidence, correct. Returns (png, csv)."""
    png_path, data_path = picture_paths(path, ".csv")
    if len(rows) != images.shape[0] or not rows:
        raise ValueError(f"plot_gallery needs one row per image and at least one, got {len(rows)} rows "
                         f"for {images.shape[0]} images")
    shown = denormalise(images, mean, std)
    b = len(rows)
    cols = max(1, min(columns, b))
    nrows = math.ceil(b / cols)
    fig = new_figure(figsize=(1.9 * cols, 2.15 * nrows + 0.5))
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.flat[b:]:
        ax.set_axis_off()
    for ax, img, row in zip(axes.flat, shown, rows):
        grey = img.shape[0] != 3
        ax.imshow(img.mean(0).numpy() if grey else img.permute(1, 2, 0).numpy(), cmap="gray" if grey else None,
                  vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        colour = "black" if row["correct"] else "red"
        for spine in ax.spines.values():
            spine.set_edgecolor("0.75" if row["correct"] else "red")
            spine.set_linewidth(0.8 if row["correct"] else 3.0)
        ax.set_title(f"{short(row['predicted'])} {100 * row['confidence']:.0f}%\ntrue: {short(row['true'])}",
                     fontsize=7, color=colour)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()

    buf = io.StringIO()
    out = csv.DictWriter(buf, fieldnames=["index", "true", "predicted", "confidence", "correct"],
                         lineterminator="\n")
    out.writeheader()
    for row in rows:
        out.writerow({**row, "confidence": f"{row['confidence']:.6f}", "correct": int(row["correct"])})
    return write_picture(png_path, png_bytes(fig), data_path, buf.getvalue().encode())


@with_fonts
def plot_per_class(summary: dict, path: str | Path, title: str = "") -> tuple[Path, Path]:
    """Per-class accuracy (``error_summary``) as horizontal bars, one per class in the
    dataset's order, with the overall top-1 accuracy as a dashed line (class names up to
    100 classes). Numbers: ``.csv`` with columns class, images, correct, accuracy.
    Returns (png, csv)."""
    png_path, data_path = picture_paths(path, ".csv")
    classes, counts = summary["classes"], summary["per_class_count"]
    acc = [100 * a for a in summary["per_class"].values()]
    k = len(classes)
    fig = new_figure(figsize=(7.0, min(1.4 + 0.24 * k, 30.0)))
    ax = fig.subplots()
    ax.barh(range(k), acc, color="tab:blue", height=0.7)
    ax.axvline(100 * summary["top1"], color="0.3", linestyle="--", linewidth=1)
    if k <= 100:
        ax.set_yticks(range(k), [short(c, 32) for c in classes], fontsize=7 if k > 30 else 8)
    else:
        ax.set_yticks([])
    if k <= 40:
        for i, a in enumerate(acc):
            ax.text(min(a, 100) + 1, i, f"{a:.0f}%", va="center", fontsize=7)
    ax.set(xlim=(0, 108), ylim=(k - 0.5, -0.5),
           xlabel=f"accuracy (%); dashed: top-1 over all classes, {100 * summary['top1']:.1f}%",
           title=title or f"per-class accuracy ({counted(summary['n'], 'image')})")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()

    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["class", "images", "correct", "accuracy"])
    conf = summary["confusion"]
    for i, c in enumerate(classes):
        out.writerow([c, counts[i], int(conf[i, i]), f"{acc[i] / 100:.6f}"])
    return write_picture(png_path, png_bytes(fig), data_path, buf.getvalue().encode())


@with_fonts
def plot_confusion_matrix(conf: torch.Tensor, classes: Sequence[str], path: str | Path, normalised: bool = False,
                          title: str = "") -> tuple[Path, Path]:
    """The confusion matrix as ``vitlab eval`` draws it (``metrics.confusion_png``),
    cells labelled with counts or, ``normalised``, with the fraction of their row (true
    class). Numbers: ``.csv``, one row per true class, one column per predicted class,
    counts or row fractions. Returns (png, csv)."""
    png_path, data_path = picture_paths(path, ".csv")
    conf = conf.long()
    norm = conf.double() / conf.sum(1, keepdim=True).clamp(min=1)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["true \\ predicted", *classes])
    for i, c in enumerate(classes):
        out.writerow([c, *([f"{v:.6f}" for v in norm[i].tolist()] if normalised else conf[i].tolist())])
    png = confusion_png(conf, list(classes), title=title, normalised=normalised)
    return write_picture(png_path, png, data_path, buf.getvalue().encode())
