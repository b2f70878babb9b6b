"""vitlab.train: exact resume (epoch boundary, mid-epoch signal, gradient
accumulation), atomic checkpoints under SIGKILL, schedules, weight-decay groups,
label smoothing and non-finite losses, on a tiny Fashion-MNIST written in its
real IDX format and a ViT of 11k parameters (each run takes about a second)."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitlab.train.engine as engine
import tiny
from tiny import TINY_MODEL, make_fashion, signal_after_step
from vitlab import cli, create_model, files
from vitlab.errors import UserError
from vitlab.run import checkpoint
from vitlab import config as cfgmod
from vitlab.config import TrainConfig
from vitlab.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

STEPS = 4  # 64 training images, batch 16


# --------------------------------------------------------------------------- tiny data and configs


def write_config(path: Path, data_root: Path, **train) -> Path:
    """A run config that exercises every source of randomness: dropout, random crop, flip."""
    return tiny.write_config(path, {"name": "fashion_mnist", "root": str(data_root), "crop_padding": 2, "hflip": True},
                             {**TINY_MODEL, "dropout": 0.1}, loggers=[], **{
                                 "lr": 3e-3, "min_lr": 1e-5, "weight_decay": 0.05, "warmup_epochs": 0.5,
                                 "label_smoothing": 0.1, **train})


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    make_fashion(root)
    return root


def train(config: Path, out: Path, *sets: str) -> int:
    args = ["train", str(config), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    return cli.main(args)


def resume(out: Path, *sets: str) -> int:
    args = ["train", "--resume", str(out)]
    for s in sets:
        args += ["--set", s]
    return cli.main(args)


def metrics_rows(out: Path) -> list[list[str]]:
    """metrics.csv rows without the `seconds` column (the only one that may differ between runs)."""
    lines = (out / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[-1] == "seconds"
    return [line.split(",")[:-1] for line in lines[1:]]


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical weights and optimizer state in last.pt, identical metrics but for the time taken."""
    ca, cb = checkpoint.load(a / "last.pt"), checkpoint.load(b / "last.pt")
    assert ca["epoch"] == cb["epoch"]
    assert ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), f"{k} differs"
    for (ka, sa), (kb, sb) in zip(ca["optimizer"]["state"].items(), cb["optimizer"]["state"].items()):
        assert ka == kb and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in ca["history"]]
    assert strip == [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in cb["history"]]
    assert metrics_rows(a) == metrics_rows(b)
    assert len(metrics_rows(a)) == ca["epoch"]
    ba, bb = checkpoint.load(a / "best.pt"), checkpoint.load(b / "best.pt")
    assert ba["epoch"] == bb["epoch"]
    for k in ba["model"]:
        assert torch.equal(ba["model"][k], bb["model"][k]), f"best.pt {k} differs"


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data_root) -> Path:
    """The reference: 2 epochs without interruption."""
    d = tmp_path_factory.mktemp("straight")
    assert train(write_config(d / "cfg.yaml", data_root), d / "run") == 0
    return d / "run"


# --------------------------------------------------------------------------- exact resume


class _Crash(BaseException):
    """A stand-in for the process dying (not an Exception: nothing may catch it)."""


def test_resume_at_epoch_boundary_is_exact(tmp_path, data_root, straight_run, monkeypatch, capsys):
    out = tmp_path / "run"
    real_plot = engine.plot_curves

    def plot_then_die(path, history, *args):  # the last thing an epoch does: epoch 1's files are all written
        real_plot(path, history, *args)
        if len(history) == 1:
            raise _Crash

    monkeypatch.setattr(engine, "plot_curves", plot_then_die)
    with pytest.raises(_Crash):
        train(write_config(tmp_path / "cfg.yaml", data_root), out)
    monkeypatch.setattr(engine, "plot_curves", real_plot)
    assert checkpoint.load(out / "last.pt")["epoch"] == 1
    assert len(metrics_rows(out)) == 1
    capsys.readouterr()

    assert resume(out) == 0
    assert "resuming at epoch 2\n" in capsys.readouterr().out
    assert_same_run(out, straight_run)


def test_kill_right_after_last_checkpoint_keeps_best_checkpoint(tmp_path, data_root, straight_run, monkeypatch):
    """Dying just after epoch 1's last.pt is written: best.pt of epoch 1 must already be there."""
    out = tmp_path / "run"
    real_save = engine.checkpoint.save

    def save_then_die(obj, path):
        real_save(obj, path)
        if Path(path).name == "last.pt":
            raise _Crash

    monkeypatch.setattr(engine.checkpoint, "save", save_then_die)
    with pytest.raises(_Crash):
        train(write_config(tmp_path / "cfg.yaml", data_root), out)
    monkeypatch.undo()
    assert (out / "best.pt").is_file()  # epoch 1 is always the best so far
    assert not (out / "metrics.csv").exists()
    assert resume(out) == 0
    assert_same_run(out, straight_run)


