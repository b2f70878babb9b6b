"""Training: the engine (the Trainer and its loop), building the model of a config,
optimizers and schedules, freezing, run logs and the model card."""

from ..config import Config, load as load_config
from .engine import Trainer

__all__ = ["Config", "Trainer", "load_config"]
