"""A run's model exported to every format, and the whole test split through each
library that reads the exports, image by image against vitlab's own predictions.

    python benchmarks/export_check.py RUN_DIR --out DIR [--threads 1]

vitlab: `vitlab eval`'s pipeline (the run's evaluation split, its transforms).
The consumers, each with its own preprocessing where it has one:

- timm:    timm.create_model("local-dir:DIR/timm", pretrained=True) on PIL images
           through timm's transform from the exported config (resolve_data_config);
- hf:      transformers.pipeline("image-classification", model=DIR/hf) on PIL images;
- onnx:    `vitlab predict --onnx DIR/onnx/model.onnx` (ONNX Runtime) on PNG files;
- pt2:     torch.export.load(DIR/pt2/model.pt2) on vitlab's preprocessed tensors.

Prints a Markdown table (top-1, images whose top-1 equals vitlab's, seconds) and
writes DIR/export_check.json. Needs timm, transformers, onnx, onnxscript and
onnxruntime (pip install -e '.[dev]').
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run folder (its best.pt) or a checkpoint")
    ap.add_argument("--out", required=True, help="folder for the exports, the PNG files and export_check.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    os.environ["HF_HUB_OFFLINE"] = "1"

    import timm
    import transformers

    from vitlab.evaluate import predict
    from vitlab.export import FORMATS, export
    from vitlab.export.source import checkpoint_path
    from vitlab.run import checkpoint
    from vitlab.run.split import eval_split, split_batches

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_path(a.run)
    seconds: dict[str, float] = {}
    for fmt in FORMATS:
        t = time.perf_counter()
        export(ckpt_path, fmt, out / fmt, force=True)
        seconds[f"export {fmt}"] = time.perf_counter() - t

    ckpt = checkpoint.load(ckpt_path)
    split = eval_split(ckpt)
    ds = split.dataset
    labels = ds.targets.numpy()
    classes = split.info.classes
    n = len(labels)
    pics = [Image.fromarray(ds.images[i, 0].numpy() if ds.images.shape[1] == 1 else
                            ds.images[i].permute(1, 2, 0).numpy()) for i in range(n)]
    png = out / "images"
    png.mkdir(exist_ok=True)
    files = [str(png / f"{i:05d}.png") for i in range(n)]
    for p, f in zip(pics, files):
        if not Path(f).is_file():
            p.save(f)

    preds: dict[str, np.ndarray] = {}
    probs: dict[str, np.ndarray] = {}  # the probability each consumer gives its top-1 class
    t = time.perf_counter()
    model = checkpoint.build_model(ckpt).eval()
    inputs = []
    with torch.no_grad():
        for x, _ in split_batches(split, a.batch_size, torch.device("cpu")):
            inputs.append(x)
    with torch.no_grad():
        p, preds["vitlab"] = (v.numpy() for v in torch.cat([model(x) for x in inputs]).softmax(-1).max(-1))
        probs["vitlab"] = p
    seconds["vitlab"] = time.perf_counter() - t

    t = time.perf_counter()
    tm = timm.create_model(f"local-dir:{out / 'timm'}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=tm))
    got = []
    with torch.no_grad():
        for i in range(0, n, a.batch_size):
            got.append(tm(torch.stack([transform(p) for p in pics[i:i + a.batch_size]])))
    probs["timm"], preds["timm"] = (v.numpy() for v in torch.cat(got).softmax(-1).max(-1))
    seconds["timm"] = time.perf_counter() - t

    t = time.perf_counter()
    pipe = transformers.pipeline("image-classification", model=str(out / "hf"), top_k=1)
    label2id = pipe.model.config.label2id
    results = pipe(pics, batch_size=a.batch_size)
    preds["hf"] = np.array([label2id[r[0]["label"]] for r in results])
    probs["hf"] = np.array([r[0]["score"] for r in results])
    seconds["hf"] = time.perf_counter() - t

    t = time.perf_counter()
    r = predict(out / "onnx" / "model.onnx", files, top_k=1, batch_size=a.batch_size, onnx=True)
    assert [x["image"] for x in r] == files
    preds["onnx"] = np.array([x["top"][0]["index"] for x in r])
    probs["onnx"] = np.array([x["top"][0]["prob"] for x in r])
    seconds["onnx"] = time.perf_counter() - t

    t = time.perf_counter()
    program = torch.export.load(out / "pt2" / "model.pt2").module()
    with torch.no_grad():
        probs["pt2"], preds["pt2"] = (v.numpy() for v in torch.cat([program(x) for x in inputs]).softmax(-1).max(-1))
    seconds["pt2"] = time.perf_counter() - t

    rows = {k: {"top1": float((v == labels).mean()), "same_as_vitlab": int((v == preds["vitlab"]).sum()),
                "images": n, "max_prob_diff": float(np.abs(probs[k] - probs["vitlab"]).max()),
                "seconds": round(seconds[k], 1)} for k, v in preds.items()}
    report = {"checkpoint": str(ckpt_path), "model": ckpt["model_name"], "dataset": split.info.name,
              "classes": classes, "rows": rows, "export_seconds": {k: round(v, 1) for k, v in seconds.items()
                                                                   if k.startswith("export")},
              "versions": {"torch": torch.__version__, "timm": timm.__version__,
                           "transformers": transformers.__version__,
                           "onnxruntime": __import__("onnxruntime").__version__,
                           "python": platform.python_version()},
              "threads": a.threads}
    (out / "export_check.json").write_text(json.dumps(report, indent=1) + "\n")
    print("| consumer | top-1 | top-1 equal to vitlab's | max difference of its probability | seconds |\n"
          "|---|---|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {100 * v['top1']:.2f}% | {v['same_as_vitlab']:,} / {n:,} | {v['max_prob_diff']:.1e} | "
              f"{v['seconds']} |")
    print("export seconds: " + ", ".join(f"{k[7:]} {v:.1f}" for k, v in report["export_seconds"].items()))


if __name__ == "__main__":
    main()
