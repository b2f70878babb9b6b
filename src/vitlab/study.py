"""``vitlab study CONFIG [CONFIG ...] --grid key=v1,v2 ... --x KEY``: the paper's studies
(data size, scaling, compute) as one command.

One run per point of the full cross product of the ``--grid`` lists (and of the
configs, when several are given: then ``config`` is a grid key whose values are the
configs' file names). Unlike ``vitlab sweep`` no winner is picked and nothing is held
out of the training set unless the config or ``--set`` asks for it (``data.holdout``):
each run is validated on its dataset's own test/validation split. Every point's config
is read (every check) before the first run.

The study folder holds one run folder per point and ``study.json`` (the plan),
``study.csv`` (one row per run: the grid values, parameters, forward MACs, images seen,
training compute = 2 x 3 x forward MACs x images seen, best and final accuracy, times,
and the few-shot columns) and ``study.png`` (final accuracy against ``--x``, one line per
combination of the other grid keys; a panel per few-shot k). Both are rewritten, whole
(``vitlab.files``), after every run. The same command with the same ``--out`` continues
an interrupted study: finished runs are read, not trained again (``vitlab.grid``), and
few-shot results are kept in each run folder's ``fewshot.json``.

``--fewshot 5,10 --fewshot-data CONFIG [--fewshot-set KEY=VALUE ...]`` adds few-shot
linear evaluation (``vitlab.fewshot``) of each run's final model on the dataset of
CONFIG: k-shot images from its training split, accuracy on its test split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from .errors import UserError
from .files import write_bytes, write_text
from .grid import check_points, grid_points, open_folder, parse_grid, point_name, point_overrides, run_point

CONFIG_KEY = "config"  # the grid key of the configs when a study has several


def study_points(configs: list[str], grid: list[tuple[str, list[str]]]) -> tuple[list, list[tuple[str, dict]]]:
    """(the full grid with a leading ``config`` key when there are several configs,
    [(config, point), ...] in the order they run: the configs slowest, the last key fastest)."""
    stems = [Path(c).stem for c in configs]
    if len(set(stems)) < len(stems):
        raise UserError(f"the configs {', '.join(map(str, configs))} share a file name; a study names each "
                        "config's runs by its file name")
    full = ([(CONFIG_KEY, stems)] if len(configs) > 1 else []) + grid
    plan = []
    for config, stem in zip(configs, stems):
        for p in grid_points(grid):
            plan.append((config, {CONFIG_KEY: stem, **p} if len(configs) > 1 else p))
    return full, plan


def run_study(configs: list[str] | str, grid_items: list[str], x: str, sets: list[str] = (),
              out: str | Path | None = None, fewshot: str | list[int] | None = None,
              fewshot_data: str | None = None, fewshot_draws: int = 3, fewshot_sets: list[str] = ()) -> dict:
    """Run (or continue) the study; returns ``{"rows": [...], "folder": str}``, a row per run
    as in study.csv (``fewshot`` a dict ``{k: {"mean", "std", "accs"}}`` where measured)."""
    from . import config as cfgmod
    from .fewshot import check_draws, parse_shots
    from .run.folder import default_name

    configs = [configs] if isinstance(configs, (str, Path)) else list(configs)
    if not configs:
        raise UserError("give a CONFIG")
    sets = list(sets)
    grid = parse_grid(grid_items)
    if any(k == CONFIG_KEY for k, _ in grid):
        raise UserError("--grid config=... is not a config key; give several CONFIG files instead")
    full, plan = study_points([str(c) for c in configs], grid)
    keys = [k for k, _ in full]
    if x not in keys:
        raise UserError(f"--x {x} is not a key of the grid; choose from {', '.join(keys)}")
    shots = None
    if fewshot is not None or fewshot_data is not None:
        if fewshot is None or fewshot_data is None:
            raise UserError("give --fewshot K1,K2,... and --fewshot-data CONFIG together")
        shots = parse_shots(fewshot, "--fewshot")
        fewshot_draws = check_draws(fewshot_draws, "--fewshot-draws")
        cfgmod.load(fewshot_data, list(fewshot_sets))  # checked before anything is trained
    for config in configs:  # every point of every config checked before anything is trained
        cfgmod.load(config, sets)
        check_points(config, sets, grid_points(grid))

    folder = Path(out) if out else default_name(configs[0], prefix="study-")
    open_folder(folder, {"configs": [str(c) for c in configs], "set": sets, "grid": [[k, v] for k, v in grid]},
                "study.json", "study")
    fs = None if shots is None else {"data": str(fewshot_data), "set": list(fewshot_sets), "shots": shots,
                                     "draws": fewshot_draws}

    rows = []
    for config, p in plan:
        name = point_name(p)
        run = folder / name
        summary = run_point(config, [*sets, *point_overrides({k: v for k, v in p.items() if k != CONFIG_KEY})],
                            run)
        row = {"run": name, "point": p, **summary, **run_size(run)}
        if fs and not row["diverged"]:
            row["fewshot"] = run_fewshot(run, fs)
        rows.append(row)
        write_outputs(folder, keys, x, rows, shots)
    print(format_markdown(keys, rows, shots), flush=True)
    print(f"\nwritten: {folder / 'study.csv'}, {folder / 'study.png'}", flush=True)
    return {"rows": rows, "folder": str(folder)}


def run_size(run: Path) -> dict:
    """The model's size and the run's cost, from its run folder (``compare.summarise_run``):
    ``model``, ``params``, ``macs`` (forward, one image), ``images_seen``, ``train_flops``,
    ``train_seconds`` (training loops only). None where the run has no checkpoint."""
    from .compare import summarise_run

    if not (run / "last.pt").is_file():
        return dict.fromkeys(("model", "params", "macs", "images_seen", "train_flops", "train_seconds"))
    r = summarise_run(run)
    return {"model": r["model"], "params": r["params"], "macs": r["macs"], "images_seen": r["train_images"],
            "train_flops": r["train_flops"], "train_seconds": r["train_seconds"]}


def run_fewshot(run: Path, settings: dict) -> dict:
    """Few-shot results of the run's final model (its last.pt), kept in ``fewshot.json`` and
    computed again only when the settings, the data config's file or the run change."""
    from .fewshot import fewshot_checkpoint
    from .run import checkpoint

    last = run / "last.pt"
    epochs = len(checkpoint.load(last, map_location="meta")["history"])
    try:
        digest = hashlib.sha256(Path(settings["data"]).read_bytes()).hexdigest()
    except OSError:
        digest = None
    key = {**settings, "data_sha256": digest, "epochs": epochs}
    cache = run / "fewshot.json"
    if cache.is_file():
        try:
            kept = json.loads(cache.read_text())
            if kept.get("key") == key:
                return {int(k): v for k, v in kept["shots"].items()}
        except (ValueError, KeyError, AttributeError):
            pass  # unreadable: measured again
    print(f"few-shot evaluation of {run}", flush=True)
    r = fewshot_checkpoint(last, settings["data"], settings["shots"], settings["draws"], settings["set"])
    write_text(cache, json.dumps({"key": key, "shots": r["shots"], "classes": r["classes"],
                                  "test_images": r["test_images"], "l2_reg": r["l2_reg"]}, indent=1))
    return r["shots"]


