"""Tiny datasets in their real file formats, a tiny ViT, and the config and CLI helpers shared by
the training, CLI, model and compare tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from data_helpers import write_idx
from vitlab import cli

TINY_MODEL = {"name": "vit", "img_size": 28, "patch_size": 7, "embed_dim": 32, "depth": 1, "num_heads": 2,
              "mlp_dim": 64}
TRAIN = {"epochs": 2, "batch_size": 16, "threads": 1, "progress": False, "lr": 3e-3, "warmup_epochs": 0.5,
         "device": "cpu"}  # the tests choose their device: the CPU, deterministic, also where a GPU is


def n_params(model) -> int:
    """The number of parameters (elements) of a model."""
    return sum(p.numel() for p in model.parameters())


def make_fashion(root: Path, n_train: int = 64, n_test: int = 32) -> dict:
    """A learnable Fashion-MNIST in the official gzipped IDX files: class c is a bright band at
    rows 2c..2c+7. Returns {"train": (images, labels), "t10k": (images, labels)}."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c:2 * c + 8] += 150
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = images.astype(np.uint8), labels
    return arrays


def write_config(path: Path, data: dict, model: dict | None = None, **train) -> Path:
    path.write_text(yaml.safe_dump({"model": model or TINY_MODEL, "data": data, "train": {**TRAIN, **train}}))
    return path


def fails(capsys, *argv, quiet: bool = True) -> str:
    """Run a command that must fail with exit code 2 and one line on stderr (and with ``quiet``,
    nothing on stdout); return that line."""
    assert cli.main(list(map(str, argv))) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err
    assert err.startswith("vitlab: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    if quiet:
        assert captured.out == ""
    return err.strip()


def signal_after_step(monkeypatch, n: int, sig=None) -> None:
    """Deliver a real signal (SIGINT by default) to this process right after the trainer's n-th
    training batch (1-based)."""
    import os
    import signal

    import vitlab.train.engine as engine

    real_step, calls = engine.Trainer._step, [0]

    def step(self, *args):
        result = real_step(self, *args)
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGINT if sig is None else sig)
        return result

    monkeypatch.setattr(engine.Trainer, "_step", step)
