"""Numbers that several commands compute, computed once here: a model's
predictions on a labelled split, the error summary (top-1, top-5, loss,
per-class accuracy, confusion matrix), the confusion matrix's picture and the
summary of a run's history.

``vitlab eval``, ``vitlab analyze``, the trainer, ``vitlab sweep`` and
``vitlab compare`` all call these, so their figures cannot disagree.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def predict_split(model, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Run ``model`` over labelled ``batches`` of (images (B, C, H, W), labels (B,)), in
    eval mode on the model's device. Returns CPU tensors with one entry per image, in the
    order of the batches: ``target`` and ``pred`` (N,) int64, ``confidence`` (N,) the
    softmax probability of ``pred``, ``loss`` (N,) cross-entropy, ``top5`` (N,) bool
    (the label among the five most probable classes)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("target", "pred", "confidence", "loss", "top5")}
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            if device is not None:
                x, y = x.to(device), y.to(device)
            logits = model(x).float()  # (B, K)
            conf, pred = logits.softmax(-1).max(-1)
            top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices  # (B, 5)
            for k, v in (("target", y), ("pred", pred), ("confidence", conf),
                         ("loss", F.cross_entropy(logits, y, reduction="none")),
                         ("top5", (top == y[:, None]).any(-1))):
                parts[k].append(v.cpu())
    finally:
        model.train(was_training)
    if not parts["target"]:
        raise ValueError("predict_split got no batches: the split is empty")
    return {k: torch.cat(v) for k, v in parts.items()}


def confusion_matrix(target: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts, rows the true class, columns the predicted one."""
    k = num_classes
    return torch.bincount(target.long() * k + pred.long(), minlength=k * k).view(k, k)


def confusion_png(conf: torch.Tensor, classes: Sequence[str], title: str = "", normalised: bool = False) -> bytes:
    """The confusion matrix ``conf`` (true class x predicted class, counts) as PNG bytes,
    coloured by the fraction of each true class; up to 30 classes, each cell also shows
    its count, or with ``normalised`` its fraction of the row. Drawn inside
    ``plotting.fonts()`` (tick labels are made while saving), so class names in any
    script render where a font has them."""
    from .plotting import fonts, new_figure, png_bytes

    k = len(classes)
    norm = conf.float() / conf.sum(1, keepdim=True).clamp(min=1)
    size = min(4 + 0.45 * k, 30)
    with fonts():
        fig = new_figure(figsize=(size, size))
        ax = fig.subplots()
        ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
        if k <= 30:
            ax.set_xticks(range(k), list(classes), rotation=90)
            ax.set_yticks(range(k), list(classes))
            for i in range(k):
                for j in range(k):
                    if conf[i, j]:
                        ax.text(j, i, f"{norm[i, j]:.2f}" if normalised else int(conf[i, j]), ha="center",
                                va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
        default = ("confusion matrix (rows normalised: fraction of each true class)" if normalised
                   else "confusion matrix")
        ax.set(xlabel="predicted", ylabel="true", title=title or default)
        fig.tight_layout()
        return png_bytes(fig)


def error_summary(preds: dict[str, torch.Tensor], classes: Sequence[str]) -> dict:
    """The numbers of ``vitlab eval`` (n, top1, top5, loss, per_class, confusion,
    classes) from the output of ``predict_split``, plus ``per_class_count`` (images
    of each class) and ``wrong`` (number of mistakes)."""
    conf = confusion_matrix(preds["target"], preds["pred"], len(classes))
    n = int(conf.sum())
    counts = conf.sum(1)
    per_class = (conf.diag().float() / counts.clamp(min=1)).tolist()
    return {"n": n, "top1": conf.diag().sum().item() / n, "top5": preds["top5"].sum().item() / n,
            "loss": preds["loss"].double().sum().item() / n, "per_class": dict(zip(classes, per_class)),
            "confusion": conf, "classes": list(classes), "per_class_count": counts.tolist(),
            "wrong": n - int(conf.diag().sum())}


def history_summary(history: list[dict], objective: str = "classification") -> dict:
    """A run's result from its per-epoch rows (``metrics.csv``): ``best_acc`` and
    ``best_epoch`` (the first of the best epochs: the highest validation accuracy, or
    for masked patch prediction (``objective='mpp'``) the lowest validation loss, the
    epoch of its ``best.pt``), ``final_acc`` (the last epoch's), ``epochs`` and
    ``seconds`` (the sum of whole epochs, evaluation included). With no finished epoch
    the accuracies and the best epoch are None."""
    if not history:
        return {"best_acc": None, "best_epoch": None, "final_acc": None, "epochs": 0, "seconds": 0.0}
    if objective == "mpp":
        best = min(history, key=lambda r: r["val_loss"])  # min keeps the first of equals
    else:
        best = max(history, key=lambda r: r["val_acc"])  # max keeps the first of equals
    return {"best_acc": best["val_acc"], "best_epoch": best["epoch"], "final_acc": history[-1]["val_acc"],
            "best_loss": best["val_loss"], "epochs": len(history), "seconds": sum(r["seconds"] for r in history)}
