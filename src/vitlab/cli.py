"""The ``vitlab`` command line.

Bad input (a missing file, an unknown config key, a wrong type, a dataset
that is not where it is said to be, ...) ends with exit code 2 and one line
on stderr that says what is wrong, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from pathlib import Path

from .errors import UserError

MACS_NOTE = "multiply-accumulates of one forward pass at batch 1, attention matmuls included"


def _config_sets(a) -> list[str]:
    """The --set values, then those of the shorthands --device and --threads (which win)."""
    sets = list(a.set)
    if a.device is not None:
        sets.append(f"train.device={a.device}")
    if a.threads is not None:
        _at_least_one("--threads", a.threads)
        sets.append(f"train.threads={a.threads}")
    return sets


def _at_least_one(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"{flag} must be 1 or more, got {value}")


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """``--threads n`` checked, then ``run.runtime.torch_threads(n)`` while the block runs."""
    _at_least_one("--threads", n)
    from .run.runtime import torch_threads

    with torch_threads(n):
        yield


def _cmd_train(a) -> int:
    from . import config as cfgmod
    from .run import folder
    from .train.engine import Interrupted, NonFiniteLoss, Trainer

    sets = _config_sets(a)
    if a.resume:
        if a.config:
            raise UserError("give either a CONFIG or --resume DIR, not both")
        out = Path(a.resume)
        folder.check_resume(out, sets)
        cfg = cfgmod.load(out / "config.yaml", sets)
    else:
        if not a.config:
            raise UserError("give a CONFIG (a YAML file, or a preset's name: `vitlab presets`) or --resume DIR")
        cfg = cfgmod.load(a.config, sets)
        weights = getattr(a, "weights", None)
        if weights:
            cfg.model.pretrained = str(weights)
        if getattr(a, "finetune", False) and not cfg.model.pretrained:
            raise UserError("vitlab finetune needs --weights PATH (or model.pretrained in the config)")
        out = Path(a.out) if a.out else folder.default_name(a.config)
        folder.check_new(out)
    trainer = Trainer(cfg, out, resume=bool(a.resume))
    finished = False
    try:
        code = _train(trainer, cfg, out, bool(a.resume))
        finished = True
        return code
    except UserError:
        # bad input found during training (a corrupt image file read at its item, a full disk):
        # leave nothing half-made, i.e. no run folder this command made without a checkpoint
        if trainer.dist.main and not a.resume:
            trainer.folder.discard_if_empty()
        raise
    except Interrupted as e:
        print(f"vitlab: {e}", file=sys.stderr)
        return 130
    except NonFiniteLoss as e:
        kept = (f"the last good checkpoint is {out / 'last.pt'}" if (out / "last.pt").is_file()
                else "no checkpoint was written yet")
        print(f"vitlab: training stopped: {e}; {kept} (lower train.lr or set train.clip_grad)", file=sys.stderr)
        return 1
    finally:
        trainer.close(wait_for_all=finished)  # a rank that failed alone does not wait for the others


def _train(trainer, cfg, out: Path, resume: bool) -> int:
    """Print what the run is, fit, print its result."""
    main = trainer.dist.main
    if resume and trainer.epoch >= trainer.total_epochs:
        if main:
            length = f"{cfg.train.steps} steps" if cfg.train.steps else f"{cfg.train.epochs} epochs"
            print(f"the run in {out} has finished its {length}: nothing to resume (best.pt, last.pt, "
                  f"metrics.csv are there; `--set train.epochs=N` or `train.steps=N` makes it longer)")
        return 0
    if resume and trainer.budget_spent():
        if main:
            print(f"the run in {out} has used its time budget train.max_seconds={cfg.train.max_seconds:g} "
                  f"({trainer.trained_seconds():.0f} s of training): nothing to do; "
                  "`--set train.max_seconds=N` gives it more")
        return 0
    n_params = sum(p.numel() for p in trainer.model.parameters())
    if main:
        print(f"model {cfg.model.name}: {n_params:,} parameters | data {cfg.data.name}: "
              f"{len(trainer.train_ds):,} train / {len(trainer.val_ds):,} val images, "
              f"{trainer.info.num_classes} classes | device {trainer.device} | run {out}", flush=True)
        for note in trainer.notes:
            print(note, flush=True)
        if trainer.frozen:
            print(f"frozen: {trainer.frozen:,} of {n_params:,} parameters", flush=True)
        if resume:
            print(f"resuming at epoch {trainer.epoch + 1}"
                  + (f", step {trainer.steps_done + 1}" if trainer.position.samples else ""), flush=True)
    s = trainer.fit()
    if main and s.get("stopped"):
        print(f"stopped: {s['stopped']}; validation top-1 there {100 * s['val_acc_now']:.2f}%"
              + (f", best finished epoch {100 * s['best_acc']:.2f}% (epoch {s['best_epoch']})" if s["epochs"] else ""))
        return 0
    if main and cfg.train.objective == "mpp":
        print(f"done: best validation MPP loss {s['best_loss']:.4f} (epoch {s['best_epoch']}, best.pt), MPP accuracy "
              f"there {100 * s['best_acc']:.2f}%, final {100 * s['final_acc']:.2f}%; {s['epochs']} epochs in "
              f"{s['seconds']:.0f}s; run in {out}; fine-tune it with `vitlab finetune CONFIG --weights "
              f"{out / 'best.pt'}`")
        return 0
    if main:
        print(f"done: best val acc {100 * s['best_acc']:.2f}% (epoch {s['best_epoch']}), final "
              f"{100 * s['final_acc']:.2f}%, {s['epochs']} epochs in {s['seconds']:.0f}s; "
              f"run in {out} (best.pt, last.pt, metrics.csv, curves.png)")
    return 0


def _cmd_finetune(a) -> int:
    if a.resume and a.weights:
        raise UserError("--resume takes the weights from the run's last.pt; leave out --weights")
    a.finetune = True
    return _cmd_train(a)


def _resumable(what: str, run) -> int:
    """Run a sweep or study; an interruption says how to continue it (exit 130)."""
    from .train.engine import Interrupted

    try:
        run()
    except Interrupted as e:
        print(f"vitlab: {e}; run the same {what} command with the same --out to continue the {what}",
              file=sys.stderr)
        return 130
    return 0


def _cmd_sweep(a) -> int:
    from .sweep import run_sweep

    sets = _config_sets(a)
    return _resumable("sweep", lambda: run_sweep(a.config, a.grid, sets, out=a.out, retrain=not a.no_retrain,
                                                 weights=a.weights,
                                                 min_holdout_per_class=a.min_holdout_per_class))


def _cmd_study(a) -> int:
    from .study import run_study

    sets = _config_sets(a)
    return _resumable("study", lambda: run_study(a.config, a.grid, a.x, sets, out=a.out, fewshot=a.fewshot,
                                                 fewshot_data=a.fewshot_data, fewshot_draws=a.fewshot_draws,
                                                 fewshot_sets=a.fewshot_set))


def _cmd_fewshot(a) -> int:
    from .fewshot import fewshot_checkpoint, format_results

    _at_least_one("--threads", a.threads)
    sets = a.set + ([f"train.threads={a.threads}"] if a.threads else [])  # read by fewshot as by train
    r = fewshot_checkpoint(a.checkpoint, a.data, a.shots, a.draws, sets, device=a.device,
                           batch_size=a.batch_size, seed=a.seed)
    print(json.dumps(r, indent=1) if a.json else format_results(r))
    return 0


def _cmd_eval(a) -> int:
    from .evaluate import format_eval, run_eval
    from .files import write_bytes

    if a.batch_size < 1:
        raise UserError(f"--batch-size must be 1 or more, got {a.batch_size}")
    _at_least_one("--threads", a.threads)
    out, png = a.out, None
    if out and out.lower().endswith(".png") and not Path(out).is_dir():  # --out used to be the PNG itself
        png, out = Path(out), None
        if not png.parent.is_dir():
            raise UserError(f"cannot write {png}: the folder {png.parent} does not exist")
        print(f"vitlab: note: --out is now the folder for eval's outputs; {png} gets the confusion matrix as "
              "before, the other outputs go to the default folder", file=sys.stderr)
    r = run_eval(a.checkpoint, data=a.data, out=out, overrides=a.set, device=a.device, batch_size=a.batch_size,
                 threads=a.threads)
    if png:
        write_bytes(png, (Path(r["out"]) / "confusion.png").read_bytes())
        r["files"].append(str(png))
        r["confusion_png"] = str(png)
    if a.json:
        print(json.dumps({k: v for k, v in r.items() if k != "confusion"}, indent=1, default=str))
    else:
        print(format_eval(r) + (f"\nconfusion matrix also in {png}" if png else ""))
    return 0


def _cmd_predict(a) -> int:
    from .evaluate import predict, write_predictions_csv

    if a.top_k < 1:
        raise UserError(f"--top-k must be 1 or more, got {a.top_k}")
    if a.batch_size < 1:
        raise UserError(f"--batch-size must be 1 or more, got {a.batch_size}")
    source, images = a.checkpoint, a.images
    if a.onnx:  # every positional is an image
        source, images = a.onnx, [a.checkpoint] * bool(a.checkpoint) + a.images
    if not source:
        raise UserError("give a CHECKPOINT and one or more IMAGE files or folders (or --onnx FILE and IMAGEs)")
    if a.csv and not Path(a.csv).parent.is_dir():
        raise UserError(f"cannot write {a.csv}: the folder {Path(a.csv).parent} does not exist")
    errors: list[str] = []  # one line per unreadable image; the others are still predicted
    with _torch_threads(a.threads):
        results = predict(source, images, top_k=a.top_k, device=a.device, batch_size=a.batch_size,
                          onnx=bool(a.onnx), errors=errors)
    if a.csv and results:
        write_predictions_csv(results, a.csv)
    if a.json:
        print(json.dumps(results, indent=1))
    elif a.csv and results:
        print(f"{len(results)} images: predictions in {a.csv}")
    elif not a.csv:
        for r in results:
            print(r["image"] + ": " + ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"]))
    for msg in errors:
        print(f"vitlab: error: {msg}", file=sys.stderr)
    return 2 if errors else 0


def _cmd_export(a) -> int:
    from .export import export

    r = export(a.source, a.to, a.out, checkpoint=a.checkpoint, force=a.force)
    c, h, w = r["input_size"]
    print(f"exported {r['checkpoint']} ({r['model']}, {len(r['classes'])} classes, input {c}x{h}x{w}) "
          f"for {r['format']}: {', '.join(r['files'])} in {r['out']}")
    for note in r["notes"]:
        print(f"note: {note}")
    print(f"load it with: {r['loads']}")
    return 0


def _natural(name: str) -> list:
    """Sort key that puts resnet18 before resnet101 and vit_b8 before vit_b16."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _cmd_models(a) -> int:
    from .flops import cached_model_stats, format_macs
    from .models import list_models, model_description, model_family
    from .models.registry import FAMILIES

    names = list_models()
    # the known families in their order, then any other a plugin registered
    families = [f for f in FAMILIES if any(model_family(n) == f for n in names)]
    families += sorted({model_family(n) for n in names} - set(families))
    if a.family is not None:
        if a.family not in families:
            raise UserError(f"unknown model family {a.family!r}; choose from {', '.join(families)}")
        families = [a.family]
    stats = cached_model_stats([n for n in names if model_family(n) in families])
    print(f"{'name':<24}{'params':>14}{'input':>14}{'MACs':>14}  description")
    for family in families:
        members = sorted((n for n in names if model_family(n) == family), key=_natural)
        print(f"\n{family}: {FAMILIES.get(family, family)} ({len(members)})")
        for name in members:
            params, macs, shape = stats[name]
            print(f"{name:<24}{params:>14,}{'x'.join(map(str, shape)):>14}{format_macs(macs):>14}  "
                  f"{model_description(name)}")
    print(f"\nMACs: {MACS_NOTE}, at the input shown (the model's default size; 224 px for a ResNet, "
          "which takes any size).")
    return 0


