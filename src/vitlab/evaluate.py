"""Evaluation of a checkpoint on its dataset, and predictions on image files."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import UserError
from .run import checkpoint
from .config import from_dict
from .train.engine import model_from_checkpoint, resolve_device
from .data.loader import make_batches


@torch.no_grad()
def evaluate_checkpoint(path: str | Path, overrides: list[str] = (), device: str = "auto",
                        batch_size: int = 256) -> dict:
    """Top-1, top-5, loss, per-class accuracy and the confusion matrix of a
    checkpoint on the whole validation/test split of the dataset it was trained
    on, whatever ``data.val_subset`` the run used (``overrides`` such as
    ``data.root=...`` or ``data.val_subset=1000`` change that)."""
    from .data import build_datasets
    from .config import apply_overrides

    for o in overrides:
        if not str(o).startswith("data."):
            raise UserError(f"eval takes data.* settings only, got {str(o).split('=')[0]!r}")
    ckpt = checkpoint.load(path)
    cfg = from_dict(ckpt["config"])
    cfg.data.val_subset = None  # the whole split, not the subset a quick training run validated on
    apply_overrides(cfg, overrides)
    cfg.data.train_subset = 1  # the training split is not needed
    dev = resolve_device(device)
    _, val_ds, info = build_datasets(cfg.data, cfg.train.seed)
    if info.num_classes != ckpt["dataset"]["num_classes"]:
        raise UserError(f"the dataset has {info.num_classes} classes but the checkpoint's model "
                        f"predicts {ckpt['dataset']['num_classes']}")
    from .analysis.gallery import error_summary, predict_split  # the one computation of these numbers

    model = model_from_checkpoint(ckpt).to(dev).eval()
    batches = make_batches(val_ds, batch_size, train=False, data_cfg=cfg.data, info=info, device=dev,
                           seed=0, epoch=0, num_workers=cfg.data.num_workers)
    r = error_summary(predict_split(model, batches), info.classes)
    return {k: r[k] for k in ("n", "top1", "top5", "loss", "per_class", "confusion", "classes")}


def plot_confusion(conf: torch.Tensor, classes: list[str], path: str | Path, title: str = "",
                   normalised: bool = False) -> None:
    """The confusion matrix ``conf`` (true class x predicted class, counts) as a PNG, coloured
    by the fraction of each true class; up to 30 classes, each cell also shows its count, or
    with ``normalised`` its fraction of the row (the row-normalised matrix)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    norm = conf.float() / conf.sum(1, keepdim=True).clamp(min=1)
    size = min(4 + 0.45 * k, 30)
    fig, ax = plt.subplots(figsize=(size, size))
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
    plt.close(fig)


@torch.no_grad()
def predict(path: str | Path, images: list[str], top_k: int = 5, device: str = "auto") -> list[dict]:
    """Top-k classes with probabilities for each image file."""
    from .data import DatasetInfo, build_eval_transform, load_image

    ckpt = checkpoint.load(path)
    info = DatasetInfo(**{k: (tuple(v) if k in ("mean", "std") else v) for k, v in ckpt["dataset"].items()})
    img_size = ckpt["config"]["data"].get("img_size")
    transform = build_eval_transform(info, img_size)
    batch = torch.stack([transform(load_image(p)) for p in images])  # loads all before the model runs
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt).to(dev).eval()
    probs = model(batch.to(dev)).float().softmax(-1).cpu()
    k = min(top_k, probs.shape[-1])
    out = []
    for p, row in zip(images, probs):
        val, idx = row.topk(k)
        out.append({"image": str(p), "top": [{"class": info.classes[i], "index": int(i), "prob": float(v)}
                                             for v, i in zip(val.tolist(), idx.tolist())]})
    return out