def test_resume_after_sigint_mid_epoch_is_exact(tmp_path, data_root, straight_run, monkeypatch, capsys):
    out = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    signal_after_step(monkeypatch, STEPS + 2)  # epoch 2, step 2 of 4
    assert train(write_config(tmp_path / "cfg.yaml", data_root), out) == 130
    err = capsys.readouterr().err
    assert "stopped by signal SIGINT after step 2 of epoch 2" in err and "--resume" in err
    ckpt = checkpoint.load(out / "last.pt")
    assert (ckpt["epoch"], ckpt["skip_samples"]) == (1, 2 * 16)  # 2 steps of batch 16
    assert signal.getsignal(signal.SIGINT) is handler  # the trainer put the handler back
    monkeypatch.undo()

    assert resume(out) == 0
    assert "resuming at epoch 2, step 3" in capsys.readouterr().out
    assert_same_run(out, straight_run)


def test_sigterm_in_first_epoch_then_resume_is_exact(tmp_path, data_root, straight_run, monkeypatch, capsys):
    out = tmp_path / "run"
    signal_after_step(monkeypatch, 1, signal.SIGTERM)
    assert train(write_config(tmp_path / "cfg.yaml", data_root), out) == 130
    assert "SIGTERM after step 1 of epoch 1" in capsys.readouterr().err
    assert not (out / "metrics.csv").exists()  # no epoch finished
    monkeypatch.undo()
    assert resume(out) == 0
    assert_same_run(out, straight_run)


def test_per_image_transforms_do_not_depend_on_workers_or_resume(tmp_path, data_root, monkeypatch, capsys):
    """The DataLoader path with per-image transforms (data.device_augment=false): a run with 2 worker
    processes, interrupted in the middle of epoch 2 and resumed, ends as the straight run
    with none."""
    sets = ("data.random_erasing=0.5", "data.device_augment=false")
    straight = tmp_path / "straight"
    assert train(write_config(tmp_path / "a.yaml", data_root), straight, *sets) == 0
    out = tmp_path / "run"
    signal_after_step(monkeypatch, STEPS + 2)
    assert train(write_config(tmp_path / "b.yaml", data_root), out, *sets, "data.num_workers=2") == 130
    monkeypatch.undo()
    assert resume(out) == 0
    assert "resuming at epoch 2, step 3" in capsys.readouterr().out
    assert_same_run(out, straight)


def test_resume_with_gradient_accumulation_is_exact(tmp_path, data_root, monkeypatch):
    """An interruption between the two batches of an accumulated step must not lose the first one's gradient."""
    cfg = write_config(tmp_path / "cfg.yaml", data_root, accum_steps=2)
    assert train(cfg, tmp_path / "straight") == 0
    signal_after_step(monkeypatch, STEPS + 1)  # epoch 2, after the first half of its first optimizer step
    assert train(cfg, tmp_path / "cut") == 130
    monkeypatch.undo()
    assert resume(tmp_path / "cut") == 0
    assert_same_run(tmp_path / "cut", tmp_path / "straight")


# --------------------------------------------------------------------------- atomic checkpoints


_BIG_WRITER = textwrap.dedent("""
    import sys, torch
    from vitlab.run import checkpoint
    big = {"model": {"w": torch.ones(64 * 1024 * 1024)}, "tag": "new"}  # 256 MB
    checkpoint.save(big, sys.argv[1])
""")


