"""A convolutional VAE (Kingma & Welling, 2013): encoder to a diagonal Gaussian, decoder to pixel logits.

The encoder halves the resolution down to 4x4 and predicts the mean and log-variance of q(z|x); the
decoder mirrors it. The decoder's output is a per-pixel logit: the Bernoulli likelihood reads it
as the mean of each pixel's intensity in [0, 1], the standard choice for handwritten digits.

With ``num_classes > 0`` it is a conditional VAE (Sohn et al., 2015): the encoder sees the image
with its class as extra one-hot input channels, q(z|x, y), and the decoder gets the one-hot class
next to z, p(x|z, y). The latent then only needs to hold what the class does not say (style), and
choosing y at sampling time chooses the class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gan import num_levels


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)


class Encoder(nn.Module):
    def __init__(self, channels: int, image_size: int, z_dim: int, width: int = 32, num_classes: int = 0) -> None:
        super().__init__()
        levels = num_levels(image_size)
        self.num_classes = num_classes
        layers: list[nn.Module] = [nn.Conv2d(channels + num_classes, width, 3, 1, 1), nn.SiLU()]
        c = width
        for _ in range(levels):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1), _group_norm(c * 2), nn.SiLU()]
            c *= 2
        layers += [nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c * 16, 2 * z_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_classes:  # the class as constant one-hot maps beside the pixels
            onehot = F.one_hot(labels, self.num_classes).to(x.dtype)
            x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[-2:])], dim=1)
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    def __init__(self, channels: int, image_size: int, z_dim: int, width: int = 32, num_classes: int = 0) -> None:
        super().__init__()
        levels = num_levels(image_size)
        top = width * 2**levels
        self.num_classes = num_classes
        self.project = nn.Sequential(nn.Linear(z_dim + num_classes, top * 16), nn.Unflatten(1, (top, 4, 4)), nn.SiLU())
        layers: list[nn.Module] = []
        c = top
        for _ in range(levels):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), _group_norm(c // 2), nn.SiLU()]
            c //= 2
        layers += [nn.Conv2d(c, channels, 3, 1, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per-pixel logits."""
        if self.num_classes:
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        return self.body(self.project(z))


class ConvVAE(nn.Module):
    def __init__(self, channels: int, image_size: int, z_dim: int = 16, width: int = 32, num_classes: int = 0) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = Encoder(channels, image_size, z_dim, width, num_classes)
        self.decoder = Decoder(channels, image_size, z_dim, width, num_classes)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (decoder logits for a reparameterised z ~ q(z|x), mu, logvar).

        ``eps`` is the standard normal noise of the reparameterisation (drawn here when not given).
        """
        mu, logvar = self.encoder(x, labels)
        eps = torch.randn_like(mu) if eps is None else eps.to(mu.dtype)
        z = mu + eps * (0.5 * logvar).exp()
        return self.decoder(z, labels), mu, logvar