def _cmd_presets(a) -> int:
    from .config import preset_folder, preset_title, presets

    found = presets()
    width = max(map(len, found), default=0)
    for name, path in found.items():
        print(f"{name:<{width}}  {preset_title(path)}")
    print(f"\n`vitlab train NAME` runs one (finetune, sweep, study and fewshot --data take a name too); "
          f"the files: {preset_folder()}")
    return 0


def _cmd_flops(a) -> int:
    from .flops import cached_model_stats, format_macs

    if a.img_size is not None and a.img_size < 1:
        raise UserError(f"--img-size must be 1 or more, got {a.img_size}")
    try:
        params, macs, shape = cached_model_stats([a.model], a.img_size)[a.model]
    except ValueError as e:
        raise UserError(str(e)) from None
    print(f"{a.model} at {'x'.join(map(str, shape))}: {params:,} parameters, {format_macs(macs)} ({MACS_NOTE})")
    return 0


def _cmd_compare(a) -> int:
    from .compare import check_cost, check_out_dir, compare_runs, cost_points, format_markdown, write_outputs
    from .files import make_dirs

    out = Path(a.out or ".")
    if out.exists():
        check_out_dir(out)  # before reading any run: a file given as --out fails at once
    check_cost(a.x)
    rows = compare_runs(a.runs)
    make_dirs(out)  # only once every run was read: a failure leaves no folder behind
    paths = write_outputs(rows, out, x=a.x)
    print(format_markdown(rows))
    if a.x and cost_points(rows, a.x)[1]:
        print(f"\nnot in compare_{a.x}.png (no finished epoch, or no {a.x} known): "
              + ", ".join(cost_points(rows, a.x)[1]))
    print(f"\nwritten: {', '.join(map(str, paths))}")
    return 0


