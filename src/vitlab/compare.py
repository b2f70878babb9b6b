"""Compare runs side by side (``vitlab compare RUN_DIR...``).

Each run folder's last.pt gives its model, dataset and per-epoch history; the
model is rebuilt on the meta device for its parameters and MACs (no weights
are read, no memory is taken), so runs of any size, family and dataset sit in
one table. ``compare_runs`` returns one dict per run (raw numbers: the API for
tests and notebooks); ``format_markdown`` makes the table, ``write_outputs``
writes compare.csv and compare.png.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable

from .errors import UserError
from .run.folder import RUN_FILES

# compare.csv: one row per run, raw numbers (accuracies as fractions, as in metrics.csv); empty = unknown.
CSV_COLUMNS = ["run", "path", "model", "family", "dataset", "params", "macs", "in_chans", "img_size",
               "best_val_acc", "best_epoch", "final_val_acc", "epochs", "epochs_planned", "train_seconds",
               "includes_eval", "train_images", "images_per_second"]


def compare_runs(paths: Iterable[str | Path]) -> list[dict]:
    """One dict per run folder, in the order given: the keys of ``CSV_COLUMNS``
    plus ``history`` (the run's per-epoch rows). Unknown values are None: the
    best/final accuracies of a run with no finished epoch, the images/s of runs
    made before vitlab recorded ``train_images`` and ``train_seconds`` (their
    ``train_seconds`` is then the sum of whole epochs, evaluation included, and
    ``includes_eval`` is True). Raises UserError (one line) for a path that is
    not a run folder, a run given twice, or an unreadable last.pt."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("give one or more run folders (made by `vitlab train`)")
    seen: dict[Path, Path] = {}
    for p in paths:  # every path checked before any checkpoint is read: a typo fails fast
        _check_run_folder(p)
        key = p.resolve()
        if key in seen:
            also = f" (also as {seen[key]})" if str(seen[key]) != str(p) else ""
            raise UserError(f"run {p} is given twice{also}; give each run once")
        seen[key] = p
    rows = [_summarise(p) for p in paths]
    # runs are named by their folder; folders of the same name (a/run, b/run) by the path given
    names = [r["run"] for r in rows]
    for r, p in zip(rows, paths):
        if names.count(r["run"]) > 1:
            r["run"] = str(p)
    return rows


def _check_run_folder(p: Path) -> None:
    if not p.exists():
        raise UserError(f"run folder not found: {p}")
    if not p.is_dir():
        hint = f"; give its run folder {p.parent}" if p.suffix == ".pt" else ""
        raise UserError(f"{p} is a file, not a run folder{hint}")
    missing = [n for n in RUN_FILES if not (p / n).is_file()]
    if missing:
        first = " (a run writes last.pt when its first epoch ends)" if missing == ["last.pt"] else ""
        raise UserError(f"{p} is not a run folder: it has no {' and no '.join(missing)}{first}")


def _summarise(path: Path) -> dict:
    import torch

    from .flops import model_size
    from .metrics import history_summary
    from .models.registry import model_family
    from .run import checkpoint

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
    summary = history_summary(hist)
    timed = bool(hist) and all("train_seconds" in r and "train_images" in r for r in hist)
    seconds = (sum(r["train_seconds"] for r in hist) if timed else
               sum(r["seconds"] for r in hist) if hist else None)
    images = sum(r["train_images"] for r in hist) if timed else None
    return {
        "run": path.resolve().name, "path": str(path), "model": name, "family": family, "dataset": ds["name"],
        "params": params, "macs": macs, "in_chans": ds["in_chans"],
        "img_size": size,
        "best_val_acc": summary["best_acc"], "best_epoch": summary["best_epoch"],
        "final_val_acc": summary["final_acc"],
        "epochs": len(hist), "epochs_planned": cfg.get("train", {}).get("epochs"),
        "train_seconds": seconds, "includes_eval": (not timed) if hist else None,
        "train_images": images, "images_per_second": images / seconds if timed and seconds > 0 else None,
        "history": hist,
    }


# --------------------------------------------------------------------------- output


def format_markdown(rows: list[dict]) -> str:
    """The runs as a Markdown table, with notes on what the columns measure."""
    from .flops import format_macs

    head = ["run", "model", "dataset", "params", "MACs", "input", "best val acc", "final val acc", "epochs",
            "train time", "images/s"]
    align = ["---", "---", "---", "---:", "---:", "---", "---:", "---:", "---:", "---:", "---:"]
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
            r["run"], r["model"], r["dataset"], f"{r['params']:,}", format_macs(r["macs"]),
            f"{r['in_chans']}x{r['img_size']}x{r['img_size']}",
            f"{100 * r['best_val_acc']:.2f}% (epoch {r['best_epoch']})" if done else "no finished epoch",
            f"{100 * r['final_val_acc']:.2f}%" if done else "",
            f"{r['epochs']}{planned}",
            (_duration(r["train_seconds"]) + (" incl. eval" if r["includes_eval"] else "")) if done else "",
            ips]))
    notes = ["MACs: multiply-accumulates of one image at the run's input size (channels x height x width), "
             "attention matmuls included.",
             "train time: the training loops of the finished epochs, evaluation excluded; images/s: training "
             "images (all processes) per second of it."]
    if any(r["includes_eval"] for r in rows):
        notes.append("incl. eval: a run made before vitlab timed training apart from evaluation; its time is "
                     "that of whole epochs and its images/s is unknown.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes)


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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def check_out_dir(out_dir: str | Path) -> Path:
    """The folder for compare.csv and compare.png: it must exist (no folder is made for a typo)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        what = "is a file, not a folder" if out_dir.exists() else "does not exist"
        raise UserError(f"--out {out_dir} {what}; give an existing folder for compare.csv and compare.png")
    return out_dir


def write_outputs(rows: list[dict], out_dir: str | Path) -> tuple[Path, Path]:
    """Write compare.csv and compare.png to ``out_dir`` (an existing folder), each atomically;
    both are made in memory first, so a failure leaves no half-written file."""
    from .files import atomic_write

    out_dir = check_out_dir(out_dir)
    table, png = to_csv(rows).encode(), plot(rows)
    csv_path, png_path = out_dir / "compare.csv", out_dir / "compare.png"
    atomic_write(csv_path, lambda f: f.write(table))
    atomic_write(png_path, lambda f: f.write(png))
    return csv_path, png_path
