"""resgan: a residual GAN for small RGB data sets (BigGAN- / StyleGAN2-lite), networks in
:mod:`genloop.models.resgan`.

Training is the GAN family's (:mod:`genloop.systems.gan`): the non-saturating logistic loss (``bce``) by
default, and the same differentiable augmentation (``model.augment``, ``model.ada``) between every image
and the discriminator. Added here:

* The R1 penalty (Mescheder et al., 2018): ``r1_gamma / 2 * ||grad_x D(x)||^2`` on real images, which
  stops the discriminator from growing steep around the data — the regulariser StyleGAN2 trains with.
  The gradient is taken with respect to the real images *before* augmentation, through the same
  augmented discriminator the losses see (what StyleGAN2-ADA does).
* Lazy regularisation (StyleGAN2): the penalty is computed only on every ``r1_interval``-th
  discriminator step (the 1st, the (k+1)-th, ...), multiplied by ``r1_interval`` so its average pull
  is unchanged, saving most of its double-backward cost. A step counter is a buffer, so a resumed run
  regularises on the very steps the uninterrupted one would have.
* ``class_conditional``: class embedding added to the generator's w, projection discriminator; needs a
  labelled data set.

Adam with beta1 0 (StyleGAN2's betas 0 / 0.99): momentum lags a moving opponent in a two-player game.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from ..errors import ConfigError
from ..models.gan import spectral_normalize
from ..models.resgan import ResDiscriminator, ResGenerator
from .base import DataSpec, LossFn, StepFn
from .gan import GANConfig, GANSystem


@dataclass
class ResGANConfig(GANConfig):
    name: str = "resgan"
    z_dim: int = 64  # latent size (and the mapped w's)
    g_width: int = 16  # generator channels at full resolution (doubling per halving, at most 8x)
    d_width: int = 16  # discriminator channels at full resolution (same rule)
    loss: Literal["bce", "hinge", "wgan-gp"] = "bce"  # bce: non-saturating logistic
    r1_gamma: float = 0.1  # R1 weight: gamma / 2 * ||grad D(real)||^2 (0: off)
    r1_interval: int = 16  # lazy R1: the penalty (scaled by this) on every this-th discriminator step
    mbstd_group: int = 4  # images per minibatch-std group (1: the map carries no cross-image signal)
    class_conditional: bool = False  # condition on the dataset's labels (class embedding, projection D)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r1_interval < 1:
            raise ConfigError(f"model.r1_interval must be >= 1 (1: R1 on every step), got {self.r1_interval}")
        if self.r1_gamma < 0:
            raise ConfigError(f"model.r1_gamma must be >= 0 (0: no R1 penalty), got {self.r1_gamma}")
        if self.mbstd_group < 1:
            raise ConfigError(f"model.mbstd_group must be >= 1, got {self.mbstd_group}")
        if self.g_refine:
            raise ConfigError("model.g_refine is a DCGAN generator's layer; resgan's generator has no such layer")
        if self.d_norm not in ("auto", "none"):
            raise ConfigError(
                f"model.d_norm={self.d_norm}: resgan's discriminator has no normalisation layers (R1 needs "
                "per-image scores); leave it auto"
            )


class _CountingSteps:
    """Hands each update to the engine, telling the system before each discriminator update whether
    it carries the lazy R1 penalty, and counting the discriminator updates after it."""

    def __init__(self, system: ResGANSystem, opt: StepFn) -> None:
        self.system, self.opt = system, opt

    def step(self, group: str, loss_fn: LossFn) -> dict[str, torch.Tensor]:
        if group != "discriminator":
            return self.opt.step(group, loss_fn)
        system, config = self.system, self.system.config
        system.r1_due = config.r1_gamma > 0 and int(system.d_steps) % config.r1_interval == 0
        try:
            terms = self.opt.step(group, loss_fn)
        finally:
            system.r1_due = False
        system.d_steps += 1
        return terms


class ResGANSystem(GANSystem):
    """Residual generator (mapping net, modulated norms) and discriminator (minibatch std), lazy R1."""

    Config = ResGANConfig
    legacy_model_defaults: ClassVar[dict[str, Any]] = {}  # its generator never had the DCGAN refine layer

    @classmethod
    def dp_config(cls, config: GANConfig) -> GANConfig:
        raise ConfigError(
            "train.dp: resgan's R1 penalty differentiates through gradients and its minibatch-std layer mixes "
            "examples, so Opacus cannot take per-example gradients; train dcgan with DP"
        )

    train_defaults = {"lr": 2e-4, "betas": [0.0, 0.99]}

    def __init__(self, config: ResGANConfig, spec: DataSpec) -> None:
        if config.class_conditional and spec.num_classes < 1:
            raise ConfigError(
                "resgan with model.class_conditional=true needs a labelled dataset; this one has no classes"
            )
        self.conditional = config.class_conditional  # per instance, as ddpm (GANSystem reads it to build)
        super().__init__(config, spec)
        self.register_buffer("d_steps", torch.zeros((), dtype=torch.long))  # discriminator updates so far
        # the last penalty measured, for the logs only: not persistent (each rank measures its own share)
        self.register_buffer("r1_last", torch.zeros(()), persistent=False)
        self.r1_due = False

    def build_networks(self, classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
        config, spec = self.config, self.spec
        generator = ResGenerator(config.z_dim, spec.channels, spec.image_size, config.g_width, classes)
        discriminator = ResDiscriminator(spec.channels, spec.image_size, config.d_width, classes, config.mbstd_group)
        if config.spectral_norm:
            spectral_normalize(discriminator)
        return generator, discriminator

    def _r1_penalty(self, real: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Mean over images of ||grad_x D(augment(x))||^2, the gradient taken at the un-augmented x."""
        real = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self._discriminate(real, labels).sum(), real, create_graph=True)
        return grad.flatten(1).float().square().sum(1).mean()

    def _critic_loss(self, batch: Any) -> dict[str, torch.Tensor]:
        terms = super()._critic_loss(batch)
        if self.r1_due:
            penalty = self._r1_penalty(batch[0], self._labels(batch))
            c = self.config
            terms["loss"] = terms["loss"] + c.r1_interval * c.r1_gamma / 2 * penalty
            self.r1_last.copy_(penalty.detach())
        return terms

    def training_step(self, opt: StepFn) -> dict[str, torch.Tensor]:
        logs = super().training_step(_CountingSteps(self, opt))
        if self.config.r1_gamma > 0:
            logs["r1"] = self.r1_last.clone()
        return logs
