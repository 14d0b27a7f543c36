"""Residual GAN networks for small RGB data sets (a few hundred to a few thousand 8-64 px images).

A "lite" mix of BigGAN (Brock et al., 2019) and StyleGAN2 (Karras et al., 2020), each piece chosen for
what it buys at this scale:

Generator
* A *mapping* MLP z -> w (two layers, LeakyReLU 0.2; z first normalised to unit second moment, as
  StyleGAN does). Image features need not be a Gaussian's linear function; the MLP lets the latent
  space bend to the data before it steers anything.
* A linear projection of w to a 4x4 map starts the image (BigGAN): the latent reaches the coarse layout
  directly, which matters at 8-16 px where there are only one or two blocks after it.
* Residual *up-blocks*: a 3x3 convolution, nearest x2 upsampling and a second 3x3 convolution, plus a
  1x1 skip from the upsampled input. The first convolution runs before the upsampling, at a quarter of
  the pixels: on a CPU a block costs what its convolutions at the output size cost, and one is enough.
  The skip path carries the image forward while the convolutions add detail, so deep
  stacks train from the first step (plain stacks of up-convolutions learn slowly and checkerboard).
* *Modulated* normalisation before each convolution: a per-sample group norm whose per-channel scale
  and shift are linear functions of w (plus a class embedding added to w when conditional) — BigGAN's
  conditional batch norm / StyleGAN's AdaIN. The latent (and class) thus steers every resolution, and
  since the norm is per sample, no statistic couples the images of a batch (batch norm would), so the
  generator draws the same image for a latent whatever else is in the batch. The modulations start at
  zero: at initialisation each norm is a plain group norm.
* A final norm - LeakyReLU - 3x3 convolution to the image channels, then tanh into [-1, 1].

Discriminator
* A strided 4x4 "from RGB" convolution to half the size (DCGAN's first layer: a residual block at full
  resolution would cost as much as all the others together), then residual *down-blocks*: conv - LReLU -
  2x2 average pooling - conv - LReLU (the second conv at the pooled size), plus a skip of average pooling
  and a 1x1 convolution; the sum is scaled by 1/sqrt(2) so the
  signal's variance stays put from block to block without any normalisation layer (StyleGAN2's
  residual D). No normalisation keeps each score a function of its own image, which R1's per-image
  gradient penalty needs.
* A *minibatch standard deviation* layer before the last block (Karras et al., 2018): the standard
  deviation of each feature over a small group of images, averaged into one extra feature map. A batch
  of near-identical fakes then looks different from a batch of real images — the discriminator can see
  mode collapse, and the generator is pushed away from it.
* The last block: a 3x3 convolution at 4x4, a linear layer to features phi(x) and a linear layer to one
  score. When conditional, a *projection* term <embed(y), phi(x)> is added (Miyato & Koyama, 2018, as in
  :mod:`genloop.models.gan`).

Widths: ``width`` channels at full resolution, doubling at each halving, capped at 8 * ``width``, so the
cost per level stays about even and the 4-8 px levels do not dominate the parameter count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .gan import num_levels

SLOPE = 0.2  # LeakyReLU's negative slope, everywhere


def level_channels(width: int, image_size: int, resolution: int) -> int:
    """Channels at ``resolution``: ``width`` at full size, doubling per halving, at most 8 * ``width``."""
    return min(width * (image_size // resolution), 8 * width)


def _groups(channels: int) -> int:
    """Group norm's group count: up to 32 groups (fewer channels: one per group, i.e. instance norm)."""
    return math.gcd(channels, 32)


def _init_conv(layer: nn.Module, act: bool = True) -> nn.Module:
    """He initialisation (variance-preserving through a LeakyReLU when ``act``, else linear), zero bias."""
    nn.init.kaiming_normal_(layer.weight, a=SLOPE, nonlinearity="leaky_relu" if act else "linear")
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


