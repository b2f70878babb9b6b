"""A practitioner's journey with their own photos, end to end through the command line: a tree of
class folders with junk files and a truncated JPEG, trained from scratch; every readable test photo
evaluated; good and broken files predicted; a sweep refused on a tiny holdout and run when asked;
fine-tuning from the run; an interrupted run resumed; the run loaded in Python."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitlab
from tiny import fails, signal_after_step, write_config
from vitlab import cli
from vitlab.run import checkpoint

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

CLASSES = ["cat", "dog", "fox"]
COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "fox": (30, 30, 200)}  # one colour a class: learnable
N_TRAIN, N_TEST = 16, 5  # readable images a class
JUNK = (".DS_Store", "cat/notes.txt", "dog/Thumbs.db")
# 24 px in patches of 8: a 3x3 grid; 15k parameters
MODEL = {"name": "vit", "img_size": 24, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one torch thread (conftest restores the count)."""
    torch.set_num_threads(1)


def photo(cls: str, seed: int, size: int = 24) -> Image.Image:
    rng = np.random.default_rng([CLASSES.index(cls), seed])
    arr = rng.integers(0, 50, (size, size, 3)) + np.array(COLOURS[cls])
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def photo_tree(root: Path, n: int, seed: int = 0) -> dict:
    """root/<class>/<class>_0001.jpg, ..._0002.png, ... (n readable photos a class, JPEG and PNG
    alternating), the junk a desktop leaves behind, and fox/fox_9999.jpg: the first half of a JPEG.
    Returns {"good": the readable files in sorted order, "bad": the truncated one, "junk": [...]}."""
    good = []
    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            path = root / cls / f"{cls}_{i:04d}.{'jpg' if i % 2 else 'png'}"
            photo(cls, seed + i).save(path)
            good.append(path)
    junk = [root / j for j in JUNK]
    junk[0].write_bytes(b"\x00\x00\x00\x01Bud1\x00")
    junk[1].write_text("photos from the holiday\n")
    junk[2].write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
    buf = io.BytesIO()
    photo("fox", 999, 64).save(buf, "JPEG")
    bad = root / "fox" / "fox_9999.jpg"
    bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return {"good": good, "bad": bad, "junk": junk}


