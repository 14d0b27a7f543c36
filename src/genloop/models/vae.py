"""A convolutional VAE (Kingma & Welling, 2013): encoder to a diagonal Gaussian, decoder to pixel logits.

The encoder halves the resolution down to 4x4 and predicts the mean and log-variance of q(z|x); the
decoder mirrors it. The decoder's output is a per-pixel logit: the Bernoulli likelihood reads it
as the mean of each pixel's intensity in [0, 1], the standard choice for handwritten digits.
"""

from __future__ import annotations

import torch
from torch import nn

from .gan import num_levels


class Encoder(nn.Module):
    def __init__(self, channels: int, image_size: int, z_dim: int, width: int = 32) -> None:
        super().__init__()
        levels = num_levels(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.SiLU()]
        c = width
        for _ in range(levels):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1), nn.GroupNorm(8 if c * 2 % 8 == 0 else 1, c * 2), nn.SiLU()]
            c *= 2
        layers += [nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c * 16, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    def __init__(self, channels: int, image_size: int, z_dim: int, width: int = 32) -> None:
        super().__init__()
        levels = num_levels(image_size)
        top = width * 2**levels
        self.project = nn.Sequential(nn.Linear(z_dim, top * 16), nn.Unflatten(1, (top, 4, 4)), nn.SiLU())
        layers: list[nn.Module] = []
        c = top
        for _ in range(levels):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.GroupNorm(8 if c // 2 % 8 == 0 else 1, c // 2), nn.SiLU()]
            c //= 2
        layers += [nn.Conv2d(c, channels, 3, 1, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits."""
        return self.body(self.project(z))


class ConvVAE(nn.Module):
    def __init__(self, channels: int, image_size: int, z_dim: int = 16, width: int = 32) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = Encoder(channels, image_size, z_dim, width)
        self.decoder = Decoder(channels, image_size, z_dim, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (decoder logits for a reparameterised z ~ q(z|x), mu, logvar)."""
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decoder(z), mu, logvar
