"""DCGAN generator and discriminator (Radford et al., 2015), sized by config for 8-64 px images.

The generator maps a latent vector to a 4x4 feature map and doubles the resolution with transposed
convolutions until the target size; the discriminator mirrors it with strided convolutions. Width is
``width`` channels at full resolution and doubles at each halving, so compute per level stays even.

Class-conditional variants (``num_classes > 0``), after Miyato & Koyama (2018), "cGANs with Projection
Discriminator": the generator's batch norms become *conditional* batch norms (a per-class scale and
shift after normalising), so the class steers every resolution, not just the latent; the discriminator
adds a *projection* term, score = psi(phi(x)) + <embed(y), phi(x)>, which scores how well the image's
features match the class instead of feeding the class in as one more input.
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


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al., 2017).

    Normalising then re-scaling per class lets one set of convolutions draw every class: the class
    decides which features are amplified at each layer. Scales start near 1 (N(1, 0.02), DCGAN's
    batch-norm init) and shifts at 0, so at initialisation it is almost plain batch norm.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(num_classes, channels)
        self.shift = nn.Embedding(num_classes, channels)
        nn.init.normal_(self.scale.weight, 1.0, 0.02)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.scale(labels)[:, :, None, None] + self.shift(labels)[:, :, None, None]


class Generator(nn.Module):
    """Latent (and, with ``num_classes > 0``, int64 class labels) -> image in [-1, 1].

    By default the last transposed convolution draws the image (``channels`` maps, then tanh), as DCGAN's
    generator does. ``refine=True`` is GenLoop's earlier layout: the last upsampling keeps ``width`` feature
    maps (batch norm, ReLU) and a 3x3 convolution at full resolution draws the image from them — one more
    layer, and the costliest one (benchmarks/bench_dcgan_step.py: it made GenLoop's fp32 step slower than
    pytorch/examples' at 64 px).
    """

    def __init__(
        self,
        z_dim: int,
        channels: int,
        image_size: int,
        width: int = 32,
        num_classes: int = 0,
        refine: bool = False,
    ) -> None:
        super().__init__()
        levels = num_levels(image_size)
        top = width * 2**levels
        self.z_dim, self.num_classes = z_dim, num_classes

        def norm(c: int) -> nn.Module:
            return ConditionalBatchNorm2d(c, num_classes) if num_classes else nn.BatchNorm2d(c)

        self.project = nn.Sequential(nn.Linear(z_dim, top * 16, bias=False), nn.Unflatten(1, (top, 4, 4)))
        blocks: list[nn.Module] = [norm(top), nn.ReLU(inplace=True)]
        c = top
        for _ in range(levels if refine else levels - 1):
            blocks += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), norm(c // 2), nn.ReLU(True)]
            c //= 2
        if refine:
            blocks += [nn.Conv2d(c, channels, 3, 1, 1), nn.Tanh()]
        else:
            blocks += [nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.body = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.project(z)
        for layer in self.body:
            h = layer(h, labels) if isinstance(layer, ConditionalBatchNorm2d) else layer(h)
        return h


class Discriminator(nn.Module):
    """Returns one unbounded score per image (a logit for the BCE loss, a critic value for WGAN).

    With ``num_classes > 0`` it is a projection discriminator: the last layer's input phi(x) (the
    flattened 4x4 features) is also dotted with a learned per-class vector, so the score grows when
    the features look like the requested class. An unconditional discriminator has the same layers
    and weight names minus the embedding.
    """

    def __init__(
        self, channels: int, image_size: int, width: int = 32, norm: str = "batch", num_classes: int = 0
    ) -> None:
        super().__init__()
        levels = num_levels(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = width
        for _ in range(levels - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=norm == "none"), _norm(norm, c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        layers += [nn.Flatten(), nn.Linear(c * 16, 1)]
        self.body = nn.Sequential(*layers)  # body[:-1] is phi, body[-1] is psi
        self.embed = nn.Embedding(num_classes, c * 16) if num_classes else None
        if self.embed is not None:  # small, like the other weights: the class term starts as a nudge
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is None:
            return self.body(x).squeeze(1)
        features = self.body[:-1](x)
        return self.body[-1](features).squeeze(1) + (self.embed(labels) * features).sum(1)


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: N(0, 0.02) for convolutions, N(1, 0.02) for batch-norm scales.

    Class embeddings keep the start their module gave them.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def spectral_normalize(module: nn.Module) -> nn.Module:
    """Divide every weight of ``module`` by its largest singular value (Miyato et al., 2018).

    Each layer then is (about: for a convolution, the reshaped kernel's norm only approximates the
    operator's) at most 1-Lipschitz, which bounds how sharply the discriminator can react to its input: a
    cheap, per-layer alternative to WGAN-GP's gradient penalty that keeps GAN training steady without
    batch norm. Uses ``torch.nn.utils.parametrizations``: each weight becomes
    ``parametrizations.weight.original`` plus the power iteration's ``_u``/``_v`` buffers, all in the
    state dict, so checkpoints and exact resume need nothing special. Call it after initialising the
    weights (initialising a parametrized ``weight`` would write to a temporary).
    """
    for m in list(module.modules()):  # the projection's class embedding too, as Miyato & Koyama do
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.utils.parametrizations.spectral_norm(m)
    return module
