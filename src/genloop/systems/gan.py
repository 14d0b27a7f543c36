"""GAN training: explicit discriminator and generator steps, each with its own optimizer.

Losses (``loss``):
- ``bce``: the original minimax game with the non-saturating generator loss (DCGAN).
- ``hinge``: the hinge loss of SAGAN / BigGAN.
- ``wgan-gp``: the Wasserstein critic with a gradient penalty on random interpolates (Gulrajani et al.,
  2017); the critic uses per-sample normalisation, as batch-norm would break the per-sample penalty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..models.gan import Discriminator, Generator, init_weights
from .base import DataSpec, StepFn, System, frozen


@dataclass
class GANConfig:
    name: str = "dcgan"
    z_dim: int = 64  # latent size
    g_width: int = 32  # generator channels at full resolution (doubling at each halving)
    d_width: int = 32  # discriminator channels at full resolution
    loss: Literal["bce", "hinge", "wgan-gp"] = "bce"
    d_norm: Literal["auto", "batch", "layer", "none"] = "auto"  # auto: batch, or layer for wgan-gp
    gp_weight: float = 10.0  # gradient-penalty weight (wgan-gp)
    n_critic: int = 1  # discriminator steps per generator step


class GANSystem(System):
    Config = GANConfig
    train_defaults = {"lr": 2e-4, "betas": [0.5, 0.999]}
    ema_target = "generator"

    def __init__(self, config: GANConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        norm = config.d_norm if config.d_norm != "auto" else ("layer" if config.loss == "wgan-gp" else "batch")
        self.generator = Generator(config.z_dim, spec.channels, spec.image_size, config.g_width)
        self.discriminator = Discriminator(spec.channels, spec.image_size, config.d_width, norm)
        init_weights(self)

    @property
    def latent_dim(self) -> int:
        return self.config.z_dim

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z).float()

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"discriminator": list(self.discriminator.parameters()), "generator": list(self.generator.parameters())}

    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        d_real, d_fake = self.discriminator(real).float(), self.discriminator(fake).float()
        if self.config.loss == "bce":
            return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        if self.config.loss == "hinge":
            return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        return d_fake.mean() - d_real.mean() + self.config.gp_weight * self._gradient_penalty(real, fake)

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.discriminator(mix).float().sum(), mix, create_graph=True)
        return ((grad.flatten(1).float().norm(dim=1) - 1) ** 2).mean()

    def training_step(self, batch: Any, opt: StepFn) -> dict[str, torch.Tensor]:
        real = batch[0]
        n = real.shape[0]
        for _ in range(self.config.n_critic):
            z = torch.randn(n, self.config.z_dim, device=real.device)
            with torch.no_grad():
                fake = self.generator(z)
            d_loss = self._d_loss(real, fake.to(real.dtype))
            opt.step("discriminator", d_loss)

        z = torch.randn(n, self.config.z_dim, device=real.device)
        with frozen(self.discriminator):
            d_fake = self.discriminator(self.generator(z)).float()
            g_loss = F.softplus(-d_fake).mean() if self.config.loss == "bce" else -d_fake.mean()
            opt.step("generator", g_loss)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}


@dataclass
class WGANGPConfig(GANConfig):
    name: str = "wgan-gp"
    loss: Literal["bce", "hinge", "wgan-gp"] = "wgan-gp"
    n_critic: int = 5


class WGANGPSystem(GANSystem):
    """DCGAN networks trained as a Wasserstein GAN with gradient penalty (its paper's Adam settings)."""

    Config = WGANGPConfig
    train_defaults = {"lr": 1e-4, "betas": [0.0, 0.9]}
