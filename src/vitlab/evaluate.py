"""``vitlab eval`` and ``vitlab predict``: a checkpoint on labelled images, and a
checkpoint (or a model exported to ONNX) on image files and folders, in batches.

``run_eval`` evaluates a checkpoint on one of two things, and says which:

- its run's evaluation split (``data=None``): the dataset's test or validation
  split, or the part of the training images the run held out
  (``data.val_fraction``, ``data.holdout``), rebuilt by ``run.split``;
- every image of a folder tree (``data=DIR``): ``DIR/<class>/...``, or, when
  ``DIR`` holds a ``test/`` folder of class folders (else ``val/``, ``valid/``,
  ``validation/``), that folder's ``<class>/...`` and nothing else of ``DIR``. A
  folder's name is its class: a class name of the checkpoint, or that name with
  each ``/`` written ``_`` (``T-shirt_top``). A folder that names no class is an
  error; a class without a folder has no images. Image files that cannot be
  read are skipped, other files (no image extension, or outside the class
  folders) ignored; both are listed with their reason. The images are read as
  ``vitlab predict`` reads them, with the checkpoint's eval transform.

Its outputs lie side by side in one folder (``out``, or by default
``<checkpoint's folder>/eval-<checkpoint name>-<data name>/``, a new name
whenever a folder of that name holds another evaluation): ``confusion.png``,
``metrics.json``, ``predictions.csv`` and, when files were skipped or ignored,
``skipped.txt``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .errors import UserError, did_you_mean
from .files import file_error, write_bytes, write_text
from .metrics import confusion_png, error_summary, predict_split
from .run import checkpoint as run_checkpoint
from .run.runtime import resolve_device, torch_threads
from .run.split import eval_split, split_batches

EVAL_DIRS = ("test", "val", "valid", "validation")  # DIR/<one of these>/<class>/ is evaluated instead of DIR
OUTPUT_FILES = ("confusion.png", "metrics.json", "predictions.csv", "skipped.txt")
_READ_THREADS = 8  # images decoded at once (PIL releases the GIL while decoding)


@torch.no_grad()
def evaluate_checkpoint(path: str | Path, overrides: list[str] = (), device: str = "auto",
                        batch_size: int = 256) -> dict:
    """Top-1, top-5, loss, per-class accuracy and the confusion matrix of a
    checkpoint on the whole validation/test split of the dataset it was trained
    on, whatever ``data.val_subset`` the run used (``overrides`` such as
    ``data.root=...`` or ``data.val_subset=1000`` change that)."""
    ckpt = run_checkpoint.load(path)
    run_checkpoint.require_run(ckpt, path)
    run_checkpoint.require_classifier(ckpt, path)
    dev = resolve_device(device, "--device")
    split = eval_split(ckpt, overrides, "eval")
    model = run_checkpoint.build_model(ckpt).to(dev).eval()
    r = error_summary(predict_split(model, split_batches(split, batch_size, dev)), split.info.classes)
    return {k: r[k] for k in ("n", "top1", "top5", "loss", "per_class", "confusion", "classes")}


@torch.no_grad()
def run_eval(checkpoint: str | Path, data: str | Path | None = None, out: str | Path | None = None,
             overrides=(), device: str = "auto", batch_size: int = 256, threads: int | None = None) -> dict:
    """Evaluate a checkpoint and write its outputs (see the module's docstring); returns
    plain values (``json.dumps`` takes it whole):

    ``n`` and ``read`` (images evaluated), ``skipped`` (unreadable image files, each
    ``{"path", "reason"}``), ``ignored`` (other files, the same), ``top1``, ``top5`` (None
    with 5 classes or fewer), ``loss``, ``per_class`` (accuracy per class name, None for a
    class without images), ``per_class_count``, ``absent`` (classes without images),
    ``classes``, ``confusion`` (K x K counts, rows the true class), ``data`` (what was
    evaluated, in words), ``data_folder`` (the class folders' folder, absolute, or None
    for the run's split), ``checkpoint``, ``overrides``, ``notes`` (lines worth reading),
    ``out`` (the folder) and ``files`` (the paths written).

    ``data=None``: the run's evaluation split with ``overrides`` (``data.*`` settings)
    applied. ``data=DIR``: every image of the folder tree; ``overrides`` are refused.
    ``threads``: CPU threads for torch during the evaluation (default: as they are)."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be 1 or more, got {batch_size}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be 1 or more, got {threads}")
    overrides = [str(o) for o in overrides]
    if data is not None and overrides:
        raise UserError(f"--set {overrides[0].split('=')[0]} does not apply to a data folder: its images are read "
                        "with the checkpoint's own eval transform; drop the --set, or leave out the data folder "
                        "to evaluate the run's dataset")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"{out} is a file, not a folder; give a folder for the outputs")
    ckpt = run_checkpoint.load(checkpoint)
    run_checkpoint.require_run(ckpt, checkpoint)
    run_checkpoint.require_classifier(ckpt, checkpoint)
    dev = resolve_device(device, "--device")
    with torch_threads(threads):
        if data is None:
            ev = _eval_run_split(ckpt, overrides, batch_size, dev)
        else:
            ev = _eval_folder(ckpt, Path(data), batch_size, dev)

    classes = ev["classes"]
    r = error_summary(ev["preds"], classes)
    counts = r["per_class_count"]
    identity = {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_epoch": ckpt.get("epoch"),
                "checkpoint_samples": ckpt.get("skip_samples", 0),  # images into its epoch, saved mid-epoch
                "data_folder": ev["data_folder"], "overrides": overrides}
    folder = Path(out) if out is not None else _default_out(Path(checkpoint), ev["name"], identity)
    files = [folder / f for f in OUTPUT_FILES if f != "skipped.txt" or ev["skipped"] or ev["ignored"]]
    result = {
        "n": r["n"], "read": r["n"],
        "skipped": [{"path": p, "reason": why} for p, why in ev["skipped"]],
        "ignored": [{"path": p, "reason": why} for p, why in ev["ignored"]],
        "top1": r["top1"], "top5": r["top5"] if len(classes) > 5 else None, "loss": r["loss"],
        "per_class": {c: (acc if k else None) for (c, acc), k in zip(r["per_class"].items(), counts)},
        "per_class_count": dict(zip(classes, counts)),
        "absent": [c for c, k in zip(classes, counts) if not k],
        "classes": classes, "confusion": r["confusion"].tolist(),
        "data": ev["data"], **identity, "notes": ev["notes"],
        "out": str(folder), "files": [str(f) for f in files],
    }
    _write_outputs(result, folder, ev["paths"], ev["preds"], r["confusion"],
                   title=f"{Path(checkpoint).name} on {ev['short']}: top-1 {100 * r['top1']:.2f}%")
    return result


