"""``vitlab sweep CONFIG --grid key=v1,v2 ...``: the ViT paper's hyper-parameter protocol.

Every point of the grid (the product of the ``--grid`` lists) is trained with
the validation set replaced by a seeded, stratified holdout of the training set
(``data.holdout``; 2% as in the paper's appendix B.1.1 unless the config sets
another fraction), so that the test set plays no part in the choice. The point
with the best holdout accuracy (best over its epochs) is then retrained on the
whole training set and evaluated on the test set (``--no-retrain`` skips this).
``sweep.md`` and ``sweep.csv`` list every run.

The holdout is measured before anything is trained (the dataset is read as the
trainer reads it): its images, and the fewest and most of a class. A holdout
with fewer than ``MIN_HOLDOUT_PER_CLASS`` images of some class is too small to
rank the points (one image moves the accuracy by 100/n percent) and the sweep is
refused, unless ``min_holdout_per_class`` is lowered (0: rank any holdout, with a
warning). Points with the same number of correct holdout images are tied: the
tie goes to the lower holdout loss (of each point's best epoch), then to the
first point in grid order; the output and ``sweep.md`` say so, with the spread of
the holdout accuracies and what one image is worth.

The sweep folder holds one run folder per point (``train.lr=0.01``) and
``final-<point>`` for the retrained winner. Running the same command with the
same ``--out`` again continues an interrupted sweep: finished runs are read,
not trained again, and an interrupted run resumes from its ``last.pt``. The grid,
its points and each point's run are ``vitlab.grid``'s, shared with ``vitlab study``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .compare import counted
from .errors import UserError
from .files import write_text
from .grid import check_points, grid_points, open_folder, parse_grid, point_name, point_overrides, run_point

PAPER_HOLDOUT = 0.02
MIN_HOLDOUT_PER_CLASS = 10  # holdout images of every class needed to rank the points

__all__ = ["MIN_HOLDOUT_PER_CLASS", "PAPER_HOLDOUT", "check_holdout", "describe_holdout", "holdout_size", "parse_grid",
           "rank", "run_sweep"]


def _run(config: str, sets: list[str], out: Path, weights: str | None) -> dict:
    """One point's run (``grid.run_point``): the seam where tests stop a sweep."""
    return run_point(config, sets, out, weights)


def run_sweep(config: str, grid_items: list[str], sets: list[str], out: str | None = None,
              retrain: bool = True, weights: str | None = None,
              min_holdout_per_class: int = MIN_HOLDOUT_PER_CLASS) -> dict:
    """Run the sweep; returns {"runs": [...], "best": point, "tied": [points], "final": summary or None,
    "folder": str}. ``UserError`` before anything is trained for a holdout with fewer than
    ``min_holdout_per_class`` images of some class (0: never)."""
    from . import config as cfgmod
    from .run.folder import default_name

    grid = parse_grid(grid_items)
    base = cfgmod.load(config, sets)  # the config and the --set values, checked once
    holdout = base.data.holdout
    if holdout == 0:
        holdout = PAPER_HOLDOUT
    if not 0 < holdout < 1:
        raise UserError(f"data.holdout must be between 0 and 1 (exclusive), got {holdout}")
    if isinstance(min_holdout_per_class, bool) or not isinstance(min_holdout_per_class, int) \
            or min_holdout_per_class < 0:
        raise UserError(f"--min-holdout-per-class must be 0 or more, got {min_holdout_per_class!r}")
    points = grid_points(grid)
    check_points(config, sets, points)  # every point checked before anything is trained
    if weights and not Path(weights).exists():
        raise UserError(f"weights file not found: {weights}")
    point_sets = [[*sets, f"data.holdout={holdout}", *point_overrides(p)] for p in points]
    sizes = _holdout_sizes(config, point_sets)
    for size in {_key(s): s for s in sizes}.values():
        check_holdout(size, min_holdout_per_class)

    folder = Path(out) if out else default_name(config, prefix="sweep-")
    plan = {"config": str(config), "set": list(sets), "grid": [[k, v] for k, v in grid], "holdout": holdout,
            "weights": weights}
    open_folder(folder, plan, "sweep.json", "sweep")
    for line in _holdout_lines(points, sizes):
        print(line, flush=True)

    runs = []
    for p, sets_p, size in zip(points, point_sets, sizes):
        r = _run(config, sets_p, folder / point_name(p), weights)
        runs.append({"point": p, "run": point_name(p), **r, "holdout": size})
        _write(folder, grid, runs, None)
    ranked = rank(runs)
    best = ranked["best"]
    for line in _ranking_lines(ranked):
        print(line, flush=True)
    final = None
    if retrain:
        sets_f = [*sets, "data.holdout=0", *point_overrides(best["point"])]
        final = {"point": best["point"], "run": f"final-{best['run']}",
                 **_run(config, sets_f, folder / f"final-{best['run']}", weights)}
    text = _write(folder, grid, runs, final)
    print(text, flush=True)
    return {"runs": runs, "best": best["point"], "tied": [r["point"] for r in ranked["tied"]], "final": final,
            "folder": str(folder)}


