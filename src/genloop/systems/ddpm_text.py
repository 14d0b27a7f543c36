"""Text-to-image diffusion: DDPM whose UNet cross-attends to the caption (:mod:`genloop.models.text_unet`).

Training is DDPM's loss with the image's caption as the condition; ``caption_dropout`` of the time the caption is
replaced by the empty one, so the same network is also the unconditional model, and sampling mixes the two
(classifier-free guidance, Ho & Salimans 2022): ``uncond + guidance · (cond − uncond)``. An empty prompt *is* the
unconditional model. Everything else — noise schedules, samplers, EMA, checkpoints — is DDPM's.

The data must be captioned (a folder with ``metadata.jsonl`` or ``.txt`` captions, or ``digits-captions``); the
caption tokens travel as the third element of each batch (:class:`genloop.data.ImageBatches`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .. import distributed
from ..errors import ConfigError
from ..models.text_unet import TextUNet, encode_texts, null_tokens_like
from .base import DataSpec
from .ddpm import DDPMConfig, DDPMSystem


@dataclass
class DDPMTextConfig(DDPMConfig):
    name: str = "ddpm-text"
    text_width: int = 64  # the caption encoder's width (and the UNet's cross-attention key size)
    text_layers: int = 2  # transformer layers of the caption encoder
    text_heads: int = 4
    max_caption_bytes: int = 64  # captions are UTF-8 bytes: a Chinese character is 3
    caption_dropout: float = 0.15  # share of training steps with the caption replaced by the empty one
    guidance: float = 3.0  # default guidance scale on the caption (1: plain conditional)


class DDPMTextSystem(DDPMSystem):
    Config = DDPMTextConfig
    text_conditional = True  # generation takes a prompt (System.text_conditional)

    def __init__(self, config: DDPMTextConfig, spec: DataSpec) -> None:
        if config.class_conditional:
            raise ConfigError("ddpm-text is conditioned on captions; leave model.class_conditional false")
        if not spec.captioned:
            raise ConfigError(
                "ddpm-text needs captioned data: a folder with a metadata.jsonl (file_name, text) or a .txt caption "
                "beside each image, or --data digits-captions"
            )
        if not 0 <= config.caption_dropout < 1:
            raise ConfigError(f"model.caption_dropout must be in [0, 1), got {config.caption_dropout}")
        if not 1 <= config.max_caption_bytes <= 1024:
            raise ConfigError(f"model.max_caption_bytes must be 1-1024, got {config.max_caption_bytes}")
        super().__init__(config, spec)

    def build_network(self, config: DDPMTextConfig, spec: DataSpec) -> torch.nn.Module:  # type: ignore[override]
        return TextUNet(
            self.unet_settings(config, spec),
            config.max_caption_bytes,
            config.text_width,
            config.text_layers,
            config.text_heads,
        )

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Captions or prompts -> byte tokens (ConfigError for one longer than ``model.max_caption_bytes``)."""
        return encode_texts(texts, self.config.max_caption_bytes)

    def _loss(self, batch: Any) -> dict[str, torch.Tensor]:
        if len(batch) < 3:
            raise ConfigError("ddpm-text trains on batches with caption tokens (images, labels, tokens)")
        x0, tokens = batch[0], batch[2]
        n = x0.shape[0]
        t = distributed.randint(self.config.num_train_timesteps, n, device=x0.device)
        noise = distributed.randn(n, *x0.shape[1:], device=x0.device, dtype=torch.float32)
        x0f = x0.float()
        x_t = self.noise.add_noise(x0f, noise, t)
        drop = distributed.rand(n, device=x0.device) < self.config.caption_dropout
        tokens = torch.where(drop[:, None], null_tokens_like(tokens), tokens)
        pred = self.unet(x_t.to(x0.dtype), t, tokens).float()
        return {"loss": F.mse_loss(pred, self.noise.training_target(x0f, noise, t))}

    def predict(
        self, x: torch.Tensor, t: int, labels: torch.Tensor | None = None, guidance: float = 1.0
    ) -> torch.Tensor:
        """The guided prediction for caption tokens ``labels`` (N, L) — the pipelines' per-row condition; None is
        the empty caption. ``guidance`` 1: conditional only; 0: unconditional only; both halves run as one batch."""
        tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        tokens = labels if labels is not None else self.tokenize([""] * x.shape[0]).to(x.device)
        if guidance == 1.0:
            return self.unet(x, tt, tokens).float()
        null = null_tokens_like(tokens)
        if guidance == 0.0:
            return self.unet(x, tt, null).float()
        cond, uncond = self.unet(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([tokens, null])).float().chunk(2)
        return uncond + guidance * (cond - uncond)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Training previews: the unconditional model unless ``labels`` holds caption tokens."""
        from ..generation.pipelines import denoise

        device = next(self.parameters()).device
        x = self.sample_latents(n, generator).to(device)
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.config.sampling_steps)
        tokens = None if labels is None else labels.to(device)
        return denoise(self, scheduler, x, tokens, self.config.guidance, generator).clamp(-1, 1)