def format_eval(result: dict) -> str:
    """The lines ``vitlab eval`` prints for a ``run_eval`` result: what was evaluated (and
    what was skipped), notes, top-1 (top-5 with more than 5 classes) and loss, the accuracy
    of each class, and the outputs' folder."""
    first = f"evaluated {_count(result['read'], 'image')} of {result['data']}"
    if result["skipped"]:
        first += f", skipped {len(result['skipped'])} unreadable"
    if result["ignored"]:
        first += f", ignored {_count(len(result['ignored']), 'other file')}"
    if result["skipped"] or result["ignored"]:
        first += f" (see {Path(result['out']) / 'skipped.txt'})"
    lines = [first] + [f"note: {n}" for n in result["notes"]]
    scores = f"top-1 {100 * result['top1']:.2f}%"
    if result["top5"] is not None:
        scores += f"  top-5 {100 * result['top5']:.2f}%"
    lines.append(f"{scores}  loss {result['loss']:.4f}")
    width = max(len(c) for c in result["classes"])
    for c in result["classes"]:
        acc, k = result["per_class"][c], result["per_class_count"][c]
        lines.append(f"  {c:<{width}}  " + (f"{100 * acc:6.2f}%  ({_count(k, 'image')})" if k else "no images"))
    lines.append(f"outputs: {result['out']}")
    return "\n".join(lines)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _eval_run_split(ckpt: dict, overrides: list[str], batch_size: int, dev) -> dict:
    """The run's evaluation split (``run.split``), predicted, with its description."""
    split = eval_split(ckpt, overrides, "eval")
    model = run_checkpoint.build_model(ckpt).to(dev).eval()
    preds = predict_split(model, split_batches(split, batch_size, dev))
    info, ds = split.info, split.dataset
    data, name, short, notes = _describe_split(split)
    paths = list(ds.paths) if hasattr(ds, "paths") else [f"{info.name} {info.val_split} #{i}" for i in range(len(ds))]
    return {"preds": preds, "paths": paths, "classes": list(info.classes), "data": data, "name": name,
            "short": short, "notes": notes, "data_folder": None,
            "skipped": [(str(p), why) for p, why in info.bad_files], "ignored": []}


