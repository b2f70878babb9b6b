"""The optional external loggers (Weights & Biases, MLflow, Neptune), driven
through a real training run with stand-ins for their packages that record the
calls vitlab makes; and the errors for unknown or missing loggers."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import pytest

from tiny import make_fashion, write_config
from vitlab import cli

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


def fake_module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # so that importlib.util.find_spec sees it
    mod.__dict__.update(attrs)
    return mod


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []


def install_fakes(monkeypatch) -> Recorder:
    rec = Recorder()

    class WandbRun:
        def log(self, values, step):
            rec.calls.append(("wandb.log", dict(values), step))

        def finish(self):
            rec.calls.append(("wandb.finish",))

    def wandb_init(**kw):
        rec.calls.append(("wandb.init", kw))
        return WandbRun()

    class Series:
        def __init__(self, key):
            self.key = key

        def append(self, value, step):
            rec.calls.append(("neptune.append", self.key, value, step))

    class NeptuneRun:
        def __setitem__(self, key, value):
            rec.calls.append(("neptune.set", key, value))

        def __getitem__(self, key):
            return Series(key)

        def stop(self):
            rec.calls.append(("neptune.stop",))

    def neptune_init_run(**kw):
        rec.calls.append(("neptune.init_run", kw))
        return NeptuneRun()

    mods = {
        "wandb": fake_module("wandb", init=wandb_init),
        "mlflow": fake_module(
            "mlflow",
            start_run=lambda run_name: rec.calls.append(("mlflow.start_run", run_name)),
            log_params=lambda params: rec.calls.append(("mlflow.log_params", dict(params))),
            log_metrics=lambda values, step: rec.calls.append(("mlflow.log_metrics", dict(values), step)),
            end_run=lambda: rec.calls.append(("mlflow.end_run",))),
        "neptune": fake_module("neptune", init_run=neptune_init_run),
    }
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return rec


def test_external_loggers_get_config_and_every_epoch(tmp_path, monkeypatch):
    rec = install_fakes(monkeypatch)
    make_fashion(tmp_path / "data")
    config = write_config(tmp_path / "c.yaml", {"name": "fashion_mnist", "root": str(tmp_path / "data")},
                          loggers=["tensorboard", "wandb", "mlflow", "neptune"])
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--out", str(out)]) == 0
    assert list(out.glob("events.out.tfevents.*"))  # TensorBoard alongside

    kinds = [c[0] for c in rec.calls]
    for start, end in (("wandb.init", "wandb.finish"), ("mlflow.start_run", "mlflow.end_run"),
                       ("neptune.init_run", "neptune.stop")):
        assert kinds.count(start) == kinds.count(end) == 1 and kinds.index(start) < kinds.index(end)

    init = next(c[1] for c in rec.calls if c[0] == "wandb.init")
    assert init["config"]["train"]["epochs"] == 2 and init["config"]["model"]["embed_dim"] == 32
    assert init["dir"] == str(out)
    params = next(c[1] for c in rec.calls if c[0] == "mlflow.log_params")
    assert params["train.batch_size"] == 16 and params["data.name"] == "fashion_mnist"
    assert ("neptune.set", "config", init["config"]) in rec.calls

    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    wandb_logs = [c for c in rec.calls if c[0] == "wandb.log"]
    mlflow_logs = [c for c in rec.calls if c[0] == "mlflow.log_metrics"]
    assert [c[2] for c in wandb_logs] == [c[2] for c in mlflow_logs] == [1, 2]
    for (_, values, epoch), row in zip(wandb_logs, rows):
        expected = dict(zip(header, row))
        assert set(values) >= {"train_loss", "train_acc", "val_loss", "val_acc", "lr"}
        for key in ("train_loss", "val_acc", "lr"):
            assert values[key] == pytest.approx(float(expected[key]), rel=1e-5), key
    val_acc = [(c[2], c[3]) for c in rec.calls if c[0] == "neptune.append" and c[1] == "val_acc"]
    assert [step for _, step in val_acc] == [1, 2]
    assert [v for v, _ in val_acc] == [c[1]["val_acc"] for c in wandb_logs]


@pytest.mark.parametrize("logger, message", [
    ("comet", "unknown logger in train.loggers 'comet'; choose tensorboard, wandb, mlflow, neptune"),
    ("wandb", "train.loggers names 'wandb' but its package is not installed: pip install wandb"),
])
def test_unknown_or_missing_logger_exits_2_before_the_run(tmp_path, monkeypatch, capsys, logger, message):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed, even where it is
    find_spec = importlib.util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    make_fashion(tmp_path / "data")
    config = write_config(tmp_path / "c.yaml", {"name": "fashion_mnist", "root": str(tmp_path / "data")}, loggers=[logger])
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not out.exists()