# --------------------------------------------------------------------------- the holdout


def holdout_size(config: str | Path, sets: list[str]) -> dict:
    """The validation set a run of ``config`` with ``sets`` gets, read as the trainer reads it
    (``build_datasets``): ``fraction`` (``data.holdout``), ``images``, ``classes``,
    ``min_per_class`` and ``max_per_class`` (holdout images of a class), ``train_images``
    (left for training), and ``smallest_class`` (training plus holdout images of the smallest
    class; None where ``data.train_subset`` hides it)."""
    import torch

    from . import config as cfgmod
    from .data import build_datasets

    cfg = cfgmod.load(config, sets)
    train, val, info = build_datasets(cfg.data, cfg.train.seed)
    held = torch.bincount(val.targets, minlength=info.num_classes)
    total = held + torch.bincount(train.targets, minlength=info.num_classes)
    return {"fraction": cfg.data.holdout, "images": len(val.targets), "classes": info.num_classes,
            "min_per_class": int(held.min()), "max_per_class": int(held.max()), "train_images": len(train.targets),
            "smallest_class": None if cfg.data.train_subset else int(total.min()),
            "val_subset": cfg.data.val_subset}


def _key(size: dict) -> str:
    return json.dumps(size, sort_keys=True)


def _holdout_sizes(config, point_sets: list[list[str]]) -> list[dict]:
    """``holdout_size`` of every point; the dataset is read once per distinct data section and seed."""
    from . import config as cfgmod

    known: dict[str, dict] = {}
    sizes = []
    for sets_p in point_sets:
        cfg = cfgmod.load(config, sets_p)
        key = json.dumps([cfg.to_dict()["data"], cfg.train.seed], sort_keys=True, default=str)
        if key not in known:
            known[key] = holdout_size(config, sets_p)
        sizes.append(known[key])
    return sizes


def describe_holdout(size: dict) -> str:
    """'81 images (data.holdout=0.2), 8 to 9 per class over 10 classes, 324 left for training;
    one image is 1.23%'."""
    lo, hi = size["min_per_class"], size["max_per_class"]
    per = f"{lo} per class" if lo == hi else f"{lo} to {hi} per class"
    return (f"{counted(size['images'], 'image')} (data.holdout={size['fraction']:g}), {per} over "
            f"{counted(size['classes'], 'class', 'classes')}, {size['train_images']} left for training; "
            f"one image is {_image_pct(size['images']):.2f}%")


def rule_text(min_per_class: int = MIN_HOLDOUT_PER_CLASS) -> str:
    return f"a sweep ranks its points only on a holdout of at least {min_per_class} images of every class"


def check_holdout(size: dict, min_per_class: int = MIN_HOLDOUT_PER_CLASS) -> None:
    """``UserError`` (one line: the holdout's size, the rule, the fix) for a holdout with fewer
    than ``min_per_class`` images of some class; nothing with ``min_per_class`` 0."""
    if size["min_per_class"] >= min_per_class:
        return
    fix = []
    if size["val_subset"]:
        fix.append(f"raise or remove data.val_subset={size['val_subset']}")
    n = size["smallest_class"]
    if n is None:
        fix.append("raise data.holdout (it is taken before data.train_subset)")
    else:
        need = math.ceil(100 * min_per_class / n) / 100  # round(n * need) >= min_per_class
        if need <= 0.5:
            fix.append(f"add --set data.holdout={need:g} ({min_per_class} or more per class)")
        else:
            fix.append(f"the smallest class has only {n} training images, too few to hold out {min_per_class} "
                       "and train on the rest: use more data")
    raise UserError(
        f"the holdout is too small to rank the grid's points: {describe_holdout(size)}; {rule_text(min_per_class)}; "
        f"{'; '.join(fix)}; or give --min-holdout-per-class 0 to rank on this holdout anyway")