# --------------------------------------------------------------------------- outputs

COLUMNS = ["model", "params", "macs", "images_seen", "train_flops", "best_acc", "best_epoch", "final_acc", "epochs",
           "train_seconds", "seconds", "diverged"]


def csv_columns(keys: list[str], shots: list[int] | None) -> list[str]:
    """study.csv's header: the run, the grid keys, ``COLUMNS``, then per few-shot k its mean and std."""
    few = [f"fewshot_{k}shot_{s}" for k in shots or () for s in ("mean", "std")]
    return ["run", *keys, *COLUMNS, *few]


def to_csv(keys: list[str], rows: list[dict], shots: list[int] | None) -> str:
    """study.csv: raw numbers (accuracies as fractions), unknown values empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(csv_columns(keys, shots))
    for r in rows:
        few = []
        for k in shots or ():
            s = (r.get("fewshot") or {}).get(k)
            few += [s["mean"], s["std"]] if s else ["", ""]
        values = [("" if r[c] is None else int(r[c]) if isinstance(r[c], bool) else r[c]) for c in COLUMNS]
        w.writerow([r["run"], *(r["point"][k] for k in keys), *values, *few])
    return buf.getvalue()


def _number(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def x_axis(values: list[str]) -> tuple[bool, bool]:
    """(numeric, logarithmic) for the x axis of these grid values: numeric when every value is a
    number, logarithmic when they are all positive and span more than a factor of 10."""
    nums = [_number(v) for v in values]
    if not nums or any(n is None for n in nums):
        return False, False
    return True, min(nums) > 0 and max(nums) > 10 * min(nums)


def plot(keys: list[str], x: str, rows: list[dict], shots: list[int] | None) -> bytes:
    """study.png: final accuracy against ``x``, one line per combination of the other grid keys;
    with few-shot columns, a panel per k (mean, the spread over draws as error bars). A numeric
    axis is logarithmic where the values span more than a factor of 10; other values sit in
    the grid's order."""
    from .plotting import new_figure, png_bytes

    others = [k for k in keys if k != x]
    xs = list(dict.fromkeys(r["point"][x] for r in rows))
    numeric, log = x_axis(xs)
    nums = [_number(v) for v in xs]
    where = dict(zip(xs, nums)) if numeric else {v: i for i, v in enumerate(xs)}
    panels = [("final", None)] + [("fewshot", k) for k in shots or ()]
    fig = new_figure(figsize=(5.5 * len(panels), 4.3))
    axes = fig.subplots(1, len(panels), squeeze=False)
    groups = list(dict.fromkeys(tuple(r["point"][k] for k in others) for r in rows))
    for ax, (what, k) in zip(axes[0], panels):
        for g in groups:
            pts = sorted((r for r in rows if tuple(r["point"][o] for o in others) == g and not r["diverged"]),
                         key=lambda r: where[r["point"][x]])
            label = ", ".join(f"{o}={v}" for o, v in zip(others, g)) or "final accuracy"
            if what == "final":
                ax.plot([where[r["point"][x]] for r in pts], [100 * r["final_acc"] for r in pts], "o-", label=label)
            else:
                pts = [r for r in pts if (r.get("fewshot") or {}).get(k)]
                ax.errorbar([where[r["point"][x]] for r in pts], [100 * r["fewshot"][k]["mean"] for r in pts],
                            yerr=[100 * r["fewshot"][k]["std"] for r in pts], fmt="o-", capsize=3, label=label)
        ax.set(xlabel=x, ylabel="top-1 accuracy (%)",
               title="final accuracy (validation/test split)" if what == "final" else f"{k}-shot linear evaluation")
        if log:
            ax.set_xscale("log")
        if numeric:
            ax.set_xticks(nums, xs)
            ax.minorticks_off()
        else:
            ax.set_xticks(range(len(xs)), xs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return png_bytes(fig)


def write_outputs(folder: Path, keys: list[str], x: str, rows: list[dict], shots: list[int] | None) -> None:
    """study.csv and study.png, each made in memory, then written atomically."""
    table, png = to_csv(keys, rows, shots), plot(keys, x, rows, shots)
    write_text(folder / "study.csv", table)
    write_bytes(folder / "study.png", png)


def format_markdown(keys: list[str], rows: list[dict], shots: list[int] | None) -> str:
    """The runs as a Markdown table."""
    from .compare import format_flops
    from .flops import format_macs

    few = [f"{k}-shot" for k in shots or ()]
    head = ["run", *keys, "params", "MACs", "images seen", "train compute", "best", "final", *few, "train time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * (len(keys) + 1) + "---:|" * (len(head) - len(keys) - 1)]
    for r in rows:
        fs = []
        for k in shots or ():
            s = (r.get("fewshot") or {}).get(k)
            fs.append(f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}%" if s else "")
        known = r["params"] is not None
        lines.append("| " + " | ".join([
            r["run"] + (" (diverged)" if r["diverged"] else ""), *(str(r["point"][k]) for k in keys),
            f"{r['params']:,}" if known else "", format_macs(r["macs"]) if known else "",
            f"{r['images_seen']:,}" if r["images_seen"] is not None else "",
            format_flops(r["train_flops"]) if r["train_flops"] is not None else "",
            f"{100 * r['best_acc']:.2f}%", f"{100 * r['final_acc']:.2f}%", *fs,
            f"{r['train_seconds']:.0f} s" if r["train_seconds"] is not None else ""]) + " |")
    return "\n".join(lines)