def test_sigkill_during_checkpoint_write_keeps_the_old_one(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save({"model": {"w": torch.arange(5.0)}, "tag": "old"}, path)
    old_bytes = path.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", _BIG_WRITER, str(path)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        tmp = None
        while tmp is None:  # the temporary file exists and has started to fill
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the writer never started"
            tmp = next((p for p in tmp_path.glob(".last.pt.*.tmp") if p.stat().st_size > 0), None)
            time.sleep(0.001)
        child.send_signal(signal.SIGSTOP)  # freeze it mid-write, to look, then kill it
        assert child.poll() is None
        assert tmp.exists(), "the write ended before the kill"
        assert path.read_bytes() == old_bytes
    finally:
        child.kill()
        child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    ckpt = checkpoint.load(path)
    assert ckpt["tag"] == "old" and torch.equal(ckpt["model"]["w"], torch.arange(5.0))
    checkpoint.save({"model": {}, "tag": "next"}, path)  # the leftover temp file is in nobody's way
    assert checkpoint.load(path)["tag"] == "next"


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save({"model": {"a": torch.ones(2)}}, path)

    def half_then_fail(f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    with pytest.raises(UserError, match="cannot write .*c.pt: disk full"):
        files.atomic_write(path, half_then_fail)
    assert torch.equal(checkpoint.load(path)["model"]["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_checkpoint_load_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(UserError, match="cannot read checkpoint"):
        checkpoint.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a vitlab checkpoint"):
        checkpoint.load(tmp_path / "other.pt")


def test_run_files_get_the_usual_permissions(straight_run):
    mode = (straight_run / "config.yaml").stat().st_mode & 0o777
    for name in ("last.pt", "best.pt", "metrics.csv", "curves.png"):
        assert (straight_run / name).stat().st_mode & 0o777 == mode, name


# --------------------------------------------------------------------------- schedules


def _lrs(schedule: str, epochs=3, steps_per_epoch=5, **kw) -> list[float]:
    """The learning rate of every optimizer step of a run, as the optimizer sees it."""
    tc = TrainConfig(epochs=epochs, lr=0.1, schedule=schedule, **kw)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=tc.lr)
    sched = build_scheduler(opt, tc, steps_per_epoch)
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_warmup_reaches_peak_and_ends_at_min_lr():
    lrs = _lrs("cosine", warmup_epochs=1, min_lr=1e-3)  # 15 steps, warmup 5
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert lrs[4] == pytest.approx(0.1)  # the peak at the warmup's end
    assert lrs[-1] == pytest.approx(1e-3)  # min_lr at the last step
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lr_factor(0, total=21, warmup=0, schedule="cosine", min_ratio=0.01) == 1.0
    # half way through the decay: the mean of peak and floor
    assert lr_factor(10, total=21, warmup=0, schedule="cosine", min_ratio=0.01) == pytest.approx(0.505)


def test_linear_schedule_ends_at_zero():
    lrs = _lrs("linear", warmup_epochs=0.4)  # warmup 2 steps
    assert lrs[:2] == pytest.approx([0.05, 0.1])
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert lrs[2:] == pytest.approx([0.1 * (1 - t / 12) for t in range(13)])


def test_step_and_constant_schedules():
    lrs = _lrs("step", epochs=4, steps_per_epoch=3, step_epochs=1, step_gamma=0.5)
    assert lrs == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 3 + [0.0125] * 3)
    assert lr_factor(59, total=100, warmup=0, schedule="step", steps_per_epoch=2, step_epochs=30) == 1.0
    assert lr_factor(60, total=100, warmup=0, schedule="step", steps_per_epoch=2, step_epochs=30) == \
        pytest.approx(0.1)
    assert _lrs("constant") == pytest.approx([0.1] * 15)
    with pytest.raises(UserError, match="unknown train.schedule 'cosin'"):
        _lrs("cosin")


def test_trainer_schedule_follows_optimizer_steps(tmp_path, data_root, monkeypatch):
    """With accumulation the schedule counts optimizer steps: the last one runs at min_lr."""
    cfg = cfgmod.load(write_config(tmp_path / "cfg.yaml", data_root, accum_steps=3, warmup_epochs=0))
    t = engine.Trainer(cfg, tmp_path / "run")
    assert t.steps_per_epoch == 2  # 4 batches, 3 per step: 2 steps
    seen = []  # the lr of each optimizer step: the scheduler steps right after it
    real_sched_step = type(t.scheduler).step

    def sched_step(self, *args):
        seen.append(t.optimizer.param_groups[0]["lr"])
        return real_sched_step(self, *args)

    monkeypatch.setattr(type(t.scheduler), "step", sched_step)
    t.fit()
    assert len(seen) == 4
    assert seen[0] == pytest.approx(3e-3) and seen[-1] == pytest.approx(1e-5)


# --------------------------------------------------------------------------- weight decay, label smoothing


def test_no_weight_decay_for_biases_norms_pos_embed_cls_token():
    model = create_model("vit", **{k: v for k, v in TINY_MODEL.items() if k != "name"}, num_classes=10)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    dn, nn_ = {names[id(p)] for p in decay["params"]}, {names[id(p)] for p in no_decay["params"]}
    assert dn == {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
                  "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight", "head.weight"}
    assert {"pos_embed", "cls_token", "norm.weight", "norm.bias", "head.bias",
            "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"} <= nn_
    assert dn | nn_ == set(names.values()) and not dn & nn_
    opt = build_optimizer(model, TrainConfig(weight_decay=0.05, optimizer="adamw"))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    with pytest.raises(UserError, match="unknown train.optimizer"):
        build_optimizer(model, TrainConfig(optimizer="lamb"))


def test_bf16_autocast_on_the_cpu(tmp_path, data_root, monkeypatch):
    """train.amp=bf16 runs the forward in bfloat16 (on the CPU too) while the weights, the
    optimizer state and the checkpoints stay float32; fp16 is refused off CUDA."""
    seen = []
    build = engine.build_model

    def build_with_probe(cfg, info, **kw):
        model = build(cfg, info, **kw)
        model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        return model

    monkeypatch.setattr(engine, "build_model", build_with_probe)
    out = tmp_path / "run"
    assert train(write_config(tmp_path / "cfg.yaml", data_root, epochs=1), out, "train.amp=bf16") == 0
    assert seen and set(seen) == {torch.bfloat16}
    ckpt = checkpoint.load(out / "last.pt")
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
    row = ckpt["history"][0]
    assert math.isfinite(row["train_loss"]) and 0.0 <= row["val_acc"] <= 1.0
    assert train(write_config(tmp_path / "cfg.yaml", data_root), tmp_path / "fp16", "train.amp=fp16") == 2
    assert not (tmp_path / "fp16").exists()


class _FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, x):
        return self.logits


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_smoothing_loss_in_the_training_step(tmp_path, data_root, smoothing):
    cfg = cfgmod.load(write_config(tmp_path / "cfg.yaml", data_root, label_smoothing=smoothing))
    t = engine.Trainer(cfg, tmp_path / "run")
    logits = torch.zeros(2, 10)
    logits[:, 0] = 2.0  # both predict class 0
    t.net = t.eager_net = _FixedLogits(logits)
    y = torch.tensor([0, 1])
    loss_sum, correct = t._step(torch.zeros(2, 1, 28, 28), y, False, 1).tolist()  # the images are counted on the host
    lse = math.log(math.exp(2) + 9)
    # smoothed target: 1 - eps on the label plus eps/10 on every class; -log p_k = lse - logit_k
    expect = [(1 - smoothing) * (lse - 2) + smoothing * (lse - 0.2),
              (1 - smoothing) * lse + smoothing * (lse - 0.2)]
    assert loss_sum == pytest.approx(sum(expect), rel=1e-6)
    assert correct == 1
    assert loss_sum / 2 == pytest.approx(F.cross_entropy(logits, y, label_smoothing=smoothing).item(), rel=1e-6)


# --------------------------------------------------------------------------- non-finite loss


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_root, monkeypatch, capsys):
    out = tmp_path / "run"
    real_step, calls = engine.Trainer._step, [0]

    def poisoned(self, x, *args):  # from epoch 2 on, the inputs hold an infinity
        calls[0] += 1
        if calls[0] > STEPS:
            x = x.clone()
            x[:, :, 0, 0] = math.inf
        return real_step(self, x, *args)

    monkeypatch.setattr(engine.Trainer, "_step", poisoned)
    assert train(write_config(tmp_path / "cfg.yaml", data_root), out) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(r"training stopped: loss became (nan|inf) at epoch 2, step 1;", err)
    assert f"last good checkpoint is {out / 'last.pt'}" in err
    last, best = checkpoint.load(out / "last.pt"), checkpoint.load(out / "best.pt")
    assert last["epoch"] == 1 and len(metrics_rows(out)) == 1
    for k, v in last["model"].items():
        assert torch.isfinite(v).all() and torch.equal(v, best["model"][k])


