"""``vitlab eval`` and ``vitlab predict``: a checkpoint on its dataset's whole
evaluation split, and on image files."""

from __future__ import annotations

from pathlib import Path

import torch

from .metrics import error_summary, predict_split
from .run import checkpoint
from .run.runtime import resolve_device
from .run.split import eval_split, split_batches


@torch.no_grad()
def evaluate_checkpoint(path: str | Path, overrides: list[str] = (), device: str = "auto",
                        batch_size: int = 256) -> dict:
    """Top-1, top-5, loss, per-class accuracy and the confusion matrix of a
    checkpoint on the whole validation/test split of the dataset it was trained
    on, whatever ``data.val_subset`` the run used (``overrides`` such as
    ``data.root=...`` or ``data.val_subset=1000`` change that)."""
    ckpt = checkpoint.load(path)
    checkpoint.require_run(ckpt, path)
    dev = resolve_device(device, "--device")
    split = eval_split(ckpt, overrides, "eval")
    model = checkpoint.build_model(ckpt).to(dev).eval()
    r = error_summary(predict_split(model, split_batches(split, batch_size, dev)), split.info.classes)
    return {k: r[k] for k in ("n", "top1", "top5", "loss", "per_class", "confusion", "classes")}


@torch.no_grad()
def predict(path: str | Path, images: list[str], top_k: int = 5, device: str = "auto") -> list[dict]:
    """Top-k classes with probabilities for each image file."""
    from .data import build_eval_transform, load_image

    ckpt = checkpoint.load(path)
    checkpoint.require_run(ckpt, path)
    info = checkpoint.dataset_info(ckpt)
    transform = build_eval_transform(info, ckpt["config"]["data"].get("img_size"))
    batch = torch.stack([transform(load_image(p)) for p in images])  # loads all before the model runs
    dev = resolve_device(device, "--device")
    model = checkpoint.build_model(ckpt).to(dev).eval()
    probs = model(batch.to(dev)).float().softmax(-1).cpu()
    k = min(top_k, probs.shape[-1])
    out = []
    for p, row in zip(images, probs):
        val, idx = row.topk(k)
        out.append({"image": str(p), "top": [{"class": info.classes[i], "index": int(i), "prob": float(v)}
                                             for v, i in zip(val.tolist(), idx.tolist())]})
    return out
