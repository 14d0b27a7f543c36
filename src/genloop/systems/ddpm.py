"""Denoising diffusion (Ho et al., 2020): a UNet learns to undo Gaussian noise added over T steps.

Training is one line of maths: pick a timestep t, noise a clean image to x_t, and regress the UNet's
output on the noise (ε-prediction) or on v = √ā·ε − √(1−ā)·x0 (v-prediction, Salimans & Ho 2022).

Sampling is *not* part of training: any scheduler of ``genloop.schedulers`` (DDPM, DDIM, DPM-Solver++)
runs the reverse process from the same weights, with as many steps as the user asks at generation
time. The loop lives in :class:`genloop.generation.pipelines.DiffusionPipeline`; this file only says
what the network predicts, including classifier-free guidance (Ho & Salimans, 2022): a conditional
model is trained with its label dropped to a "null" class ``label_dropout`` of the time, so at
sampling time the conditional and unconditional predictions can be mixed,
``uncond + guidance · (cond − uncond)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .. import distributed
from ..errors import ConfigError
from ..models.unet import UNet
from ..schedulers import NoiseScheduleConfig, Scheduler, make_scheduler
from .base import DataSpec, StepFn, System


@dataclass
class DDPMConfig:
    name: str = "ddpm"
    width: int = 32  # UNet channels at full resolution
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])  # width multiplier per resolution level
    num_res_blocks: int = 1  # residual blocks per level
    attention_resolutions: list[int] = field(default_factory=lambda: [8])  # self-attention at these sizes (px)
    dropout: float = 0.0
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "cosine"] = "cosine"
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    class_conditional: bool = False  # condition on the dataset's labels (classifier-free guidance)
    label_dropout: float = 0.1  # share of training steps with the label replaced by the null class
    sampler: str = "dpmpp-2m"  # default sampler (generation can pick another): ddpm | ddim | dpmpp-2m
    sampling_steps: int = 25  # default number of sampling steps
    guidance: float = 1.0  # default guidance scale for conditional sampling (1: plain conditional)


class DiffusionSampling:
    """What a diffusion system's sampling needs besides its network, shared by the DDPM and its distilled students:
    the starting noise x_T and a fresh scheduler over the system's noise schedule."""

    spec: DataSpec
    schedule: NoiseScheduleConfig
    config: Any  # with a ``sampler`` (the default one)

    @property
    def latent_dim(self) -> int:
        return self.spec.channels * self.spec.image_size**2

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """The starting noise x_T, one image per row."""
        s = self.spec
        return torch.randn(n, s.channels, s.image_size, s.image_size, generator=generator)

    def make_scheduler(self, sampler: str | None = None, **options: Any) -> Scheduler:
        """A fresh scheduler (samplers keep per-run state) for this model's noise schedule."""
        return make_scheduler(sampler or self.config.sampler, self.schedule, **options)


class DDPMSystem(DiffusionSampling, System):
    Config = DDPMConfig
    train_defaults = {"lr": 2e-4, "ema_decay": 0.999, "warmup_steps": 200}
    ema_target = "unet"
    modality = "image"
    diffusion = True

    def __init__(self, config: DDPMConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if config.class_conditional and spec.num_classes < 1:
            raise ConfigError(
                "ddpm with model.class_conditional=true needs a labelled dataset; this one has no classes"
            )
        if not 0 <= config.label_dropout < 1:
            raise ConfigError(f"model.label_dropout must be in [0, 1), got {config.label_dropout}")
        if config.sampling_steps < 1:
            raise ConfigError(f"model.sampling_steps must be >= 1, got {config.sampling_steps}")
        self.conditional = config.class_conditional
        self.unet = self.build_network(config, spec)
        self.schedule = NoiseScheduleConfig(
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule=config.beta_schedule,
            prediction_type=config.prediction_type,
        )
        self.noise = make_scheduler("ddpm", self.schedule)  # training uses only its add_noise/targets
        make_scheduler(config.sampler, self.schedule)  # fail now, not after training, on a bad sampler name

    def unet_settings(self, config: DDPMConfig, spec: DataSpec) -> dict[str, Any]:
        """The UNet's constructor arguments from the model settings and the data."""
        return dict(
            in_channels=spec.channels,
            image_size=spec.image_size,
            width=config.width,
            channel_mults=tuple(config.channel_mults),
            num_res_blocks=config.num_res_blocks,
            attention_resolutions=tuple(config.attention_resolutions),
            num_classes=spec.num_classes if config.class_conditional else 0,
            dropout=config.dropout,
        )

    def build_network(self, config: DDPMConfig, spec: DataSpec) -> torch.nn.Module:
        """The denoising network (``self.unet``, what EMA averages); a text-conditioned family wraps it."""
        return UNet(**self.unet_settings(config, spec))

    # --- training -------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"model": list(self.unet.parameters())}

    def training_step(self, opt: StepFn) -> dict[str, torch.Tensor]:
        return opt.step("model", self._loss)

    def dp_private(self) -> dict[str, tuple[torch.nn.Module, int]]:
        return {"model": (self.unet, 1)}

    def _loss(self, batch: Any) -> dict[str, torch.Tensor]:
        """The denoising loss at one random timestep per image."""
        x0, labels = batch[0], batch[1] if len(batch) > 1 else None
        n = x0.shape[0]
        t = distributed.randint(self.config.num_train_timesteps, n, device=x0.device)
        noise = distributed.randn(n, *x0.shape[1:], device=x0.device, dtype=torch.float32)
        x0f = x0.float()
        x_t = self.noise.add_noise(x0f, noise, t)
        if self.conditional:
            drop = distributed.rand(n, device=x0.device) < self.config.label_dropout
            labels = torch.where(drop, torch.full_like(labels, self.spec.num_classes), labels)
        else:
            labels = None
        pred = self.unet(x_t.to(x0.dtype), t, labels).float()
        return {"loss": F.mse_loss(pred, self.noise.training_target(x0f, noise, t))}

    # --- inference ------------------------------------------------------------------------------
    def predict(
        self, x: torch.Tensor, t: int, labels: torch.Tensor | None = None, guidance: float = 1.0
    ) -> torch.Tensor:
        """The network's output at timestep ``t``, with classifier-free guidance for a conditional model.

        ``guidance`` 1 is the plain conditional prediction, 0 the unconditional one; above 1 pushes samples
        towards what distinguishes their class. Both halves run as one batch.
        """
        tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        if labels is None or guidance == 1.0:
            return self.unet(x, tt, labels).float()
        null = torch.full_like(labels, self.spec.num_classes)
        if guidance == 0.0:
            return self.unet(x, tt, null).float()
        cond, uncond = self.unet(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null])).float().chunk(2)
        return uncond + guidance * (cond - uncond)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Samples with the default sampler (used for the sample grids written during training)."""
        from ..generation.pipelines import denoise

        device = next(self.parameters()).device
        labels = self.default_labels(n) if labels is None else labels
        x = self.sample_latents(n, generator).to(device)
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.config.sampling_steps)
        return denoise(
            self, scheduler, x, None if labels is None else labels.to(device), self.config.guidance, generator
        ).clamp(-1, 1)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError("a diffusion model has no one-step decoder; sample with DiffusionPipeline")
