"""DCGAN generator and discriminator (Radford et al., 2015), sized by config for 8-64 px images.

The generator maps a latent vector to a 4x4 feature map and doubles the resolution with transposed
convolutions until the target size; the discriminator mirrors it with strided convolutions. Width is
``width`` channels at full resolution and doubles at each halving, so compute per level stays even.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def num_levels(image_size: int) -> int:
    """How many x2 steps lead from 4x4 to ``image_size`` (which must be 4 * a power of two)."""
    levels = math.log2(image_size / 4)
    if image_size < 8 or not levels.is_integer():
        from ..errors import ConfigError

        raise ConfigError(f"DCGAN needs an image size of 8, 16, 32, 64, ... pixels, got {image_size}")
    return int(levels)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per-sample normalisation: required by WGAN-GP, whose penalty is per sample
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class Generator(nn.Module):
    def __init__(self, z_dim: int, channels: int, image_size: int, width: int = 32) -> None:
        super().__init__()
        levels = num_levels(image_size)
        top = width * 2**levels
        self.z_dim = z_dim
        self.project = nn.Sequential(nn.Linear(z_dim, top * 16, bias=False), nn.Unflatten(1, (top, 4, 4)))
        blocks: list[nn.Module] = [nn.BatchNorm2d(top), nn.ReLU(inplace=True)]
        c = top
        for _ in range(levels):
            blocks += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        blocks += [nn.Conv2d(c, channels, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z))


class Discriminator(nn.Module):
    """Returns one unbounded score per image (a logit for the BCE loss, a critic value for WGAN)."""

    def __init__(self, channels: int, image_size: int, width: int = 32, norm: str = "batch") -> None:
        super().__init__()
        levels = num_levels(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = width
        for _ in range(levels - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=norm == "none"), _norm(norm, c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        layers += [nn.Flatten(), nn.Linear(c * 16, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: N(0, 0.02) for convolutions, N(1, 0.02) for batch-norm scales."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
