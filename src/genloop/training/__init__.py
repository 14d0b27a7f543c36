"""The one training engine (devices, precision, optimizers, EMA, checkpoints, logging) for every family."""

from .config import TrainConfig
from .engine import FitResult, Trainer

__all__ = ["FitResult", "TrainConfig", "Trainer"]