def _describe_split(split) -> tuple[str, str, str, list[str]]:
    """(the split in words, its name for the output folder, a short name, notes)."""
    info, cfg, ds = split.info, split.cfg.data, split.dataset
    root = Path(cfg.root).expanduser() if cfg.root else None
    folder_set = info.name == "imagefolder" and root is not None and hasattr(ds, "paths") and len(ds)
    notes = []
    if info.val_split == "holdout":
        key = "holdout" if cfg.holdout else "val_fraction"
        frac = getattr(cfg, key)
        if folder_set:
            train = root / "train" if (root / "train").is_dir() else root
            where = f"the training folder {train}"
            notes.append(f"these images are a held-out part of {train}: the model trained on the others. To "
                         f"evaluate every image of a folder of class folders, give it as the data folder "
                         f"(vitlab eval CHECKPOINT --data DIR)")
        else:
            where = f"the training split of {info.name}"
        data = (f"the {100 * frac:g}% validation split held out of {where} "
                f"(data.{key}={frac:g}, seed {split.cfg.train.seed})")
        name = short = "holdout"
    else:
        word = "test" if info.val_split == "test" else "validation"
        if folder_set:  # the test/ or val/ folder beside train/
            first = Path(ds.paths[0])
            try:
                where = root / first.relative_to(root).parts[0]
            except ValueError:
                where = first.parent.parent
            data = f"the {word} folder {where} (class folders)"
        else:
            data = f"the {word} split of {info.name}" + (f" in {root}" if root is not None else "")
        name = short = info.val_split
    n = cfg.val_subset
    if n is not None and len(ds) + len(info.bad_files) >= n:  # else data.val_subset exceeds the split: all of it
        data = (f"the first {n} images (data.val_subset) of {data}" if cfg.subset_mode == "first" else
                f"{n} images drawn at random (data.val_subset, seed {split.cfg.train.seed}) from {data}")
        name += f"-{n}"
    return data, f"{name}-split", f"the {short} split", notes


def _eval_folder(ckpt: dict, data: Path, batch_size: int, dev) -> dict:
    """Every image of the folder tree ``data`` (see the module's docstring), predicted."""
    from .data import IMG_EXTENSIONS, build_eval_transform, scan_images

    info = run_checkpoint.dataset_info(ckpt)
    classes = list(info.classes)
    index = _folder_index(classes)
    root, notes = _eval_root(data, index)
    folders, ignored = _class_folders(root, index, classes)
    paths, targets, others = [], [], []
    for folder, label in folders:
        found, _ = scan_images(folder, others)
        paths += found
        targets += [label] * len(found)
    ignored += [(p, "not an image file (no image extension)") for p in sorted(others)]
    if not paths:
        raise UserError(f"no image files in the class folders of {root} (extensions: {' '.join(IMG_EXTENSIONS)})")
    notes += _training_data_note(ckpt, root)

    transform = build_eval_transform(info, ckpt["config"]["data"].get("img_size"))
    read, skipped = [], []

    def batches():
        with ThreadPoolExecutor(_READ_THREADS) as pool:
            for start in range(0, len(paths), batch_size):
                xs, ys = [], []
                for (p, x, msg), y in zip(_read_images(paths[start:start + batch_size], transform, pool),
                                          targets[start:start + batch_size]):
                    if msg is not None:
                        skipped.append((p, _reason(msg, p)))
                        continue
                    read.append(p)
                    xs.append(x)
                    ys.append(y)
                if xs:
                    yield torch.stack(xs), torch.tensor(ys)

    model = run_checkpoint.build_model(ckpt).to(dev).eval()
    try:
        preds = predict_split(model, batches())
    except ValueError:  # no batch: nothing could be read
        if read:
            raise
        p, why = skipped[0]
        raise UserError(f"none of the {len(skipped)} image files under {root} can be read "
                        f"(the first: {p}: {why})") from None
    resolved = data.resolve()
    name = resolved.name if resolved.name not in EVAL_DIRS else f"{resolved.parent.name}-{resolved.name}"
    return {"preds": preds, "paths": read, "classes": classes, "data": f"{root} (class folders)",
            "name": re.sub(r"[^\w.-]+", "_", name).strip("._") or "data", "short": str(root), "notes": notes,
            "data_folder": str(root.resolve()), "skipped": skipped, "ignored": ignored}


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _folder_index(classes: list[str]) -> dict[str, int]:
    """The folder names that stand for each class: its name, and its name with each ``/``
    written ``_`` (NFC, as file names of other systems may be decomposed)."""
    index = {}
    for i, c in enumerate(classes):
        index.setdefault(_nfc(c), i)
        index.setdefault(_nfc(c).replace("/", "_"), i)
    return index


