"""`vitlab compare`: two real runs of different families (a tiny ViT and a
ResNet-18) trained in-process on a tiny Fashion-MNIST, compared in a Markdown
table, compare.csv and compare.png, checked against the runs' own files and
the rebuilt models; runs made before vitlab timed training apart from
evaluation, runs with no finished epoch, and bad input (exit code 2, one line,
nothing written). Also `vitlab models --family` and `vitlab flops` of a ResNet."""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiny import TINY_MODEL, fails, make_fashion, write_config
from vitlab import cli, count_flops
from vitlab.compare import CSV_COLUMNS, compare_runs, plot
from vitlab.flops import format_macs
from vitlab.run import checkpoint
from vitlab.run.checkpoint import build_model as model_from_checkpoint

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 2-epoch tiny ViT and a 1-epoch ResNet-18 (CIFAR stem), both on 64 Fashion-MNIST images."""
    d = tmp_path_factory.mktemp("compare")
    make_fashion(d / "data")
    out = {}
    for name, model, epochs in (("vit", TINY_MODEL, 2), ("resnet", {"name": "resnet18", "stem": "cifar"}, 1)):
        cfg = write_config(d / f"{name}.yaml", {"name": "fashion_mnist", "root": str(d / "data")}, model,
                           epochs=epochs, loggers=[])
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["train", str(cfg), "--out", str(d / "runs" / name)]) == 0
        out[name] = d / "runs" / name
    return out


@pytest.fixture(scope="module")
def compared(runs, tmp_path_factory) -> tuple[str, Path]:
    """stdout of `vitlab compare vit resnet --out DIR`, and DIR."""
    out = tmp_path_factory.mktemp("out")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["compare", str(runs["vit"]), str(runs["resnet"]), "--out", str(out)]) == 0
    return buf.getvalue(), out


def table(stdout: str) -> list[dict]:
    """The rows of the Markdown table in ``stdout``, as {column: cell}."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    split = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    head = split(lines[0])
    assert set(lines[1]) <= set("|-: ")  # the alignment row
    return [dict(zip(head, split(line), strict=True)) for line in lines[2:]]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rebuilt(run: Path):
    """The run's model with its trained weights, and its last.pt."""
    ckpt = checkpoint.load(run / "last.pt")
    return model_from_checkpoint(ckpt), ckpt


# --------------------------------------------------------------------------- the table, the CSV, the plot


def test_table_has_a_row_per_run_with_the_runs_numbers(runs, compared):
    stdout, out = compared
    rows = table(stdout)
    assert [r["run"] for r in rows] == ["vit", "resnet"]  # the order given
    assert [r["model"] for r in rows] == ["vit", "resnet18"]
    for r, run, epochs in zip(rows, (runs["vit"], runs["resnet"]), ("2/2", "1/1")):
        model, ckpt = rebuilt(run)
        assert r["dataset"] == "fashion_mnist" and r["input"] == "1x28x28"
        assert r["params"] == f"{sum(p.numel() for p in model.parameters()):,}"
        assert r["MACs"] == format_macs(count_flops(model, (1, 28, 28)))
        metrics = read_csv(run / "metrics.csv")
        best = max(metrics, key=lambda m: float(m["val_acc"]))  # the first of the best epochs
        assert r["best val acc"] == f"{100 * float(best['val_acc']):.2f}% (epoch {best['epoch']})"
        assert r["final val acc"] == f"{100 * float(metrics[-1]['val_acc']):.2f}%"
        assert r["epochs"] == epochs
        hist = ckpt["history"]
        assert float(r["images/s"].replace(",", "")) == pytest.approx(
            sum(h["train_images"] for h in hist) / sum(h["train_seconds"] for h in hist), rel=0.01, abs=0.05)
        assert r["train time"].endswith(" s") and "incl. eval" not in r["train time"]
    assert rows[0]["params"] != rows[1]["params"]
    assert "incl. eval:" not in stdout  # that note only when a run lacks the training-only time
    assert stdout.rstrip().endswith(f"written: {out / 'compare.csv'}, {out / 'compare.png'}")


