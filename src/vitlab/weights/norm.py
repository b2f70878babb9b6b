"""The input normalisation pretrained weights were trained with, where the
file or the files beside it say so.

A model fine-tunes best on inputs normalised as in its pretraining: Google's
ViTs (the ``.npz`` files, big_vision, and the ImageNet-21k ViTs timm and
Hugging Face converted from them) scale pixels to [-1, 1] (mean 0.5, std 0.5
per channel); DeiT and most Facebook models use ImageNet's mean and std.
``weights_normalisation`` says which, where it is known, and from what; the
fine-tuning command sets ``data.mean`` / ``data.std`` from it.

Only the key names, a few shapes and small metadata files are read: the
tensors of a large checkpoint stay on disk (memory-mapped or never opened).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .read import read_torch, reason

Stats = tuple[tuple[float, ...], tuple[float, ...], str]

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # pixels in [0, 1] -> [-1, 1]
IN21K_CLASSES = 21843  # Google's ImageNet-21k label set, the head of its in21k ViTs


def weights_normalisation(source: str | os.PathLike | Mapping) -> Stats | None:
    """``(mean, std, where)`` the weights in ``source`` were trained with, or None
    when neither the file nor its layout says.

    ``source`` is what ``load_pretrained`` takes: a weights file, a Hugging Face
    folder, or a state dict / vitlab checkpoint dict. ``mean`` and ``std`` are
    tuples of floats, one per input channel (three for RGB weights; a vitlab
    checkpoint gives its dataset's, one for a grey dataset); ``where`` says in
    words where they come from, for the log. In this order:

    1. a vitlab checkpoint: its ``dataset`` entry's ``mean`` and ``std``;
    2. beside the file (or in the folder): Hugging Face's
       ``preprocessor_config.json`` (``image_mean``, ``image_std``), or timm's
       ``config.json`` (``pretrained_cfg.mean`` / ``std``, as on the Hub);
    3. the layout: a Google / big_vision ``.npz`` -> 0.5 / 0.5; a DeiT with a
       distillation token -> ImageNet's; a head of 21,843 classes (Google's
       ImageNet-21k) or a representation layer ``pre_logits`` (only Google's
       in21k ViTs have one) in timm names -> 0.5 / 0.5.

    Raises ``UserError`` for a missing or unreadable file, as ``load_pretrained``.
    """
    if isinstance(source, Mapping):
        keys, shapes, meta = _peek_mapping(source)
        return _from_meta(meta) or _from_layout(keys, shapes)
    if not isinstance(source, (str, os.PathLike)):
        raise UserError(f"weights source must be a path or a state dict, got {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"weights file not found: {path}")
    folder = path if path.is_dir() else path.parent
    weights = _weights_file(path)
    keys, shapes, meta = _peek(weights)
    return _from_meta(meta) or _from_sidecar(folder) or _from_layout(keys, shapes)


# -- the three sources, in order ------------------------------------------------------------------
def _from_meta(meta: dict) -> Stats | None:
    ds = meta.get("dataset")
    if isinstance(ds, Mapping) and ds.get("mean") is not None and ds.get("std") is not None:
        name = ds.get("name", "its dataset")
        return _floats(ds["mean"]), _floats(ds["std"]), f"the vitlab checkpoint's dataset entry ({name})"
    return None


def _from_sidecar(folder: Path) -> Stats | None:
    hf = folder / "preprocessor_config.json"
    cfg = _json(hf)
    if cfg and cfg.get("image_mean") is not None and cfg.get("image_std") is not None:
        return _floats(cfg["image_mean"]), _floats(cfg["image_std"]), f"Hugging Face {hf}"
    timm_cfg = folder / "config.json"
    cfg = _json(timm_cfg)
    pre = cfg.get("pretrained_cfg") if cfg else None
    if isinstance(pre, Mapping) and pre.get("mean") is not None and pre.get("std") is not None:
        return _floats(pre["mean"]), _floats(pre["std"]), f"timm {timm_cfg} (pretrained_cfg)"
    return None


def _from_layout(keys: list[str], shapes: dict[str, tuple[int, ...]]) -> Stats | None:
    if any(k.endswith("embedding/kernel") for k in keys):
        return (*INCEPTION, "Google / big_vision .npz ViT weights (inputs scaled to [-1, 1])")
    if "dist_token" in keys or any(k.endswith("embeddings.distillation_token") for k in keys):
        return (*IMAGENET, "DeiT weights (distillation token), trained with ImageNet's mean and std")
    heads = [shapes[k] for k in ("head.weight", "classifier.weight") if k in shapes]
    if heads and heads[0] and heads[0][0] == IN21K_CLASSES:
        return (*INCEPTION, f"ImageNet-21k ViT weights ({IN21K_CLASSES:,}-class head, Google's; "
                            "inputs scaled to [-1, 1])")
    if "pre_logits.fc.weight" in keys:
        return (*INCEPTION, "Google ImageNet-21k ViT weights (representation layer pre_logits; "
                            "inputs scaled to [-1, 1])")
    return None


# -- reading keys, shapes and metadata only ---------------------------------------------------------
def _weights_file(path: Path) -> Path:
    if not path.is_dir():
        return path
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    raise UserError(f"{path} is a folder without model.safetensors or pytorch_model.bin; "
                    "give the weights file itself")


def _peek(path: Path) -> tuple[list[str], dict[str, tuple[int, ...]], dict]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise UserError(f"cannot read {path} as a NumPy .npz archive (not a zip archive); "
                            "is the file complete and really an .npz?")
        try:
            with np.load(path, allow_pickle=False) as f:  # arrays are read on access only
                return list(f.files), {}, {}
        except Exception as e:
            raise UserError(f"cannot read {path} as a NumPy .npz archive ({reason(e)}); "
                            "is the file complete and really an .npz?") from None
    if suffix == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                keys = list(f.keys())
                return keys, {k: tuple(f.get_slice(k).get_shape()) for k in keys}, {}
        except Exception as e:
            raise UserError(f"cannot read {path} as a safetensors file ({reason(e)}); "
                            "is the file complete?") from None
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:  # memory-mapped: tensors are not read (the zip format of torch.save since 1.6)
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001
            obj = read_torch(path)  # older formats; its errors are UserErrors
        return _peek_mapping(obj if isinstance(obj, Mapping) else {})
    raise UserError(f"unknown weights format {suffix or '(no suffix)'!r} of {path}: "
                    "use .npz, .safetensors, .pth, .pt or .bin")


def _peek_mapping(obj: Mapping) -> tuple[list[str], dict[str, tuple[int, ...]], dict]:
    meta: dict = {}
    for key in ("model", "state_dict"):  # a training checkpoint, as read.unwrap
        if isinstance(obj.get(key), Mapping):
            meta = {k: v for k, v in obj.items() if k != key}
            obj = obj[key]
            break
    keys, shapes = [], {}
    for k, v in obj.items():
        if not isinstance(k, str):
            continue
        for p in ("module.", "_orig_mod."):
            k = k[len(p):] if k.startswith(p) else k
        keys.append(k)
        if hasattr(v, "shape"):
            shapes[k] = tuple(v.shape)
    return keys, shapes, meta


def _json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # an unreadable side file says nothing; the weights still load
    return data if isinstance(data, dict) else None


def _floats(values: Any) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        return (float(values),) * 3
    return tuple(float(v) for v in values)
