"""Grids of runs, shared by ``vitlab sweep`` and ``vitlab study``: the ``--grid``
lists and their cross product, the name and ``--set`` overrides of a point, the
check of every point before anything is trained, the folder that holds a grid
(its plan file, refused when it holds another plan), and one point's run:
trained, continued or only read.

A grid folder holds one run folder per point. Running the same command with the
same ``--out`` again continues an interrupted grid: a finished run (``DONE``) is
read, not trained again; an interrupted run resumes from its ``last.pt``; a run
that stopped before its first checkpoint starts again; a run whose loss became
non-finite (``DIVERGED``) counts as failed and is not tried again.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

from .errors import UserError
from .files import file_error, make_dirs, write_text

DONE, DIVERGED = "DONE", "DIVERGED"  # marker files of a point's run folder


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["train.lr=0.001,0.01", ...]`` -> ``[("train.lr", ["0.001", "0.01"]), ...]``: the values as
    typed, read (and type-checked) as ``--set`` values are when each run's config is loaded."""
    if not items:
        raise UserError("give at least one --grid KEY=V1,V2,...")
    grid, seen = [], set()
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UserError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        if key in seen:
            raise UserError(f"--grid {key} is given twice; list all its values in one --grid")
        seen.add(key)
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not values:
            raise UserError(f"--grid {key} has no values; give KEY=V1,V2,...")
        if len(set(values)) < len(values):
            raise UserError(f"--grid {key} lists a value twice: {raw}")
        grid.append((key, values))
    return grid


def grid_points(grid: list[tuple[str, list]]) -> list[dict]:
    """Every point of the cross product, the last key varying fastest: ``[{key: value, ...}, ...]``."""
    keys = [k for k, _ in grid]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in grid))]


def point_name(point: dict) -> str:
    """The run folder's name of a point: ``train.lr=0.01,model.depth=2`` (``/`` replaced by ``_``)."""
    return ",".join(f"{k}={v}" for k, v in point.items()).replace("/", "_")


def point_overrides(point: dict) -> list[str]:
    """The point as ``--set`` values: ``["train.lr=0.01", ...]``."""
    return [f"{k}={v}" for k, v in point.items()]


def check_points(config: str | Path, sets: list[str], points: list[dict]) -> None:
    """Read the config of every point (``vitlab.config.load``: every check, the model built on
    the meta device): a bad value of any point raises ``UserError`` before anything is trained."""
    from . import config as cfgmod

    for p in points:
        cfgmod.load(config, [*sets, *point_overrides(p)])


def open_folder(folder: Path, plan: dict, plan_name: str, what: str) -> Path:
    """The grid folder ``folder`` for ``plan`` (JSON-able), written to ``folder/plan_name``:
    a new folder, or the folder of the same plan (to continue it). ``UserError`` for a folder
    that holds another plan, or is not empty and holds none."""
    plan_file = folder / plan_name
    try:
        if plan_file.is_file():
            if json.loads(plan_file.read_text()) != json.loads(json.dumps(plan)):
                raise UserError(f"{folder} holds a {what} with another config, grid or --set; "
                                "choose another --out")
            return folder
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise UserError(f"--out {folder} exists and is not a {what} folder; choose another")
    except OSError as e:
        raise file_error("use", folder, e) from None
    except ValueError:
        raise UserError(f"{plan_file} is not a {what} plan (not JSON); choose another --out") from None
    make_dirs(folder)
    write_text(plan_file, json.dumps(plan, indent=1))
    return folder


def run_point(config: str | Path, sets: list[str], out: Path, weights: str | None = None) -> dict:
    """Train, continue or just read the run of one point in ``out`` (see the module docstring);
    its summary (``run_summary``)."""
    from . import config as cfgmod
    from .train.engine import NonFiniteLoss, Trainer

    out = Path(out)
    last, diverged, done = out / "last.pt", out / DIVERGED, out / DONE
    try:
        if diverged.is_file() or (done.is_file() and last.is_file()):
            pass  # failed, or finished: read, not trained again
        elif last.is_file():
            trainer = Trainer(cfgmod.load(out / "config.yaml"), out, resume=True)
            if trainer.epoch < trainer.total_epochs:
                print(f"continuing {out}", flush=True)
                trainer.fit()
            write_text(done, "")
        else:
            if out.exists():  # a run that stopped before its first checkpoint: start it again
                shutil.rmtree(out)
            cfg = cfgmod.load(config, sets)
            if weights:
                cfg.model.pretrained = str(weights)
            print(f"training {out}", flush=True)
            Trainer(cfg, out).fit()
            write_text(done, "")
    except NonFiniteLoss as e:
        print(f"{out}: {e}; counted as failed", flush=True)
        write_text(diverged, f"{e}\n")
    return run_summary(out)


def run_summary(out: Path) -> dict:
    """A point's result from its run folder: ``metrics.history_summary`` of its ``last.pt``
    plus ``diverged``. A failed run (``DIVERGED``, or no finished epoch) has accuracies 0."""
    from .metrics import history_summary
    from .run import checkpoint

    out = Path(out)
    last = out / "last.pt"
    h = checkpoint.load(last, map_location="meta")["history"] if last.is_file() else []
    summary = history_summary(h)
    if (out / DIVERGED).is_file() or not h:
        return {**summary, "best_acc": 0.0, "best_epoch": 0, "final_acc": 0.0, "diverged": True}
    return {**summary, "diverged": False}
