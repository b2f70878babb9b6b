"""`vitlab sweep`'s holdout and ranking: the holdout's size stated before the first run and in
sweep.md/sweep.csv; a holdout too small to rank refused before anything is trained, with its
numbers, the rule and the fix (or ranked anyway, with a warning, when asked); points with the same
number of correct holdout images reported as tied, with how the tie was broken and the spread."""

from __future__ import annotations

import csv
import math

import pytest

import vitlab.sweep as sweep
from tiny import fails, make_fashion, write_config
from vitlab import cli

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """128 training images, 12 or 13 per class: no holdout of 10 per class leaves enough to train on."""
    root = tmp_path_factory.mktemp("small")
    make_fashion(root, 128, 20)
    return {"name": "fashion_mnist", "root": str(root)}


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> dict:
    """200 training images, 20 per class: data.holdout=0.5 holds out 10 of each."""
    root = tmp_path_factory.mktemp("big")
    make_fashion(root, 200, 20)
    return {"name": "fashion_mnist", "root": str(root)}


def no_training(monkeypatch):
    def refuse(*args):
        raise AssertionError("a run was started")
    monkeypatch.setattr(sweep, "_run", refuse)


def fake_runs(monkeypatch, results: dict[str, tuple[float, float]]):
    """Each point's run replaced by a summary: {lr value: (best holdout accuracy, its loss)}."""
    def run(config, sets, out, weights):
        lr = next(s.split("=", 1)[1] for s in sets if s.startswith("train.lr="))
        acc, loss = results[lr]
        return {"best_acc": acc, "best_epoch": 1, "final_acc": acc, "best_loss": loss, "epochs": 1,
                "seconds": 0.5, "diverged": False}
    monkeypatch.setattr(sweep, "_run", run)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_holdout_too_small_to_rank_is_refused_before_training_with_its_size_the_rule_and_the_fix(
        tmp_path, small, big, capsys, monkeypatch):
    no_training(monkeypatch)
    out = tmp_path / "sweep"
    # the paper's 2% of 200 images: 1 per class (a class with images always keeps one)
    err = fails(capsys, "sweep", write_config(tmp_path / "big.yaml", big, loggers=[]), "--grid",
                "train.lr=0.001,0.003", "--out", out)
    assert "the holdout is too small to rank the grid's points: 10 images (data.holdout=0.02), 1 per class over " \
           "10 classes, 190 left for training; one image is 10.00%" in err
    assert "a sweep ranks its points only on a holdout of at least 10 images of every class" in err
    assert "add --set data.holdout=0.5 (10 or more per class)" in err
    assert "--min-holdout-per-class 0" in err
    # 12 images in the smallest class: no fraction holds out 10 and leaves enough to train on
    err = fails(capsys, "sweep", write_config(tmp_path / "small.yaml", small, loggers=[]), "--grid",
                "train.lr=0.001,0.003", "--set", "data.holdout=0.25", "--out", out)
    assert "30 images (data.holdout=0.25), 3 per class over 10 classes" in err
    assert "the smallest class has only 12 training images, too few to hold out 10" in err
    assert not out.exists()  # refused before the folder was made


def test_the_size_rule_counts_what_the_run_validates_on(tmp_path, big):
    cfg = write_config(tmp_path / "c.yaml", big, loggers=[])
    size = sweep.holdout_size(cfg, ["data.holdout=0.5"])
    assert {k: size[k] for k in ("images", "classes", "min_per_class", "max_per_class", "train_images",
                                 "smallest_class")} == {"images": 100, "classes": 10, "min_per_class": 10,
                                                        "max_per_class": 10, "train_images": 100,
                                                        "smallest_class": 20}
    sweep.check_holdout(size)  # 10 per class: ranked
    size = sweep.holdout_size(cfg, ["data.holdout=0.5", "data.val_subset=50"])
    assert size["images"] == 50 and size["min_per_class"] < 10
    with pytest.raises(sweep.UserError, match="raise or remove data.val_subset=50"):
        sweep.check_holdout(size)
    sweep.check_holdout(size, 0)  # asked to rank anyway


def test_a_real_tie_is_reported_with_how_it_was_broken_the_spread_and_the_holdout_size(tmp_path, big, capsys):
    """lr=0 twice (as 0 and 0.0): two identical runs, the same holdout accuracy and loss."""
    cfg = write_config(tmp_path / "c.yaml", big, loggers=[], epochs=1)
    out = tmp_path / "sweep"
    assert cli.main(["sweep", str(cfg), "--grid", "train.lr=0,0.0", "--set", "data.holdout=0.5", "--out", str(out),
                     "--no-retrain"]) == 0
    printed = capsys.readouterr().out
    assert "holdout: 100 images (data.holdout=0.5), 10 per class over 10 classes, 100 left for training; " \
           "one image is 1.00%" in printed
    assert "best on the 50% holdout: train.lr=0 (" in printed
    assert "tie: train.lr=0 and train.lr=0.0 have the same holdout accuracy" in printed
    assert "chosen by the grid order, the first of the tied points" in printed
    assert "spread of the holdout accuracies: 0.00% (best minus worst); one holdout image is 1.00%" in printed
    md = (out / "sweep.md").read_text()
    assert "Holdout: 100 images (data.holdout=0.5), 10 per class over 10 classes" in md
    assert "at least 10 images of every class" in md
    assert "| train.lr=0 **best** |" in md and "| train.lr=0.0 (tied) |" in md
    assert "- Tie: train.lr=0 and train.lr=0.0" in md and "the grid order" in md
    assert "- Spread of the holdout accuracies: 0.00%" in md
    rows = read_csv(out / "sweep.csv")
    assert [(r["holdout_images"], r["holdout_min_per_class"], r["best"], r["tied"]) for r in rows] == \
        [("100", "10", "1", "1"), ("100", "10", "0", "1")]
    assert rows[0]["holdout_correct"] == rows[1]["holdout_correct"] == str(round(100 * float(rows[0]["best_acc"])))


