"""``vitlab eval`` and ``vitlab predict``: a checkpoint on its dataset's whole
evaluation split, and a checkpoint (or a model exported to ONNX) on image
files and folders, in batches."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import UserError
from .files import write_text
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
    checkpoint.require_classifier(ckpt, path)
    dev = resolve_device(device, "--device")
    split = eval_split(ckpt, overrides, "eval")
    model = checkpoint.build_model(ckpt).to(dev).eval()
    r = error_summary(predict_split(model, split_batches(split, batch_size, dev)), split.info.classes)
    return {k: r[k] for k in ("n", "top1", "top5", "loss", "per_class", "confusion", "classes")}


@torch.no_grad()
def predict(source: str | Path, images: list[str], top_k: int = 5, device: str = "auto", batch_size: int = 64,
            onnx: bool = False, errors: list[str] | None = None) -> list[dict]:
    """Top-k classes with probabilities for each image file, in the order given; a
    folder stands for every image file under it (sorted). Images are read and run
    in batches of ``batch_size``.

    ``source``: a checkpoint, or with ``onnx`` an ONNX file made by ``vitlab export
    --to onnx`` (run by ONNX Runtime, with the classes and preprocessing in its
    metadata or the ``preprocess.json`` beside it). An unreadable image file: with
    ``errors`` (a list) its one-line message is appended there and the file left
    out; without, the first one raises ``UserError``."""
    from .data import build_eval_transform, load_image

    if batch_size < 1:
        raise UserError(f"--batch-size must be 1 or more, got {batch_size}")
    info, size, run = _onnx_runner(source, device) if onnx else _checkpoint_runner(source, device)
    transform = build_eval_transform(info, size)
    paths = _image_files(images, errors)
    k = min(top_k, info.num_classes)
    out = []
    for start in range(0, len(paths), batch_size):
        good, batch = [], []
        for p in paths[start:start + batch_size]:
            try:
                batch.append(transform(load_image(p)))
            except UserError as e:
                if errors is None:
                    raise
                errors.append(str(e))
                continue
            good.append(p)
        if not batch:
            continue
        probs = run(torch.stack(batch)).float().softmax(-1).cpu()
        for p, row in zip(good, probs):
            val, idx = row.topk(k)
            out.append({"image": str(p), "top": [{"class": info.classes[i], "index": int(i), "prob": float(v)}
                                                 for v, i in zip(val.tolist(), idx.tolist())]})
    return out


def _image_files(images: list[str], errors: list[str] | None) -> list[str]:
    """The files of ``images``, each folder replaced by the image files under it."""
    from .data import scan_images

    paths = []
    for p in images:
        if not Path(p).is_dir():
            paths.append(str(p))
            continue
        found, _ = scan_images(p)
        if not found:
            msg = f"no image files in the folder {p}"
            if errors is None:
                raise UserError(msg)
            errors.append(msg)
        paths += found
    return paths


def _checkpoint_runner(path, device: str):
    ckpt = checkpoint.load(path)
    checkpoint.require_run(ckpt, path)
    checkpoint.require_classifier(ckpt, path)
    info = checkpoint.dataset_info(ckpt)
    dev = resolve_device(device, "--device")
    model = checkpoint.build_model(ckpt).to(dev).eval()
    return info, ckpt["config"]["data"].get("img_size"), lambda x: model(x.to(dev))


def _onnx_runner(path, device: str):
    """(DatasetInfo, input size, run) of an ONNX file exported by vitlab, on ONNX Runtime."""
    import json

    from .data import DatasetInfo

    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("vitlab predict --onnx needs ONNX Runtime: pip install onnxruntime") from None
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch uses here
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own types for a bad file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot read ONNX model {path}: {first}") from None
    text = session.get_modelmeta().custom_metadata_map.get("vitlab.preprocess")
    beside = path.with_name("preprocess.json")
    try:
        pre = json.loads(text if text else beside.read_text())
        c, h, w = pre["input_size"]
        info = DatasetInfo(name=str(pre.get("dataset", path.stem)), num_classes=len(pre["classes"]), in_chans=int(c),
                           img_size=int(h), mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                           classes=list(pre["classes"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} holds no vitlab preprocessing (metadata 'vitlab.preprocess', or a "
                        f"preprocess.json beside it): export the model with `vitlab export --to onnx`") from None
    name = session.get_inputs()[0].name
    return info, int(h), lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def write_predictions_csv(results: list[dict], path: str | Path) -> None:
    """The predictions as CSV, one row per image: ``image``, then ``top1_class``,
    ``top1_index``, ``top1_prob``, ``top2_class``, ... (written atomically)."""
    import csv
    import io

    k = max((len(r["top"]) for r in results), default=0)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image"] + [f"top{i}_{c}" for i in range(1, k + 1) for c in ("class", "index", "prob")])
    for r in results:
        w.writerow([r["image"]] + [v for t in r["top"] for v in (t["class"], t["index"], f"{t['prob']:.6f}")])
    write_text(path, buf.getvalue())
