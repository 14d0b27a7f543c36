"""Noise schedulers for diffusion models: one forward process, several interchangeable samplers.

``make_scheduler("ddim", NoiseScheduleConfig(), eta=0.0)`` builds one by name; every scheduler accepts
the same trained model (see :class:`~genloop.schedulers.base.Scheduler` for the contract).
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError
from ..registry import Registry
from .base import NoiseScheduleConfig, Scheduler, randn
from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler
from .dpmpp import DPMSolverPP2MScheduler

schedulers: Registry[type[Scheduler]] = Registry("sampler")
for _cls in (DDPMScheduler, DDIMScheduler, DPMSolverPP2MScheduler):
    schedulers.register(_cls.name, _cls)


def make_scheduler(name: str, config: NoiseScheduleConfig, **options: Any) -> Scheduler:
    """The scheduler registered as ``name``; ``options`` are its own settings (DDIM: ``eta``)."""
    cls = schedulers[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "config")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"sampler '{name}' has no option {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}")
    return cls(config, **options)


__all__ = [
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverPP2MScheduler",
    "NoiseScheduleConfig",
    "Scheduler",
    "make_scheduler",
    "randn",
    "schedulers",
]
