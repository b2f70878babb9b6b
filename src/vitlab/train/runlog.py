"""Run logging: metrics.csv, curves.png, TensorBoard, and optional external
loggers (Weights & Biases, MLflow, Neptune) when their package is installed."""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write, write_bytes

COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
_EXTERNAL = {"wandb": "wandb", "mlflow": "mlflow", "neptune": "neptune"}


def write_metrics(path: Path, history: list[dict]) -> None:
    """Rewrite metrics.csv from the whole history (atomic, so a resumed run
    never sees a torn file)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in COLUMNS})
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def plot_curves(path: Path, history: list[dict], objective: str = "classification") -> None:
    from ..plotting import new_figure, png_bytes

    ep = [r["epoch"] for r in history]
    fig = new_figure(figsize=(10, 4))
    a, b = fig.subplots(1, 2)
    a.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
    a.plot(ep, [r["val_loss"] for r in history], "o-", label="val")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    b.plot(ep, [100 * r["train_acc"] for r in history], "o-", label="train")
    b.plot(ep, [100 * r["val_acc"] for r in history], "o-", label="val")
    b.set(xlabel="epoch", ylabel="accuracy (%)",
          title="masked patch prediction: accuracy at corrupted patches" if objective == "mpp" else "top-1 accuracy")
    a.set(title="masked patch prediction loss" if objective == "mpp" else "loss")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    write_bytes(path, png_bytes(fig))


def check_loggers(names: list[str]) -> None:
    """The package of each logger is installed (the names were checked with the config)."""
    for n in names:
        if n in _EXTERNAL and importlib.util.find_spec(_EXTERNAL[n]) is None:
            raise UserError(f"train.loggers names {n!r} but its package is not installed: pip install {n}")


class Loggers:
    """Fan-out of scalar logging to TensorBoard and the external loggers."""

    def __init__(self, names: list[str], out_dir: Path, config: dict, run_name: str,
                 purge_step: int | None = None):
        """``purge_step``: a resumed run's first step (epoch) to log again; TensorBoard
        hides the events of that step and later ones written before the interruption, so
        each step shows once."""
        check_loggers(names)
        self.tb = self.wandb = self.mlflow = self.neptune = None
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out_dir), purge_step=purge_step)
        if "wandb" in names:
            import wandb
            self.wandb = wandb.init(project="vitlab", name=run_name, config=config, dir=str(out_dir),
                                    resume="allow", id=run_name)
        if "mlflow" in names:
            import mlflow
            mlflow.start_run(run_name=run_name)
            mlflow.log_params({f"{s}.{k}": v for s, sec in config.items() for k, v in sec.items()})
            self.mlflow = mlflow
        if "neptune" in names:
            import neptune
            self.neptune = neptune.init_run(name=run_name)
            self.neptune["config"] = config

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)
        if self.mlflow is not None:
            self.mlflow.log_metrics(values, step=step)
        if self.neptune is not None:
            for k, v in values.items():
                self.neptune[k].append(v, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            self.mlflow.end_run()
        if self.neptune is not None:
            self.neptune.stop()
