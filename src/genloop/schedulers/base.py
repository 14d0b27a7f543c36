"""What every noise scheduler shares: the forward process, the training target and the sampler contract.

The forward (noising) process is fixed at training time by :class:`NoiseScheduleConfig`:
``x_t = sqrt(ā_t)·x0 + sqrt(1 − ā_t)·ε`` with ``ā_t`` the cumulative product of ``1 − β_t``. Every
sampler inverts that same process, so a model trained once can be sampled with DDPM, DDIM or DPM-Solver++
by changing one generation option: the sampler is a choice made at generation time, not a retraining.

Notation: ``t`` is a training timestep index in ``[0, T)``; "the previous timestep" is the next one a
sampler visits (lower noise), and ``-1`` stands for the clean data, where ``ā = 1``.

Schedule tables are kept in float64 (ā spans ~10 orders of magnitude for the cosine schedule); the
per-step coefficients are Python floats applied to tensors of the sample's own dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from ..errors import ConfigError

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class NoiseScheduleConfig:
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "cosine"] = "cosine"  # cosine: Nichol & Dhariwal (2021), betas <= 0.999
    beta_start: float = 1e-4  # first beta of the linear schedule
    beta_end: float = 0.02  # last beta of the linear schedule
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"  # what the network outputs
    # Clamp every x0 estimate to [-clip_sample, clip_sample] while sampling. With ε-prediction the x0
    # estimate at the noisiest timesteps is the model's error divided by sqrt(ā) (~5e-5 at the end of
    # the cosine schedule), so unclamped it can throw samples far out of range; 1.0 suits GenLoop's
    # pixels in [-1, 1]. Set None for unbounded data (VAE latents, the tests' Gaussians).
    clip_sample: float | None = 1.0

    def __post_init__(self) -> None:
        if self.num_train_timesteps < 2:
            raise ConfigError(f"num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if self.beta_schedule not in ("linear", "cosine"):
            raise ConfigError(f"beta_schedule must be 'linear' or 'cosine', got '{self.beta_schedule}'")
        if self.beta_schedule == "linear" and not 0 < self.beta_start <= self.beta_end < 1:
            raise ConfigError(
                f"linear betas need 0 < beta_start <= beta_end < 1, got {self.beta_start} and {self.beta_end}"
            )
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ConfigError(f"prediction_type must be 'epsilon' or 'v_prediction', got '{self.prediction_type}'")
        if self.clip_sample is not None and self.clip_sample <= 0:
            raise ConfigError(f"clip_sample must be > 0 or null, got {self.clip_sample}")


def make_betas(config: NoiseScheduleConfig) -> torch.Tensor:
    """The T betas of the forward process, in float64."""
    T = config.num_train_timesteps
    if config.beta_schedule == "linear":
        return torch.linspace(config.beta_start, config.beta_end, T, dtype=torch.float64)
    # Cosine (Nichol & Dhariwal 2021, eq. 17): ā(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2).
    # The small offset s keeps β near t = 0 from being vanishingly small; the clip at 0.999 stops the
    # last betas reaching 1 (where ā would be exactly 0 and x0 unrecoverable).
    s = 0.008
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


def randn(
    shape: Sequence[int], generator: GeneratorArg, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal noise drawn in float32 on the CPU, then moved to ``device``/``dtype``.

    Drawing on the CPU makes a seed mean the same images on any device. ``generator`` may be ``None``
    (torch's global RNG), one generator for the whole batch, or a list with one generator per batch row,
    so that an image's seed gives the same image whether it is generated alone or in a batch.
    """
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        noise = torch.randn(shape, generator=generator, dtype=torch.float32, device=_gen_device(generator))
    else:
        generators = list(generator)
        if len(generators) != shape[0]:
            raise ValueError(f"got {len(generators)} generators for a batch of {shape[0]}")
        noise = torch.stack(
            [torch.randn(shape[1:], generator=g, dtype=torch.float32, device=_gen_device(g)) for g in generators]
        )
    return noise.to(device=device, dtype=dtype)


def _gen_device(generator: torch.Generator | None) -> torch.device:
    # A CUDA generator can only draw on its own device; we still move the result where it is needed.
    return torch.device("cpu") if generator is None else generator.device


