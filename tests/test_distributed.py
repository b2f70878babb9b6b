"""Several processes (torchrun, gloo on the CPU): the same number of steps on every rank, exact
evaluation, the same result as one process with the same global batch, gradient accumulation,
and a signal to one rank that stops every rank and resumes with another number of processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tiny import make_fashion, write_config
from vitlab import cli
from vitlab.run import checkpoint
from vitlab.run.runtime import Dist
from vitlab.data.loader import shard


def read_metrics(out: Path) -> list[dict]:
    import csv
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def torchrun(config: Path, out: Path, *sets: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "vitlab", "train", str(config), "--out", str(out), "--set", "train.loggers=[]",
                           *(x for s in sets for x in ("--set", s))],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def dataset(tmp_path: Path, n_train: int, n_test: int) -> dict:
    root = tmp_path / f"fashion-{n_train}-{n_test}"
    make_fashion(root, n_train, n_test)
    return {"name": "fashion_mnist", "root": str(root)}


# --- the sharding itself -----------------------------------------------------------------------

@pytest.mark.parametrize("n,world", [(257, 2), (10, 3), (2, 4), (64, 2)])
def test_every_rank_gets_as_many_samples_and_every_sample_is_taken(n, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shards = [shard(order, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-n // world)
    taken = torch.cat(shards)
    assert set(taken.tolist()) == set(range(n))
    assert len(taken) - n == (-n) % world  # the only repeats are the padding


def test_the_kth_batches_of_all_ranks_are_the_kth_batch_of_one_process():
    order, b, world = torch.randperm(96), 8, 3
    shards = [shard(order, r, world) for r in range(world)]
    for k in range(len(shards[0]) // b):
        together = torch.cat([s[k * b:(k + 1) * b] for s in shards])
        assert sorted(together.tolist()) == sorted(order[k * b * world:(k + 1) * b * world].tolist())


def test_what_is_left_after_a_stop_does_not_depend_on_the_world_size():
    order = torch.randperm(100)
    skip = 2 * 8 * 2  # two steps of batch 8 on 2 ranks
    left = torch.cat([shard(order, r, 2, skip) for r in range(2)])
    assert sorted(left.tolist()) == sorted(order[skip:].tolist())
    assert shard(order, 0, 1, skip).tolist() == order[skip:].tolist()
    assert len(shard(order, 0, 3, skip)) == len(shard(order, 2, 3, skip)) == 23  # 68 padded to 69


def test_model_randomness_is_seeded_per_rank_and_unchanged_for_one_process():
    assert Dist(0, 1).seed(123) == Dist(0, 4).seed(123) == 123
    assert len({Dist(r, 4).seed(123) for r in range(4)}) == 4


# --- gradient accumulation -----------------------------------------------------------------------

def test_a_short_last_accumulation_group_is_averaged_over_its_own_batches(tmp_path):
    """160 images in batches of 32 with 3 micro-batches per step: the groups are 3 and 2 batches, the
    same optimizer steps as batches of 96 and 64; dividing the last group by 3 would shrink its step."""
    data = dataset(tmp_path, 160, 20)
    weights = {}
    for name, batch, accum in (("accum", 32, 3), ("whole", 96, 1)):
        cfg = write_config(tmp_path / f"{name}.yaml", data, batch_size=batch, accum_steps=accum, loggers=[],
                           optimizer="sgd", lr=0.5, warmup_epochs=0, schedule="constant")
        assert cli.main(["train", str(cfg), "--out", str(tmp_path / name)]) == 0
        weights[name] = checkpoint.load(tmp_path / name / "last.pt")["model"]
    for key in weights["whole"]:
        torch.testing.assert_close(weights["accum"][key], weights["whole"][key], atol=2e-5, rtol=1e-4)


# --- several processes -----------------------------------------------------------------------------

def test_uneven_shards_finish_and_validation_equals_eval_of_the_checkpoint(tmp_path, capsys):
    """257 training images in batches of 32 on 2 ranks (129 + 128 before padding), 33 test images (17 + 16)."""
    cfg = write_config(tmp_path / "c.yaml", dataset(tmp_path, 257, 33), batch_size=32)
    out = tmp_path / "run"
    res = torchrun(cfg, out)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    last = checkpoint.load(out / "last.pt")
    assert [r["train_images"] for r in last["history"]] == [258, 258]  # 257 padded to a multiple of 2
    capsys.readouterr()
    assert cli.main(["eval", str(out / "last.pt")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("evaluated 33 images of the test split") and \
        f"\ntop-1 {100 * float(rows[-1]['val_acc']):.2f}%" in printed, (printed, rows[-1])


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """2 ranks x 2 micro-batches of 16 against one process with batches of 64. SGD: Adam would
    magnify the float noise of near-zero gradients into visible weight differences."""
    data = dataset(tmp_path, 256, 32)
    runs = {}
    recipe = dict(optimizer="sgd", lr=0.3, momentum=0.9)
    two = write_config(tmp_path / "two.yaml", data, batch_size=16, accum_steps=2, **recipe)
    res = torchrun(two, tmp_path / "two")
    assert res.returncode == 0, res.stderr[-3000:]
    one = write_config(tmp_path / "one.yaml", data, batch_size=64, loggers=[], **recipe)
    assert cli.main(["train", str(one), "--out", str(tmp_path / "one")]) == 0
    for name in ("one", "two"):
        runs[name] = checkpoint.load(tmp_path / name / "last.pt")
    for a, b in zip(runs["one"]["history"], runs["two"]["history"]):
        assert a["train_images"] == b["train_images"] == 256
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_acc"] == b["val_acc"]
    for key, w in runs["one"]["model"].items():
        torch.testing.assert_close(runs["two"]["model"][key], w, atol=1e-5, rtol=1e-4)


def _workers(parent: int) -> list[int]:
    """The pids of the processes whose parent is ``parent``."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            kids.append(int(stat.parent.name))
    return kids


