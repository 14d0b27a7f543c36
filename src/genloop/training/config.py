"""The engine's settings: the same for every model family."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from ..evaluation import catalog


@dataclass
class DPConfig:
    """Differentially private training (DP-SGD through Opacus; see :mod:`genloop.training.dp`)."""

    epsilon: float | None = None  # the privacy budget to spend by train.steps (None, and no noise_multiplier: DP off)
    delta: float | None = None  # None: 1e-5, or 1/(10 n) where that is smaller; must be below 1/n
    max_grad_norm: float = 1.0  # each example's gradient is clipped to this L2 norm
    noise_multiplier: float | None = None  # set instead of epsilon: the noise, and epsilon follows from it
    accountant: Literal["rdp", "prv"] = "rdp"  # Opacus's privacy accountant
    # each step takes each example independently with probability batch_size / n (a batch of varying size), the
    # sampling the accountant assumes; false: GenLoop's shuffled fixed-size batches (epsilon then approximate)
    poisson: bool = True

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None or self.noise_multiplier is not None

    def __post_init__(self) -> None:
        if self.epsilon is not None and self.noise_multiplier is not None:
            raise ConfigError("set train.dp.epsilon or train.dp.noise_multiplier, not both: one follows from the other")
        if self.epsilon is not None and not (0 < self.epsilon < math.inf):
            raise ConfigError(
                f"train.dp.epsilon must be a finite number > 0, got {self.epsilon} (leave it unset to train without DP)"
            )
        if self.noise_multiplier is not None and not (0 <= self.noise_multiplier < math.inf):
            raise ConfigError(f"train.dp.noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ConfigError(f"train.dp.delta must be in (0, 1), got {self.delta}")
        if not 0 < self.max_grad_norm < math.inf:
            raise ConfigError(f"train.dp.max_grad_norm must be > 0, got {self.max_grad_norm}")


@dataclass
class TrainConfig:
    steps: int | None = 2000  # stop after this many steps (None: only the time budget stops training)
    time_budget: float | None = None  # seconds of training in this session (also stops training)
    batch_size: int = 64
    grad_accum: int = 1  # micro-batches per optimizer step (the effective batch is batch_size * grad_accum)
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam(W) betas
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "linear"] = "constant"  # decay after warm-up
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine/linear decay ends at lr * min_lr_ratio
    grad_clip: float | None = None  # clip each group's gradient norm to this
    ema_decay: float | None = 0.999  # EMA of the inference weights; None turns it off
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 where the hardware has it
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    threads: int | None = None  # torch CPU threads (None: torch's default)
    compile: bool = False  # torch.compile each of the system's networks for training (in place: same checkpoints)
    seed: int = 0
    log_every: int = 10  # steps between metric lines (losses are averaged over them)
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    checkpoint_seconds: float = 300.0  # also checkpoint after this much time since the last one
    keep_checkpoints: int = 1  # numbered checkpoints kept beside last.safetensors (0 keeps none)
    sample_every: int = 500  # steps between sample grids in samples/ (0: only at the end)
    tensorboard: bool = True  # write TensorBoard event files beside metrics.jsonl
    eval_every: int = 0  # steps between quick evaluations during training (0: none)
    eval_samples: int = 500  # samples per quick evaluation (a cheap, noisier FID than `genloop eval`)
    eval_time_share: float = 0.25  # at most this share of training time goes to quick evaluations
    select_metric: str = "fid"  # quick-eval metric that picks best.safetensors (fid, kid, precision, val_loss, ...)
    eval_tokens: int = 65536  # text: validation tokens scored per quick evaluation (0: the whole split)
    early_stop: int = 0  # stop after this many quick evaluations in a row without a new best (0: never)
    dp: DPConfig = field(default_factory=DPConfig)  # differential privacy (off unless epsilon or noise_multiplier)

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"train.steps must be >= 1, got {self.steps}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"train.time_budget must be > 0 seconds, got {self.time_budget}")
        if self.steps is None and self.time_budget is None:
            raise ConfigError("set train.steps or train.time_budget (or both): training needs an end")
        if self.grad_accum < 1:
            raise ConfigError(f"train.grad_accum must be >= 1, got {self.grad_accum}")
        if self.eval_tokens < 0:
            raise ConfigError(f"train.eval_tokens must be >= 0, got {self.eval_tokens}")
        if self.early_stop < 0:
            raise ConfigError(f"train.early_stop must be >= 0, got {self.early_stop}")
        if self.early_stop and not self.eval_every:
            raise ConfigError("train.early_stop needs quick evaluations: set train.eval_every too")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {self.betas}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        if self.eval_every < 0:
            raise ConfigError(f"train.eval_every must be >= 0, got {self.eval_every}")
        if self.eval_samples < 10:
            raise ConfigError(f"train.eval_samples must be >= 10, got {self.eval_samples}")
        if not 0 < self.eval_time_share <= 1:
            raise ConfigError(f"train.eval_time_share must be in (0, 1], got {self.eval_time_share}")
        if self.select_metric not in catalog.selectable():
            raise ConfigError(
                f"unknown train.select_metric '{self.select_metric}'; valid: {', '.join(catalog.selectable())}"
            )
        for name in ("log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.dp.enabled:
            self._check_dp()

    def _check_dp(self) -> None:
        """The combinations DP-SGD here does not support, each refused with one line."""
        if self.dp.epsilon is not None and self.steps is None:
            raise ConfigError(
                "train.dp.epsilon needs train.steps: the noise is computed for a planned number of steps "
                "(or set train.dp.noise_multiplier to train on a time budget alone)"
            )
        if self.precision not in ("auto", "fp32"):
            raise ConfigError(f"train.dp trains in fp32: set train.precision=fp32 (or auto), not {self.precision}")
        if self.grad_accum != 1:
            raise ConfigError("train.dp does not support train.grad_accum > 1 yet: raise train.batch_size instead")
        if self.grad_clip is not None:
            raise ConfigError("train.dp clips each example's gradient: set train.dp.max_grad_norm, not train.grad_clip")
        if self.compile:
            raise ConfigError("train.dp does not support train.compile (Opacus's per-sample hooks)")