class Scheduler:
    """The contract every sampler follows.

    Sampling loop, as a pipeline runs it::

        scheduler.set_timesteps(steps)
        x = randn(shape, generator, device, dtype)
        for t in scheduler.timesteps.tolist():
            x = scheduler.step(model(x, t), t, x, generator=generator)

    Subclasses implement :meth:`step`; everything else (the forward process, the training target and
    turning a model output into an x0 estimate) is shared, so all samplers agree on what the model means.
    """

    name: ClassVar[str]

    def __init__(self, config: NoiseScheduleConfig) -> None:
        self.config = config
        self.num_train_timesteps = config.num_train_timesteps
        self.betas = make_betas(config)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)
        self.timesteps = torch.empty(0, dtype=torch.int64)
        self.set_timesteps(config.num_train_timesteps)

    # -- sampling ---------------------------------------------------------------------------------------

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose the timesteps to visit (descending) and forget any multistep history.

        The steps are evenly spaced and always start at ``T − 1`` ("trailing" spacing, Lin et al. 2024,
        "Common diffusion noise schedules and sample steps are flawed"): starting from pure noise at the
        noisiest trained timestep is what the initial ``randn`` sample actually is. After the last
        timestep a sampler jumps to the clean data (ā = 1). With ``num_inference_steps == T`` this is
        every timestep ``T − 1, ..., 0``.
        """
        T = self.num_train_timesteps
        if not 1 <= num_inference_steps <= T:
            raise ConfigError(
                f"sampling steps must be between 1 and {T} (the training timesteps), got {num_inference_steps}"
            )
        offsets = (torch.arange(num_inference_steps, dtype=torch.float64) * T / num_inference_steps).round()
        self.timesteps = (T - 1 - offsets).to(torch.int64)
        self.num_inference_steps = num_inference_steps
        self._index = {t: i for i, t in enumerate(self.timesteps.tolist())}
        self.reset()

    def reset(self) -> None:
        """Forget the state a multistep sampler keeps between calls (nothing for one-step samplers)."""

    def step(
        self, model_output: torch.Tensor, t: int, sample: torch.Tensor, generator: GeneratorArg = None
    ) -> torch.Tensor:
        """The sample at the timestep after ``t`` in :attr:`timesteps`; after the last, the x0 estimate."""
        raise NotImplementedError

    def previous_timestep(self, t: int) -> int:
        """The timestep visited after ``t`` (``-1``: the clean data)."""
        t = int(t)
        if t not in self._index:
            raise ValueError(f"timestep {t} is not one of this scheduler's {self.num_inference_steps} timesteps")
        i = self._index[t] + 1
        return int(self.timesteps[i]) if i < len(self.timesteps) else -1

    def alpha_bar(self, t: int) -> float:
        """ā at timestep ``t`` as a float64 Python number; ``t = -1`` is the clean data (ā = 1)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    # -- the forward process and what the model predicts ------------------------------------------------

    def _coefficients(self, t: int | torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(ā_t) and sqrt(1 − ā_t), shaped to broadcast against ``like`` (one value per batch row)."""
        dtype = torch.promote_types(like.dtype, torch.float32)  # never compute the mix in bf16/fp16
        if isinstance(t, torch.Tensor) and t.ndim > 0:
            abar = self.alphas_cumprod[t.to("cpu", torch.int64)]
            shape = (-1,) + (1,) * (like.ndim - 1)
        else:
            abar = self.alphas_cumprod[int(t)].reshape(())
            shape = ()
        a = abar.sqrt().to(like.device, dtype).reshape(shape)
        s = (1 - abar).sqrt().to(like.device, dtype).reshape(shape)
        return a, s

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(ā_t)·x0 + sqrt(1 − ā_t)·noise``, one ``t`` per batch row (x0 of any rank >= 2)."""
        a, s = self._coefficients(t, x0)
        return (a * x0 + s * noise).to(x0.dtype)

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output at ``x_t``: ε, or ``v = sqrt(ā)·ε − sqrt(1 − ā)·x0``.

        v-prediction (Salimans & Ho 2022) keeps the target's scale the same at every noise level, which
        helps at the very noisy end of the cosine schedule, where an ε-model's x0 estimate blows up.
        """
        if self.config.prediction_type == "epsilon":
            return noise
        a, s = self._coefficients(t, x0)
        return (a * noise - s * x0).to(x0.dtype)

    def predict_x0(self, model_output: torch.Tensor, t: int | torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """The data estimate implied by the model output at ``x_t = sample`` (clipped if configured)."""
        a, s = self._coefficients(t, sample)
        out = model_output.to(a.dtype)
        x = sample.to(a.dtype)
        if self.config.prediction_type == "epsilon":
            x0 = (x - s * out) / a
        else:
            x0 = a * x - s * out
        if self.config.clip_sample is not None:
            x0 = x0.clamp(-self.config.clip_sample, self.config.clip_sample)
        return x0

    def predict_epsilon(self, x0: torch.Tensor, t: int, sample: torch.Tensor) -> torch.Tensor:
        """The noise consistent with an x0 estimate at ``x_t = sample``: ``(x_t − sqrt(ā)·x0) / sqrt(1 − ā)``."""
        a, s = self._coefficients(t, sample)
        return (sample.to(a.dtype) - a * x0) / s
