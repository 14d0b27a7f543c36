"""Model families, by the name the CLI takes (``genloop train MODEL``).

A new family is one model file, one system file, and one line here.
"""

from __future__ import annotations

from ..registry import Registry
from .base import DataSpec, System
from .gan import GANSystem, WGANGPSystem
from .vae import VAESystem

models: Registry[type[System]] = Registry("model")
models.register("dcgan", GANSystem)
models.register("wgan-gp", WGANGPSystem)
models.register("vae", VAESystem)

__all__ = ["DataSpec", "System", "models"]
