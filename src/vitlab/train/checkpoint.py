"""Atomic checkpoint files: written to a temporary file in the same folder,
flushed to disk, then renamed over the old one. A crash or a kill at any
moment leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import UserError

# mkstemp makes files readable by their owner only; checkpoints and logs get the usual
# permissions (0o666 less the umask), as config.yaml and every other file of a run folder.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file_object)`` on a temporary file, then rename it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(obj: dict, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def load(path: str | Path, map_location="cpu") -> dict:
    """Read a vitlab checkpoint without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"cannot read checkpoint {path}: not a complete PyTorch checkpoint "
                        f"({type(e).__name__}{': ' + first if first else ''})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{path} is not a vitlab checkpoint (no 'model' entry)")
    return ckpt