def test_a_signal_to_one_rank_stops_both_and_one_process_resumes(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", dataset(tmp_path, 2048, 32), batch_size=16, epochs=3)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "vitlab", "train", str(cfg), "--out", str(out), "--set", "train.loggers=[]"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not (out / "metrics.csv").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the first epoch is done: the signal comes in the middle of the second
        workers = _workers(proc.pid)
        assert proc.poll() is None and len(workers) == 2, "the run ended before it could be signalled"
        os.kill(max(workers), signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert err.count("last.pt saved, resume with") == 2, err[-3000:]  # both ranks stopped, neither hung
    ckpt = checkpoint.load(out / "last.pt")
    assert ckpt["epoch"] == 1 and 0 < ckpt["skip_samples"] < 2048 and ckpt["world_size"] == 2
    assert ckpt["skip_samples"] % 32 == 0  # whole steps of 2 ranks x 16
    assert ckpt["partial"]["sums"][2] == ckpt["skip_samples"]  # both ranks' images, all-reduced
    assert cli.main(["train", "--resume", str(out), "--set", "train.loggers=[]"]) == 0
    done = checkpoint.load(out / "last.pt")
    assert done["epoch"] == 3
    assert [r["train_images"] for r in done["history"]] == [2048, 2048, 2048]


def test_the_end_of_a_distributed_run_does_not_hang_under_load(tmp_path):
    """Two processes end cleanly again and again while the machine is busy: the DDP model is
    released before the process group goes away (a reducer outliving it once hung at exit)."""
    data = dataset(tmp_path, 64, 32)
    config = write_config(tmp_path / "c.yaml", data, epochs=1, batch_size=16)
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for i in range(4):
            r = torchrun(config, tmp_path / f"run{i}", timeout=120)  # a hang ends the test by its timeout
            assert r.returncode == 0, r.stderr[-2000:]
            assert checkpoint.load(tmp_path / f"run{i}" / "last.pt")["epoch"] == 1
    finally:
        for p in load:
            p.kill()
