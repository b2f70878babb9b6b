"""File-system faults end a command with exit code 2 and one clear line, leave no
run folder without a checkpoint and keep the previous checkpoints intact: a full
disk while a checkpoint is written, a read-only file system, a run folder inside
a regular file; a pickled object in a checkpoint is refused by name; a resumed
run's TensorBoard shows each step once.

The full and read-only disks are small tmpfs mounts, made where the tests run as
root (CI, containers); elsewhere those tests skip with the reason."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

import vitlab.train.engine as engine
from tiny import TINY_MODEL, make_fashion, write_config
from vitlab import cli
from vitlab.run import checkpoint

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    make_fashion(root)
    return root


def config(tmp_path: Path, data_root: Path, **train) -> Path:
    return write_config(tmp_path / "cfg.yaml", {"name": "fashion_mnist", "root": str(data_root)},
                        TINY_MODEL, loggers=[], **train)


def run(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture
def tmpfs(tmp_path):
    """A mount point for a small tmpfs, unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (a full or read-only disk is made with one)")
    mounts = []

    def mount(size_kb: int, readonly: bool = False) -> Path:
        point = tmp_path / f"mnt{len(mounts)}"
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(point)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounts.append(point)
        if readonly:
            subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(folder: Path) -> None:
    """Take every free byte of the file system of ``folder``."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_full_disk_at_the_first_checkpoint_leaves_no_run_folder(tmp_path, data_root, tmpfs, capsys):
    disk = tmpfs(48)  # config.yaml and the card fit, the first checkpoint does not
    out = disk / "runs" / "first"
    code, err = run(capsys, "train", config(tmp_path, data_root, epochs=1), "--out", out)
    assert code == 2 and err.count("\n") == 1, err
    assert "the disk is full" in err and ".pt" in err
    assert not (disk / "runs").exists()  # the folders this run made are gone
    assert list(disk.iterdir()) == []


def test_full_disk_while_resuming_keeps_the_previous_checkpoints(tmp_path, data_root, tmpfs, capsys):
    disk = tmpfs(2048)
    out = disk / "run"
    assert run(capsys, "train", config(tmp_path, data_root, epochs=1), "--out", out)[0] == 0
    before = {n: (out / n).read_bytes() for n in ("last.pt", "best.pt", "metrics.csv", "config.yaml")}
    fill(disk)
    code, err = run(capsys, "train", "--resume", out, "--set", "train.epochs=2")
    assert code == 2 and err.count("\n") == 1 and "the disk is full" in err, err
    for name, data in before.items():  # nothing of the earlier run changed or was lost
        assert (out / name).read_bytes() == data, name
    assert checkpoint.load(out / "last.pt")["epoch"] == 1
    assert not list(out.glob(".*.tmp"))  # no half-written temporary file stays
    (disk / "filler").unlink()
    assert run(capsys, "train", "--resume", out, "--set", "train.epochs=2")[0] == 0  # space again: it resumes
    assert checkpoint.load(out / "last.pt")["epoch"] == 2


def test_read_only_file_system(tmp_path, data_root, tmpfs, capsys):
    disk = tmpfs(256, readonly=True)
    code, err = run(capsys, "train", config(tmp_path, data_root, epochs=1), "--out", disk / "run")
    assert code == 2 and err.count("\n") == 1 and "read-only" in err, err
    assert list(disk.iterdir()) == []


def test_out_inside_a_regular_file(tmp_path, data_root, capsys):
    (tmp_path / "notes.txt").write_text("a file\n")
    code, err = run(capsys, "train", config(tmp_path, data_root, epochs=1), "--out", tmp_path / "notes.txt" / "run")
    assert code == 2 and err.count("\n") == 1 and "notes.txt, which is a file" in err, err
    assert (tmp_path / "notes.txt").read_text() == "a file\n"


def test_a_pickled_object_in_a_checkpoint_is_refused_by_name(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", config(tmp_path, data_root, epochs=1), "--out", out)[0] == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["extra"] = argparse.Namespace(a=1)  # a pickled Python object: loading it would run code
    torch.save(ckpt, out / "last.pt")
    for argv in (["eval", out / "last.pt"], ["train", "--resume", out], ["compare", out]):
        code, err = run(capsys, *argv)
        assert code == 2 and "pickled Python object (argparse.Namespace)" in err, (argv, err)


def test_resumed_run_shows_each_step_once_in_tensorboard(tmp_path, data_root, monkeypatch, capsys):
    """A run that resumes from an older last.pt redoes epoch 2: TensorBoard shows it once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", {"name": "fashion_mnist", "root": str(data_root)}, TINY_MODEL,
                       loggers=["tensorboard"], epochs=2)
    real_save = engine.checkpoint.save

    def save_and_keep_epoch_1(obj, path):
        real_save(obj, path)
        if Path(path).name == "last.pt" and obj["epoch"] == 1:
            shutil.copy(path, tmp_path / "epoch1.pt")

    monkeypatch.setattr(engine.checkpoint, "save", save_and_keep_epoch_1)
    assert run(capsys, "train", cfg, "--out", out)[0] == 0
    shutil.copy(tmp_path / "epoch1.pt", out / "last.pt")  # back to the end of epoch 1: epoch 2 is redone
    # TensorBoard reads event files in name order, and names begin with the second they were made: a
    # real resume is a later process at a later second (within one second, a writer counter decides)
    time.sleep(1.1)
    assert run(capsys, "train", "--resume", out)[0] == 0
    assert len(list(out.glob("events.out.tfevents.*"))) == 2
    acc = EventAccumulator(str(out))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("val_acc")]
    assert steps == [1, 2]


@pytest.mark.parametrize("loop", ["self", "parent"])
def test_symlink_loop_in_an_image_folder(tmp_path, capsys, loop):
    from PIL import Image

    root = tmp_path / "photos"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(root / c / f"{c}{i}.png")
    if loop == "self":
        (root / "cat" / "loop").symlink_to(root / "cat" / "loop")
    else:
        (root / "dog" / "up").symlink_to(root)
    cfg = write_config(tmp_path / "c.yaml", {"name": "imagefolder", "root": str(root)},
                       {**TINY_MODEL, "img_size": 16, "patch_size": 8}, loggers=[], epochs=1)
    code, err = run(capsys, "train", cfg, "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1 and "loop" in err, err
    assert not (tmp_path / "run").exists()
