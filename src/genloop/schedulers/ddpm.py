"""DDPM ancestral sampling (Ho et al. 2020), with timestep respacing for fewer steps.

Each step samples ``x_prev ~ q(x_prev | x_t, x0 = x̂0)``, the Gaussian posterior of the forward process
given the model's x0 estimate, with the posterior variance β̃ ("fixed_small" in the paper's terms).

With fewer inference steps than training steps the visited timesteps define a shorter forward process
of their own (Nichol & Dhariwal 2021, "respacing"): its betas are ``1 − ā_t / ā_prev`` between
consecutive visited timesteps, so the same formulas apply unchanged.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from .base import GeneratorArg, NoiseScheduleConfig, Scheduler, randn


class DDPMScheduler(Scheduler):
    name: ClassVar[str] = "ddpm"

    def __init__(self, config: NoiseScheduleConfig) -> None:
        super().__init__(config)

    def step(
        self, model_output: torch.Tensor, t: int, sample: torch.Tensor, generator: GeneratorArg = None
    ) -> torch.Tensor:
        t = int(t)
        prev = self.previous_timestep(t)
        abar_t, abar_prev = self.alpha_bar(t), self.alpha_bar(prev)
        alpha = abar_t / abar_prev  # of the (respaced) step t -> prev
        beta = 1 - alpha

        x0 = self.predict_x0(model_output, t, sample)
        # Posterior mean: a weighted mix of the x0 estimate and the current sample (Ho et al. eq. 7).
        mean = (math.sqrt(abar_prev) * beta / (1 - abar_t)) * x0 + (
            math.sqrt(alpha) * (1 - abar_prev) / (1 - abar_t)
        ) * sample.to(x0.dtype)
        if prev >= 0:  # at the last step the posterior variance is 0: return the x0 estimate itself
            variance = (1 - abar_prev) / (1 - abar_t) * beta
            mean = mean + math.sqrt(variance) * randn(sample.shape, generator, sample.device, mean.dtype)
        return mean.to(sample.dtype)
