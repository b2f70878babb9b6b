"""`vitlab study`: one run per point of the full cross product, no holdout, study.csv and
study.png; a killed study continued without re-running what finished; every point checked
before the first run; training compute against a hand count; few-shot columns; several
configs as a grid key; the shared grid machinery of sweep and study."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import pytest
from PIL import Image

import vitlab.study as study
from tiny import TINY_MODEL, fails, make_fashion, write_config
from vitlab import cli
from vitlab.grid import grid_points, parse_grid, point_name
from vitlab.run import checkpoint

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fashion")
    make_fashion(root, 64, 40)
    return {"name": "fashion_mnist", "root": str(root)}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def quiet(argv) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return cli.main([str(a) for a in argv])


def test_cross_product_and_a_killed_study_rerun_trains_nothing_that_finished(tmp_path, data, monkeypatch):
    cfg = write_config(tmp_path / "c.yaml", data, loggers=[], epochs=1)
    out = tmp_path / "study"
    argv = ["study", cfg, "--grid", "model.depth=1,2", "--grid", "train.lr=0.001,0.003,0.01", "--x", "train.lr",
            "--out", out]
    real, trained = study.run_point, []

    def stop_after_two(config, sets, run, *args):  # the study is killed before its third run
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(run.name)
        return real(config, sets, run, *args)

    monkeypatch.setattr(study, "run_point", stop_after_two)
    assert quiet(argv) == 130
    monkeypatch.undo()
    first = [out / n / "last.pt" for n in trained]
    stamps = [p.stat().st_mtime_ns for p in first]
    rows = read_csv(out / "study.csv")  # written after each run
    assert [r["run"] for r in rows] == trained

    import vitlab.train.engine as engine
    fits = []
    real_fit = engine.Trainer.fit
    monkeypatch.setattr(engine.Trainer, "fit", lambda self: fits.append(self.out.name) or real_fit(self))
    assert quiet(argv) == 0
    assert [p.stat().st_mtime_ns for p in first] == stamps  # read again, not trained again
    names = [point_name(p) for p in grid_points(parse_grid(["model.depth=1,2", "train.lr=0.001,0.003,0.01"]))]
    assert fits == names[2:]  # only the four that had not run
    rows = read_csv(out / "study.csv")
    assert [r["run"] for r in rows] == names  # the full product, the last key fastest
    assert [(r["model.depth"], r["train.lr"]) for r in rows] == [
        (d, lr) for d in ("1", "2") for lr in ("0.001", "0.003", "0.01")]
    assert list(rows[0]) == ["run", "model.depth", "train.lr", *study.COLUMNS]
    for r in rows:
        ckpt = checkpoint.load(out / r["run"] / "last.pt", map_location="meta")
        assert ckpt["config"]["data"]["holdout"] == 0  # no holdout: the test split validates
        assert ckpt["config"]["model"]["depth"] == int(r["model.depth"])
        assert ckpt["config"]["train"]["lr"] == float(r["train.lr"])
        assert float(r["final_acc"]) == pytest.approx(ckpt["history"][-1]["val_acc"])
        assert int(r["images_seen"]) == 64 and r["diverged"] == "0"
    assert rows[0]["params"] != rows[3]["params"]  # depth 1 and 2
    with Image.open(out / "study.png") as im:
        assert im.format == "PNG"
    # a third time: nothing trained, nothing measured
    fits.clear()
    assert quiet(argv) == 0 and fits == []


def test_compute_of_a_run_is_the_hand_count(tmp_path, data, capsys):
    """The tiny ViT (28 px, patch 7, width 32, 1 block, 2 heads, MLP 64, 10 classes, 1 channel), by hand:
    patch embedding 16 patches x 49 x 32, then 17 tokens through qkv (32 -> 96), q @ k^T and attn @ v
    (2 heads x 17 x 17 x 16 each), the projection (32 -> 32), the MLP (32 -> 64 -> 32), and the head
    on the class token (32 -> 10). Training compute = 2 x 3 x MACs x images seen (64 images, 2 epochs)."""
    macs = 16 * 49 * 32 + 17 * 32 * 96 + 2 * (2 * 17 * 17 * 16) + 17 * 32 * 32 + 2 * 17 * 32 * 64 + 32 * 10
    assert macs == 183_168
    cfg = write_config(tmp_path / "c.yaml", data, TINY_MODEL, loggers=[], epochs=2)
    assert quiet(["study", cfg, "--grid", "train.seed=0", "--x", "train.seed", "--out", tmp_path / "s"]) == 0
    (row,) = read_csv(tmp_path / "s" / "study.csv")
    assert int(row["macs"]) == macs and int(row["images_seen"]) == 2 * 64
    assert int(row["train_flops"]) == 2 * 3 * macs * 2 * 64 == 140_673_024
    assert int(row["params"]) == 11_114
    # vitlab compare counts the same
    assert cli.main(["compare", str(tmp_path / "s" / "train.seed=0"), "--out", str(tmp_path), "--x", "compute"]) == 0
    assert "140.67 MFLOPs" in capsys.readouterr().out
    (c,) = read_csv(tmp_path / "compare.csv")
    assert int(c["train_flops"]) == 140_673_024
    assert (tmp_path / "compare_compute.png").is_file()


def test_a_bad_grid_value_exits_2_before_the_first_run(tmp_path, data, capsys, monkeypatch):
    cfg = write_config(tmp_path / "c.yaml", data, loggers=[], epochs=1)
    ran = []
    monkeypatch.setattr(study, "run_point", lambda *a: ran.append(a))
    out = tmp_path / "s"
    # the first value is good; 5 does not divide the 28 px image: the model refuses it when the config is read
    err = fails(capsys, "study", cfg, "--grid", "model.patch_size=7,5", "--x", "model.patch_size", "--out", out)
    assert "not divisible by patch size (5, 5)" in err
    assert "train.lr" in fails(capsys, "study", cfg, "--grid", "model.depth=1,2", "--grid", "train.lr=0.1,fast",
                               "--x", "model.depth", "--out", out)
    assert "unknown config key 'train.lrr'" in fails(capsys, "study", cfg, "--grid", "train.lrr=1,2", "--x",
                                                     "train.lrr", "--out", out)
    assert "--x model.width is not a key of the grid; choose from model.depth" in fails(
        capsys, "study", cfg, "--grid", "model.depth=1,2", "--x", "model.width", "--out", out)
    assert "--fewshot" in fails(capsys, "study", cfg, "--grid", "model.depth=1", "--x", "model.depth",
                                "--fewshot", "5", "--out", out)
    assert "config file not found" in fails(capsys, "study", cfg, "--grid", "model.depth=1", "--x", "model.depth",
                                            "--fewshot", "5", "--fewshot-data", tmp_path / "no.yaml", "--out", out)
    assert "lists a value twice" in fails(capsys, "study", cfg, "--grid", "model.depth=1,1", "--x", "model.depth",
                                          "--out", out)
    assert ran == [] and not out.exists()
    # another plan in the same folder is refused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("")
    assert "is not a study folder" in fails(capsys, "study", cfg, "--grid", "model.depth=1", "--x", "model.depth",
                                            "--out", tmp_path / "other")


def test_fewshot_columns_and_several_configs(tmp_path, data, capsys):
    vit = write_config(tmp_path / "vit.yaml", data, loggers=[], epochs=1)
    cnn = write_config(tmp_path / "cnn.yaml", data, {"name": "resnet18"}, loggers=[], epochs=1)
    out = tmp_path / "s"
    argv = ["study", vit, cnn, "--grid", "data.train_subset=30,64", "--x", "data.train_subset",
            "--set", "data.subset_mode=random", "--fewshot", "1,3", "--fewshot-data", vit, "--fewshot-draws", "2",
            "--out", out]
    assert quiet(argv) == 0
    rows = read_csv(out / "study.csv")
    assert [r["run"] for r in rows] == ["config=vit,data.train_subset=30", "config=vit,data.train_subset=64",
                                        "config=cnn,data.train_subset=30", "config=cnn,data.train_subset=64"]
    assert [r["model"] for r in rows] == ["vit", "vit", "resnet18", "resnet18"]
    assert [int(r["images_seen"]) for r in rows] == [30, 64, 30, 64]
    for r in rows:
        kept = (out / r["run"] / "fewshot.json")
        assert kept.is_file()
        for k in (1, 3):
            assert 0 <= float(r[f"fewshot_{k}shot_mean"]) <= 1 and float(r[f"fewshot_{k}shot_std"]) >= 0
    stamp = (out / rows[0]["run"] / "fewshot.json").stat().st_mtime_ns
    assert quiet(argv) == 0  # continued: the few-shot results are read, not measured again
    assert (out / rows[0]["run"] / "fewshot.json").stat().st_mtime_ns == stamp
    assert read_csv(out / "study.csv") == rows
    # other few-shot settings: measured again
    assert quiet([*argv[:-2], "--fewshot-draws", "1", "--out", out]) == 0
    assert read_csv(out / "study.csv")[0]["fewshot_1shot_std"] == "0.0"


def test_x_axis_rule():
    assert study.x_axis(["1", "2", "4", "8"]) == (True, False)  # a factor of 8: linear
    assert study.x_axis(["0.001", "0.01"]) == (True, False)  # exactly 10: linear
    assert study.x_axis(["1000", "5000", "25000"]) == (True, True)  # more than 10: logarithmic
    assert study.x_axis(["vit", "resnet"]) == (False, False)  # names: in the grid's order
