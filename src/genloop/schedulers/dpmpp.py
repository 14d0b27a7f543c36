"""DPM-Solver++ 2M (Lu et al. 2022, "DPM-Solver++", Algorithm 2): good samples in 10-20 steps.

The sampling ODE is solved in ``λ = log(α/σ)`` (half the log signal-to-noise ratio, with α = sqrt(ā),
σ = sqrt(1 − ā)) using the model's *data* prediction x̂0, which stays bounded where an ε-prediction
would be amplified. The first-order update is exactly DDIM with η = 0:
``x_prev = (σ_prev/σ_t)·x_t − α_prev·(e^{−h} − 1)·D`` with ``h = λ_prev − λ_t`` and ``D = x̂0``.
The "2M" (second-order multistep) variant reuses the previous step's x̂0 to extrapolate ``D`` linearly
in λ, which costs no extra model call. It is deterministic.

The first step has no history, so it is first-order; the final jump to clean data (σ = 0, λ = ∞) is
first-order too, i.e. it returns the x0 estimate.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from .base import GeneratorArg, NoiseScheduleConfig, Scheduler


class DPMSolverPP2MScheduler(Scheduler):
    name: ClassVar[str] = "dpmpp-2m"

    def __init__(self, config: NoiseScheduleConfig) -> None:
        super().__init__(config)

    def reset(self) -> None:
        self._last_x0: torch.Tensor | None = None  # x̂0 at the previously visited timestep
        self._last_lambda = 0.0  # λ there

    def _lambda(self, abar: float) -> float:
        return 0.5 * (math.log(abar) - math.log1p(-abar))

    def step(
        self, model_output: torch.Tensor, t: int, sample: torch.Tensor, generator: GeneratorArg = None
    ) -> torch.Tensor:
        t = int(t)
        prev = self.previous_timestep(t)
        if t == int(self.timesteps[0]):  # a new sampling run: never reuse the last run's history
            self.reset()
        x0 = self.predict_x0(model_output, t, sample)
        if prev < 0:
            self.reset()
            return x0.to(sample.dtype)

        abar_t, abar_prev = self.alpha_bar(t), self.alpha_bar(prev)
        lambda_t, lambda_prev = self._lambda(abar_t), self._lambda(abar_prev)
        h = lambda_prev - lambda_t

        d = x0
        if self._last_x0 is not None:
            r = (lambda_t - self._last_lambda) / h  # ratio of the last step size to this one
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * self._last_x0
        self._last_x0, self._last_lambda = x0, lambda_t

        sigma_ratio = math.sqrt((1 - abar_prev) / (1 - abar_t))
        x_prev = sigma_ratio * sample.to(x0.dtype) - math.sqrt(abar_prev) * math.expm1(-h) * d
        return x_prev.to(sample.dtype)
