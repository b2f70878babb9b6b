"""The output folder of an export: refused when it holds files (unless forced),
and written whole or not at all.

Every file is first written into a hidden staging folder inside the output
folder; only when all of them are written (and checked) are they moved into
place, each by a rename, which is atomic. On any failure the staging folder
is removed, and so is the output folder (and any parent) the export made: a
failed export leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from ..files import file_error, make_dirs


def check_out(out: str | os.PathLike, force: bool) -> Path:
    """``out`` as a Path, or ``UserError`` if it is a file, or a folder that holds
    files and ``force`` is not set."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file, not a folder")
        held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    except OSError as e:
        raise file_error("read the folder", out, e) from None
    if held and not force:
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise UserError(f"the output folder {out} holds files ({shown}); give an empty or new folder, "
                        "or --force to write into it (files of the same names are replaced)")
    return out


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A staging folder inside ``out`` (made if need be) to write into; its files are
    moved into ``out`` when the block ends without an error. On an error nothing
    is left: the staging folder and the folders made here are removed."""
    made = make_dirs(out)
    try:
        stage = Path(tempfile.mkdtemp(prefix=".vitlab-export-", dir=out))
    except OSError as e:
        _remove_empty(made)
        raise file_error("write into", out, e) from None
    try:
        yield stage
        for f in sorted(stage.iterdir()):
            if (out / f.name).is_dir() and not (out / f.name).is_symlink():
                raise UserError(f"cannot write {out / f.name}: a folder of that name is in the way")
        for f in sorted(stage.iterdir()):
            try:
                os.replace(f, out / f.name)
            except OSError as e:
                raise file_error("write", out / f.name, e) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        _remove_empty(made)
        raise
    shutil.rmtree(stage, ignore_errors=True)


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:  # innermost first
        try:
            d.rmdir()
        except OSError:
            break