def _image_pct(n: int) -> float:
    return 100 / n if n else math.inf


def _holdout_lines(points: list[dict], sizes: list[dict]) -> list[str]:
    """The holdout as printed before the first run (one line per point where the points differ),
    with a warning where it is below the rule."""
    if len({_key(s) for s in sizes}) == 1:
        lines = [f"holdout: {describe_holdout(sizes[0])}"]
    else:
        lines = [f"holdout of {point_name(p)}: {describe_holdout(s)}" for p, s in zip(points, sizes)]
    small = min(s["min_per_class"] for s in sizes)
    if small < MIN_HOLDOUT_PER_CLASS:
        lines.append(f"WARNING: a class has only {counted(small, 'holdout image')}, and {rule_text()}: "
                     "the points are ranked anyway, but the ranking is not reliable")
    return lines


# --------------------------------------------------------------------------- the ranking


def correct(run: dict) -> int:
    """The holdout images a run's best epoch classified right."""
    return round(run["best_acc"] * run["holdout"]["images"])


def rank(runs: list[dict]) -> dict:
    """The best run of ``runs`` (each with ``best_acc``, ``best_loss``, ``diverged`` and ``holdout``,
    in grid order), ranked on the holdout: ``best``; ``tied``, the runs with the best's number of
    correct holdout images (the best first; [best] when none ties); ``broken_by``, None, ``"loss"``
    (the lowest holdout loss of the tied runs' best epochs) or ``"order"`` (losses equal too: the
    first in grid order); ``spread``, the best minus the worst holdout accuracy; ``image``, the
    accuracy one holdout image is worth (of the smallest holdout); ``runner_up``, the best of the
    rest (or None). Diverged runs are ranked only when every run diverged."""
    ok = [r for r in runs if not r.get("diverged")] or list(runs)
    n = min(r["holdout"]["images"] for r in ok)
    top = max(r["best_acc"] for r in ok)
    tied = [r for r in ok if top - r["best_acc"] < 0.5 / n]  # the same number of correct images
    broken_by = None
    if len(tied) > 1:
        losses = [_loss(r) for r in tied]
        lowest = [r for r, loss in zip(tied, losses) if loss == min(losses)]
        broken_by = "loss" if len(lowest) == 1 else "order"
        best = lowest[0]
        tied = [best, *(r for r in tied if r is not best)]
    best = tied[0]
    rest = [r for r in ok if not any(r is t for t in tied)]
    return {"best": best, "tied": tied, "broken_by": broken_by, "image": 1 / n,
            "spread": top - min(r["best_acc"] for r in ok),
            "runner_up": max(rest, key=lambda r: r["best_acc"]) if rest else None}


def _loss(run: dict) -> float:
    loss = run.get("best_loss")
    return math.inf if loss is None or math.isnan(loss) else loss


def _score(run: dict) -> str:
    return f"{100 * run['best_acc']:.2f}%, {correct(run)} of {run['holdout']['images']} images"


def _ranking_lines(ranked: dict) -> list[str]:
    """What the sweep says of its ranking: the best (the line begins 'best on the X% holdout:'),
    a tie and how it was broken, the spread of the holdout accuracies."""
    best = ranked["best"]
    lines = [f"best on the {100 * best['holdout']['fraction']:g}% holdout: {best['run']} ({_score(best)})"]
    if ranked["broken_by"]:
        lines.append(_tie_text(ranked))
    elif ranked["runner_up"] is not None:
        ahead = correct(best) - correct(ranked["runner_up"])
        lines.append(f"ahead of the next point, {ranked['runner_up']['run']}, by {counted(ahead, 'holdout image')}")
    lines.append(_spread_text(ranked))
    return lines


