"""``vitlab analyze CHECKPOINT --out DIR``: every analysis of a trained model in one folder.

For a ViT or hybrid ViT: attention rollout over a few images, mean attention
distance over up to 128 images, position-embedding similarity and the
patch-embedding filters' principal components (a hybrid has no image-patch
filters: that picture is skipped, with the reason in the report). For every
model, ViT or CNN, the errors on the run's whole validation/test split (as
``vitlab eval`` counts them): a gallery of images with their predictions, the
most confident mistakes, per-class accuracy and the confusion matrix in counts
and row-normalised. From the run folder the checkpoint lies in: the training
curves (``curves.png``), the last row of ``metrics.csv`` and ``model_card.md``,
where they exist. ``report.md`` and the self-contained ``report.html`` show
every picture with its numbers (``analysis.report``).

Images are those of the run's validation split (the dataset the checkpoint was
trained on; ``data.*`` overrides such as ``data.root`` apply): for the rollout,
one class after another (the first image of every class, then the second, ...),
so that it shows as many classes as it shows images; for the attention distance,
the first images of the split. Or they are the image files given (folders are
searched for image files); the files have no labels, so they get no error
analysis. Top-5 accuracy is shown only for a model of more than 5 classes. The output folder is made only
once the checkpoint, the images and the dataset have been read, and removed
again (or emptied, if it existed empty) if a later step fails.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ._common import NotAnalysable, counted
from .filters import max_components
from ..metrics import error_summary, predict_split
from .gallery import (class_spread_indices, confident_mistakes, gallery_indices, plot_confusion_matrix, plot_gallery,
                      plot_per_class, prediction_rows)
from ..plotting import fonts
from .plots import (plot_attention_distance, plot_filter_components, plot_pos_embed_similarity,
                    plot_rollout)
from .report import Items, Picture, Preformatted, Section, Table, Text, write_report

CONFUSION_TABLE_MAX = 20  # classes up to which the report shows the confusion matrix as a table too


def analyze_checkpoint(path: str | Path, out: str | Path, images: list[str] = (), num_images: int = 8,
                       distance_images: int = 128, overrides: list[str] = (), gallery: int = 16,
                       device: str = "auto") -> list[str]:
    """Write the analyses of checkpoint ``path`` to the folder ``out``; returns the
    lines of the report (written as ``out/report.md`` and ``out/report.html``). ``device``
    (auto, cpu, cuda, cuda:N) predicts the whole split for the error analysis; the
    attention of the few images shown is computed on the CPU."""
    from ..run.runtime import resolve_device
    from ..run import checkpoint
    from ..run.split import check_data_overrides, eval_split

    if num_images < 1 or distance_images < 1 or gallery < 1:
        raise UserError("--num-images, --distance-images and --gallery must be 1 or more")
    check_data_overrides(overrides, "analyze")
    device = resolve_device(device)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty folder; choose another")
    if not out.parent.is_dir():
        raise UserError(f"cannot write to {out}: the folder {out.parent} does not exist")
    ckpt = checkpoint.load(path)
    checkpoint.require_run(ckpt, path)
    model = checkpoint.build_model(ckpt).eval()
    files = _image_files(images)
    split = None if files else eval_split(ckpt, overrides, "analyze")
    if files:
        distance_batch = _load_files(ckpt, files)
        shown = min(num_images, len(files))
        rollout = Rollout(distance_batch[:num_images], None, f"The first {counted(shown, 'image file')} given.")
    else:
        distance_batch = _split_images(split, torch.arange(min(distance_images, len(split.dataset))))
        rollout = _rollout_images(split, num_images)

    made = not out.exists()
    out.mkdir(exist_ok=True)
    try:
        n_params = sum(p.numel() for p in model.parameters())
        intro = [Text(f"Model `{model.model_name}`, {n_params:,} parameters; images: "
                      + ("the files given." if files else f"the {_split_word(split)} of `{ckpt['dataset']['name']}`."))]
        with fonts():
            sections = _vit_sections(model, rollout, distance_batch, out)
            if split is None:
                sections.append(Section("Errors", [Items([
                    "error analysis (gallery, most confident mistakes, per-class accuracy, confusion matrix): "
                    "skipped (the image files given have no labels; run without --images to analyse the "
                    "validation split)"])]))
            else:
                sections += _error_sections(model, split, ckpt, gallery, Path(path).name, out, device)
        sections += _run_sections(Path(path).parent, out)
        md_path, _ = write_report(out, f"Analyses of `{path}`", intro, sections)
        return md_path.read_text(encoding="utf-8").splitlines()
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        else:  # it was empty: empty it again
            for p in out.iterdir():
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------------ inputs
def _split_word(split) -> str:
    """The evaluation split in words: 'test split', 'validation split' or 'held-out validation split'."""
    return {"test": "test split", "holdout": "held-out validation split"}.get(split.info.val_split,
                                                                            "validation split")


def _image_files(given: list[str]) -> list[str]:
    """The image files of ``--images``: files as given, folders searched for image files."""
    from ..data import IMG_EXTENSIONS, scan_images

    files = []
    for p in map(Path, given):
        if p.is_dir():
            found, _ = scan_images(p)
            if not found:
                raise UserError(f"--images {p}: no image files in this folder "
                                f"(extensions: {' '.join(IMG_EXTENSIONS)})")
            files += found
        else:
            files.append(str(p))  # a missing or unreadable file is reported when it is read
    return files


def _load_files(ckpt: dict, files: list[str]) -> torch.Tensor:
    """The model's inputs for image files, all read before anything is written."""
    from ..data import build_eval_transform, load_image
    from ..run import checkpoint

    transform = build_eval_transform(checkpoint.dataset_info(ckpt), ckpt["config"]["data"].get("img_size"))
    return torch.stack([transform(load_image(p)) for p in files])


