"""``vitlab analyze CHECKPOINT --out DIR``: every analysis of a trained model in one folder.

For a ViT or hybrid ViT: attention rollout over a few images, mean attention
distance over up to 128 images, position-embedding similarity and the
patch-embedding filters' principal components (a hybrid has no image-patch
filters: that picture is skipped, with the reason in the report). For every
model, ViT or CNN, on the run's validation/test split: the confusion matrix
and per-class accuracy. ``report.md`` lists what was drawn, with the numbers.

Images are the first images of the run's validation split (the dataset the
checkpoint was trained on; ``data.*`` overrides such as ``data.root`` apply),
or the image files given. The output folder is made only once the checkpoint
and the images have been read, and removed again if a later step fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..errors import UserError
from ._common import NotAnalysable
from .plots import plot_attention_distance, plot_filter_components, plot_pos_embed_similarity, plot_rollout


def analyze_checkpoint(path: str | Path, out: str | Path, images: list[str] = (), num_images: int = 8,
                       distance_images: int = 128, overrides: list[str] = ()) -> list[str]:
    """Write the analyses of checkpoint ``path`` to the folder ``out``; returns the
    lines of the report (also written as ``out/report.md``)."""
    from ..evaluate import evaluate_checkpoint, plot_confusion
    from ..train import checkpoint
    from ..train.engine import model_from_checkpoint

    if num_images < 1 or distance_images < 1:
        raise UserError("--num-images and --distance-images must be 1 or more")
    for o in overrides:
        if not str(o).startswith("data."):
            raise UserError(f"analyze takes data.* settings only, got {str(o).split('=')[0]!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty folder; choose another")
    if not out.parent.is_dir():
        raise UserError(f"cannot write to {out}: the folder {out.parent} does not exist")
    ckpt = checkpoint.load(path)
    model = model_from_checkpoint(ckpt).eval()
    batch = _images(ckpt, images, max(num_images, distance_images), overrides)

    made = not out.exists()
    out.mkdir(exist_ok=True)
    try:
        lines = [f"# Analyses of {path}", "",
                 f"Model `{model.model_name}`, {sum(p.numel() for p in model.parameters()):,} parameters; "
                 f"images: {'the files given' if images else 'the validation split of ' + ckpt['dataset']['name']}.",
                 ""]
        lines += _vit_pictures(model, batch, num_images, out)
        if not images:
            r = evaluate_checkpoint(path, overrides)
            plot_confusion(r["confusion"], r["classes"], out / "confusion.png",
                           title=f"{Path(path).name}: top-1 {100 * r['top1']:.2f}%")
            lines += ["## Errors", "",
                      f"{r['n']} images: top-1 {100 * r['top1']:.2f}%, top-5 {100 * r['top5']:.2f}%.", "",
                      "![confusion matrix](confusion.png)", "", "| class | accuracy |", "|---|---:|"]
            lines += [f"| {c} | {100 * a:.2f}% |" for c, a in r["per_class"].items()]
        (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return lines


def _images(ckpt: dict, files: list[str], n: int, overrides: list[str]) -> torch.Tensor:
    """The model's inputs: the image files given, or the first ``n`` validation images."""
    from ..data import DatasetInfo, build_datasets, build_eval_transform, load_image
    from ..train.config import apply_overrides, from_dict
    from ..train.loader import make_batches

    cfg = from_dict(ckpt["config"])
    if files:
        info = DatasetInfo(**{k: (tuple(v) if k in ("mean", "std") else v) for k, v in ckpt["dataset"].items()})
        transform = build_eval_transform(info, cfg.data.img_size)
        return torch.stack([transform(load_image(p)) for p in files])
    apply_overrides(cfg, overrides)
    cfg.data.train_subset, cfg.data.val_subset = 1, n
    _, val_ds, info = build_datasets(cfg.data, cfg.train.seed)
    batches = make_batches(val_ds, n, train=False, data_cfg=cfg.data, info=info, device=torch.device("cpu"),
                           seed=0, epoch=0, num_workers=0)
    return torch.cat([x for x, _ in batches])[:n]


def _vit_pictures(model, batch: torch.Tensor, num_images: int, out: Path) -> list[str]:
    """The ViT-only pictures, each listed in the report, or the reason it was skipped."""
    lines = ["## Attention and embeddings", ""]
    steps = [("attention rollout", "rollout.png", lambda p: plot_rollout(model, batch[:num_images], p)),
             ("mean attention distance", "attention_distance.png",
              lambda p: plot_attention_distance(model, batch, p)),
             ("position-embedding similarity", "pos_embed_similarity.png",
              lambda p: plot_pos_embed_similarity(model, p)),
             ("patch-embedding filters (principal components)", "filters.png",
              lambda p: plot_filter_components(model, p, k=min(28, _max_components(model))))]
    for title, name, draw in steps:
        try:
            png, data = draw(out / name)
        except NotAnalysable as e:
            lines += [f"- {title}: skipped ({e})"]
            continue
        lines += [f"### {title}", "", f"![{title}]({png.name})", "", f"Numbers: `{data.name}`.", ""]
    return lines


def _max_components(model) -> int:
    w = getattr(getattr(getattr(model, "patch_embed", None), "proj", None), "weight", None)
    return 28 if w is None else max(1, min(w.shape[0] - 1, w[0].numel()))
