"""``vitlab export``: a trained model, for use outside vitlab.

    from vitlab.export import export
    export("runs/fashion", "onnx", "exported/fashion-onnx")   # a run folder's best.pt
    export("runs/fashion/last.pt", "timm", "exported/fashion-timm")

Formats (``FORMATS``); each carries the class names, the input size and the
normalisation of the checkpoint (``run.checkpoint.dataset_info`` and the saved
config):

    timm   model.safetensors, config.json      timm.create_model("local-dir:DIR", pretrained=True)
    hf     model.safetensors, config.json,     transformers.ViTForImageClassification.from_pretrained(DIR),
           preprocessor_config.json            pipeline("image-classification", model=DIR)
    onnx   model.onnx, preprocess.json         onnxruntime.InferenceSession; vitlab predict --onnx
    pt2    model.pt2, preprocess.json          torch.export.load (torch alone)

``timm`` takes ViTs (class-token or average pooling, fc_norm, layer scale,
learned / 2-D / sin-cos / no position embedding, distilled), the hybrids timm
has and ImageNet-stem ResNets; ``hf`` plain class-token ViTs; ``onnx`` and
``pt2`` every family. A model a format cannot represent is refused in one
line that names the formats that take it (``UserError``), before anything is
written. ``preprocess.json`` (and the ONNX metadata entry ``vitlab.preprocess``)
holds: ``classes``, ``input_size`` [C, H, W], ``mean``, ``std``, ``resize``,
``interpolation``, ``scale``, ``channels``, ``input`` and ``output`` (the
graph's tensor names), ``model``, ``model_args``, ``dataset``.

The output folder must be new or empty unless ``force``; files are written
into a staging folder and moved into place only when all are written, so a
failed export leaves nothing (``folder.staged``). Nothing but torch,
safetensors and, for ``onnx``, the ``onnx`` and ``onnxscript`` packages
(``pip install 'vitlab[export]'``) is needed to export: timm, transformers and
ONNX Runtime are what reads the results.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save as safetensors_bytes

from ..errors import UserError, choose
from ..files import write_bytes, write_text
from . import graph, to_hf, to_timm
from .folder import check_out, staged
from .source import CHECKPOINTS, Source, read

FORMATS = ("timm", "hf", "onnx", "pt2")
NAMES = {"timm": "timm", "hf": "Hugging Face transformers", "onnx": "ONNX",
         "pt2": "torch.export (pt2)"}
# how each format is loaded, for the command's last line
LOADS = {"timm": 'timm.create_model("local-dir:{out}", pretrained=True)',
         "hf": 'transformers.pipeline("image-classification", model="{out}")',
         "onnx": "vitlab predict --onnx {out}/model.onnx IMAGE...  (or onnxruntime.InferenceSession)",
         "pt2": 'torch.export.load("{out}/model.pt2").module()'}

__all__ = ["FORMATS", "CHECKPOINTS", "export", "refusal"]


def refusal(src: Source, fmt: str) -> str | None:
    """What of the source the format cannot represent, or None when it takes it."""
    if fmt == "timm":
        return to_timm.refusal(src)
    if fmt == "hf":
        return to_hf.refusal(src)
    return None  # onnx and pt2 take every model


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise choose("export format", fmt, FORMATS)
    if fmt == "onnx":
        missing = graph.missing_packages()
        if missing:
            raise UserError(f"--to onnx needs {' and '.join(missing)}: pip install 'vitlab[export]' "
                            f"(or pip install {' '.join(missing)})")


def export(source: str | os.PathLike, to: str, out: str | os.PathLike, checkpoint: str = "best",
           force: bool = False) -> dict:
    """Export the model of ``source`` (a run folder: its ``best.pt``, or ``last.pt``
    with ``checkpoint='last'``; or a checkpoint file) to the format ``to`` in the
    folder ``out``. Returns ``{"format", "out", "files", "checkpoint", "model",
    "classes", "input_size", "notes"}``. Bad input (an unknown format, a missing
    package, a folder that holds files without ``force``, a model the format
    cannot represent, ...) raises ``UserError`` before anything is written."""
    _check_format(to)
    if checkpoint not in CHECKPOINTS:
        raise choose("--checkpoint", checkpoint, CHECKPOINTS)
    out = check_out(out, force)
    src = read(source, checkpoint)
    why = refusal(src, to)
    if why:
        takers = [f for f in FORMATS if refusal(src, f) is None]
        raise UserError(f"{NAMES[to]} cannot represent {src.name}: {why}; export it with "
                        + " or ".join(f"--to {f}" for f in takers))
    with staged(out) as stage:
        if to == "timm":
            state, config = to_timm.build(src)
            write_bytes(stage / "model.safetensors", safetensors_bytes(state, metadata={"format": "pt"}))
            write_text(stage / "config.json", to_timm.config_text(config))
        elif to == "hf":
            state, config, processor = to_hf.build(src)
            write_bytes(stage / "model.safetensors", safetensors_bytes(state, metadata={"format": "pt"}))
            write_text(stage / "config.json", to_hf.json_text(config))
            write_text(stage / "preprocessor_config.json", to_hf.json_text(processor))
        elif to == "onnx":
            graph.write_onnx(src, stage)
        else:
            graph.write_pt2(src, stage)
        files = sorted(p.name for p in stage.iterdir())
    return {"format": to, "out": str(out), "files": files, "checkpoint": str(src.path), "model": src.name,
            "classes": list(src.classes), "input_size": list(src.input_size), "notes": list(src.notes),
            "loads": LOADS[to].format(out=Path(out).as_posix())}