def config(d: Path, name: str, model: dict | None = None, data: dict | None = None, **train) -> Path:
    return write_config(d / f"{name}.yaml", {"name": "imagefolder", "root": str(d / "photos"), **(data or {})},
                        model or MODEL, loggers=[], **train)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Lines(logging.Handler):
    """What vitlab logs (the warnings a terminal shows on stderr), one string a record."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def journey(tmp_path_factory) -> dict:
    """photos/ (16 readable photos a class + junk + a truncated JPEG), testphotos/test/ (5 a class,
    the same kind of junk), and a 2-epoch run trained from scratch on photos/ by `vitlab train`."""
    d = tmp_path_factory.mktemp("journey")
    train_tree = photo_tree(d / "photos", N_TRAIN)
    test_tree = photo_tree(d / "testphotos" / "test", N_TEST, seed=100)
    cfg = config(d, "photos", epochs=2)
    log, out, err = Lines(), io.StringIO(), io.StringIO()
    vlog = logging.getLogger("vitlab")
    vlog.addHandler(log)
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            mp.setenv("XDG_CACHE_HOME", str(d / "cache"))
            code = cli.main(["train", str(cfg), "--out", str(d / "run")])
    finally:
        vlog.removeHandler(log)
    return {"dir": d, "run": d / "run", "config": cfg, "train": train_tree, "test": test_tree, "code": code,
            "stdout": out.getvalue(), "stderr": err.getvalue(), "log": log.lines}


def test_training_from_scratch_leaves_out_the_broken_photo_and_the_junk(journey):
    run, bad = journey["run"], journey["train"]["bad"]
    assert journey["code"] == 0, journey["stderr"]
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    # 48 readable photos: the truncated one is not among them, 10% of them held out
    assert "data imagefolder: 42 train / 6 val images, 3 classes" in journey["stdout"]
    assert len(read_csv(run / "metrics.csv")) == 2
    skipped = [line for line in journey["log"] if "cannot be read" in line]
    assert len(skipped) == 1
    assert f"left out 1 of {3 * N_TRAIN + 1} image files under {journey['dir'] / 'photos'}" in skipped[0]
    assert f"(the first: {bad} (image file is truncated" in skipped[0]
    assert any("skipped 2 file(s)" in line and "without an image extension" in line for line in journey["log"])
    listed = (run / "bad_images.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{bad}\timage file is truncated")
    assert checkpoint.load(run / "best.pt")["dataset"]["classes"] == CLASSES
    assert "42 training images, 6 validation images" in (run / "model_card.md").read_text()


def test_eval_reads_every_readable_test_photo_and_lists_the_others(journey, capsys):
    run, test = journey["run"], journey["test"]
    data = journey["dir"] / "testphotos"
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(data)]) == 0
    printed = capsys.readouterr().out.splitlines()
    out = run / "eval-best-testphotos"
    n = len(test["good"])
    assert n == 15
    assert printed[0] == (f"evaluated {n} images of {data / 'test'} (class folders), skipped 1 unreadable, "
                          f"ignored 2 other files (see {out / 'skipped.txt'})")
    assert [line.split()[0] for line in printed[2:5]] == CLASSES and all(
        line.endswith(f"({N_TEST} images)") for line in printed[2:5])
    assert printed[-1] == f"outputs: {out}"
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "metrics.json", "predictions.csv", "skipped.txt"]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["read"] == metrics["n"] == n and sum(map(sum, metrics["confusion"])) == n
    assert metrics["per_class_count"] == {c: N_TEST for c in CLASSES}
    assert [s["path"] for s in metrics["skipped"]] == [str(test["bad"])]
    # the hidden .DS_Store is passed over in silence; notes.txt and Thumbs.db are named
    assert [i["path"] for i in metrics["ignored"]] == [str(p) for p in test["junk"][1:]]
    rows = read_csv(out / "predictions.csv")
    assert [r["path"] for r in rows] == [str(p) for p in test["good"]]  # one row per readable photo
    assert [r["true"] for r in rows] == [p.parent.name for p in test["good"]]
    assert sum(int(r["correct"]) for r in rows) == round(metrics["top1"] * n)
    assert metrics["top1"] >= 2 / 3  # one colour a class is learned in 2 epochs
    skipped = (out / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 3 and skipped[0].startswith(f"{test['bad']}: image file is truncated")
    assert skipped[1:] == [f"{p}: ignored, not an image file (no image extension)" for p in test["junk"][1:]]
    with Image.open(out / "confusion.png") as im:
        assert im.format == "PNG"

    # other photos in another folder named testphotos: a folder of their own, the first one untouched
    other = journey["dir"] / "elsewhere" / "testphotos"
    photo_tree(other, 2, seed=200)
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(other)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"outputs: {run / 'eval-best-testphotos-2'}"
    assert json.loads((run / "eval-best-testphotos-2" / "metrics.json").read_text())["read"] == 6
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert len(read_csv(out / "predictions.csv")) == n


def test_predict_gives_each_good_photo_a_line_and_the_broken_one_an_error(journey, capsys):
    run, test = journey["run"], journey["test"]
    good1, good2, bad = test["good"][0], test["good"][-1], test["bad"]
    assert cli.main(["predict", str(run / "best.pt"), str(good1), str(bad), str(good2)]) == 2
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(good1), str(good2)]
    assert all(sorted(c.split()[0] for c in line.split(": ")[1].split(", ")) == CLASSES for line in lines)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"vitlab: error: cannot read image {bad}: image file is truncated")
    # the top class is the one eval's predictions.csv gives the same files
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(journey["dir"] / "testphotos"),
                     "--out", str(journey["dir"] / "predict-check")]) == 0
    capsys.readouterr()
    predicted = {r["path"]: r["predicted"] for r in read_csv(journey["dir"] / "predict-check" / "predictions.csv")}
    assert [line.split(": ")[1].split()[0] for line in lines] == [predicted[str(good1)], predicted[str(good2)]]


def test_sweep_refuses_a_tiny_holdout_and_states_its_size_when_told_to_rank_anyway(journey, tmp_path, capsys):
    cfg = config(journey["dir"], "sweep", epochs=1)
    out = tmp_path / "sweep"
    argv = ["sweep", cfg, "--grid", "train.lr=0.001,0.003", "--out", out, "--no-retrain"]
    size = "3 images (data.holdout=0.02), 1 per class over 3 classes, 45 left for training; one image is 33.33%"
    err = fails(capsys, *argv)  # exit 2, one line on stderr, nothing on stdout
    assert err.startswith(f"vitlab: error: the holdout is too small to rank the grid's points: {size}")
    assert "at least 10 images of every class" in err and "--min-holdout-per-class 0" in err
    assert "the smallest class has only 16 training images" in err
    assert not out.exists()  # refused before anything was made or trained

    assert cli.main(list(map(str, argv)) + ["--min-holdout-per-class", "0"]) == 0
    printed = capsys.readouterr().out
    assert f"holdout: {size}\n" in printed
    assert "WARNING: a class has only 1 holdout image" in printed
    assert "best on the 2% holdout: train.lr=0.00" in printed
    md = (out / "sweep.md").read_text()
    assert f"Holdout: {size}." in md and "**Warning**: a class has only 1 holdout image" in md
    rows = read_csv(out / "sweep.csv")
    assert [(r["run"], r["split"], r["holdout_images"], r["holdout_min_per_class"]) for r in rows] == [
        ("train.lr=0.001", "holdout", "3", "1"), ("train.lr=0.003", "holdout", "3", "1")]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["train.lr=0.001", "train.lr=0.003"]  # no retrain
    assert checkpoint.load(out / "train.lr=0.003" / "last.pt")["config"]["train"]["lr"] == 0.003


def test_finetune_from_the_run_at_a_higher_resolution_says_what_it_changed(journey, tmp_path, capsys):
    best = journey["run"] / "best.pt"
    model = {k: v for k, v in MODEL.items() if k != "img_size"}  # built at the data's size
    cfg = config(journey["dir"], "finetune", model, {"img_size": 32}, epochs=1)
    out = tmp_path / "ft"
    assert cli.main(["finetune", str(cfg), "--weights", str(best), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if line.startswith("pretrained weights:")] == [
        f"pretrained weights: {best} (timm/vitlab layout, 20 tensors): position embeddings resampled from grid "
        "3x3 to 4x4 (bicubic); head replaced: the file's 3-class head not kept (model.keep_head is false), "
        "zero-initialised"]
    assert any(line.startswith("normalisation: mean=[0.485, 0.456, 0.406]") and "the weights' convention" in line
               for line in printed)
    card = (out / "model_card.md").read_text()
    assert "- source weights: `best.pt`" in card and "  - position embeddings resampled from grid 3x3 to 4x4" in card
    ft = checkpoint.load(out / "last.pt")
    assert ft["model"]["pos_embed"].shape[1] == 1 + 4 * 4 and ft["dataset"]["classes"] == CLASSES
    assert len(ft["history"]) == 1


def test_finetune_keeping_the_head_on_the_same_classes_loads_every_tensor(journey, tmp_path, capsys):
    best = journey["run"] / "best.pt"
    cfg = config(journey["dir"], "keep", {**MODEL, "keep_head": True}, steps=1)
    out = tmp_path / "ft"
    assert cli.main(["finetune", str(cfg), "--weights", str(best), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"pretrained weights: {best} (timm/vitlab layout, 20 tensors): every tensor loaded as it is\n" in printed
    assert "replaced" not in printed and "resampled" not in printed
    assert "every tensor loaded as it is" in (out / "model_card.md").read_text()


def test_finetune_keeping_the_head_on_other_classes_warns(journey, tmp_path, capsys):
    renamed = tmp_path / "renamed"
    for old, new in zip(CLASSES, ("ant", "bee", "cow")):
        shutil.copytree(journey["dir"] / "photos" / old, renamed / new)
    cfg = config(journey["dir"], "keep-other", {**MODEL, "keep_head": True}, {"root": str(renamed)}, steps=1)
    out = tmp_path / "ft"
    assert cli.main(["finetune", str(cfg), "--weights", str(journey["run"] / "best.pt"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    warning = ("warning: head kept (model.keep_head) although its classes are not the data's: the file's "
               "3 classes (cat, dog, fox) against 3 classes (ant, bee, cow)")
    assert warning in printed and warning in (out / "model_card.md").read_text()


def test_an_interrupted_run_resumes_to_its_configured_length(journey, tmp_path, monkeypatch, capsys):
    cfg = config(journey["dir"], "resume", epochs=2)
    out = tmp_path / "run"
    signal_after_step(monkeypatch, 4)  # 42 training photos in batches of 16: 3 steps an epoch; epoch 2, step 1
    assert cli.main(["train", str(cfg), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "stopped by signal SIGINT after step 1 of epoch 2" in err and "--resume" in err
    cut = checkpoint.load(out / "last.pt")
    assert (cut["epoch"], len(cut["history"])) == (1, 1)
    monkeypatch.undo()

    assert cli.main(["train", "--resume", str(out)]) == 0
    assert "resuming at epoch 2, step 2" in capsys.readouterr().out
    done = checkpoint.load(out / "last.pt")
    assert done["epoch"] == 2 and [r["epoch"] for r in done["history"]] == [1, 2]
    assert [r["epoch"] for r in read_csv(out / "metrics.csv")] == ["1", "2"]
    assert "finished: 2 of 2 epochs" in (out / "model_card.md").read_text()
    assert (out / "bad_images.txt").read_text().startswith(f"{journey['train']['bad']}\t")


def test_evaluating_a_checkpoint_trained_further_keeps_the_earlier_evaluation(journey, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(journey["run"], run)
    data = journey["dir"] / "testphotos"
    assert cli.main(["eval", str(run / "last.pt"), "--data", str(data)]) == 0
    first = run / "eval-last-testphotos"
    before = (first / "predictions.csv").read_text()
    assert cli.main(["train", "--resume", str(run), "--set", "train.epochs=3"]) == 0  # one epoch more
    assert checkpoint.load(run / "last.pt")["epoch"] == 3
    capsys.readouterr()
    assert cli.main(["eval", str(run / "last.pt"), "--data", str(data)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"outputs: {run / 'eval-last-testphotos-2'}"
    assert (first / "predictions.csv").read_text() == before


def test_load_run_predicts_in_three_lines_what_vitlab_predict_does(journey, capsys):
    run, image = journey["run"], journey["test"]["good"][N_TEST]  # dog_0001.jpg
    model, info = vitlab.load_run(run)
    assert info.classes == CLASSES and info.checkpoint == run / "best.pt" and info.input_size == (3, 24, 24)
    x = info.transform(image).unsqueeze(0)  # the three lines of the README
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    mine = info.classes[probs.argmax().item()]

    assert cli.main(["predict", str(run / "best.pt"), str(image), "--json", "--top-k", "3"]) == 0
    theirs = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in theirs] == [str(image)]
    assert theirs[0]["top"][0]["class"] == mine
    assert {t["class"]: t["prob"] for t in theirs[0]["top"]} == pytest.approx(
        {c: probs[i].item() for i, c in enumerate(CLASSES)}, abs=1e-5)
