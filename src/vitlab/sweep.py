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
not trained again, and an interrupted run resumes from its ``last.pt``. The grid,
its points and each point's run are ``vitlab.grid``'s, shared with ``vitlab study``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .errors import UserError
from .files import write_text
from .grid import check_points, grid_points, open_folder, parse_grid, point_name, point_overrides, run_point

PAPER_HOLDOUT = 0.02

__all__ = ["PAPER_HOLDOUT", "parse_grid", "run_sweep"]


def _run(config: str, sets: list[str], out: Path, weights: str | None) -> dict:
    """One point's run (``grid.run_point``): the seam where tests stop a sweep."""
    return run_point(config, sets, out, weights)


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
    points = grid_points(grid)
    check_points(config, sets, points)  # every point checked before anything is trained
    if weights and not Path(weights).exists():
        raise UserError(f"weights file not found: {weights}")

    folder = Path(out) if out else default_name(config, prefix="sweep-")
    plan = {"config": str(config), "set": list(sets), "grid": [[k, v] for k, v in grid], "holdout": holdout,
            "weights": weights}
    open_folder(folder, plan, "sweep.json", "sweep")

    runs = []
    for p in points:
        sets_p = [*sets, f"data.holdout={holdout}", *point_overrides(p)]
        r = _run(config, sets_p, folder / point_name(p), weights)
        runs.append({"point": p, "run": point_name(p), **r})
        _write(folder, grid, runs, None)
    best = max(runs, key=lambda r: r["best_acc"])  # max keeps the first of equals
    print(f"best on the {100 * holdout:g}% holdout: {best['run']} ({100 * best['best_acc']:.2f}%)", flush=True)
    final = None
    if retrain:
        sets_f = [*sets, "data.holdout=0", *point_overrides(best["point"])]
        final = {"point": best["point"], "run": f"final-{best['run']}",
                 **_run(config, sets_f, folder / f"final-{best['run']}", weights)}
    text = _write(folder, grid, runs, final)
    print(text, flush=True)
    return {"runs": runs, "best": best["point"], "final": final, "folder": str(folder)}


def _write(folder: Path, grid, runs: list[dict], final: dict | None) -> str:
    keys = [k for k, _ in grid]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", *keys, "split", "best_acc", "best_epoch", "final_acc", "epochs", "seconds"])
    for r, split in [(r, "holdout") for r in runs] + ([(final, "test")] if final else []):
        w.writerow([r["run"], *(r["point"][k] for k in keys), split, r["best_acc"], r["best_epoch"],
                    r["final_acc"], r["epochs"], f"{r['seconds']:.1f}"])
    write_text(folder / "sweep.csv", buf.getvalue())
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
    write_text(folder / "sweep.md", "# Sweep\n\n" + text + "\n")
    return text
