"""VAE training: maximise the evidence lower bound (ELBO), optionally with a β-weighted KL term.

ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I)), in nats per image. The likelihood is a
Bernoulli on pixel intensities in [0, 1] (the usual choice for digits). For grey levels strictly
between 0 and 1 the Bernoulli "log-likelihood" -BCE(x, p) is not the log of a normalised density over
intensities (nor of the discrete 8-bit likelihood): its best value is minus the pixel's binary
entropy, not 0. So every number here — ELBO, IWAE bound, bits/dim — is a bound on log p(x) *under
this Bernoulli model*: compare it between runs of the VAE families on the same data, never with
another family's bits/dim (a diffusion model's discretised likelihood, say).

``evaluate`` also reports the importance-weighted bound of Burda et al. (2016):
log p(x) >= E[log (1/k) sum_j p(x, z_j) / q(z_j|x)] with z_1..z_k ~ q(z|x). It equals the ELBO at
k = 1 and tightens towards log p(x) as k grows, so the gap between the two says how much the
encoder's Gaussian posterior costs.

Families: ``vae`` (β = 1, the true ELBO), ``beta-vae`` (β = 4: a stronger pull towards the prior, for
smoother, more disentangled latents at the price of blurrier reconstructions) and ``cvae`` (encoder and
decoder both see the class label, so sampling can ask for a class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .. import distributed
from ..errors import ConfigError
from ..models.vae import ConvVAE
from .base import DataSpec, StepFn, System


@dataclass
class VAEConfig:
    name: str = "vae"
    z_dim: int = 16  # latent size
    width: int = 32  # channels at full resolution (doubling at each halving)
    beta: float = 1.0  # KL weight: 1 is the true ELBO; > 1 trades reconstructions for disentanglement
    eval_k: int = 64  # importance samples per image for the IWAE bound in evaluate()


class VAESystem(System):
    Config = VAEConfig
    train_defaults = {"lr": 1e-3}
    ema_target = "vae"
    modality = "image"

    def __init__(self, config: VAEConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        classes = spec.num_classes if self.conditional else 0
        if self.conditional and classes == 0:
            raise ConfigError(
                f"{config.name} needs a labelled dataset; this one has no classes (train vae for unlabelled images)"
            )
        if config.eval_k < 1:
            raise ConfigError(f"model.eval_k must be at least 1, got {config.eval_k}")
        self.vae = ConvVAE(spec.channels, spec.image_size, config.z_dim, config.width, classes)

    @property
    def latent_dim(self) -> int:
        return self.config.z_dim

    def _check_labels(self, labels: torch.Tensor | None, what: str) -> torch.Tensor | None:
        """The labels a conditional VAE needs (an error without them); None for an unconditional one."""
        if not self.conditional:
            return None
        if labels is None:
            raise ValueError(f"{self.config.name}.{what} needs the images' class labels")
        return labels

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents -> mean images; a cvae given no labels draws the classes in turn, as ``sample`` does."""
        if self.conditional and labels is None:
            labels = self.default_labels(z.shape[0]).to(z.device)
        return torch.sigmoid(self.vae.decoder(z, labels if self.conditional else None).float()) * 2 - 1

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"model": list(self.vae.parameters())}

    def _terms(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image reconstruction NLL and KL, in nats."""
        eps = distributed.randn(x.shape[0], self.config.z_dim, device=x.device)  # same per sample on any world size
        logits, mu, logvar = self.vae(x, labels, eps)
        target = (x.float() + 1) / 2
        recon = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").flatten(1).sum(1)
        mu, logvar = mu.float(), logvar.float()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return recon, kl

    def training_step(self, opt: StepFn) -> dict[str, torch.Tensor]:
        return opt.step("model", self._loss)

    def dp_private(self) -> dict[str, tuple[torch.nn.Module, int]]:
        return {"model": (self.vae, 1)}  # every parameter sees the data

    def _loss(self, batch: Any) -> dict[str, torch.Tensor]:
        """The negative beta-ELBO per image (the loss), with its two terms for the logs."""
        labels = self._check_labels(batch[1] if len(batch) > 1 else None, "training_step")
        recon, kl = self._terms(batch[0], labels)
        return {"loss": recon.mean() + self.config.beta * kl.mean(), "recon": recon.mean(), "kl": kl.mean()}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images -> their reconstructions through the posterior mean (no sampling noise)."""
        labels = self._check_labels(labels, "reconstruct")
        mu, _ = self.vae.encoder(x, labels)
        return self.decode(mu, labels)

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, labels: torch.Tensor | None, k: int, max_batch: int = 512) -> torch.Tensor:
        """log p(x, z_j) - log q(z_j|x) for k posterior samples per image: float64 (B, k).

        Samples go through the decoder at most ``max_batch`` at a time, so memory does not grow with k.
        The Gaussian terms use z = mu + sigma * eps, where log N(z; 0, I) - log q(z|x) =
        sum(eps^2 - z^2 + logvar) / 2 (the log 2*pi terms cancel).
        """
        mu, logvar = (t.float() for t in self.vae.encoder(x, labels))
        std = (0.5 * logvar).exp()
        target = (x.float() + 1) / 2
        per_pass = max(1, min(k, max_batch // x.shape[0]))
        chunks = []
        for start in range(0, k, per_pass):
            m = min(per_pass, k - start)
            eps = torch.randn(x.shape[0], m, mu.shape[1], device=x.device)
            z = mu[:, None] + std[:, None] * eps  # (B, m, z_dim)
            rep = None if labels is None else labels.repeat_interleave(m)
            logits = self.vae.decoder(z.flatten(0, 1), rep).float()
            nll = F.binary_cross_entropy_with_logits(logits, target.repeat_interleave(m, 0), reduction="none")
            log_px = -nll.flatten(1).double().sum(1).view(x.shape[0], m)
            log_prior_over_q = 0.5 * (eps.double().pow(2) - z.double().pow(2) + logvar.double()[:, None]).sum(-1)
            chunks.append(log_px + log_prior_over_q)
        return torch.cat(chunks, dim=1)

    @torch.no_grad()
    def iwae_bound(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, k: int | None = None, max_batch: int = 512
    ) -> torch.Tensor:
        """Per-image importance-weighted lower bound on log p(x) in nats, float64 (B,)."""
        k = k or self.config.eval_k
        labels = self._check_labels(labels, "iwae_bound")
        return torch.logsumexp(self.log_weights(x, labels, k, max_batch), dim=1) - math.log(k)

    @torch.no_grad()
    def evaluate(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256
    ) -> dict[str, float]:
        """ELBO (one reparameterised sample) and IWAE bound (``eval_k`` samples) on real images.

        Random draws come from the global generator: seed it for repeatable numbers. Images are taken
        ``max(1, 512 // eval_k)`` at a time for the IWAE bound, so memory stays small for any k. The
        bound costs ``eval_k`` decoder passes per image (at 32 px, width 32, k = 64: about 0.1 s per
        image per CPU thread), so score a subset of a large test set, or lower ``eval_k``.
        """
        labels = self._check_labels(labels, "evaluate")
        k = self.config.eval_k
        total_recon = total_kl = total_iwae = 0.0
        n = images.shape[0]
        for i in range(0, n, batch_size):
            y = None if labels is None else labels[i : i + batch_size]
            recon, kl = self._terms(images[i : i + batch_size], y)
            total_recon, total_kl = total_recon + recon.double().sum().item(), total_kl + kl.double().sum().item()
        step = max(1, 512 // k)
        for i in range(0, n, step):
            y = None if labels is None else labels[i : i + step]
            total_iwae += self.iwae_bound(images[i : i + step], y, k).sum().item()
        elbo, iwae = -(total_recon + total_kl) / n, total_iwae / n
        bits = math.prod(images.shape[1:]) * math.log(2)
        return {
            "elbo_nats": elbo,
            "recon_nats": total_recon / n,
            "kl_nats": total_kl / n,
            "elbo_bits_per_dim": -elbo / bits,
            "iwae_nats": iwae,
            "iwae_bits_per_dim": -iwae / bits,
        }


@dataclass
class BetaVAEConfig(VAEConfig):
    name: str = "beta-vae"
    beta: float = 4.0


class BetaVAESystem(VAESystem):
    """β-VAE (Higgins et al., 2017): the VAE with the KL term weighted by β = 4.

    With β > 1 the training loss is no longer the ELBO, but ``evaluate`` still reports the true
    (β = 1) ELBO and IWAE bound, so β-VAEs compare with plain VAEs on the same scale.
    """

    Config = BetaVAEConfig


@dataclass
class CVAEConfig(VAEConfig):
    name: str = "cvae"


class CVAESystem(VAESystem):
    """Conditional VAE: q(z|x, y) and p(x|z, y); ``decode``/``sample`` take the class to draw."""

    Config = CVAEConfig
    conditional = True