def _subfolders(d: Path) -> list[str]:
    try:
        with os.scandir(d) as entries:
            return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    except OSError as e:
        raise file_error("read the folder", d, e) from None


def _eval_root(data: Path, index: dict[str, int]) -> tuple[Path, list[str]]:
    """The folder whose class folders are evaluated: ``data``, or its ``test/`` (``val/``, ...)
    folder of class folders when it has one that is not a class's; and notes."""
    if not data.exists():
        raise UserError(f"data folder not found: {data}")
    if not data.is_dir():
        raise UserError(f"{data} is a file, not a folder: give a folder of <class>/ folders of images")
    for sub in EVAL_DIRS:
        if _nfc(sub) not in index and (data / sub).is_dir() and _subfolders(data / sub):
            rest = [n for n in _subfolders(data) if n != sub]
            if not rest:
                return data / sub, []
            return data / sub, [f"only {data / sub} is evaluated, not the other folders of {data} ({', '.join(rest)})"]
    return data, []


def _class_folders(root: Path, index: dict[str, int], classes: list[str]):
    """[(class folder, label)] of ``root``, and its loose files as [(path, reason)];
    ``UserError`` for a folder that names no class of the checkpoint."""
    folders, loose = [], []
    try:
        with os.scandir(root) as entries:
            for e in sorted(entries, key=lambda e: e.name):
                if e.name.startswith("."):
                    continue
                (folders if e.is_dir() else loose).append(e)
    except OSError as e:
        raise file_error("read the folder", root, e) from None
    shown = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
    if not folders:
        raise UserError(f"no class folders in {root}: put the images in {root}/<class>/ folders named as the "
                        f"checkpoint's classes ({shown}); `vitlab predict` takes images without labels")
    unknown = [e.name for e in folders if _nfc(e.name) not in index]
    if unknown:
        what = "a folder that is not a class" if len(unknown) == 1 else "folders that are not classes"
        hint = did_you_mean(unknown[0], list(index))
        if "train" in unknown:
            hint += f"; to evaluate test images beside train/, put them in {root / 'test'}/<class>/"
        raise UserError(f"{root} has {what} of the checkpoint: {', '.join(unknown)}{hint}; "
                        f"the checkpoint's classes: {shown}")
    return ([(Path(e.path), index[_nfc(e.name)]) for e in folders],
            [(e.path, "not in a class folder (no label)") for e in loose])


def _training_data_note(ckpt: dict, root: Path) -> list[str]:
    """A note when ``root`` is the run's own training folder."""
    run_root = (ckpt.get("config") or {}).get("data", {}).get("root")
    if not run_root or (ckpt.get("config") or {}).get("data", {}).get("name") != "imagefolder":
        return []
    run_root = Path(run_root).expanduser().resolve()
    if root.resolve() not in (run_root, run_root / "train"):
        return []
    return [f"{root} holds the images the run trained on (its data.root): these numbers overstate the "
            "model's accuracy on new images"]


def _reason(msg: str, path: str) -> str:
    """Why an image cannot be read, from the reader's one-line message."""
    prefix = f"cannot read image {path}: "
    if msg.startswith(prefix):
        return msg[len(prefix):].split(" (corrupt or not an image")[0]
    if msg == f"image not found: {path}":
        return "not found"
    return msg