def _split_images(split, indices: torch.Tensor) -> torch.Tensor:
    """The model's inputs (eval transforms) of these images of the split, in this order."""
    from torch.utils.data import Subset

    from ..run.split import split_batches

    part = Subset(split.dataset, indices.tolist())
    return torch.cat([x for x, _ in split_batches(split, len(part), torch.device("cpu"), part)])


@dataclass
class Rollout:
    images: torch.Tensor  # (B, C, H, W), the model's inputs
    labels: list[str] | None  # their true classes, where known
    note: str  # how they were chosen, for the report


def _rollout_images(split, count: int) -> Rollout:
    """``count`` images of the split for the rollout picture, one class after another
    (``class_spread_indices``), with their classes."""
    targets = torch.as_tensor(split.dataset.targets)
    chosen = class_spread_indices(targets, count)
    classes = list(split.info.classes)
    labels = [classes[t] for t in targets[chosen].tolist()]
    shown = len(set(labels))
    return Rollout(_split_images(split, chosen), labels,
                   f"{counted(len(chosen), 'image')} of the split, taken in turn from each class (the first image "
                   f"of every class, then the second, ...): {counted(shown, 'class', 'classes')} of "
                   f"{len(classes)}; each titled with its true class.")


# ------------------------------------------------------------------------------------------------ sections
def _vit_sections(model, rollout: Rollout, batch: torch.Tensor, out: Path) -> list[Section]:
    """The ViT-only pictures, each a subsection, or the reason it was skipped: the rollout of
    ``rollout``'s images, the attention distance averaged over ``batch``."""
    head = Section("Attention and embeddings")
    sections = [head]
    skipped = []
    notes = {"rollout.png": rollout.note,
             "attention_distance.png": f"Averaged over {counted(batch.shape[0], 'image')}."}
    steps = [("attention rollout", "rollout.png",
              lambda p: plot_rollout(model, rollout.images, p, labels=rollout.labels)),
             ("mean attention distance", "attention_distance.png",
              lambda p: plot_attention_distance(model, batch, p)),
             ("position-embedding similarity", "pos_embed_similarity.png",
              lambda p: plot_pos_embed_similarity(model, p)),
             ("patch-embedding filters (principal components)", "filters.png",
              lambda p: plot_filter_components(model, p, k=min(28, max(1, max_components(model)))))]
    for title, name, draw in steps:
        try:
            png, data = draw(out / name)
        except NotAnalysable as e:
            skipped.append(f"{title}: skipped ({e})")
            continue
        blocks = [Text(notes[name])] if name in notes else []
        sections.append(Section(title, [*blocks, Picture(png, title), Text(f"Numbers: `{data.name}`.")], level=3))
    if skipped:
        head.blocks.append(Items(skipped))
    return sections


