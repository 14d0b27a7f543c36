"""The contract between the editing front door and each editing task: :class:`EditContext` in, a tensor out.

A task never loads files, resizes, converts channels, hashes inputs or writes anything: the front door
(:mod:`genloop.generation.editing.editor`) does that once for every task and hands the task an
:class:`EditContext` whose input is already at the model's size and channels. The task returns the edited
images as a tensor shaped like ``ctx.x``. What it wants in the output's recipe (its settings with their
defaults filled in, model calls) it puts in ``ctx.info``; ``ctx.predict`` counts the model calls by itself.

The helpers here (:meth:`EditContext.predict`, :meth:`~EditContext.scheduler`, :meth:`~EditContext.noise`,
:func:`noised`, :func:`check_int`) are what every diffusion-prior task needs; they live in one place so that a
new task is one short module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import ConfigError
from ...schedulers import Scheduler, randn


@dataclass
class EditContext:
    """Everything a task may use. Tensors are on the model's device; images are floats in [-1, 1]."""

    system: Any  # the diffusion system: ``system.predict(x, t, labels, guidance)``, ``system.make_scheduler``
    x: torch.Tensor  # (N, C, S, S): the input at the model's size and channels
    mask: torch.Tensor | None  # (N, 1, S, S): 1 = fill (white in a mask file), 0 = keep; None for maskless tasks
    labels: torch.Tensor | None  # (N,) the class to steer towards (conditional models), or None: unconditional
    generators: list[torch.Generator]  # one per image, seeded seed + i: image i's noise depends on nothing else
    steps: int  # the sampler's number of timesteps over the whole noise range
    sampler: str  # a registered sampler name (genloop.schedulers)
    guidance: float  # classifier-free guidance scale (1: plain conditional; ignored without labels)
    options: dict[str, Any]  # the task's own options: its defaults, overridden by what was given
    info: dict[str, Any] = field(default_factory=dict)  # what the task adds to the recipe
    model_calls: int = 0  # calls of ``predict`` so far (each call denoises the whole batch once)

    def predict(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The model's output at timestep ``t`` (with guidance for a conditional model), counted."""
        self.model_calls += 1
        return self.system.predict(x, int(t), self.labels, self.guidance)

    def scheduler(self, sampler: str | None = None) -> Scheduler:
        """A fresh scheduler (``sampler``, default ``ctx.sampler``) with ``ctx.steps`` timesteps set."""
        s = self.system.make_scheduler(sampler or self.sampler)
        s.set_timesteps(self.steps)
        return s

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``like``, image i drawn from generator i."""
        return randn(like.shape, self.generators, like.device, torch.float32)

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class EditTask:
    """One editing task: ``run(ctx) -> images`` plus what the front door must know before calling it.

    ``options`` names the task's own keyword options (anything else is refused with one line);
    ``defaults`` gives their defaults (None where the task works its default out itself); ``mask``: whether
    the task needs a mask (white = fill); ``sampler`` and ``steps``: what it uses when none is asked for
    (None: the model's defaults); ``channels``: the model's channels the task needs (colorize: 3), None for any.
    """

    name: str
    run: Callable[[EditContext], torch.Tensor]
    options: tuple[str, ...] = ()
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    mask: bool = False
    sampler: str | None = None
    steps: int | None = None
    own_sampler: str | None = None
    input_scale: str | None = None
    channels: int | None = None


def noised(scheduler: Scheduler, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
    """``x0`` noised to timestep ``t`` by the forward process (``t = -1``: ``x0`` itself)."""
    if t < 0:
        return x0
    return scheduler.add_noise(x0, noise.to(x0.dtype), torch.tensor(int(t)))


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer option within [low, high], or one clear line."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"an integer >= {low}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")
    return int(value)
