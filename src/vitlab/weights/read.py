"""Reading weights files (.npz, .safetensors, PyTorch pickles, Hugging Face
folders) without executing pickled code, and unwrapping training checkpoints."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError

Tensor = torch.Tensor
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def read(source: Any) -> tuple[Mapping, dict, str]:
    """-> (flat or wrapped state dict, metadata dict, description of the source)."""
    if isinstance(source, Mapping):
        return source, {}, "the given state dict"
    if not isinstance(source, (str, os.PathLike)):
        raise UserError(f"weights source must be a path or a state dict, got {type(source).__name__}")
    path = Path(source).expanduser()
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise UserError(f"{path} is a folder without model.safetensors or pytorch_model.bin; "
                            "give the weights file itself")
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    origin = str(path)
    if suffix == ".npz":
        return _read_npz(path), {}, origin
    if suffix == ".safetensors":
        return _read_safetensors(path), {}, origin
    if suffix in _TORCH_SUFFIXES:
        return read_torch(path), {}, origin
    raise UserError(f"unknown weights format {suffix or '(no suffix)'!r} of {path}: "
                    "use .npz, .safetensors, .pth, .pt or .bin")


def _read_npz(path: Path) -> dict[str, Tensor]:
    import zipfile
    if not zipfile.is_zipfile(path):
        raise UserError(f"cannot read {path} as a NumPy .npz archive (not a zip archive); "
                        "is the file complete and really an .npz?")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: _np_to_torch(f[k]) for k in f.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled arrays), OSError, ...
        raise UserError(f"cannot read {path} as a NumPy .npz archive ({reason(e)}); "
                        "is the file complete and really an .npz?") from None


def _np_to_torch(a: np.ndarray) -> Tensor:
    if a.dtype.kind == "V" and a.dtype.itemsize == 2:  # bfloat16 saved by JAX as raw 2-byte values
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16).float()
    if a.dtype == object:
        raise ValueError("object arrays are not weights")
    return torch.from_numpy(np.ascontiguousarray(a))


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError, OSError
        raise UserError(f"cannot read {path} as a safetensors file ({reason(e)}); "
                        "is the file complete?") from None


def read_torch(path: Path) -> Any:
    """A PyTorch file (``torch.save``) read with ``weights_only=True``: tensors and
    plain containers, never pickled code. Errors are ``UserError``s naming the file."""
    import pickle
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found or "Unsupported global" in str(e):
            what = f" ({found.group(1)})" if found else ""
            raise UserError(
                f"{path} holds pickled Python objects besides tensors{what}, and vitlab never runs "
                "pickled code; if you trust the file, re-save only its state dict, e.g. "
                "torch.save(torch.load(path, weights_only=False)['model'], 'clean.pth')") from None
        raise UserError(f"cannot read {path} as a PyTorch checkpoint (not a valid pickle); "
                        "is the file complete?") from None
    except Exception as e:  # RuntimeError (bad zip), EOFError, OSError, ...
        raise UserError(f"cannot read {path} as a PyTorch checkpoint ({reason(e)}); "
                        "is the file complete?") from None


def reason(e: Exception) -> str:
    """First sentence of an exception's message, on one line."""
    text = " ".join(str(e).split())
    text = re.split(r"(?<=[a-z)])\. ", text, maxsplit=1)[0][:160].rstrip(".")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def unwrap(state: Any, meta: dict, origin: str) -> dict[str, Tensor]:
    """Take the state dict out of a training checkpoint; keep its metadata in
    ``meta``; strip DDP / torch.compile prefixes; make every value a tensor."""
    if not isinstance(state, Mapping):
        raise UserError(f"{origin} holds a {type(state).__name__}, not a state dict")
    for key in ("model", "state_dict"):
        inner = state.get(key)
        if isinstance(inner, Mapping):
            meta.update({k: v for k, v in state.items() if k != key})
            state = inner
            break
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if not isinstance(k, str):
            raise UserError(f"{origin} is not a state dict (key {k!r} is not a name)")
        for p in ("module.", "_orig_mod."):
            if k.startswith(p):
                k = k[len(p):]
        if isinstance(v, np.ndarray):
            v = _np_to_torch(v)
        if not isinstance(v, Tensor):
            raise UserError(f"{origin} is not a state dict: {k!r} holds a {type(v).__name__}, not a tensor")
        out[k] = v
    if not out:
        raise UserError(f"{origin} holds no tensors")
    return out