def _error_sections(model, split, ckpt: dict, count: int, name: str, out: Path, device) -> list[Section]:
    """Predictions over the whole split (on ``device``): the summary, the two galleries,
    per-class accuracy and the confusion matrices."""
    from ..run.split import split_batches

    val_ds, info = split.dataset, split.info
    preds = predict_split(model.to(device), split_batches(split, 256, device))
    model.cpu()
    classes = list(info.classes)
    s = error_summary(preds, classes)
    mean, std = ckpt["dataset"]["mean"], ckpt["dataset"]["std"]

    def inputs(indices: torch.Tensor) -> torch.Tensor:
        return torch.stack([val_ds[i][0] for i in indices.tolist()])

    top5 = f", top-5 {100 * s['top5']:.2f}%" if len(classes) > 5 else ""  # with 5 classes or fewer it is 100%
    errors = Section("Errors", [Text(f"{counted(s['n'], 'image')}: top-1 {100 * s['top1']:.2f}%{top5}, "
                                     f"loss {s['loss']:.4f}; {s['wrong']} wrong.")])
    shown = gallery_indices(s["n"], count)
    png, data = plot_gallery(inputs(shown), prediction_rows(preds, shown, classes), out / "gallery.png", mean, std,
                             title=f"{len(shown)} of {counted(s['n'], 'image')}, spread evenly over the split "
                                   "(red: wrong)")
    predictions = Section("Predictions", [
        Text(f"{counted(len(shown), 'image')} spread evenly over the split, de-normalised with the dataset's mean "
             "and std, each with the predicted class, its softmax confidence and the true class; wrong ones in red."),
        Picture(png, "predictions"), Text(f"Numbers: `{data.name}`.")], level=3)

    mistakes = Section("Most confident mistakes", level=3)
    worst = confident_mistakes(preds, count)
    if len(worst):
        rows = prediction_rows(preds, worst, classes)
        png, data = plot_gallery(inputs(worst), rows, out / "mistakes.png", mean, std,
                                 title=f"the {len(worst)} most confident of {counted(s['wrong'], 'wrong prediction')}")
        mistakes.blocks += [
            Text(f"The {counted(len(worst), 'wrong prediction')} with the highest softmax confidence over the split."),
            Picture(png, "most confident mistakes"),
            Table(["index", "true", "predicted", "confidence"],
                  [[r["index"], r["true"], r["predicted"], f"{100 * r['confidence']:.1f}%"] for r in rows],
                  right=(0, 3)),
            Text(f"Numbers: `{data.name}`.")]
    else:
        mistakes.blocks.append(Items(["most confident mistakes: skipped (every prediction is right)"]))

    png, data = plot_per_class(s, out / "per_class.png",
                               title=f"{name}: per-class accuracy ({counted(s['n'], 'image')})")
    per_class = Section("Per-class accuracy", [
        Picture(png, "per-class accuracy"),
        Table(["class", "images", "correct", "accuracy"],
              [[c, s["per_class_count"][i], int(s["confusion"][i, i]), f"{100 * a:.2f}%"]
               for i, (c, a) in enumerate(s["per_class"].items())], right=(1, 2, 3)),
        Text(f"Numbers: `{data.name}`.")], level=3)

    conf = s["confusion"]
    counts_png, counts_csv = plot_confusion_matrix(conf, classes, out / "confusion.png",
                                                   title=f"{name}: top-1 {100 * s['top1']:.2f}%")
    norm_png, norm_csv = plot_confusion_matrix(conf, classes, out / "confusion_normalised.png", normalised=True,
                                               title=f"{name}: fraction of each true class")
    confusion = Section("Confusion matrix", [
        Text("Rows: the true class; columns: the predicted class. In counts, then with each row divided by "
             "the images of its class."),
        Picture(counts_png, "confusion matrix (counts)"), Picture(norm_png, "confusion matrix (row-normalised)")],
        level=3)
    if len(classes) <= CONFUSION_TABLE_MAX:
        confusion.blocks.append(Table(["true \\ predicted", *classes], [[c, *conf[i].tolist()]
                                                                       for i, c in enumerate(classes)],
                                      right=range(1, len(classes) + 1)))
    confusion.blocks.append(Text(f"Numbers: `{counts_csv.name}` (counts), `{norm_csv.name}` (row fractions)."))
    return [errors, predictions, mistakes, per_class, confusion]


def _run_sections(run: Path, out: Path) -> list[Section]:
    """The training curves, the last row of metrics.csv and the model card of the run
    folder ``run`` (the checkpoint's folder), where they exist."""
    section = Section("Training run", [Text(f"From the run folder `{run}`.")])
    absent = []
    if (run / "curves.png").is_file():
        shutil.copyfile(run / "curves.png", out / "curves.png")
        section.blocks.append(Picture(out / "curves.png", "training curves"))
    else:
        absent.append("curves.png")
    last = _last_metrics(run / "metrics.csv")
    if last:
        section.blocks += [Text("Last epoch (`metrics.csv`):"),
                           Table(list(last), [list(last.values())], right=range(len(last)))]
    else:
        absent.append("metrics.csv")
    card = run / "model_card.md"
    sections = [section]
    if card.is_file():
        sections.append(Section("Model card", [Text("`model_card.md` of the run:"),
                                               Preformatted(card.read_text(encoding="utf-8", errors="replace"))]))
    if absent:
        section.blocks.append(Text(f"Not in the run folder: {', '.join(f'`{a}`' for a in absent)}."))
    return sections


def _last_metrics(path: Path) -> dict[str, str] | None:
    """The last row of a metrics.csv, or None when there is none (or it cannot be read)."""
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return {k: v for k, v in rows[-1].items() if k is not None} if rows else None
