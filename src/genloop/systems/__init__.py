"""Model families, by the name the CLI takes (``genloop train MODEL``).

A new family is one model file, one system file, and one line here; its ``modality`` must be registered
in :mod:`genloop.modalities` (registering it here fails otherwise).
"""

from __future__ import annotations

from ..errors import ConfigError, NotFoundError
from ..modalities import modalities
from ..registry import Registry
from .base import DataSpec, System
from .ddpm import DDPMSystem
from .ddpm_distill import DDPMDistillSystem
from .ddpm_text import DDPMTextSystem
from .gan import CGANSystem, GANSystem, WGANGPSystem
from .hf_lm import HFCausalLMSystem
from .lm import GPTSystem
from .music_gpt import MusicGPTSystem
from .resgan import ResGANSystem
from .vae import BetaVAESystem, CVAESystem, VAESystem


class ModelRegistry(Registry[type[System]]):
    """The model families; registering one checks that it declares a registered modality."""

    def register(self, name: str, item: type[System]) -> type[System]:
        declared = getattr(item, "modality", None)
        if not isinstance(declared, str):
            raise ConfigError(f"model family '{name}' ({item.__name__}) declares no modality; set `modality = ...`")
        try:
            modalities[declared]
        except NotFoundError as e:
            raise NotFoundError(f"model family '{name}' ({item.__name__}): {e}") from None
        return super().register(name, item)


models: ModelRegistry = ModelRegistry("model")
models.register("dcgan", GANSystem)
models.register("wgan-gp", WGANGPSystem)
models.register("vae", VAESystem)
models.register("cgan", CGANSystem)
models.register("beta-vae", BetaVAESystem)
models.register("cvae", CVAESystem)
models.register("ddpm", DDPMSystem)
models.register("ddpm-distill", DDPMDistillSystem)
models.register("ddpm-text", DDPMTextSystem)
models.register("resgan", ResGANSystem)
models.register("gpt", GPTSystem)
models.register("hf-causal-lm", HFCausalLMSystem)
models.register("music-gpt", MusicGPTSystem)

__all__ = ["DataSpec", "ModelRegistry", "System", "models"]