def _cmd_analyze(a) -> int:
    from .analysis.analyze import analyze_checkpoint

    with _torch_threads(a.threads):
        lines = analyze_checkpoint(a.checkpoint, a.out, images=a.images, num_images=a.num_images,
                                   distance_images=a.distance_images, overrides=a.set, gallery=a.gallery,
                                   device=a.device)
    print("\n".join(line for line in lines if line.startswith(("- ", "#", "Numbers")) or "top-1" in line))
    print(f"report: {Path(a.out) / 'report.md'}, {Path(a.out) / 'report.html'} (self-contained)")
    return 0


def _cmd_bench(a) -> int:
    from .bench import OutputMismatch, format_markdown, parse_overrides, run_bench

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    notes: list[str] = []
    overrides = parse_overrides(a.set, notes)
    for note in notes:
        print(f"vitlab: note: {note}", file=sys.stderr)
    try:
        r = run_bench(a.model, img_size=a.img_size, batch=a.batch_size, device=a.device, amp=a.amp,
                      rounds=a.rounds, threads=a.threads, compile=a.compile, overrides=overrides, progress=progress)
    except OutputMismatch as e:
        print(f"vitlab: bench stopped: {e}", file=sys.stderr)
        return 1
    print(json.dumps(r, indent=1) if a.json else format_markdown(r))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