def test_a_tie_goes_to_the_lower_holdout_loss(tmp_path, big, capsys, monkeypatch):
    fake_runs(monkeypatch, {"0.1": (0.22, 2.5), "0.2": (0.22, 2.0), "0.3": (0.10, 1.0)})
    cfg = write_config(tmp_path / "c.yaml", big, loggers=[])
    result = sweep.run_sweep(str(cfg), ["train.lr=0.1,0.2,0.3"], ["data.holdout=0.5"], out=str(tmp_path / "s"),
                             retrain=False)
    assert result["best"] == {"train.lr": "0.2"}
    assert result["tied"] == [{"train.lr": "0.2"}, {"train.lr": "0.1"}]
    printed = capsys.readouterr().out
    assert "best on the 50% holdout: train.lr=0.2 (22.00%, 22 of 100 images)" in printed
    assert ("tie: train.lr=0.2 and train.lr=0.1 have the same holdout accuracy (22.00%, 22 of 100 images); "
            "train.lr=0.2 is chosen by the lower holdout loss at its best epoch (train.lr=0.2 2.0000, "
            "train.lr=0.1 2.5000)") in printed
    assert "spread of the holdout accuracies: 12.00% (best minus worst); one holdout image is 1.00%" in printed
    md = (tmp_path / "s" / "sweep.md").read_text()
    assert "| train.lr=0.2 **best** |" in md and "| train.lr=0.1 (tied) |" in md and "| train.lr=0.3 |" in md
    assert "the lower holdout loss" in md


def test_no_tie_says_by_how_many_images_the_best_leads(tmp_path, big, capsys, monkeypatch):
    fake_runs(monkeypatch, {"0.1": (0.23, 2.5), "0.2": (0.22, 2.0)})
    cfg = write_config(tmp_path / "c.yaml", big, loggers=[])
    result = sweep.run_sweep(str(cfg), ["train.lr=0.1,0.2"], ["data.holdout=0.5"], out=str(tmp_path / "s"),
                             retrain=False)
    assert result["tied"] == [{"train.lr": "0.1"}]
    printed = capsys.readouterr().out
    assert "ahead of the next point, train.lr=0.2, by 1 holdout image\n" in printed and "tie:" not in printed
    assert "(tied)" not in (tmp_path / "s" / "sweep.md").read_text()


def test_a_small_holdout_ranked_anyway_is_warned_of(tmp_path, small, capsys, monkeypatch):
    fake_runs(monkeypatch, {"0.1": (0.3, 2.0), "0.2": (0.2, 2.0)})
    cfg = write_config(tmp_path / "c.yaml", small, loggers=[])
    sweep.run_sweep(str(cfg), ["train.lr=0.1,0.2"], [], out=str(tmp_path / "s"), retrain=False,
                    min_holdout_per_class=0)
    printed = capsys.readouterr().out
    assert "holdout: 10 images (data.holdout=0.02), 1 per class over 10 classes, 118 left for training; " \
           "one image is 10.00%" in printed
    assert "WARNING: a class has only 1 holdout image, and a sweep ranks its points only on a holdout of at " \
           "least 10 images of every class" in printed
    assert "**Warning**: a class has only 1 holdout image" in (tmp_path / "s" / "sweep.md").read_text()


def test_rank_counts_correct_images_and_leaves_out_diverged_runs():
    size = {"images": 9}

    def run(name, acc, loss=1.0, diverged=False):
        return {"run": name, "best_acc": acc, "best_loss": loss, "diverged": diverged, "holdout": size}

    # 2/9 computed two ways: not equal as floats, the same number of correct images
    a, b, c = run("a", 2 / 9, 1.5), run("b", 0.2222222222222222 + 1e-12, 1.2), run("c", 1 / 9)
    r = sweep.rank([a, b, c])
    assert r["best"] is b and r["tied"] == [b, a] and r["broken_by"] == "loss"
    assert r["image"] == pytest.approx(1 / 9) and r["spread"] == pytest.approx(1 / 9)
    r = sweep.rank([run("a", 2 / 9), run("b", 2 / 9)])  # equal losses: the grid order
    assert r["best"]["run"] == "a" and r["broken_by"] == "order"
    r = sweep.rank([run("a", 2 / 9, math.nan), run("b", 2 / 9)])  # an unknown loss loses
    assert r["best"]["run"] == "b" and r["broken_by"] == "loss"
    d = run("d", 0.0, diverged=True)
    r = sweep.rank([d, c])
    assert r["best"] is c and r["broken_by"] is None and r["runner_up"] is None and r["spread"] == 0
