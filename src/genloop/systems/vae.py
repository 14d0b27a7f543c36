"""VAE training: maximise the evidence lower bound (ELBO), optionally with a β-weighted KL term.

ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I)), in nats per image. The likelihood is a
Bernoulli on pixel intensities in [0, 1] (the usual choice for digits); with grey levels between 0 and
1 it is a bound on that Bernoulli density, not on the discrete 8-bit likelihood — compare ELBOs between
runs of this family, not with other families' bits/dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..models.vae import ConvVAE
from .base import DataSpec, StepFn, System


@dataclass
class VAEConfig:
    name: str = "vae"
    z_dim: int = 16  # latent size
    width: int = 32  # channels at full resolution (doubling at each halving)
    beta: float = 1.0  # KL weight: 1 is the true ELBO; > 1 trades reconstructions for disentanglement


class VAESystem(System):
    Config = VAEConfig
    train_defaults = {"lr": 1e-3}
    ema_target = "vae"

    def __init__(self, config: VAEConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.vae = ConvVAE(spec.channels, spec.image_size, config.z_dim, config.width)

    @property
    def latent_dim(self) -> int:
        return self.config.z_dim

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.vae.decoder(z).float()) * 2 - 1

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"model": list(self.vae.parameters())}

    def _terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image reconstruction NLL and KL, in nats."""
        logits, mu, logvar = self.vae(x)
        target = (x.float() + 1) / 2
        recon = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").flatten(1).sum(1)
        mu, logvar = mu.float(), logvar.float()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return recon, kl

    def training_step(self, batch: Any, opt: StepFn) -> dict[str, torch.Tensor]:
        recon, kl = self._terms(batch[0])
        loss = recon.mean() + self.config.beta * kl.mean()
        opt.step("model", loss)
        return {"loss": loss.detach(), "recon": recon.mean().detach(), "kl": kl.mean().detach()}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> their reconstructions through the posterior mean (no sampling noise)."""
        mu, _ = self.vae.encoder(x)
        return self.decode(mu)

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
        """ELBO on real images, one reparameterised sample per image (seeded by the caller)."""
        total_recon = total_kl = 0.0
        for i in range(0, images.shape[0], batch_size):
            recon, kl = self._terms(images[i : i + batch_size])
            total_recon, total_kl = total_recon + recon.sum().item(), total_kl + kl.sum().item()
        n = images.shape[0]
        elbo = -(total_recon + total_kl) / n
        dims = math.prod(images.shape[1:])
        return {
            "elbo_nats": elbo,
            "recon_nats": total_recon / n,
            "kl_nats": total_kl / n,
            "elbo_bits_per_dim": -elbo / (dims * math.log(2)),
        }
