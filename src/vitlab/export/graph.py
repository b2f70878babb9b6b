"""``--to onnx`` and ``--to pt2``: the model as a graph, for any family.

Both trace the model with ``torch.export`` at the checkpoint's input size with
a dynamic batch dimension (input ``pixel_values`` (B, C, H, W), output
``logits`` (B, classes)). The attention is traced with PyTorch's math kernel
of ``scaled_dot_product_attention``: the fused CPU kernels return a layout in
which the reshape after attention is a view, which the ONNX decomposition of
the math kernel then cannot take; the math kernel's layout gives a graph that
is right whichever kernel runs it.

- onnx: ``torch.onnx.export(dynamo=True)`` (the exporter torch recommends; it
  needs the ``onnx`` and ``onnxscript`` packages), checked with
  ``onnx.checker``; labels and preprocessing in the model's metadata
  (``metadata_props``: ``vitlab.preprocess``, a JSON object, and
  ``vitlab.classes``) and in ``preprocess.json`` beside it.
- pt2: ``torch.export.save`` of the ExportedProgram; ``torch.export.load``
  reads it with torch alone (no vitlab). ``preprocess.json`` is stored inside
  the archive (``extra_files``) and beside it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import torch

from ..errors import UserError
from ..files import atomic_write, file_error, write_text
from .source import INPUT_NAME, OUTPUT_NAME, Source

ONNX_PACKAGES = ("onnx", "onnxscript")
METADATA_KEY = "vitlab.preprocess"  # the ONNX metadata entry vitlab predict --onnx reads
PREPROCESS_FILE = "preprocess.json"


def missing_packages() -> list[str]:
    """The packages ``--to onnx`` needs that are not installed."""
    missing = []
    for name in ONNX_PACKAGES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    return missing


@contextlib.contextmanager
def _tracing():
    """The math attention kernel, and torch's exporters quiet (their progress lines and warnings)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [log.level for log in quiet]
    try:
        for log in quiet:
            log.setLevel(logging.ERROR)
        with sdpa_kernel(SDPBackend.MATH), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)


def _dynamic_batch() -> dict:
    return {"x": {0: torch.export.Dim("batch", min=1)}}


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def exported_program(src: Source) -> torch.export.ExportedProgram:
    with _tracing():
        try:
            return torch.export.export(src.model, (src.example(),), dynamic_shapes=_dynamic_batch())
        except Exception as e:  # noqa: BLE001 - whatever torch.export raises, one line
            raise UserError(f"torch.export could not trace {src.name}: {_first_line(e)}") from None


def write_pt2(src: Source, folder: Path) -> list[str]:
    ep = exported_program(src)
    text = json.dumps(src.preprocess(), indent=1, ensure_ascii=False) + "\n"
    atomic_write(folder / "model.pt2",
                 lambda f: torch.export.save(ep, f, extra_files={PREPROCESS_FILE: text}))
    write_text(folder / PREPROCESS_FILE, text)
    return ["model.pt2", PREPROCESS_FILE]


def write_onnx(src: Source, folder: Path) -> list[str]:
    import onnx

    pre = src.preprocess()
    with _tracing():
        try:
            program = torch.onnx.export(src.model, (src.example(),), dynamo=True, dynamic_shapes=_dynamic_batch(),
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False)
        except Exception as e:  # noqa: BLE001 - whatever the exporter raises, one line
            raise UserError(f"torch.onnx.export could not export {src.name}: {_first_line(e)}") from None
    program.model.metadata_props[METADATA_KEY] = json.dumps(pre, ensure_ascii=False)
    program.model.metadata_props["vitlab.classes"] = json.dumps(pre["classes"], ensure_ascii=False)
    program.model.doc_string = f"vitlab {src.name} trained on {src.dataset}: {INPUT_NAME} -> {OUTPUT_NAME}"
    path = folder / "model.onnx"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            program.save(os.fspath(path))  # weights inline, or in model.onnx.data past ONNX's 2 GB limit
    except OSError as e:
        raise file_error("write", path, e) from None
    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)
    except Exception as e:  # noqa: BLE001 - onnx raises several types
        raise UserError(f"the exported ONNX model fails onnx.checker: {_first_line(e)}") from None
    write_text(folder / PREPROCESS_FILE, json.dumps(pre, indent=1, ensure_ascii=False) + "\n")
    return sorted(p.name for p in folder.iterdir())
