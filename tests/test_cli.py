"""The `vitlab` command line: train -> eval -> predict end to end, a run killed
with SIGKILL and resumed, and every kind of bad input (exit code 2, one line on
stderr, no traceback, no half-made run folder). Commands run in-process through
``vitlab.cli.main``; subprocesses only where a real process or signal is needed."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tiny import fails, make_fashion, write_config
from vitlab import cli
from vitlab.run import checkpoint
from vitlab import config as cfgmod
from vitlab.run.checkpoint import build_model as model_from_checkpoint

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


# --------------------------------------------------------------------------- tiny data


def make_imagefolder(root: Path, per_class: int = 8, val_per_class: int = 4) -> Path:
    """root/train/<class>/*.png and root/val/<class>/*.png, 28x28 RGB."""
    rng = np.random.default_rng(1)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    return root, make_fashion(root)


@pytest.fixture(scope="module")
def config(tmp_path_factory, fashion) -> Path:
    d = tmp_path_factory.mktemp("config")
    return write_config(d / "tiny.yaml", {"name": "fashion_mnist", "root": str(fashion[0])})


@pytest.fixture(scope="module")
def run(tmp_path_factory, config) -> Path:
    """A finished 2-epoch run with the default loggers (TensorBoard)."""
    out = tmp_path_factory.mktemp("e2e") / "run"
    assert cli.main(["train", str(config), "--out", str(out)]) == 0
    return out


def read_metrics(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- end to end


def test_run_directory_holds_everything(run, config):
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.csv", "best.pt", "last.pt", "curves.png"} <= names
    assert (run / "metrics.csv").read_text().splitlines()[0] == \
        "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds"
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        assert 0 <= float(r["train_acc"]) <= 1 and 0 <= float(r["val_acc"]) <= 1 and float(r["val_loss"]) > 0
    # the resolved config: every key, equal to the preset it came from
    assert cfgmod.load(run / "config.yaml").to_dict() == cfgmod.load(config).to_dict()
    assert set(yaml.safe_load((run / "config.yaml").read_text())["train"]) == set(cfgmod.TrainConfig().__dict__)
    with Image.open(run / "curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    last, best = checkpoint.load(run / "last.pt"), checkpoint.load(run / "best.pt")
    assert last["epoch"] == 2 and "optimizer" in last and "optimizer" not in best
    assert best["dataset"]["classes"] == FASHION_CLASSES

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = list(run.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(run))
    acc.Reload()
    val = acc.Scalars("val_acc")
    assert [e.step for e in val] == [1, 2]
    assert [e.value for e in val] == pytest.approx([float(r["val_acc"]) for r in rows])


def test_train_prints_summary(tmp_path, config, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--out", str(out), "--set", "train.epochs=1",
                     "--set", "train.loggers=[]"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model vit: 11,114 parameters | data fashion_mnist: 64 train / 32 val images")
    assert lines[1] == "training images: in memory, augmented in batches on the training device"
    assert lines[2].startswith("epoch 1/1  train loss") and lines[-1].startswith("done: best val acc")
    assert not list(out.glob("events.out.tfevents.*"))  # loggers=[]: no TensorBoard


def test_eval_prints_top1_top5_per_class_and_writes_confusion(run, capsys):
    assert cli.main(["eval", str(run / "best.pt")]) == 0
    out = capsys.readouterr().out.splitlines()
    best = max(read_metrics(run), key=lambda r: float(r["val_acc"]))  # the first of the best epochs
    assert out[0].startswith("evaluated 32 images of the test split of fashion_mnist in ")
    assert out[1].startswith(f"top-1 {100 * float(best['val_acc']):.2f}%  top-5 ")
    per_class = out[2:12]
    assert [line.split()[0] for line in per_class] == [c.split()[0] for c in FASHION_CLASSES]
    assert all(line.endswith("images)") or line.endswith("image)") or line.endswith("no images")
               for line in per_class)
    folder = Path(out[12].removeprefix("outputs: "))
    assert folder.parent == run and folder.name.startswith("eval-best-")
    with Image.open(folder / "confusion.png") as im:
        assert im.format == "PNG"


def test_eval_json(run, tmp_path, capsys):
    png = tmp_path / "conf.png"
    assert cli.main(["eval", str(run / "last.pt"), "--json", "--out", str(png)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 32 and 0 <= r["top1"] <= r["top5"] <= 1
    assert r["top1"] == pytest.approx(float(read_metrics(run)[-1]["val_acc"]))
    assert r["loss"] == pytest.approx(float(read_metrics(run)[-1]["val_loss"]), rel=1e-4)
    assert list(r["per_class"]) == FASHION_CLASSES
    assert r["confusion_png"] == str(png) and png.is_file()


def test_predict_json_matches_the_model(run, fashion, tmp_path, capsys):
    images, _ = fashion[1]["t10k"]
    paths = []
    for i in (0, 7):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(images[i]).save(paths[-1])  # grey 28x28, as Fashion-MNIST
    assert cli.main(["predict", str(run / "best.pt"), *map(str, paths), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == list(map(str, paths))

    ckpt = checkpoint.load(run / "best.pt")
    model = model_from_checkpoint(ckpt).eval()
    x = torch.from_numpy(images[[0, 7]]).float().div(255)[:, None]
    x = (x - ckpt["dataset"]["mean"][0]) / ckpt["dataset"]["std"][0]
    with torch.no_grad():
        probs = model(x).softmax(-1)
    for r, p in zip(results, probs):
        top = r["top"]
        assert len(top) == 5
        ps = [t["prob"] for t in top]
        assert ps == sorted(ps, reverse=True) and sum(ps) <= 1 + 1e-6 and all(0 <= v <= 1 for v in ps)
        val, idx = p.topk(5)
        assert [t["index"] for t in top] == idx.tolist()
        assert ps == pytest.approx(val.tolist(), abs=1e-5)
        assert [t["class"] for t in top] == [FASHION_CLASSES[i] for i in idx.tolist()]


def test_predict_text_and_top_k(run, fashion, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(fashion[1]["t10k"][0][3]).convert("RGB").save(img)  # colour input for a grey model
    assert cli.main(["predict", str(run / "best.pt"), str(img), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{img}: ") and line.count("%") == 2


def test_resume_of_a_finished_run_does_nothing_more(run, capsys):
    before = checkpoint.load(run / "last.pt")["model"]
    files = sorted(p.name for p in run.iterdir())
    assert cli.main(["train", "--resume", str(run)]) == 0
    assert f"the run in {run} has finished its 2 epochs: nothing to resume" in capsys.readouterr().out
    after = checkpoint.load(run / "last.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(read_metrics(run)) == 2
    assert sorted(p.name for p in run.iterdir()) == files  # no second TensorBoard file


# --------------------------------------------------------------------------- a run killed with SIGKILL

_SLOW_TRAIN = textwrap.dedent("""
    import sys, time
    import vitlab.train.engine as engine
    from vitlab.cli import main
    step = engine.Trainer._step
    def slow(self, *args):  # slow enough to be killed in the middle of epoch 2
        time.sleep(0.4)
        return step(self, *args)
    engine.Trainer._step = slow
    sys.exit(main(["train", sys.argv[1], "--out", sys.argv[2]]))
""")


def test_sigkill_during_training_then_resume(run, config, tmp_path, capsys):
    out = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", _SLOW_TRAIN, str(config), str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not (out / "last.pt").exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "no last.pt after 90 s"
            time.sleep(0.01)
        child.kill()
        child.wait()
    finally:
        child.kill()
        child.stderr.close()
    assert child.returncode == -9
    assert checkpoint.load(out / "last.pt")["epoch"] == 1  # killed before epoch 2 ended

    assert cli.main(["train", "--resume", str(out)]) == 0
    assert "resuming at epoch 2" in capsys.readouterr().out
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # the same numbers as the uninterrupted run of the same config
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in rs]  # noqa: E731
    assert strip(rows) == strip(read_metrics(run))
    a, b = checkpoint.load(out / "last.pt")["model"], checkpoint.load(run / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (out / "best.pt").is_file() and (out / "curves.png").is_file()


# --------------------------------------------------------------------------- bad input


def test_missing_dataset_in_empty_root(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cfg = write_config(tmp_path / "c.yaml", {"name": "fashion_mnist", "root": str(tmp_path / "empty")})
    err = fails(capsys, "train", cfg, "--out", tmp_path / "run")
    assert f"no fashion_mnist files in data.root {tmp_path / 'empty'}" in err
    assert "train-images-idx3-ubyte.gz" in err
    assert not (tmp_path / "run").exists()


def test_data_root_that_does_not_exist(tmp_path, config, capsys):
    err = fails(capsys, "train", config, "--out", tmp_path / "run", "--set", f"data.root={tmp_path / 'nowhere'}")
    assert f"data.root {tmp_path / 'nowhere'} does not exist" in err
    assert not (tmp_path / "run").exists()


def test_incomplete_idx_dataset(tmp_path, capsys):
    make_fashion(tmp_path / "data")
    (tmp_path / "data" / "t10k-labels-idx1-ubyte.gz").unlink()
    cfg = write_config(tmp_path / "c.yaml", {"name": "fashion_mnist", "root": str(tmp_path / "data")})
    err = fails(capsys, "train", cfg, "--out", tmp_path / "run")
    assert "missing: t10k-labels-idx1-ubyte[.gz]" in err
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_names_the_closest(tmp_path, config, capsys):
    err = fails(capsys, "train", config, "--out", tmp_path / "run", "--set", "train.lrr=0.1")
    assert err == "vitlab: error: unknown config key 'train.lrr' (did you mean 'train.lr'?)"
    assert not (tmp_path / "run").exists()


def test_unknown_key_in_config_file(tmp_path, fashion, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  name: fashion_mnist\n  root: {fashion[0]}\ntrain:\n  epochz: 3\n")
    err = fails(capsys, "train", cfg, "--out", tmp_path / "run")
    assert "unknown config key 'train.epochz' (did you mean 'train.epochs'?)" in err
    cfg.write_text("trian:\n  epochs: 3\n")
    assert "unknown config section 'trian' (did you mean 'train'?)" in fails(capsys, "train", cfg)
    assert not (tmp_path / "run").exists()


def test_wrong_value_type(tmp_path, config, capsys):
    err = fails(capsys, "train", config, "--out", tmp_path / "run", "--set", "train.epochs=abc")
    assert err == "vitlab: error: config key 'train.epochs' expects an integer, got 'abc'"
    err = fails(capsys, "train", config, "--out", tmp_path / "run", "--set", "train.lr=fast")
    assert "config key 'train.lr' expects a number, got 'fast'" in err
    err = fails(capsys, "train", config, "--out", tmp_path / "run", "--set", "train.epochs=0")
    assert "train.epochs must be 1 or more, got 0" in err
    assert not (tmp_path / "run").exists()


def test_numbers_without_a_dot_are_numbers(tmp_path, fashion):
    """YAML 1.1 reads 1e-3 as a string; the config takes it as the number people mean."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: vit_mnist}}\ndata: {{name: fashion_mnist, root: {fashion[0]}}}\n"
                   "train: {lr: 1e-3, min_lr: 2E-5}\n")
    c = cfgmod.load(cfg, ["train.weight_decay=5e-2", "train.clip_grad=1e0"])
    assert (c.train.lr, c.train.min_lr, c.train.weight_decay, c.train.clip_grad) == (1e-3, 2e-5, 0.05, 1.0)


def test_unreadable_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1, 2\n  lr: 0.1\n")
    err = fails(capsys, "train", bad, "--out", tmp_path / "run")
    assert f"cannot read config {bad}: invalid YAML at line" in err
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    assert f"cannot read config {binary}" in fails(capsys, "train", binary, "--out", tmp_path / "run")
    assert "config file not found" in fails(capsys, "train", tmp_path / "none.yaml")
    assert fails(capsys, "train", tmp_path) == \
        f"vitlab: error: {tmp_path} is a folder; give a YAML config file or a preset's name (`vitlab presets`)"
    assert not (tmp_path / "run").exists()


def test_unknown_model_name(tmp_path, config, capsys):
    err = fails(capsys, "train", config, "--out", tmp_path / "run", "--set", "model.name=vit_b17")
    assert "unknown model 'vit_b17'" in err and "did you mean" in err
    assert not (tmp_path / "run").exists()


def test_model_option_the_model_lacks(tmp_path, config, capsys):
    err = fails(capsys, "train", config, "--out", tmp_path / "run", "--set", "model.num_heads=3")
    assert "model.embed_dim 32 is not divisible by num_heads 3 (model 'vit')" in err  # before the data is read
    assert not (tmp_path / "run").exists()


def test_corrupt_first_image_in_image_folder(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "imgs")
    bad = root / "train" / "cat" / "00.png"
    bad.write_bytes(b"this is not a png")
    cfg = write_config(tmp_path / "c.yaml", {"name": "imagefolder", "root": str(root), "bad_images": "error"},
                       batch_size=8)
    err = fails(capsys, "train", cfg, "--out", tmp_path / "run")
    assert str(bad) in err and "cannot be read" in err
    assert not (tmp_path / "run").exists()


def test_unreadable_images_are_left_out_and_listed_in_the_run(tmp_path, capsys):
    """data.bad_images=skip (the default): the run trains on the rest and lists what it left out."""
    root = make_imagefolder(tmp_path / "imgs")
    bad = root / "train" / "cat" / "00.png"
    bad.write_bytes(b"this is not a png")
    cfg = write_config(tmp_path / "c.yaml", {"name": "imagefolder", "root": str(root)}, batch_size=8, epochs=1,
                       loggers=[])
    assert cli.main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    listed = (tmp_path / "run" / "bad_images.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{bad}\t")
    assert checkpoint.load(tmp_path / "run" / "last.pt")["history"][0]["train_images"] == 15


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_image_found_during_training(tmp_path, capsys, workers, monkeypatch):
    """A file that goes bad after the check before training is found when its batch is read (also in
    a DataLoader worker): one line naming it, and no half-made run left."""
    import vitlab.data.datasets as datasets
    monkeypatch.setattr(datasets, "find_bad_images", lambda *a, **k: [])
    root = make_imagefolder(tmp_path / "imgs")
    bad = root / "train" / "dog" / "05.png"
    bad.write_bytes(bad.read_bytes()[:60])  # a valid PNG header, then nothing
    cfg = write_config(tmp_path / "c.yaml", {"name": "imagefolder", "root": str(root), "num_workers": workers},
                       batch_size=8)
    (tmp_path / "runs" / "other").mkdir(parents=True)
    for out, gone in ((tmp_path / "run", tmp_path / "run"), (tmp_path / "new" / "run", tmp_path / "new"),
                      (tmp_path / "runs" / "run", tmp_path / "runs" / "run")):
        err = fails(capsys, "train", cfg, "--out", out, quiet=False)  # after the "model ..." line
        assert f"cannot read image {bad}" in err
        assert not gone.exists()  # with the parent folders the run made
    assert (tmp_path / "runs" / "other").is_dir()  # but not those that were there


def test_non_image_files_are_skipped_with_a_warning(tmp_path, capsys, caplog):
    root = make_imagefolder(tmp_path / "imgs")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / "Thumbs.db").write_bytes(b"\x00" * 10)
    cfg = write_config(tmp_path / "c.yaml", {"name": "imagefolder", "root": str(root)}, batch_size=8,
                       epochs=1, loggers=[])
    with caplog.at_level(logging.WARNING):
        assert cli.main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    assert "skipped 2 file(s)" in caplog.text
    assert "data imagefolder: 16 train / 8 val images, 2 classes" in capsys.readouterr().out
    assert checkpoint.load(tmp_path / "run" / "best.pt")["dataset"]["classes"] == ["cat", "dog"]


def test_resume_a_folder_without_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = fails(capsys, "train", "--resume", tmp_path / "empty")
    assert f"{tmp_path / 'empty'} holds no run to resume" in err
    assert "holds no run to resume" in fails(capsys, "train", "--resume", tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    assert list((tmp_path / "empty").iterdir()) == []


def test_resume_refuses_to_change_what_is_trained(run, capsys):
    before = (run / "config.yaml").read_text()
    err = fails(capsys, "train", "--resume", run, "--set", "train.lr=0.5")
    assert "train.lr cannot change when resuming" in err and "train.device" in err
    assert (run / "config.yaml").read_text() == before


def test_lr_column_is_the_rate_of_the_epochs_last_step(run):
    rows = read_metrics(run)
    cfg = cfgmod.load(run / "config.yaml")
    # the last optimizer step of the run is the last step of the cosine schedule: min_lr
    assert float(rows[-1]["lr"]) == pytest.approx(cfg.train.min_lr, rel=1e-4, abs=1e-12)
    assert float(rows[0]["lr"]) > float(rows[-1]["lr"])


def test_resume_from_weights_only_checkpoint(run, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    (out / "last.pt").write_bytes((run / "best.pt").read_bytes())  # weights only
    err = fails(capsys, "train", "--resume", out)
    assert "cannot be resumed" in err and "best.pt holds weights only" in err


def test_train_into_a_finished_run_or_a_file(run, config, tmp_path, capsys):
    assert "already holds a run" in fails(capsys, "train", config, "--out", run)
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a folder" in fails(capsys, "train", config, "--out", tmp_path / "afile")
    assert "not both" in fails(capsys, "train", config, "--resume", run)


def test_eval_uses_the_whole_split_not_the_runs_val_subset(tmp_path, fashion, capsys):
    out = tmp_path / "quick"
    config = write_config(tmp_path / "q.yaml", {"name": "fashion_mnist", "root": str(fashion[0]), "val_subset": 8},
                          epochs=1)
    assert cli.main(["train", str(config), "--out", str(out)]) == 0
    acc = float(read_metrics(out)[0]["val_acc"])  # validated on 8 images during training:
    assert acc * 8 == pytest.approx(round(acc * 8))  # a whole number of the 8 right
    assert ", 8 validation images (the dataset's test split)" in (out / "model_card.md").read_text()
    capsys.readouterr()
    assert cli.main(["eval", str(out / "last.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 32  # all of the test split
    assert cli.main(["eval", str(out / "last.pt"), "--json", "--set", "data.val_subset=12"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12
    err = fails(capsys, "eval", out / "last.pt", "--set", "train.epochs=3")
    assert err == "vitlab: error: eval takes data.* settings only, got 'train.epochs'"


def test_flops_command(capsys):
    assert cli.main(["flops", "vit_b16"]) == 0
    assert capsys.readouterr().out.startswith("vit_b16 at 3x224x224: 86,567,656 parameters, 17.56 GMACs")
    assert cli.main(["flops", "vit_mnist", "--img-size", "56"]) == 0
    # 48 more patches than at 28 px, a 64-wide position embedding each
    assert capsys.readouterr().out.startswith(f"vit_mnist at 1x56x56: {205_962 + 48 * 64:,} parameters")
    assert fails(capsys, "flops", "vit_b16", "--img-size", "0") == "vitlab: error: --img-size must be 1 or more, got 0"
    assert "unknown model 'vit_b61'" in fails(capsys, "flops", "vit_b61")


def test_eval_and_predict_a_missing_checkpoint(tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(img)
    missing = tmp_path / "run" / "best.pt"
    assert fails(capsys, "eval", missing) == f"vitlab: error: checkpoint not found: {missing}"
    assert fails(capsys, "predict", missing, img) == f"vitlab: error: checkpoint not found: {missing}"
    assert not (tmp_path / "run").exists()


def test_eval_a_corrupt_checkpoint(tmp_path, run, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes((run / "best.pt").read_bytes()[:1000])  # cut short
    assert f"cannot read checkpoint {bad}: not a complete PyTorch checkpoint" in fails(capsys, "eval", bad)
    assert f"cannot read checkpoint {bad}" in fails(capsys, "predict", bad, bad)


def test_predict_a_corrupt_or_missing_image(run, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    err = fails(capsys, "predict", run / "best.pt", bad)
    assert f"cannot read image {bad}" in err
    assert fails(capsys, "predict", run / "best.pt", tmp_path / "none.png") == \
        f"vitlab: error: image not found: {tmp_path / 'none.png'}"


def test_eval_and_predict_bad_options(run, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(img)
    assert "--top-k must be 1 or more" in fails(capsys, "predict", run / "best.pt", img, "--top-k", "0")
    assert "--batch-size must be 1 or more" in fails(capsys, "eval", run / "best.pt", "--batch-size", "0")
    err = fails(capsys, "eval", run / "best.pt", "--out", tmp_path / "nowhere" / "c.png")
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in err
    err = fails(capsys, "eval", run / "best.pt", "--set", f"data.root={tmp_path / 'moved'}")
    assert "does not exist" in err


def test_bad_input_in_a_real_process(config, tmp_path):
    """The console command itself: exit code 2, exactly one line on stderr, nothing on stdout."""
    res = subprocess.run([sys.executable, "-m", "vitlab", "train", str(config), "--out", str(tmp_path / "run"),
                          "--set", "train.lrr=0.1"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr == "vitlab: error: unknown config key 'train.lrr' (did you mean 'train.lr'?)\n"
    assert res.stdout == ""
    assert not (tmp_path / "run").exists()