def test_huge_lr_stops_in_first_epoch_without_claiming_a_checkpoint(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    assert train(write_config(tmp_path / "cfg.yaml", data_root, warmup_epochs=0), out, "train.lr=1e30") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loss became" in err and "epoch 1" in err
    assert "no checkpoint was written" in err and "lower train.lr" in err
    assert not (out / "last.pt").exists()


# --------------------------------------------------------------------------- speed switches


def test_reading_the_loss_every_few_steps_changes_nothing(tmp_path, data_root, straight_run):
    """The sums stay on the device between reads: reading them every 3 steps gives the same run."""
    out = tmp_path / "run"
    assert train(write_config(tmp_path / "cfg.yaml", data_root, check_every=3), out) == 0
    assert_same_run(out, straight_run)


def test_device_defaults_on_the_cpu(tmp_path, data_root):
    t = engine.Trainer(cfgmod.load(write_config(tmp_path / "cfg.yaml", data_root)), tmp_path / "run")
    assert t.settings == {"amp": "none", "deterministic": True, "tf32": False, "fused": False,
                          "channels_last": False, "check_every": 1}
    t = engine.Trainer(cfgmod.load(write_config(tmp_path / "cfg.yaml", data_root, amp="bf16", deterministic=False,
                                                check_every=5)), tmp_path / "run2")
    assert (t.settings["amp"], t.settings["deterministic"], t.settings["check_every"]) == ("bf16", False, 5)
    torch.use_deterministic_algorithms(True, warn_only=True)


def test_channels_last_resnet(tmp_path, data_root):
    """train.channels_last: a ResNet's weights and inputs in channels-last memory; the same first
    training step (loss and gradients) as the default layout, then a whole epoch."""
    grads, losses = {}, {}
    for name, cl in (("plain", False), ("cl", True)):
        cfg = cfgmod.load(write_config(tmp_path / f"{name}.yaml", data_root, epochs=1, channels_last=cl))
        cfg.model.name, cfg.model.args = "resnet18", {"stem": "cifar"}
        t = engine.Trainer(cfg, tmp_path / name)
        assert (t.memory_format == torch.channels_last) == cl
        assert t.model.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last) == cl
        x, y = next(iter(t._batches(0, train=True)))
        losses[name] = t._step(x, y, False, 1)[0].item()
        grads[name] = {n: p.grad.clone() for n, p in t.model.named_parameters()}
        t.optimizer.zero_grad()
        t.fit()
        assert t.history[0]["train_images"] == 64
    assert losses["cl"] == pytest.approx(losses["plain"], rel=1e-5)
    # another summation order: batch norm in training mode over a deep random network and 4x4 maps
    # magnifies it to a few per cent of some entries; a layout mix-up would change the gradients entirely
    for n, g in grads["plain"].items():
        assert F.cosine_similarity(grads["cl"][n].flatten(), g.flatten(), dim=0) > 0.99, n


