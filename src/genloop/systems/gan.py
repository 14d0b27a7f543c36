"""GAN training: explicit discriminator and generator steps, each with its own optimizer.

Losses (``loss``):
- ``bce``: the original minimax game with the non-saturating generator loss (DCGAN).
- ``hinge``: the hinge loss of SAGAN / BigGAN.
- ``wgan-gp``: the Wasserstein critic with a gradient penalty on random interpolates (Gulrajani et al.,
  2017); the critic uses per-sample normalisation, as batch-norm would break the per-sample penalty.

``spectral_norm`` divides each discriminator weight by its largest singular value (Miyato et al.,
2018), which keeps the discriminator smooth without any normalisation layer.

``augment`` (and ``ada``) put differentiable augmentation between every image and the discriminator,
real and fake, in both players' steps — DiffAugment / ADA, for data sets of a few hundred images; see
:mod:`genloop.models.diffaugment`.

``cgan`` is the class-conditional family: conditional batch norm in the generator, a projection
discriminator (Miyato & Koyama, 2018), hinge loss and spectral norm, trained on labelled data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .. import distributed
from ..errors import ConfigError
from ..models.diffaugment import DiffAugment
from ..models.gan import Discriminator, Generator, init_weights, spectral_normalize
from .base import DataSpec, StepFn, System, frozen


@dataclass
class GANConfig:
    name: str = "dcgan"
    z_dim: int = 64  # latent size
    g_width: int = 32  # generator channels at full resolution (doubling at each halving)
    # an extra 3x3 convolution at full resolution draws the image (GenLoop's generator before DCGAN's layer
    # count became the default; runs saved without this key load with it on: see GANSystem.legacy_model_defaults)
    g_refine: bool = False
    d_width: int = 32  # discriminator channels at full resolution
    loss: Literal["bce", "hinge", "wgan-gp"] = "bce"
    d_norm: Literal["auto", "batch", "layer", "none"] = (
        "auto"  # auto: none with spectral norm, layer for wgan-gp, else batch
    )
    spectral_norm: bool = False  # spectral normalisation of every discriminator weight
    gp_weight: float = 10.0  # gradient-penalty weight (wgan-gp)
    n_critic: int = 1  # discriminator steps per generator step
    # Differentiable augmentation (small data sets): what the discriminator sees, real and fake alike.
    augment: str = ""  # comma-separated DiffAugment policies: color, translation, cutout ("" = none)
    augment_p: float | None = None  # chance each policy applies to an image; None: 1 (DiffAugment), 0 with ada
    ada: bool = False  # adapt augment_p to the discriminator's overfitting signal r_t (StyleGAN2-ADA)
    ada_target: float = 0.6  # r_t = E[sign D(real)] kept near this: higher means D is overfitting
    ada_interval: int = 4  # steps between adjustments of p
    ada_kimg: float = 20.0  # thousands of real images over which p may move by 1 (the adjustment speed)

    def __post_init__(self) -> None:
        if self.n_critic < 1:
            raise ConfigError(f"model.n_critic must be >= 1, got {self.n_critic}")


def discriminator_norm(config: GANConfig) -> str:
    """The normalisation ``d_norm="auto"`` stands for.

    Spectral norm already controls the discriminator's scale, and batch norm would mix samples into
    each other's scores; WGAN-GP's penalty is per sample, so it needs a per-sample norm.
    """
    if config.d_norm != "auto":
        return config.d_norm
    if config.spectral_norm:
        return "none"
    return "layer" if config.loss == "wgan-gp" else "batch"


class GANSystem(System):
    Config = GANConfig
    train_defaults = {"lr": 2e-4, "betas": [0.5, 0.999]}
    legacy_model_defaults = {"g_refine": True}  # every GAN saved before the key existed had the refine layer
    ema_target = "generator"
    modality = "image"

    def __init__(self, config: GANConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        classes = spec.num_classes if self.conditional else 0
        if self.conditional and classes == 0:
            raise ConfigError(
                f"{config.name} needs a labelled dataset; this one has no classes (train dcgan for unlabelled images)"
            )
        self.generator, self.discriminator = self.build_networks(classes)
        self._fakes: dict[int, torch.Tensor] = {}  # within a step: micro-batch -> the critic step's fakes (graph kept)
        p = config.augment_p if config.augment_p is not None else (0.0 if config.ada else 1.0)  # ADA starts at 0
        self.augment = DiffAugment(
            config.augment, p, config.ada, config.ada_target, config.ada_interval, config.ada_kimg
        )

    def build_networks(self, classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The generator and discriminator, initialised (a family with other networks overrides this)."""
        config, spec = self.config, self.spec
        generator = Generator(config.z_dim, spec.channels, spec.image_size, config.g_width, classes, config.g_refine)
        discriminator = Discriminator(
            spec.channels, spec.image_size, config.d_width, discriminator_norm(config), classes
        )
        init_weights(generator)
        init_weights(discriminator)
        if config.spectral_norm:
            spectral_normalize(discriminator)
        return generator, discriminator

    @property
    def latent_dim(self) -> int:
        return self.config.z_dim

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents -> images; a conditional GAN given no labels draws the classes in turn, as ``sample`` does."""
        if self.conditional and labels is None:
            labels = self.default_labels(z.shape[0]).to(z.device)
        return self.generator(z, labels if self.conditional else None).float()

    @classmethod
    def dp_config(cls, config: GANConfig) -> GANConfig:
        """DP-GAN: the discriminator, the only network that reads the data, must take per-example gradients."""
        if config.loss == "wgan-gp":
            raise ConfigError(
                "train.dp: WGAN-GP's gradient penalty differentiates through gradients, which Opacus's per-sample "
                "gradients cannot; train dcgan (loss bce or hinge) with DP"
            )
        if config.spectral_norm:
            raise ConfigError("train.dp does not support model.spectral_norm (Opacus has no per-sample rule for it)")
        if config.ada:
            raise ConfigError(
                "train.dp does not support model.ada: its augmentation strength follows the discriminator's "
                "scores on real images without noise, which would leak; use a fixed model.augment_p"
            )
        if config.d_norm == "batch":
            raise ConfigError(
                "train.dp: model.d_norm=batch mixes a batch's examples, so per-example gradients are undefined; "
                "use model.d_norm=layer (GroupNorm, which d_norm=auto picks under train.dp)"
            )
        if discriminator_norm(config) == "batch":  # auto: GroupNorm in place of BatchNorm (Opacus's fix)
            return dataclasses.replace(config, d_norm="layer")
        return config

    def dp_private(self) -> dict[str, tuple[torch.nn.Module, int]]:
        # Only the discriminator reads real images; the generator learns from the private discriminator's
        # scores on fakes, so it is private by post-processing (DP-GAN, Xie et al. 2018)
        return {"discriminator": (self.discriminator, self.config.n_critic)}

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"discriminator": list(self.discriminator.parameters()), "generator": list(self.generator.parameters())}

    def _discriminate(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The discriminator's float scores on ``images`` as it sees them: through the augmentation, if any."""
        return self.discriminator(self.augment(images), labels).float()

    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        d_real, d_fake = self._discriminate(real, labels), self._discriminate(fake, labels)
        self.augment.observe(d_real)  # ADA's overfitting signal (a no-op unless model.ada)
        if self.config.loss == "bce":
            return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        if self.config.loss == "hinge":
            return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        return d_fake.mean() - d_real.mean() + self.config.gp_weight * self._gradient_penalty(real, fake, labels)

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        eps = distributed.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self._discriminate(mix, labels).sum(), mix, create_graph=True)
        return ((grad.flatten(1).float().norm(dim=1) - 1) ** 2).mean()

    def _labels(self, batch: Any) -> torch.Tensor | None:
        """The batch's class labels for a conditional GAN, None for an unconditional one.

        Fakes are drawn for the batch's own labels, in both steps: the discriminator then compares
        real and fake images of the same classes (and WGAN-GP's interpolates stay within a class),
        and the generator learns each class as often as the data shows it.
        """
        if not self.conditional:
            return None
        labels = batch[1] if len(batch) > 1 else None
        if labels is None:
            raise ConfigError(f"{self.config.name} needs class labels with every batch; this data has none")
        return labels

    def _critic_loss(self, batch: Any) -> dict[str, torch.Tensor]:
        """The discriminator's loss on ``batch`` against fresh fakes for the batch's own labels.

        With one critic update per step the fakes are drawn with their graph and kept for the generator's
        update, which scores the same fakes against the updated discriminator (pytorch/examples' DCGAN step):
        one generator forward per step instead of two. With several critic updates each draws its own.
        """
        real, labels = batch[0], self._labels(batch)
        z = distributed.randn(real.shape[0], self.config.z_dim, device=real.device)
        if self.config.n_critic == 1:
            fake = self.generator(z, labels)
            self._fakes[id(batch)] = fake
        else:
            with torch.no_grad():
                fake = self.generator(z, labels)
        return {"loss": self._d_loss(real, fake.detach().to(real.dtype), labels)}

    def _generator_loss(self, batch: Any) -> dict[str, torch.Tensor]:
        """The generator's loss on as many fakes as ``batch`` holds (for its labels, if conditional): the critic
        step's own fakes when it kept them, else fresh ones."""
        real, labels = batch[0], self._labels(batch)
        fake = self._fakes.pop(id(batch), None)
        if fake is None:
            z = distributed.randn(real.shape[0], self.config.z_dim, device=real.device)
            fake = self.generator(z, labels)
        d_fake = self._discriminate(fake, labels)
        return {"loss": F.softplus(-d_fake).mean() if self.config.loss == "bce" else -d_fake.mean()}

    def training_step(self, opt: StepFn) -> dict[str, torch.Tensor]:
        """``n_critic`` discriminator updates on the step's real batch, then one generator update."""
        self._fakes = {}
        try:
            for _ in range(self.config.n_critic):
                d_loss = opt.step("discriminator", self._critic_loss)["loss"]
            with frozen(self.discriminator):
                g_loss = opt.step("generator", self._generator_loss)["loss"]
        finally:
            self._fakes = {}  # no graph outlives its step (nor a step that raised)
        logs = {"d_loss": d_loss, "g_loss": g_loss}
        logs.update({k: torch.tensor(v) for k, v in self.augment.end_step().items()})  # ADA: p and r_t
        return logs