def _tie_text(ranked: dict) -> str:
    best, tied = ranked["best"], ranked["tied"]
    others = ", ".join(r["run"] for r in tied[1:])
    text = (f"tie: {best['run']} and {others} have the same holdout accuracy ({_score(best)}); "
            f"{best['run']} is chosen by ")
    if ranked["broken_by"] == "loss":
        losses = ", ".join(f"{r['run']} {_loss(r):.4f}" for r in tied)
        return text + f"the lower holdout loss at its best epoch ({losses})"
    return text + "the grid order, the first of the tied points (their holdout losses are equal too)"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _spread_text(ranked: dict) -> str:
    return (f"spread of the holdout accuracies: {100 * ranked['spread']:.2f}% (best minus worst); "
            f"one holdout image is {100 * ranked['image']:.2f}%")


# --------------------------------------------------------------------------- sweep.csv, sweep.md

CSV_COLUMNS = ["run", "split", "best_acc", "best_epoch", "final_acc", "epochs", "seconds", "holdout_images",
               "holdout_min_per_class", "holdout_correct", "best_loss", "best", "tied"]


def _write(folder: Path, grid, runs: list[dict], final: dict | None) -> str:
    """sweep.csv and sweep.md (rewritten after every run); returns sweep.md's body."""
    keys = [k for k, _ in grid]
    ranked = rank(runs)
    tied = ranked["tied"] if ranked["broken_by"] else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", *keys, *CSV_COLUMNS[1:]])
    for r in runs:
        w.writerow([r["run"], *(r["point"][k] for k in keys), "holdout", r["best_acc"], r["best_epoch"],
                    r["final_acc"], r["epochs"], f"{r['seconds']:.1f}", r["holdout"]["images"],
                    r["holdout"]["min_per_class"], correct(r), "" if r.get("best_loss") is None else r["best_loss"],
                    int(r is ranked["best"]), int(any(r is t for t in tied))])
    if final:
        w.writerow([final["run"], *(final["point"][k] for k in keys), "test", final["best_acc"], final["best_epoch"],
                    final["final_acc"], final["epochs"], f"{final['seconds']:.1f}", "", "", "", "", "", ""])
    write_text(folder / "sweep.csv", buf.getvalue())

    sizes = list({_key(r["holdout"]): r["holdout"] for r in runs}.values())
    if len(sizes) == 1:
        lines = [f"Holdout: {describe_holdout(sizes[0])}."]
    else:
        lines = ["Holdout: it differs between the points (the grid changes the data); each point's holdout "
                 "images are in the column 'correct'."]
    lines[-1] += f" The rule: {rule_text()}."
    small = min(s["min_per_class"] for s in sizes)
    if small < MIN_HOLDOUT_PER_CLASS:
        lines += ["", f"**Warning**: a class has only {counted(small, 'holdout image')}, fewer than the rule asks: "
                      "the points were ranked anyway (--min-holdout-per-class), but the ranking is not reliable."]
    lines += ["", "| run | " + " | ".join(keys) + " | holdout top-1 (best) | correct | epoch | final | time |",
              "|---|" + "---|" * len(keys) + "---:|---:|---:|---:|---:|"]
    for r in runs:
        mark = (" **best**" if r is ranked["best"] else " (tied)" if any(r is t for t in tied)
                else " (diverged)" if r.get("diverged") else "")
        lines.append(f"| {r['run']}{mark} | " + " | ".join(str(r["point"][k]) for k in keys)
                     + f" | {100 * r['best_acc']:.2f}% | {correct(r)} of {r['holdout']['images']} | {r['best_epoch']} "
                       f"| {100 * r['final_acc']:.2f}% | {r['seconds']:.0f} s |")
    best = ranked["best"]
    lines += ["", f"- Best: {best['run']} ({_score(best)}).",
              *(f"- {_sentence(line)}" for line in _ranking_lines(ranked)[1:])]
    if final:
        lines += ["", f"Retrained on the whole training set ({final['run']}): test top-1 "
                      f"**{100 * final['final_acc']:.2f}%** after the last epoch ({counted(final['epochs'], 'epoch')}, "
                      f"{final['seconds']:.0f} s; the best epoch's {100 * final['best_acc']:.2f}% is chosen on "
                      "the test set and is not a fair figure)."]
    text = "\n".join(lines)
    write_text(folder / "sweep.md", "# Sweep\n\n" + text + "\n")
    return text
