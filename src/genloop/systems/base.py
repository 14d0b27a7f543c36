"""The contract between a model family and the training engine.

A system says *what* one training step computes and how to sample; the engine (``genloop.train``)
owns everything else: devices, precision, optimizers, clipping, EMA, schedules, checkpoints and
logging. A system never calls ``backward()`` or ``optimizer.step()`` itself: for each update it hands
``opt.step(group, loss_fn)`` a function from a batch to its losses, which lets a GAN make its
discriminator and generator steps explicit while the engine keeps control of how a step is taken
(gradient accumulation runs ``loss_fn`` on every micro-batch of the step before the update).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class DataSpec:
    """What a system needs to know about its data to size its networks."""

    channels: int = 0
    image_size: int = 0
    num_classes: int = 0
    vocab_size: int = 0  # text: the tokenizer's vocabulary
    captioned: bool = False  # images: every image has a caption (text-to-image families need it)


# One update's loss on one batch: ``{"loss": the tensor to back-propagate, other scalars to log}``.
LossFn = Callable[[Any], dict[str, torch.Tensor]]


class StepFn(Protocol):
    def step(self, group: str, loss_fn: LossFn) -> dict[str, torch.Tensor]:
        """Update optimizer group ``group`` on ``loss_fn`` over the step's batch; its terms, averaged, detached.

        ``loss_fn`` draws its own noise per call: the engine may call it once per micro-batch.
        """


class System(nn.Module):
    """Base class of every model family. Subclasses set the class attributes and the methods below."""

    Config: ClassVar[type]  # the family's typed settings (a dataclass whose first field is `name`)
    train_defaults: ClassVar[dict[str, Any]] = {}  # the family's preferred TrainConfig values
    ema_target: ClassVar[str]  # attribute name of the sub-module used for inference (averaged by EMA)
    modality: ClassVar[str]  # a registered modality name (``genloop.modalities``); every family declares one
    conditional: ClassVar[bool] = False  # True: decode/sample take class labels (needs a labelled dataset)
    diffusion: ClassVar[bool] = False  # True: sampling runs a scheduler loop over noise levels, not one decode
    text_conditional: ClassVar[bool] = False  # True: an image family conditioned on a caption (generate --prompt)
    unit: ClassVar[str] = "images"  # what throughput counts: images (batch rows) or tokens
    parent_run: str | None = None  # the run this one is made from (a distilled student's teacher): run.json's parent
    # model settings added with a default that differs from what runs saved before them were trained with:
    # {key: the value those runs had}; applied to a saved config.json that lacks the key (saved_model_config)
    legacy_model_defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def saved_model_config(cls, section: dict[str, Any]) -> dict[str, Any]:
        """A run's saved ``model`` section, with each key it predates set to the value it was trained with.

        Why: a new setting whose default changes the network (a GAN's ``g_refine``) must not change what an
        older run's checkpoint is loaded into; the old value is the only one its weights fit.
        """
        return {**cls.legacy_model_defaults, **section}

    def __init__(self, config: Any, spec: DataSpec) -> None:
        super().__init__()
        self.config, self.spec = config, spec

    # --- training -------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimizer groups by name; each gets its own optimizer (a GAN has two)."""
        raise NotImplementedError

    def training_step(self, opt: StepFn) -> dict[str, torch.Tensor]:
        """One step: one ``opt.step(group, loss_fn)`` per update, in order; return scalars to log."""
        raise NotImplementedError

    # --- differential privacy (train.dp) ----------------------------------------------------------
    @classmethod
    def dp_config(cls, config: Any) -> Any:
        """The model settings for a DP run (a GAN swaps BatchNorm for GroupNorm); ConfigError where DP cannot apply.

        Called when the config is resolved, so the run's config.json records the networks it really trains.
        """
        if cls.dp_private is System.dp_private:
            raise ConfigError(f"train.dp: model '{config.name}' does not support differentially private training")
        return config

    def dp_private(self) -> dict[str, tuple[nn.Module, int]]:
        """Optimizer groups trained privately: ``{group: (the module holding its parameters, updates per step)}``.

        Only a module that reads the training data needs to be private (see :mod:`genloop.training.dp`).
        """
        raise ConfigError(f"train.dp: model '{self.config.name}' does not support differentially private training")

    def batch_units(self, batch: Any) -> int:
        """How many ``unit``s a batch holds (the engine's throughput counter): images by default."""
        return int(batch[0].shape[0])

    # --- inference ------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        raise NotImplementedError

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Latents drawn on the CPU from ``generator``: the same seed gives the same latents on any device."""
        return torch.randn(n, self.latent_dim, generator=generator)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (and, for a conditional system, int64 class labels) -> images in [-1, 1]."""
        raise NotImplementedError

    def default_labels(self, n: int) -> torch.Tensor | None:
        """Labels for a conditional sample when none are asked for: the classes in turn (0, 1, 2, ...)."""
        return torch.arange(n) % self.spec.num_classes if self.conditional else None

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        labels = self.default_labels(n) if labels is None else labels
        return self.decode(self.sample_latents(n, generator).to(device), None if labels is None else labels.to(device))

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """Family-specific metrics on real held-out images in [-1, 1] and their labels (VAE: ELBO). Default: none."""
        return {}


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Stop gradients into ``module`` for a while (a GAN's generator step needs none for the critic)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
