"""Training: config schema, engine, optimizers and schedules, checkpoints, logging."""

from .config import Config, load as load_config
from .engine import Trainer

__all__ = ["Config", "Trainer", "load_config"]
