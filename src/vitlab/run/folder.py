"""Run folders: their default names, what makes a folder a run, the rules of
starting and resuming one, and cleaning up after a run that failed before
its first checkpoint.

A run folder holds ``config.yaml`` (resolved), ``metrics.csv``, ``best.pt``,
``last.pt``, ``curves.png``, ``model_card.md``, TensorBoard events and
``bad_images.txt`` where images were left out. A folder that holds
``last.pt`` and ``config.yaml`` is a run that can be resumed or compared.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..errors import UserError
from ..files import file_error, make_dirs

RUN_FILES = ("last.pt", "config.yaml")
# Keys that --resume may change: where things run and how they are shown, not what is trained;
# and the length (the schedule follows the longer plan from where the run is).
RESUME_KEYS = ("train.device", "train.threads", "train.progress", "train.loggers", "data.root",
               "data.num_workers", "data.device_resident", "train.eval_batch_size", "train.check_every",
               "train.epochs", "train.steps", "train.max_seconds")


def default_name(config: str | Path, prefix: str = "") -> Path:
    """``runs/<prefix><config stem>-<date>-<time>``."""
    return Path("runs") / f"{prefix}{Path(config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def is_run(path: Path) -> bool:
    return all((path / n).is_file() for n in RUN_FILES)


def check_new(out: Path) -> None:
    """``out`` can take a new run: not a file, not a path through a file, no run in it."""
    try:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file, not a folder; choose another --out")
        for parent in out.parents:
            if parent.exists() and not parent.is_dir():
                raise UserError(f"--out {out} lies inside {parent}, which is a file; choose another --out")
        if (out / "last.pt").exists():
            raise UserError(f"{out} already holds a run; continue it with `vitlab train --resume {out}` "
                            "or choose another --out")
    except OSError as e:  # a symlink loop, a permission
        raise file_error("use", out, e) from None


def check_resume(out: Path, overrides) -> None:
    """``out`` holds a run to resume, and ``overrides`` change only what a resume may."""
    try:
        runnable = is_run(out)
    except OSError as e:
        raise file_error("read the run in", out, e) from None
    if not runnable:
        raise UserError(f"{out} holds no run to resume (no last.pt and config.yaml); "
                        "start one with `vitlab train CONFIG`")
    for item in overrides:  # the optimizer and schedule state come from last.pt: only these may change
        key = str(item).split("=", 1)[0].strip()
        if key not in RESUME_KEYS:
            raise UserError(f"--set {key} cannot change when resuming; allowed: {', '.join(sorted(RESUME_KEYS))}")


class RunFolder:
    """The folder of a run that is starting: made when the run is ready to write
    (``make``), removed again, with the parents it made, if the run fails before its
    first checkpoint (``discard_if_empty``)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.made: list[Path] = []  # the folders this run made, innermost first

    def make(self) -> Path:
        self.made = make_dirs(self.out)
        try:
            for stale in self.out.glob(".*.tmp"):  # left by a process killed while writing a file
                stale.unlink(missing_ok=True)
        except OSError as e:
            raise file_error("clean", self.out, e) from None
        return self.out

    def discard_if_empty(self) -> None:
        """Remove what this run made if it wrote no checkpoint (nothing half-made stays)."""
        if not self.made or (self.out / "last.pt").exists():
            return
        shutil.rmtree(self.out, ignore_errors=True)
        for d in self.made[1:]:  # the parents this run made (runs/), unless something else is there now
            try:
                d.rmdir()
            except OSError:
                break