def _default_out(checkpoint: Path, name: str, identity: dict) -> Path:
    """``<checkpoint's folder>/eval-<checkpoint name>-<name>``, or with ``-2``, ``-3``, ...
    when that folder holds something else than an evaluation of the same checkpoint (its
    path, epoch and position in the epoch: a run trained further is another checkpoint) on
    the same data."""
    base = checkpoint.parent / f"eval-{checkpoint.stem}-{name}"
    i = 1
    while True:
        folder = base if i == 1 else base.with_name(f"{base.name}-{i}")
        if not folder.exists() or _same_eval(folder, identity):
            return folder
        i += 1


def _same_eval(folder: Path, identity: dict) -> bool:
    try:
        old = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(old, dict) and all(old.get(k) == v for k, v in identity.items())


def _write_outputs(result: dict, folder: Path, paths: list[str], preds: dict, conf: torch.Tensor, title: str):
    """The files of ``result['files']`` in ``folder`` (created if missing), each written
    atomically, ``metrics.json`` last; a ``skipped.txt`` of an earlier evaluation that this
    one does not write is removed."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder; give a folder for the outputs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise file_error("create the folder", folder, e) from None
    classes = result["classes"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "true", "predicted", "prob", "correct"])
    for p, t, y, c in zip(paths, preds["target"].tolist(), preds["pred"].tolist(), preds["confidence"].tolist(),
                          strict=True):
        w.writerow([p, classes[t], classes[y], f"{c:.6f}", int(t == y)])
    write_text(folder / "predictions.csv", buf.getvalue())
    skipped_txt = folder / "skipped.txt"
    if str(skipped_txt) in result["files"]:
        lines = [f"{s['path']}: {s['reason']}" for s in result["skipped"]]
        lines += [f"{s['path']}: ignored, {s['reason']}" for s in result["ignored"]]
        write_text(skipped_txt, "\n".join(lines) + "\n")
    else:
        try:
            skipped_txt.unlink(missing_ok=True)
        except OSError as e:
            raise file_error("remove", skipped_txt, e) from None
    write_bytes(folder / "confusion.png", confusion_png(conf, classes, title=title))
    write_text(folder / "metrics.json", json.dumps(result, indent=1, ensure_ascii=False) + "\n")


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
    from .data import build_eval_transform

    if batch_size < 1:
        raise UserError(f"--batch-size must be 1 or more, got {batch_size}")
    info, size, run = _onnx_runner(source, device) if onnx else _checkpoint_runner(source, device)
    transform = build_eval_transform(info, size)
    paths = _image_files(images, errors)
    k = min(top_k, info.num_classes)
    out = []
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        for start in range(0, len(paths), batch_size):
            good, batch = [], []
            for p, x, msg in _read_images(paths[start:start + batch_size], transform, pool):
                if msg is not None:
                    if errors is None:
                        raise UserError(msg)
                    errors.append(msg)
                    continue
                good.append(p)
                batch.append(x)
            if not batch:
                continue
            probs = run(torch.stack(batch)).float().softmax(-1).cpu()
            for p, row in zip(good, probs):
                val, idx = row.topk(k)
                out.append({"image": str(p), "top": [{"class": info.classes[i], "index": int(i), "prob": float(v)}
                                                     for v, i in zip(val.tolist(), idx.tolist())]})
    return out


def _read_images(paths: list[str], transform, pool: ThreadPoolExecutor) -> list[tuple[str, torch.Tensor | None,
                                                                                      str | None]]:
    """(path, model input (C, H, W) or None, None or the one-line reason it cannot be read)
    for each path, in order, read by ``pool``'s threads."""
    from .data import load_image

    def one(p):
        try:
            return p, transform(load_image(p)), None
        except UserError as e:
            return p, None, str(e)
        except (OSError, ValueError, RuntimeError) as e:  # a decoder's fault the reader did not foresee
            return p, None, f"cannot read image {p}: {(str(e).splitlines() or [type(e).__name__])[0]}"

    return list(pool.map(one, paths))


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
    ckpt = run_checkpoint.load(path)
    run_checkpoint.require_run(ckpt, path)
    run_checkpoint.require_classifier(ckpt, path)
    info = run_checkpoint.dataset_info(ckpt)
    dev = resolve_device(device, "--device")
    model = run_checkpoint.build_model(ckpt).to(dev).eval()
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
