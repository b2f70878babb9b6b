"""Compare runs side by side (``vitlab compare RUN_DIR...``).

The runs are run folders, or a sweep's or study's folder for all its runs;
what is neither, given beside runs (a shell pattern such as ``sweep1/*`` also
gives ``sweep1/sweep.csv``), is skipped and named on one line (``find_runs``).
Each run folder's last.pt gives its model, dataset and per-epoch history; the
model is rebuilt on the meta device for its parameters and MACs (no weights
are read, no memory is taken), so runs of any size, family and dataset sit in
one table. ``compare_runs`` returns one dict per run (raw numbers: the API for
tests and notebooks; ``summarise_run`` is one of them); ``format_markdown``
makes the table, ``write_outputs`` writes compare.csv and compare.png, and with
``x`` (``compute``, ``params`` or ``images_per_second``) also compare_<x>.png:
the paper's performance-against-cost picture (its figure 5), one labelled point
per run, whatever its family.

Training compute (``train_flops``) counts 2 FLOPs per multiply-accumulate and
a backward pass as twice the forward one: 2 x 3 x forward MACs x images seen
(``training_flops``).
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Iterable

from .errors import UserError
from .run.folder import RUN_FILES

# compare.csv: one row per run, raw numbers (accuracies as fractions, as in metrics.csv); empty = unknown.
CSV_COLUMNS = ["run", "path", "model", "family", "objective", "dataset", "params", "macs", "in_chans", "img_size",
               "best_val_acc", "best_epoch", "final_val_acc", "epochs", "epochs_planned", "train_seconds",
               "includes_eval", "train_images", "images_per_second", "train_flops"]
# the plan file of a sweep's or a study's folder: given to compare, such a folder stands for its runs
GRID_PLANS = ("sweep.json", "study.json")
# compare --x: the cost on the x axis -> (the row's key, the axis label)
COSTS = {"compute": ("train_flops", "training compute (FLOPs: 2 x 3 x forward MACs x images seen)"),
         "params": ("params", "parameters"),
         "images_per_second": ("images_per_second", "training images per second")}


def training_flops(macs: int, images: int) -> int:
    """FLOPs of training on ``images`` images with a model of ``macs`` forward MACs per image:
    2 FLOPs per multiply-accumulate, and a backward pass costing twice the forward one."""
    return 2 * 3 * int(macs) * int(images)


def compare_runs(paths: Iterable[str | Path]) -> list[dict]:
    """One dict per run folder, in the order given: the keys of ``CSV_COLUMNS``
    plus ``history`` (the run's per-epoch rows). Unknown values are None: the
    best/final accuracies of a run with no finished epoch, the planned epochs of
    a run measured in optimizer steps (``train.steps``), the images/s of runs
    made before vitlab recorded ``train_images`` and ``train_seconds`` (their
    ``train_seconds`` is then the sum of whole epochs, evaluation included, and
    ``includes_eval`` is True). The paths are read by ``find_runs``: a sweep or
    study folder stands for its runs, and what is not a run folder given beside
    runs (``sweep1/*`` gives ``sweep1/sweep.csv`` too) is skipped, named on one
    line on stderr. Raises UserError (one line) for a path that does not exist,
    when nothing given is a run, for a run given twice, or an unreadable last.pt."""
    paths, skipped = find_runs(paths)
    if skipped:
        print("vitlab: skipped what is not a run folder: " + ", ".join(f"{p} ({why})" for p, why in skipped),
              file=sys.stderr, flush=True)
    seen: dict[Path, Path] = {}
    for p in paths:  # every path checked before any checkpoint is read: a typo fails fast
        key = p.resolve()
        if key in seen:
            also = f" (also as {seen[key]})" if str(seen[key]) != str(p) else ""
            raise UserError(f"run {p} is given twice{also}; give each run once")
        seen[key] = p
    rows = [summarise_run(p) for p in paths]
    # runs are named by their folder; folders of the same name (a/run, b/run) by the path given
    names = [r["run"] for r in rows]
    for r, p in zip(rows, paths):
        if names.count(r["run"]) > 1:
            r["run"] = str(p)
    return rows


def find_runs(paths: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(the run folders of ``paths``, [(path, why), ...] of what was skipped). A run folder
    (``RUN_FILES``) is taken as given; a sweep's or study's folder (``GRID_PLANS``) gives its
    run folders, in the order of its sweep.csv or study.csv (the rest by name), and skips its
    points without a run yet; anything else (a file, a folder with no run) is skipped. One-line
    ``UserError`` for a path that does not exist (a typo, or a shell pattern that matched
    nothing), and when nothing given is a run (the reason of each path)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("give one or more run folders (made by `vitlab train`)")
    runs, skipped, refused = [], [], []
    for p in paths:
        if not p.exists():
            raise UserError(f"run folder not found: {p}")
        why = _not_a_run(p)
        if why is None:
            runs.append(p)
            continue
        plan = next((p / n for n in GRID_PLANS if p.is_dir() and (p / n).is_file()), None)
        if plan is not None:
            inside = _grid_runs(p, plan.stem)
            found = [q for q in inside if _not_a_run(q) is None]
            skipped += [(q, _not_a_run(q)[0]) for q in inside if _not_a_run(q) is not None]
            if found:
                runs += found
                continue
            why = (f"a {plan.stem} folder with no run yet", f"{p} is a {plan.stem} folder with no run yet "
                   "(a run writes last.pt when its first epoch ends)")
        skipped.append((p, why[0]))
        refused.append(why[1])
    if not runs:
        if len(refused) == 1 and len(paths) == 1:
            raise UserError(refused[0])
        raise UserError(f"none of the {counted(len(paths), 'path')} given is a run folder: "
                        + "; ".join(f"{p} ({why})" for p, why in skipped))
    return runs, skipped


def _not_a_run(p: Path) -> tuple[str, str] | None:
    """None for a run folder, else (why, in a few words; why, as a sentence naming ``p``)."""
    if not p.is_dir():
        if p.suffix == ".pt":
            return (f"a file; its run folder is {p.parent}",
                    f"{p} is a file, not a run folder; give its run folder {p.parent}")
        return "a file", f"{p} is a file, not a run folder"
    missing = [n for n in RUN_FILES if not (p / n).is_file()]
    if not missing:
        return None
    if missing == ["last.pt"]:
        return ("no last.pt yet", f"{p} is not a run folder: it has no last.pt (a run writes last.pt when its first "
                "epoch ends)")
    return f"no {' and no '.join(missing)}", f"{p} is not a run folder: it has no {' and no '.join(missing)}"


def _grid_runs(folder: Path, what: str) -> list[Path]:
    """The folders of a sweep or study folder: those its ``<what>.csv`` names first, in its order
    (the order they ran), then the others by name."""
    order: dict[str, int] = {}
    try:
        with (folder / f"{what}.csv").open(newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f)):
                order.setdefault(row.get("run") or "", i)
    except (OSError, UnicodeDecodeError, csv.Error):
        pass  # no table yet: by name
    try:
        inside = [q for q in folder.iterdir() if q.is_dir()]
    except OSError as e:
        raise UserError(f"cannot read the {what} folder {folder}: {e.strerror or e}") from None
    return sorted(inside, key=lambda q: (order.get(q.name, len(order)), q.name))


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 epoch', '2 epochs' (``plural`` where adding an s is wrong: 'classes')."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def summarise_run(path: str | Path) -> dict:
    """One run folder's row (the keys of ``CSV_COLUMNS`` plus ``history``), as ``compare_runs``
    gives it; ``train_flops`` is ``training_flops`` of its MACs and images seen (None where
    the images are unknown). The folder must hold last.pt and config.yaml."""
    import torch

    from .flops import model_size
    from .metrics import history_summary
    from .models.registry import model_family
    from .run import checkpoint

    path = Path(path)
    last = path / "last.pt"
    # map_location="meta": the history and settings are read, the tensors (weights, optimizer) are not
    ckpt = checkpoint.load(last, map_location="meta")
    missing = [k for k in ("model_name", "config", "dataset", "history") if k not in ckpt]
    if missing:
        raise UserError(f"{last} is not the last.pt of a vitlab run: it holds no {', '.join(missing)}")
    name, ds, cfg = ckpt["model_name"], ckpt["dataset"], ckpt["config"]
    try:
        with torch.device("meta"):
            model = checkpoint.build_model(ckpt, weights=False)
        family = model_family(name)
    except (UserError, ValueError) as e:
        raise UserError(f"cannot rebuild the model of run {path}: {e}") from None
    # the input the model saw: the dataset's channels at data.img_size, or at the dataset's own size
    size = cfg.get("data", {}).get("img_size") or ds["img_size"]
    params, macs = model_size(model, (ds["in_chans"], size, size))

    hist = list(ckpt["history"])
    objective = cfg.get("train", {}).get("objective", "classification")
    summary = history_summary(hist, objective)  # masked patch prediction: its own accuracy, best by loss
    timed = bool(hist) and all("train_seconds" in r and "train_images" in r for r in hist)
    seconds = (sum(r["train_seconds"] for r in hist) if timed else
               sum(r["seconds"] for r in hist) if hist else None)
    images = sum(r["train_images"] for r in hist) if timed else None
    return {
        "run": path.resolve().name, "path": str(path), "model": name, "family": family, "objective": objective,
        "dataset": ds["name"],
        "params": params, "macs": macs, "in_chans": ds["in_chans"],
        "img_size": size,
        "best_val_acc": summary["best_acc"], "best_epoch": summary["best_epoch"],
        "final_val_acc": summary["final_acc"],
        # a run measured in optimizer steps (train.steps) has no planned number of epochs in its config
        "epochs": len(hist),
        "epochs_planned": None if cfg.get("train", {}).get("steps") else cfg.get("train", {}).get("epochs"),
        "train_seconds": seconds, "includes_eval": (not timed) if hist else None,
        "train_images": images, "images_per_second": images / seconds if timed and seconds > 0 else None,
        "train_flops": training_flops(macs, images) if images is not None else None,
        "history": hist,
    }


# --------------------------------------------------------------------------- output


def format_markdown(rows: list[dict]) -> str:
    """The runs as a Markdown table, with notes on what the columns measure."""
    from .flops import format_macs

    head = ["run", "model", "dataset", "params", "MACs", "input", "best val acc", "final val acc", "epochs",
            "train time", "images/s", "train compute"]
    align = ["---", "---", "---", "---:", "---:", "---", "---:", "---:", "---:", "---:", "---:", "---:"]
    lines = [_md_row(head), _md_row(align)]
    for r in rows:
        done = r["epochs"] > 0
        planned = f"/{r['epochs_planned']}" if r["epochs_planned"] else ""
        if not done:
            ips = ""
        elif r["images_per_second"] is None:
            ips = "unknown"
        else:
            ips = f"{r['images_per_second']:,.0f}" if r["images_per_second"] >= 100 else \
                f"{r['images_per_second']:.1f}"
        lines.append(_md_row([
            r["run"], r["model"] + (" (MPP)" if r.get("objective") == "mpp" else ""), r["dataset"],
            f"{r['params']:,}", format_macs(r["macs"]),
            f"{r['in_chans']}x{r['img_size']}x{r['img_size']}",
            f"{100 * r['best_val_acc']:.2f}% (epoch {r['best_epoch']})" if done else "no finished epoch",
            f"{100 * r['final_val_acc']:.2f}%" if done else "",
            f"{r['epochs']}{planned}",
            (_duration(r["train_seconds"]) + (" incl. eval" if r["includes_eval"] else "")) if done else "",
            ips, format_flops(r["train_flops"]) if done and r["train_flops"] is not None else ""]))
    notes = ["MACs: multiply-accumulates of one image at the run's input size (channels x height x width), "
             "attention matmuls included.",
             *(["(MPP): a masked-patch-prediction run; its accuracies are of the corrupted patches' colours, "
                "its best epoch the lowest validation loss."] if any(r.get("objective") == "mpp" for r in rows)
               else []),
             "train time: the training loops of the finished epochs, evaluation excluded; images/s: training "
             "images (all processes) per second of it.",
             "train compute: 2 x 3 x forward MACs x training images seen (a backward pass counted as two "
             "forward ones)."]
    if any(r["includes_eval"] for r in rows):
        notes.append("incl. eval: a run made before vitlab timed training apart from evaluation; its time is "
                     "that of whole epochs and its images/s is unknown.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes)


def format_flops(n: float) -> str:
    """4.2e15 -> '4.20 PFLOPs'."""
    for scale, unit in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}FLOPs"
    return f"{int(n)} FLOPs"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.3g} s"
    s = round(s)
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def to_csv(rows: list[dict]) -> str:
    """compare.csv: the ``CSV_COLUMNS`` of each run, numbers in full precision, unknown values empty."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else int(r[k]) if isinstance(r[k], bool) else r[k])
                    for k in CSV_COLUMNS})
    return buf.getvalue()


def plot(rows: list[dict]) -> bytes:
    """compare.png: validation accuracy and training loss per epoch, one line per run."""
    from .plotting import new_figure, png_bytes
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(figsize=(11, 4.2))
    a, b = fig.subplots(1, 2)
    for r in rows:
        ep = [h["epoch"] for h in r["history"]]
        label = r["run"] if r["history"] else f"{r['run']} (no finished epoch)"
        line, = a.plot(ep, [100 * h["val_acc"] for h in r["history"]], "o-", ms=4, label=label)
        b.plot(ep, [h["train_loss"] for h in r["history"]], "o-", ms=4, color=line.get_color(), label=label)
    a.set(xlabel="epoch", ylabel="accuracy (%)", title="validation top-1 accuracy")
    b.set(xlabel="epoch", ylabel="loss", title="training loss")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return png_bytes(fig)


def check_cost(x: str | None) -> str | None:
    """``x`` if it is a cost ``plot_cost`` knows (or None); else ``UserError``."""
    if x is not None and x not in COSTS:
        raise UserError(f"--x {x!r} is not a cost; choose from {', '.join(COSTS)}")
    return x


def cost_points(rows: list[dict], x: str) -> tuple[list[dict], list[str]]:
    """The runs ``plot_cost`` shows for the cost ``x``, and the names of those it leaves out: no
    finished epoch, or the cost unknown (images/s and compute of a run made before vitlab timed
    training apart from evaluation)."""
    key = COSTS[check_cost(x)][0]
    shown = [r for r in rows if r["epochs"] > 0 and r[key] is not None and r[key] > 0]
    return shown, [r["run"] for r in rows if not any(r is s for s in shown)]


def plot_cost(rows: list[dict], x: str) -> bytes:
    """compare_<x>.png: final validation accuracy against the cost ``x`` (``COSTS``), one labelled
    point per run (``cost_points``), a colour and marker per model family; the x axis is
    logarithmic where the values span more than a factor of 10."""
    from .plotting import new_figure, png_bytes

    key, label = COSTS[check_cost(x)]
    shown, _ = cost_points(rows, x)
    fig = new_figure(figsize=(7.5, 5))
    ax = fig.subplots()
    markers = "osD^v<>ph*"
    families = list(dict.fromkeys(r["family"] for r in shown))
    for i, fam in enumerate(families):
        pts = [r for r in shown if r["family"] == fam]
        ax.scatter([r[key] for r in pts], [100 * r["final_val_acc"] for r in pts], s=45,
                   marker=markers[i % len(markers)], label=fam, zorder=3)
        for r in pts:
            ax.annotate(r["run"], (r[key], 100 * r["final_val_acc"]), textcoords="offset points", xytext=(5, 4),
                        fontsize="x-small")
    values = [r[key] for r in shown]
    if values and max(values) > 10 * min(values):
        ax.set_xscale("log")
    ax.set(xlabel=label, ylabel="final validation top-1 accuracy (%)",
           title=f"accuracy against {label.split(' (')[0]}: one point per run")
    ax.margins(x=0.15, y=0.08)  # room for the labels
    ax.grid(alpha=0.3, which="both")
    if families:
        ax.legend(title="family", fontsize="small")
    fig.tight_layout()
    return png_bytes(fig)


def check_out_dir(out_dir: str | Path) -> Path:
    """The folder for compare.csv and compare.png, refused where it is a file or missing
    (``vitlab compare`` makes a missing one only once every run was read)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        if out_dir.exists():
            raise UserError(f"--out {out_dir} is a file, not a folder; give a folder for compare.csv and compare.png")
        raise UserError(f"--out {out_dir} does not exist; give an existing folder for compare.csv and compare.png")
    return out_dir


def write_outputs(rows: list[dict], out_dir: str | Path, x: str | None = None) -> list[Path]:
    """Write compare.csv and compare.png to ``out_dir`` (an existing folder), and with ``x``
    compare_<x>.png (``plot_cost``), each atomically; all are made in memory first, so a
    failure leaves no half-written file. Returns the paths written."""
    from .files import atomic_write

    out_dir = check_out_dir(out_dir)
    files = {out_dir / "compare.csv": to_csv(rows).encode(), out_dir / "compare.png": plot(rows)}
    if check_cost(x):
        files[out_dir / f"compare_{x}.png"] = plot_cost(rows, x)
    for path, data in files.items():
        atomic_write(path, lambda f, data=data: f.write(data))
    return list(files)