def test_csv_holds_the_raw_numbers(runs, compared):
    _, out = compared
    rows = read_csv(out / "compare.csv")
    assert list(rows[0]) == CSV_COLUMNS
    assert [r["run"] for r in rows] == ["vit", "resnet"]
    for r, run in zip(rows, (runs["vit"], runs["resnet"])):
        model, ckpt = rebuilt(run)
        hist, metrics = ckpt["history"], read_csv(run / "metrics.csv")
        assert r["model"] == ckpt["model_name"] and r["path"] == str(run)
        assert int(r["params"]) == sum(p.numel() for p in model.parameters())
        assert int(r["macs"]) == count_flops(model, (1, 28, 28))
        assert (int(r["in_chans"]), int(r["img_size"])) == (1, 28)
        best = max(metrics, key=lambda m: float(m["val_acc"]))
        assert float(r["best_val_acc"]) == pytest.approx(float(best["val_acc"]), rel=1e-5)  # metrics.csv: 6 digits
        assert int(r["best_epoch"]) == int(best["epoch"])
        assert float(r["final_val_acc"]) == pytest.approx(float(metrics[-1]["val_acc"]), rel=1e-5)
        assert int(r["epochs"]) == int(r["epochs_planned"]) == len(metrics)
        assert int(r["train_images"]) == 64 * len(metrics)  # every training image once per epoch
        assert float(r["train_seconds"]) == sum(h["train_seconds"] for h in hist)
        assert float(r["train_seconds"]) < sum(h["seconds"] for h in hist)  # evaluation left out
        assert float(r["images_per_second"]) == pytest.approx(int(r["train_images"]) / float(r["train_seconds"]))
        assert r["includes_eval"] == "0"
    assert [r["family"] for r in rows] == ["vit", "resnet"]


def colour_pixels(png: bytes) -> dict:
    """Pixels of matplotlib's first two line colours (one per run) in the left and right halves of a PNG."""
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        px = np.asarray(im.convert("RGB")).astype(int)
    half = px.shape[1] // 2
    hits = {c: np.abs(px - c).sum(axis=2) < 30 for c in ((31, 119, 180), (255, 127, 14))}
    return {(c, side): int(h[:, sl].sum()) for c, h in hits.items()
            for side, sl in (("accuracy", slice(None, half)), ("loss", slice(half, None)))}


def test_png_has_a_line_per_run_in_both_panels(runs, compared):
    _, out = compared
    drawn = colour_pixels((out / "compare.png").read_bytes())
    # the same plot without the runs' epochs: its legends alone
    rows = compare_runs([runs["vit"], runs["resnet"]])
    for r in rows:
        r["history"] = []
    legends = colour_pixels(plot(rows))
    assert all(drawn[k] > legends[k] + 15 for k in drawn), (drawn, legends)  # a line (or point) per run and panel
    assert not any(out.glob(".*.tmp"))


def test_python_api_gives_the_csv_numbers_and_the_histories(runs, compared):
    _, out = compared
    rows = compare_runs([runs["vit"], str(runs["resnet"])])
    assert [len(r["history"]) for r in rows] == [2, 1]
    for r, c in zip(rows, read_csv(out / "compare.csv")):
        assert {k: ("" if r[k] is None else str(int(r[k]) if isinstance(r[k], bool) else r[k]))
                for k in CSV_COLUMNS} == c


