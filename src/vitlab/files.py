"""Files written whole or not at all, and file-system faults as one clear line.

``atomic_write`` writes to a temporary file in the target's folder, flushes it
to disk, then renames it over the target: a crash, a kill or a full disk at
any moment leaves either the old file or the new one, never half of one.
``file_error`` turns an ``OSError`` (a full disk, a read-only file system, a
path through a regular file, a symlink loop, a missing permission) into a
``UserError`` that says what could not be done and why, in one line.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import UserError

# mkstemp makes files readable by their owner only; run files get the usual
# permissions (0o666 less the umask), as every other file of a run folder.
_UMASK = os.umask(0)
os.umask(_UMASK)

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ELOOP: "the path holds a symbolic-link loop",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EISDIR: "it is a folder",
    errno.ENOENT: "no such file or folder",
}


def reason(e: OSError) -> str:
    """A short reason for an ``OSError``, without the errno number."""
    return _REASONS.get(e.errno) or e.strerror or str(e) or type(e).__name__


def file_error(what: str, path: str | os.PathLike, e: OSError) -> UserError:
    """``UserError('cannot <what> <path>: <reason>')`` for a file-system fault."""
    return UserError(f"cannot {what} {path}: {reason(e)}")


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Call ``write(file_object)`` on a temporary file, then rename it to ``path``.
    A file-system fault raises ``UserError`` and leaves ``path`` as it was."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise file_error("write", path, e) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise file_error("write", path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` (UTF-8) written atomically to ``path``."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``data`` written atomically to ``path``."""
    atomic_write(path, lambda f: f.write(data))


def make_dirs(path: str | os.PathLike) -> list[Path]:
    """Make the folder ``path`` and its missing parents; returns the folders made,
    innermost first (for cleaning up). A file-system fault raises ``UserError``."""
    path = Path(path)
    new = [d for d in (path, *path.parents) if not d.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"cannot make the folder {path}: a file of that name is in the way") from None
    except OSError as e:
        raise file_error("make the folder", path, e) from None
    return new