def test_torch_compile_on_the_cpu(tmp_path, data_root):
    """train.compile: the compiled model trains to the same loss as the eager one (within float noise)."""
    rows = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        cfg = cfgmod.load(write_config(tmp_path / f"{name}.yaml", data_root, epochs=1, compile=compiled))
        cfg.model.args["dropout"] = 0.0  # compiled dropout draws its masks from another generator
        t = engine.Trainer(cfg, tmp_path / name)
        t.fit()
        rows[name] = t.history[0]
    assert rows["compiled"]["train_loss"] == pytest.approx(rows["eager"]["train_loss"], rel=1e-4)
    assert rows["compiled"]["val_acc"] == rows["eager"]["val_acc"]


def test_time_budget_stops_saves_and_resumes_exactly(tmp_path, data_root, straight_run, capsys):
    """train.max_seconds: the run stops at the first check past the budget (one step here), with
    last.pt holding its place; more budget on --resume continues it to the same end as a run that
    never stopped."""
    out = tmp_path / "run"
    assert train(write_config(tmp_path / "cfg.yaml", data_root), out, "train.max_seconds=1e-9") == 0
    text = capsys.readouterr().out
    assert "stopped: the time budget train.max_seconds=1e-09 was reached after step 1 of epoch 1" in text
    assert "validation top-1 there" in text
    ckpt = checkpoint.load(out / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["skip_samples"] == 16 and ckpt["history"] == []
    assert not (out / "metrics.csv").exists()

    assert resume(out) == 0  # the same budget: nothing more is trained
    assert "has used its time budget" in capsys.readouterr().out
    assert checkpoint.load(out / "last.pt")["skip_samples"] == 16

    assert resume(out, "train.max_seconds=100000") == 0
    assert_same_run(out, straight_run)


def test_a_warmup_longer_than_the_run_is_clipped_with_a_warning(tmp_path, data_root, capsys):
    """A preset's warmup kept in a shortened run would never reach the peak rate."""
    out = tmp_path / "run"
    assert train(write_config(tmp_path / "cfg.yaml", data_root, epochs=2, warmup_epochs=5), out) == 0
    text = capsys.readouterr().out
    assert "warning: the warmup (20 steps) is not shorter than the run (8 steps): clipped to 1 step, a tenth of the run" in text
    # the rate of epoch 1's last step (step 3): on the cosine after a 1-step warmup, not 4/20 of the peak
    want = 3e-3 * lr_factor(3, total=8, warmup=1, schedule="cosine", min_ratio=1e-5 / 3e-3)
    assert checkpoint.load(out / "last.pt")["history"][0]["lr"] == pytest.approx(want)
    assert want > 2e-3