def test_default_out_is_the_current_folder(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compare", str(runs["vit"])]) == 0
    assert [r["run"] for r in table(capsys.readouterr().out)] == ["vit"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare.csv", "compare.png"]


# --------------------------------------------------------------------------- older and unfinished runs


def copy_run(src: Path, dst: Path, edit=None) -> Path:
    """config.yaml and last.pt of ``src`` in ``dst``, last.pt changed by ``edit(ckpt)``."""
    dst.mkdir(parents=True)
    shutil.copy(src / "config.yaml", dst / "config.yaml")
    ckpt = checkpoint.load(src / "last.pt")
    if edit:
        edit(ckpt)
    checkpoint.save(ckpt, dst / "last.pt")
    return dst


def test_old_run_and_run_with_no_finished_epoch(runs, tmp_path, capsys):
    def old(ckpt):  # a run made before vitlab recorded train_images and train_seconds
        ckpt["history"] = [{k: v for k, v in h.items() if k not in ("train_images", "train_seconds")}
                           for h in ckpt["history"]]

    def fresh(ckpt):  # interrupted in its first epoch
        ckpt.update(history=[], epoch=0, best_acc=-1.0, skip=2)

    a, b = copy_run(runs["vit"], tmp_path / "old", old), copy_run(runs["vit"], tmp_path / "fresh", fresh)
    assert cli.main(["compare", str(a), str(b), "--out", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    r_old, r_fresh = table(stdout)
    assert r_old["images/s"] == "unknown" and r_old["train time"].endswith(" s incl. eval")
    metrics = read_csv(runs["vit"] / "metrics.csv")  # the accuracies do not depend on the timing
    assert r_old["final val acc"] == f"{100 * float(metrics[-1]['val_acc']):.2f}%"
    assert "incl. eval: a run made before" in stdout
    assert r_fresh["best val acc"] == "no finished epoch"
    assert (r_fresh["final val acc"], r_fresh["epochs"], r_fresh["train time"], r_fresh["images/s"]) == ("", "0/2",
                                                                                                          "", "")
    assert r_fresh["params"] == "11,114"  # what the model is, known without an epoch

    c_old, c_fresh = read_csv(tmp_path / "compare.csv")
    seconds = sum(h["seconds"] for h in checkpoint.load(runs["vit"] / "last.pt")["history"])
    assert float(c_old["train_seconds"]) == pytest.approx(seconds) and c_old["includes_eval"] == "1"
    assert c_old["train_images"] == c_old["images_per_second"] == ""
    assert [c_fresh[k] for k in ("best_val_acc", "best_epoch", "final_val_acc", "train_seconds", "includes_eval",
                                 "images_per_second")] == [""] * 6
    assert c_fresh["epochs"] == "0" and c_fresh["params"] == "11114"
    assert (tmp_path / "compare.png").is_file()


def test_runs_of_the_same_folder_name_are_told_apart_by_path(runs, tmp_path, capsys):
    a, b = copy_run(runs["vit"], tmp_path / "a" / "run"), copy_run(runs["vit"], tmp_path / "b" / "run")
    assert cli.main(["compare", str(a), str(b), "--out", str(tmp_path)]) == 0
    assert [r["run"] for r in table(capsys.readouterr().out)] == [str(a), str(b)]
    assert [r["run"] for r in read_csv(tmp_path / "compare.csv")] == [str(a), str(b)]


# --------------------------------------------------------------------------- bad input


def test_bad_input_exits_2_with_one_line_and_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "started").mkdir()
    shutil.copy(runs["vit"] / "config.yaml", tmp_path / "started" / "config.yaml")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    shutil.copy(runs["vit"] / "config.yaml", corrupt / "config.yaml")
    (corrupt / "last.pt").write_bytes((runs["vit"] / "last.pt").read_bytes()[:2000])
    vit = runs["vit"]
    cases = [
        ([tmp_path / "nowhere"], f"run folder not found: {tmp_path / 'nowhere'}"),
        ([corrupt], f"cannot read checkpoint {corrupt / 'last.pt'}: not a complete PyTorch checkpoint"),
        ([vit], f"run {vit} is given twice; give each run once"),
        ([vit / ".." / "vit"], f"run {vit / '..' / 'vit'} is given twice (also as {vit})"),  # the same folder
    ]
    for extra, message in cases:
        # the good run first: a bad one later must still leave nothing written
        err = fails(capsys, "compare", vit, *extra, "--out", out)
        assert err.startswith(f"vitlab: error: {message}"), err
        assert list(out.iterdir()) == []
    alone = [  # not a run, and nothing else given
        (tmp_path / "empty", f"{tmp_path / 'empty'} is not a run folder: it has no last.pt and no config.yaml"),
        (tmp_path / "started", f"{tmp_path / 'started'} is not a run folder: it has no last.pt (a run writes"),
        (vit / "last.pt", f"{vit / 'last.pt'} is a file, not a run folder; give its run folder {vit}"),
    ]
    for path, message in alone:
        err = fails(capsys, "compare", path, "--out", out)
        assert err.startswith(f"vitlab: error: {message}"), err
    err = fails(capsys, "compare", *(p for p, _ in alone), "--out", out)
    assert err == (f"vitlab: error: none of the 3 paths given is a run folder: {tmp_path / 'empty'} (no last.pt and "
                   f"no config.yaml); {tmp_path / 'started'} (no last.pt yet); {vit / 'last.pt'} (a file; its run "
                   f"folder is {vit})")
    assert list(out.iterdir()) == []
    (tmp_path / "file").write_text("")
    err = fails(capsys, "compare", vit, "--out", tmp_path / "file")
    assert err.startswith(f"vitlab: error: --out {tmp_path / 'file'} is a file, not a folder"), err
    fails(capsys, "compare", vit, corrupt, "--out", tmp_path / "missing")
    assert not (tmp_path / "missing").exists()  # made only once every run was read
    with pytest.raises(SystemExit):  # argparse: at least one RUN_DIR
        cli.main(["compare"])
    capsys.readouterr()


def test_what_is_not_a_run_beside_runs_is_skipped_and_a_sweep_folder_gives_its_runs(runs, tmp_path, capsys):
    """`vitlab compare sweep1/*`: the sweep's own files and its unfinished point are skipped on
    one line; `vitlab compare sweep1`: its runs, in the order of its sweep.csv."""
    sweep1 = tmp_path / "sweep1"
    copy_run(runs["vit"], sweep1 / "train.lr=0.1")
    copy_run(runs["resnet"], sweep1 / "train.lr=0.01")
    (sweep1 / "train.lr=1").mkdir()  # stopped before its first epoch ended
    (sweep1 / "train.lr=1" / "config.yaml").write_text("")
    (sweep1 / "sweep.json").write_text("{}")
    (sweep1 / "sweep.md").write_text("# Sweep\n")
    (sweep1 / "sweep.csv").write_text("run,train.lr\ntrain.lr=1,1\ntrain.lr=0.1,0.1\ntrain.lr=0.01,0.01\n")
    out = tmp_path / "out"
    out.mkdir()
    given = sorted(sweep1.iterdir())  # what the shell gives for sweep1/*
    assert cli.main(["compare", *map(str, given), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert [r["run"] for r in table(captured.out)] == ["train.lr=0.01", "train.lr=0.1"]
    assert captured.err == (f"vitlab: skipped what is not a run folder: {sweep1 / 'sweep.csv'} (a file), "
                            f"{sweep1 / 'sweep.json'} (a file), {sweep1 / 'sweep.md'} (a file), "
                            f"{sweep1 / 'train.lr=1'} (no last.pt yet)\n")

    assert cli.main(["compare", str(sweep1), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert [r["run"] for r in table(captured.out)] == ["train.lr=0.1", "train.lr=0.01"]  # sweep.csv's order
    assert captured.err == f"vitlab: skipped what is not a run folder: {sweep1 / 'train.lr=1'} (no last.pt yet)\n"
    assert [r["run"] for r in read_csv(out / "compare.csv")] == ["train.lr=0.1", "train.lr=0.01"]

    study = tmp_path / "study"  # a study folder with no run yet
    (study / "model.depth=1").mkdir(parents=True)
    (study / "study.json").write_text("{}")
    err = fails(capsys, "compare", study, "--out", out)
    assert err == f"vitlab: error: {study} is a study folder with no run yet (a run writes last.pt when its first " \
                  "epoch ends)"
    err = fails(capsys, "compare", sweep1 / "sweep.csv", sweep1 / "sweep.md", "--out", out)
    assert err == (f"vitlab: error: none of the 2 paths given is a run folder: {sweep1 / 'sweep.csv'} (a file); "
                   f"{sweep1 / 'sweep.md'} (a file)")


# --------------------------------------------------------------------------- `vitlab models` and `vitlab flops`


def test_models_of_one_family_and_flops_of_resnets(capsys):
    assert cli.main(["models", "--family", "resnet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "params", "input", "MACs", "description"]
    assert lines[2] == "resnet: ResNet baselines (4)"
    rows = [line.split() for line in lines[3:7]]
    assert [r[0] for r in rows] == ["resnet18", "resnet34", "resnet50", "resnet101"]  # 18 before 101
    assert rows[0][1:5] == ["11,689,512", "3x224x224", "1.81", "GMACs"]
    assert not any(line.startswith("vit") for line in lines)
    assert fails(capsys, "models", "--family", "cnn").startswith("vitlab: error: unknown model family 'cnn'")

    assert cli.main(["flops", "resnet18"]) == 0
    assert capsys.readouterr().out.startswith("resnet18 at 3x224x224: 11,689,512 parameters, 1.81 GMACs")
    assert cli.main(["flops", "resnet50"]) == 0
    assert capsys.readouterr().out.startswith("resnet50 at 3x224x224: 25,557,032 parameters, 4.09 GMACs")
    # a ResNet takes any size: --img-size changes the input counted, not the model
    assert cli.main(["flops", "resnet50", "--img-size", "112"]) == 0
    assert capsys.readouterr().out.startswith("resnet50 at 3x112x112: 25,557,032 parameters, 1.08 GMACs")


# --------------------------------------------------------------------------- `vitlab compare --x`


def test_cost_picture_has_a_point_per_run_and_leaves_out_what_it_cannot_place(runs, tmp_path, capsys):
    from vitlab.compare import COSTS, cost_points, plot_cost, training_flops

    def fresh(ckpt):  # interrupted in its first epoch: no accuracy to place
        ckpt.update(history=[], epoch=0, best_acc=-1.0, skip=2)

    b = copy_run(runs["vit"], tmp_path / "fresh", fresh)
    for x in COSTS:
        out = tmp_path / x
        out.mkdir()
        assert cli.main(["compare", str(runs["vit"]), str(runs["resnet"]), str(b), "--out", str(out),
                         "--x", x]) == 0
        stdout = capsys.readouterr().out
        assert f"not in compare_{x}.png (no finished epoch, or no {x} known): fresh" in stdout
        assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.png", f"compare_{x}.png"]
        with Image.open(out / f"compare_{x}.png") as im:
            assert im.format == "PNG"
    rows = compare_runs([runs["vit"], runs["resnet"], b])
    for r in rows[:2]:  # compute: 2 x 3 x forward MACs x images seen
        assert r["train_flops"] == training_flops(r["macs"], r["train_images"]) == 6 * r["macs"] * r["train_images"]
    assert rows[2]["train_flops"] is None  # no epoch: no images seen known
    shown, left = cost_points(rows, "compute")
    assert [r["run"] for r in shown] == ["vit", "resnet"] and left == ["fresh"]
    # the two points are drawn: the plot differs from one of the runs alone
    assert plot_cost(rows, "compute") != plot_cost(rows[:1], "compute")
    with pytest.raises(SystemExit):  # argparse: not a cost
        cli.main(["compare", str(runs["vit"]), "--x", "flops"])
    assert "invalid choice" in capsys.readouterr().err
