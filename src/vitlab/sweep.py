"""``vitlab sweep CONFIG --grid key=v1,v2 ...``: the ViT paper's hyper-parameter protocol.

Every point of the grid (the product of the ``--grid`` lists) is trained with
the validation set replaced by a seeded, stratified holdout of the training set
(``data.holdout``; 2% as in the paper's appendix B.1.1 unless the config sets
another fraction), so that the test set plays no part in the choice. The point
with the best holdout accuracy (best over its epochs; the first point on a tie)
is then retrained on the whole training set and evaluated on the test set
(``--no-retrain`` skips this). ``sweep.md`` and ``sweep.csv`` list every run.

The sweep folder holds one run folder per point (``train.lr=0.01``) and
``final-<point>`` for the retrained winner. Running the same command with the
same ``--out`` again continues an interrupted sweep: finished runs are read,
not trained again, and an interrupted run resumes from its ``last.pt``.
"""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

from .errors import UserError

PAPER_HOLDOUT = 0.02


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
        grid.append((key, values))
    return grid


def _points(grid: list[tuple[str, list]]) -> list[dict]:
    keys = [k for k, _ in grid]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in grid))]


def _name(point: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items()).replace("/", "_")


def _overrides(point: dict) -> list[str]:
    return [f"{k}={v}" for k, v in point.items()]


def _run(config: str, sets: list[str], out: Path, weights: str | None) -> dict:
    """Train (or continue, or just read) the run in ``out``; its summary."""
    from . import config as cfgmod
    from .metrics import history_summary
    from .run import checkpoint
    from .train.engine import NonFiniteLoss, Trainer

    last, diverged = out / "last.pt", out / "DIVERGED"
    try:
        if diverged.is_file():
            pass  # a point whose loss became non-finite counts as failed; it is not tried again
        elif last.is_file():
            cfg = cfgmod.load(out / "config.yaml")
            trainer = Trainer(cfg, out, resume=True)
            if trainer.epoch < trainer.total_epochs:
                print(f"continuing {out}", flush=True)
                trainer.fit()
        else:
            if out.exists():  # a run that stopped before its first checkpoint: start it again
                shutil.rmtree(out)
            cfg = cfgmod.load(config, sets)
            if weights:
                cfg.model.pretrained = str(weights)
            print(f"training {out}", flush=True)
            Trainer(cfg, out).fit()
    except NonFiniteLoss as e:
        print(f"{out}: {e}; counted as failed", flush=True)
        diverged.write_text(f"{e}\n")
    h = checkpoint.load(last)["history"] if last.is_file() else []
    summary = history_summary(h)
    if diverged.is_file() or not h:
        return {**summary, "best_acc": 0.0, "best_epoch": 0, "final_acc": 0.0, "diverged": True}
    return {**summary, "diverged": False}


def run_sweep(config: str, grid_items: list[str], sets: list[str], out: str | None = None,
              retrain: bool = True, weights: str | None = None) -> dict:
    """Run the sweep; returns {"runs": [...], "best": point, "final": summary or None}."""
    from . import config as cfgmod
    from .run.folder import default_name

    grid = parse_grid(grid_items)
    base = cfgmod.load(config, sets)  # the config and the --set values, checked once
    holdout = base.data.holdout
    if holdout == 0:
        holdout = PAPER_HOLDOUT
    if not 0 < holdout < 1:
        raise UserError(f"data.holdout must be between 0 and 1 (exclusive), got {holdout}")
    points = _points(grid)
    for p in points:  # every point checked before anything is trained
        cfgmod.load(config, [*sets, *_overrides(p)])
    if weights and not Path(weights).exists():
        raise UserError(f"weights file not found: {weights}")

    folder = Path(out) if out else default_name(config, prefix="sweep-")
    plan = {"config": str(config), "set": list(sets), "grid": [[k, v] for k, v in grid], "holdout": holdout,
            "weights": weights}
    plan_file = folder / "sweep.json"
    if plan_file.is_file():
        if json.loads(plan_file.read_text()) != plan:
            raise UserError(f"{folder} holds a sweep with another config, grid or --set; choose another --out")
    elif folder.exists() and any(folder.iterdir()):
        raise UserError(f"--out {folder} exists and is not a sweep folder; choose another")
    folder.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan, indent=1))

    runs = []
    for p in points:
        sets_p = [*sets, f"data.holdout={holdout}", *_overrides(p)]
        r = _run(config, sets_p, folder / _name(p), weights)
        runs.append({"point": p, "run": _name(p), **r})
        _write(folder, grid, runs, None)
    best = max(runs, key=lambda r: r["best_acc"])  # max keeps the first of equals
    print(f"best on the {100 * holdout:g}% holdout: {best['run']} ({100 * best['best_acc']:.2f}%)", flush=True)
    final = None
    if retrain:
        sets_f = [*sets, "data.holdout=0", *_overrides(best["point"])]
        final = {"point": best["point"], "run": f"final-{best['run']}",
                 **_run(config, sets_f, folder / f"final-{best['run']}", weights)}
    text = _write(folder, grid, runs, final)
    print(text, flush=True)
    return {"runs": runs, "best": best["point"], "final": final, "folder": str(folder)}


def _write(folder: Path, grid, runs: list[dict], final: dict | None) -> str:
    keys = [k for k, _ in grid]
    with open(folder / "sweep.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", *keys, "split", "best_acc", "best_epoch", "final_acc", "epochs", "seconds"])
        for r, split in [(r, "holdout") for r in runs] + ([(final, "test")] if final else []):
            w.writerow([r["run"], *(r["point"][k] for k in keys), split, r["best_acc"], r["best_epoch"],
                        r["final_acc"], r["epochs"], f"{r['seconds']:.1f}"])
    lines = ["| run | " + " | ".join(keys) + " | holdout top-1 (best) | epoch | final | time |",
             "|---|" + "---|" * len(keys) + "---:|---:|---:|---:|"]
    best = max(runs, key=lambda r: r["best_acc"])
    for r in runs:
        mark = " **best**" if r is best else " (diverged)" if r.get("diverged") else ""
        lines.append(f"| {r['run']}{mark} | " + " | ".join(str(r["point"][k]) for k in keys)
                     + f" | {100 * r['best_acc']:.2f}% | {r['best_epoch']} | {100 * r['final_acc']:.2f}% "
                       f"| {r['seconds']:.0f} s |")
    if final:
        lines += ["", f"Retrained on the whole training set ({final['run']}): test top-1 "
                      f"**{100 * final['final_acc']:.2f}%** after the last epoch ({final['epochs']} epochs, "
                      f"{final['seconds']:.0f} s; the best epoch's {100 * final['best_acc']:.2f}% is chosen on "
                      "the test set and is not a fair figure)."]
    text = "\n".join(lines)
    (folder / "sweep.md").write_text("# Sweep\n\n" + text + "\n", encoding="utf-8")
    return text