@dataclass
class WGANGPConfig(GANConfig):
    name: str = "wgan-gp"
    loss: Literal["bce", "hinge", "wgan-gp"] = "wgan-gp"
    n_critic: int = 5
    g_refine: bool = True  # kept as it was measured (BENCHMARKS.md, families); dcgan alone took DCGAN's count


class WGANGPSystem(GANSystem):
    """DCGAN networks trained as a Wasserstein GAN with gradient penalty (its paper's Adam settings)."""

    Config = WGANGPConfig
    train_defaults = {"lr": 1e-4, "betas": [0.0, 0.9]}


@dataclass
class CGANConfig(GANConfig):
    name: str = "cgan"
    loss: Literal["bce", "hinge", "wgan-gp"] = "hinge"
    spectral_norm: bool = True
    g_refine: bool = True  # kept as it was measured (BENCHMARKS.md, families: FID 1.1x the floor)


class CGANSystem(GANSystem):
    """Class-conditional GAN: conditional batch norm in G, projection discriminator, hinge loss, SN.

    Adam as DCGAN's (lr 2e-4, betas 0.5/0.999, one discriminator step per generator step): setting
    "C" of the spectral-norm paper, which worked best there for DCGAN-sized networks.
    """

    Config = CGANConfig
    train_defaults = {"lr": 2e-4, "betas": [0.5, 0.999]}
    conditional = True