VOCABULARY = """\
options that mean the same in every command that takes them:
  --batch-size N          images per step
  --device DEVICE         auto, cpu, cuda or cuda:N (train, finetune, sweep, study: train.device)
  --threads N             CPU threads for torch (train, finetune, sweep, study: train.threads)
  --set section.key=V     a config value, e.g. --set train.lr=1e-3 data.root=/data/cifar10
  --out DIR               the folder the command writes its outputs into

a CONFIG is a YAML file or the name of a preset shipped with vitlab (`vitlab presets`)"""


class _Renamed(argparse.Action):
    """The old spelling of a renamed option: still read, with a one-line note on stderr."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"vitlab: note: {option_string} is now {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_set(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help=f"{help}; several after one --set or one per --set")


def _add_batch_size(parser: argparse.ArgumentParser, default: int, help: str, old: str | None = None) -> None:
    parser.add_argument("--batch-size", type=int, default=default, metavar="N", help=f"{help} (default {default})")
    if old:  # renamed: still read for this release
        parser.add_argument(old, type=int, dest="batch_size", action=_Renamed, new="--batch-size",
                            help=argparse.SUPPRESS)


def _add_device(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    if default is None:
        help = "shorthand for --set train.device=DEVICE: auto, cpu, cuda or cuda:N"
    else:
        help = f"auto, cpu, cuda or cuda:N (default {default})"
    parser.add_argument("--device", default=default, help=help)


def _add_threads(parser: argparse.ArgumentParser, config: bool = False) -> None:
    help = ("shorthand for --set train.threads=N: CPU threads for torch" if config
            else "CPU threads for torch (default: torch's)")
    parser.add_argument("--threads", type=int, metavar="N", help=help)


def _add_run_settings(parser: argparse.ArgumentParser) -> None:
    """--device and --threads of the commands that train: shorthands for their --set."""
    _add_device(parser, default=None)
    _add_threads(parser, config=True)


CONFIG_HELP = "YAML config file, or a preset's name (`vitlab presets`)"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vitlab", description="Vision Transformers: train, evaluate, analyse.", epilog=VOCABULARY,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train a model from a YAML config or preset, or resume a run")
    t.add_argument("config", nargs="?", help=f"{CONFIG_HELP}, e.g. fashion_mnist_vit")
    _add_set(t, "override config values, e.g. --set train.epochs=5 train.lr=1e-3")
    _add_run_settings(t)
    t.add_argument("--out", metavar="DIR", help="the run's folder (default runs/<config>-<time>)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt "
                   "(--set train.epochs=N or train.steps=N makes a finished run longer)")
    t.set_defaults(func=_cmd_train)

    ft = sub.add_parser("finetune", help="fine-tune pretrained weights: a config plus --weights "
                                         "(new zero head, position embeddings resampled)")
    ft.add_argument("config", nargs="?", help=f"{CONFIG_HELP}, e.g. finetune_vit_s16_imagefolder")
    ft.add_argument("--weights", help="weights file: timm, Hugging Face, Google .npz, torchvision or vitlab")
    _add_set(ft, "override config values, e.g. --set train.lr=0.003 data.img_size=384")
    _add_run_settings(ft)
    ft.add_argument("--out", metavar="DIR", help="the run's folder (default runs/<config>-<time>)")
    ft.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt (the weights "
                    "file is not read again)")
    ft.set_defaults(func=_cmd_finetune)

    sw = sub.add_parser("sweep", help="one run per grid point on a holdout of the training set, "
                                      "then the best retrained on all of it and tested")
    sw.add_argument("config", help=CONFIG_HELP)
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", required=True,
                    help="values to try, e.g. --grid train.lr=0.001,0.003,0.01,0.03 (repeatable: the product)")
    _add_set(sw, "override config values for every run")
    _add_run_settings(sw)
    sw.add_argument("--weights", help="pretrained weights for every run (as vitlab finetune)")
    sw.add_argument("--out", metavar="DIR", help="the sweep's folder (default runs/sweep-<config>-<time>); run "
                    "the same command with the same --out to continue an interrupted sweep")
    sw.add_argument("--no-retrain", action="store_true", help="stop after picking the best point")
    from .sweep import MIN_HOLDOUT_PER_CLASS  # no torch: --help stays quick

    sw.add_argument("--min-holdout-per-class", type=int, default=MIN_HOLDOUT_PER_CLASS, metavar="N",
                    help=f"refuse a holdout with fewer than N images of some class, too few to rank the "
                         f"points (default {MIN_HOLDOUT_PER_CLASS}; 0: rank on any holdout)")
    sw.set_defaults(func=_cmd_sweep)

    e = sub.add_parser("eval", help="evaluate a checkpoint on its run's evaluation split or on a folder of "
                                    "labelled images: top-1/top-5, loss, per-class accuracy, confusion matrix")
    e.add_argument("checkpoint")
    e.add_argument("--data", metavar="DIR", help="evaluate every image of DIR instead, in class folders: "
                   "DIR/<class>/... or DIR/test/<class>/... (or val/, valid/, validation/)")
    _add_set(e, "override the checkpoint's data config (not with --data), e.g. --set data.root=/data/cifar10")
    _add_device(e)
    _add_batch_size(e, 256, "images evaluated at once")
    _add_threads(e)
    e.add_argument("--out", metavar="DIR", help="the folder for confusion.png, metrics.json, predictions.csv and "
                   "skipped.txt (made if missing; default eval-<checkpoint>-<data>/ beside the checkpoint)")
    e.add_argument("--json", action="store_true", help="print the results as JSON")
    e.set_defaults(func=_cmd_eval)

    pr = sub.add_parser("predict", help="top-k classes of image files (or folders of them)")
    pr.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT",
                    help="best.pt or last.pt of a run (none with --onnx)")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders: every image file under them")
    pr.add_argument("--onnx", metavar="FILE", help="an ONNX model made by `vitlab export --to onnx` instead of a "
                    "checkpoint (needs onnxruntime)")
    _add_batch_size(pr, 64, "images read and run at once")
    pr.add_argument("--csv", metavar="FILE", help="write the predictions to this CSV file, one row per image")
    pr.add_argument("--top-k", type=int, default=5)
    _add_device(pr)
    _add_threads(pr)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=_cmd_predict)

    an = sub.add_parser("analyze", help="attention rollout, attention distance, position embeddings, filters, "
                                        "errors: pictures, report.md and report.html")
    an.add_argument("checkpoint")
    an.add_argument("--out", metavar="DIR", required=True,
                    help="the folder for the pictures and the reports (new or empty)")
    an.add_argument("--images", nargs="+", default=[], metavar="IMAGE",
                    help="image files or folders of them to analyse instead of the run's validation images "
                         "(they have no labels: no error analysis)")
    an.add_argument("--num-images", type=int, default=8, help="images in the rollout picture")
    an.add_argument("--distance-images", type=int, default=128, help="images averaged for the attention distance")
    an.add_argument("--gallery", type=int, default=16,
                    help="images in each gallery: predictions, and the most confident mistakes")
    _add_set(an, "override the checkpoint's data config, e.g. --set data.root=/data/cifar10")
    _add_device(an)
    _add_threads(an)
    an.set_defaults(func=_cmd_analyze)

    m = sub.add_parser("models", help="list registered models by family with parameters and MACs")
    m.add_argument("--family", help="only this family: vit, hybrid, resnet or vt")
    m.set_defaults(func=_cmd_models)

    ps = sub.add_parser("presets", help="list the configs shipped with vitlab: `vitlab train NAME` runs one")
    ps.set_defaults(func=_cmd_presets)

    f = sub.add_parser("flops", help="parameters and multiply-accumulates of a model")
    f.add_argument("model")
    f.add_argument("--img-size", type=int,
                   help="image size (a ResNet takes any size: then only the input counted changes)")
    f.set_defaults(func=_cmd_flops)

    c = sub.add_parser("compare", help="compare runs: a Markdown table, compare.csv and compare.png")
    c.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders made by `vitlab train`")
    c.add_argument("--out", metavar="DIR", help="the folder for compare.csv and compare.png (made if missing; "
                   "default: the current one)")
    c.add_argument("--x", choices=["compute", "params", "images_per_second"],
                   help="also compare_<x>.png: final accuracy against this cost, one labelled point per run "
                        "(compute: training FLOPs = 2 x 3 x forward MACs x images seen)")
    c.set_defaults(func=_cmd_compare)

    b = sub.add_parser("bench", help="training and inference images/s of a model against timm's (torchvision's "
                                     "for a ResNet) with the same weights; MFU on a GPU")
    b.add_argument("--model", default="vit_cifar", help="a registered model (`vitlab models`); default vit_cifar")
    b.add_argument("--img-size", type=int, help="image size (default: the model's; 224 for a ResNet or VT-ResNet)")
    _add_batch_size(b, 64, "images per step", old="--batch")
    _add_device(b, default="cpu")
    b.add_argument("--amp", choices=["none", "bf16"], default="none", help="bf16 autocast (default none: fp32)")
    b.add_argument("--rounds", type=int, default=7, help="timed rounds; medians are reported (default 7)")
    _add_threads(b)
    b.add_argument("--compile", action="store_true", help="torch.compile both models")
    _add_set(b, "other model options, e.g. --set model.depth=6 model.pos_embed=none")
    b.add_argument("--json", action="store_true", help="print the results as JSON")
    b.set_defaults(func=_cmd_bench)

    st = sub.add_parser("study", help="the paper's studies: one run per point of the grid's full product, "
                                      "study.csv (size, compute, accuracy) and study.png against --x")
    st.add_argument("config", nargs="+", help=f"{CONFIG_HELP}; several: `config` becomes a grid key "
                    "(their names)")
    st.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", required=True,
                    help="values to run, e.g. --grid model.depth=2,4,8 (repeatable: the full product)")
    st.add_argument("--x", required=True, metavar="KEY", help="the grid key on the plot's x axis")
    _add_set(st, "override config values for every run")
    _add_run_settings(st)
    st.add_argument("--out", metavar="DIR", help="the study's folder (default runs/study-<config>-<time>); run "
                    "the same command with the same --out to continue an interrupted study")
    st.add_argument("--fewshot", metavar="K1,K2,...", help="also few-shot linear evaluation of each run's final "
                    "model with K images per class, e.g. 5,10 (needs --fewshot-data)")
    st.add_argument("--fewshot-data", metavar="CONFIG", help="config whose dataset the few-shot evaluation uses "
                    "(k-shot images from its training split, accuracy on its test split)")
    st.add_argument("--fewshot-draws", type=int, default=3, help="draws of the k images (default 3)")
    st.add_argument("--fewshot-set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="override the few-shot data config, e.g. --fewshot-set data.root=/data/other")
    st.set_defaults(func=_cmd_study)

    fs = sub.add_parser("fewshot", help="few-shot linear evaluation of a checkpoint's frozen features "
                                        "(regularised least squares, as the paper)")
    fs.add_argument("checkpoint", help="best.pt or last.pt of a run")
    fs.add_argument("--data", required=True, metavar="CONFIG", help="config (file or preset name) whose dataset "
                    "is evaluated: k-shot images from its training split, top-1 on its validation/test split")
    fs.add_argument("--shots", default="1,5,10,25", help="images per class (default 1,5,10,25)")
    fs.add_argument("--draws", type=int, default=3, help="draws of the k images per class (default 3)")
    fs.add_argument("--seed", type=int, default=0, help="seed of the first draw (default 0)")
    _add_set(fs, "override the data config, e.g. --set data.root=/data/few")
    _add_device(fs)
    _add_batch_size(fs, 256, "images run at once")
    _add_threads(fs)
    fs.add_argument("--json", action="store_true", help="print the results as JSON")
    fs.set_defaults(func=_cmd_fewshot)

    ex = sub.add_parser("export", help="export a run's model for timm, Hugging Face transformers, ONNX or "
                                       "torch.export, with its class names, input size and normalisation")
    ex.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT", help="a run folder (its best.pt) or a checkpoint")
    ex.add_argument("--to", required=True, metavar="FORMAT", help="timm, hf, onnx or pt2")
    ex.add_argument("--out", metavar="DIR", required=True, help="the folder for the exported files (new or empty)")
    ex.add_argument("--checkpoint", default="best", help="of a run folder: best (default) or last")
    ex.add_argument("--force", action="store_true",
                    help="write into a folder that holds files (files of the same names are replaced)")
    ex.set_defaults(func=_cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.func(a)
    except UserError as e:
        msg = str(e).strip()
        marker = f"{UserError.__module__}.{UserError.__qualname__}: "
        if marker in msg:  # raised in a DataLoader worker, which puts the worker's traceback in the message
            msg = msg.rsplit(marker, 1)[1]
        print(f"vitlab: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vitlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
