"""DDIM (Song, Meng & Ermon 2020): a family of samplers for the same trained model, indexed by η.

``x_prev = sqrt(ā_prev)·x̂0 + sqrt(1 − ā_prev − σ²)·ε̂ + σ·z`` with
``σ = η·sqrt((1 − ā_prev)/(1 − ā_t))·sqrt(1 − ā_t/ā_prev)``. η = 0 is deterministic (an ODE-like
sampler that works well in 20-50 steps); η = 1 is exactly DDPM's ancestral step on the same timesteps.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..errors import ConfigError
from .base import GeneratorArg, NoiseScheduleConfig, Scheduler, randn


class DDIMScheduler(Scheduler):
    name: ClassVar[str] = "ddim"

    def __init__(self, config: NoiseScheduleConfig, eta: float = 0.0) -> None:
        if not 0 <= eta <= 1:
            raise ConfigError(f"DDIM eta must be in [0, 1] (0: deterministic, 1: DDPM), got {eta}")
        super().__init__(config)
        self.eta = float(eta)

    def step(
        self, model_output: torch.Tensor, t: int, sample: torch.Tensor, generator: GeneratorArg = None
    ) -> torch.Tensor:
        t = int(t)
        prev = self.previous_timestep(t)
        abar_t, abar_prev = self.alpha_bar(t), self.alpha_bar(prev)

        x0 = self.predict_x0(model_output, t, sample)
        if prev < 0:  # the jump to clean data: ā_prev = 1, σ = 0, the update is x̂0 itself
            return x0.to(sample.dtype)
        # ε consistent with the (possibly clipped) x0, so both terms describe the same prediction.
        eps = self.predict_epsilon(x0, t, sample)
        sigma = self.eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
        direction = math.sqrt(max(1 - abar_prev - sigma**2, 0.0))
        x_prev = math.sqrt(abar_prev) * x0 + direction * eps
        if sigma > 0:
            x_prev = x_prev + sigma * randn(sample.shape, generator, sample.device, x_prev.dtype)
        return x_prev.to(sample.dtype)