class ModulatedNorm(nn.Module):
    """Group norm (no own affine) whose per-channel scale 1 + gamma(w) and shift beta(w) come from w."""

    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels, affine=False)
        self.style = nn.Linear(w_dim, 2 * channels)
        nn.init.zeros_(self.style.weight)  # starts as the plain norm: scale 1, shift 0
        nn.init.zeros_(self.style.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(w).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class UpBlock(nn.Module):
    """x2 upsampling: norm-act-conv-up, norm-act-conv, plus a 1x1 + up skip (BigGAN's G block, reordered).

    The first conv runs *before* the upsampling, at a quarter of the pixels: on a CPU the block's cost is
    its convolutions at the output size, and one of the two is enough there.
    """

    def __init__(self, c_in: int, c_out: int, w_dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = ModulatedNorm(c_in, w_dim), ModulatedNorm(c_out, w_dim)
        self.conv1 = _init_conv(nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.conv2 = _init_conv(nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = _init_conv(nn.Conv2d(c_in, c_out, 1, bias=False), act=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(self.conv1(F.leaky_relu(self.norm1(x, w), SLOPE)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.leaky_relu(self.norm2(h, w), SLOPE))
        return h + F.interpolate(self.skip(x), scale_factor=2.0, mode="nearest")  # 1x1 conv, then up: same, 4x cheaper


class ResGenerator(nn.Module):
    """Latent (and, with ``num_classes > 0``, int64 class labels) -> image in [-1, 1]."""

    def __init__(self, z_dim: int, channels: int, image_size: int, width: int = 16, num_classes: int = 0) -> None:
        super().__init__()
        levels = num_levels(image_size)
        self.z_dim, self.num_classes = z_dim, num_classes
        w_dim = z_dim
        self.mapping = nn.Sequential(
            _init_conv(nn.Linear(z_dim, w_dim)),
            nn.LeakyReLU(SLOPE),
            _init_conv(nn.Linear(w_dim, w_dim)),
            nn.LeakyReLU(SLOPE),
        )
        self.embed = nn.Embedding(num_classes, w_dim) if num_classes else None  # added to w
        top = level_channels(width, image_size, 4)
        self.start = _init_conv(nn.Linear(w_dim, top * 16), act=False)
        self.top = top
        blocks, c, res = [], top, 4
        for _ in range(levels):
            res *= 2
            c_out = level_channels(width, image_size, res)
            blocks.append(UpBlock(c, c_out, w_dim))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out_norm = ModulatedNorm(c, w_dim)
        self.to_rgb = _init_conv(nn.Conv2d(c, channels, 3, 1, 1), act=False)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = z * torch.rsqrt(z.float().square().mean(1, keepdim=True) + 1e-8).to(z.dtype)  # StyleGAN's z norm
        w = self.mapping(z)
        if self.embed is not None:
            w = w + self.embed(labels).to(w.dtype)
        h = self.start(w).unflatten(1, (self.top, 4, 4))
        for block in self.blocks:
            h = block(h, w)
        return torch.tanh(self.to_rgb(F.leaky_relu(self.out_norm(h, w), SLOPE)))


class MinibatchStd(nn.Module):
    """Appends one feature map: the features' standard deviation within a group of ``group`` images.

    Consecutive images form a group (0..G-1, G..2G-1, ...; StyleGAN strides instead, which is the same in
    distribution for shuffled batches): a data-parallel rank's share of the batch then holds whole groups, so
    N processes compute what one does. G is ``group`` or, when the batch does not divide by it, its largest
    divisor below ``group`` (a last odd batch still works). The
    deviation of each feature over the group, averaged over features and positions, fills the map of
    each image in that group. Group 1 gives a constant map (no cross-image signal).
    """

    def __init__(self, group: int = 4) -> None:
        super().__init__()
        self.group = group

    def group_size(self, n: int) -> int:
        return max(g for g in range(1, min(self.group, n) + 1) if n % g == 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.group_size(n)
        y = x.float().reshape(n // g, g, c, h, w)
        y = (y.var(1, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n // g,)
        y = y.repeat_interleave(g)[:, None, None, None].expand(n, 1, h, w)  # image i gets group i // g
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DownBlock(nn.Module):
    """/2: conv-LReLU-avgpool-conv-LReLU, plus avgpool + 1x1 skip; the sum scaled by 1/sqrt(2).

    The second conv runs after the pooling, at a quarter of the pixels (the cost that matters on a CPU).
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _init_conv(nn.Conv2d(c_in, c_in, 3, 1, 1))
        self.conv2 = _init_conv(nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.skip = _init_conv(nn.Conv2d(c_in, c_out, 1, bias=False), act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv2(F.avg_pool2d(F.leaky_relu(self.conv1(x), SLOPE), 2)), SLOPE)
        return (h + self.skip(F.avg_pool2d(x, 2))) * (1 / math.sqrt(2))


class ResDiscriminator(nn.Module):
    """One unbounded score per image; with ``num_classes > 0`` a projection discriminator."""

    def __init__(
        self, channels: int, image_size: int, width: int = 16, num_classes: int = 0, mbstd_group: int = 4
    ) -> None:
        super().__init__()
        levels = num_levels(image_size)
        c = level_channels(width, image_size, image_size)
        # A strided 4x4 conv from the pixels (DCGAN's first layer): the blocks start at half the size, where
        # a full-resolution block would cost as much as all the others together.
        self.from_rgb = _init_conv(nn.Conv2d(channels, c, 4, 2, 1))
        blocks, res = [], image_size // 2
        for _ in range(levels - 1):
            res //= 2
            c_out = level_channels(width, image_size, res)
            blocks.append(DownBlock(c, c_out))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = _init_conv(nn.Conv2d(c + 1, c, 3, 1, 1))
        self.fc = _init_conv(nn.Linear(c * 16, c))  # phi(x): the features the score and projection read
        self.out = _init_conv(nn.Linear(c, 1), act=False)
        self.embed = nn.Embedding(num_classes, c) if num_classes else None
        if self.embed is not None:  # small, like the other weights: the class term starts as a nudge
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.from_rgb(x), SLOPE)
        for block in self.blocks:
            h = block(h)
        h = F.leaky_relu(self.conv(self.mbstd(h)), SLOPE)
        return F.leaky_relu(self.fc(h.flatten(1)), SLOPE)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        phi = self.features(x)
        score = self.out(phi).squeeze(1)
        if self.embed is None:
            return score
        return score + (self.embed(labels).to(phi.dtype) * phi).sum(1)
