"""A small UNet for diffusion models (Ho et al. 2020; Nichol & Dhariwal 2021), for 8-64 px images.

The network predicts a tensor the shape of its input (ε or v, as the scheduler is configured) from a
noisy image and its timestep. Layout, top to bottom:

* a 3x3 conv lifts the image to ``width`` channels;
* the encoder has one level per entry of ``channel_mults`` (``width * mult`` channels), each with
  ``num_res_blocks`` residual blocks, then a stride-2 conv halving the resolution (not after the last);
* the middle is residual block, self-attention, residual block at the lowest resolution;
* the decoder mirrors the encoder with one extra block per level, each block taking the matching
  encoder activation as a skip connection (concatenated), and nearest-upsampling plus a conv;
* GroupNorm, SiLU and a zero-initialised 3x3 conv map back to the output channels.

The timestep enters as a sinusoidal embedding through a small MLP and is added, after a per-block
projection, inside every residual block; a class label (if the model is conditional) is embedded and
added to the timestep embedding. Self-attention runs at the feature-map sizes in
``attention_resolutions``: it lets distant pixels agree (the two ends of a stroke), which convolutions
only manage at the lowest resolutions.

With ``context_dim > 0`` the network also reads a sequence (a caption's token features, Rombach et al. 2022):
cross-attention follows every self-attention (same resolutions, and the middle), its queries from the pixels and
its keys/values from the sequence, and the sequence's first row (the text encoder's summary token) is projected
and added to the timestep embedding, so the caption steers every residual block as a class label would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def group_count(channels: int) -> int:
    """GroupNorm groups: up to 32, at least 4 channels per group, always dividing ``channels``.

    32 groups is the usual choice at DDPM widths (128+ channels); tiny test-sized widths would then get
    one channel per group, which normalises each channel away on its own, so small widths get fewer.
    """
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return groups


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps, as in the Transformer's positions."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """Two 3x3 convs with GroupNorm + SiLU before each; the embedding is added between them."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(group_count(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection."""

    def __init__(self, channels: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim) if channels % head_dim == 0 else 1
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        # Start as the identity: attention is blended in as training finds it useful.
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (b, heads, pixels, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class CrossAttention(nn.Module):
    """Multi-head attention from the pixels of a feature map to a sequence (a caption), with a residual connection.

    ``mask`` (B, L) is True where the sequence has a real token; padding is never attended to."""

    def __init__(self, channels: int, context_dim: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim) if channels % head_dim == 0 else 1
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)  # identity at first, as the self-attention
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        q = self.q(self.norm(x)).reshape(b, self.heads, d, h * w).transpose(-1, -2)  # (b, heads, pixels, d)
        k, v = self.kv(context).reshape(b, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)  # (b, heads, L, d) each
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Level(nn.Module):
    """One resolution of the encoder or decoder: residual blocks (each maybe followed by attention),
    then an optional resampling layer."""

    def __init__(
        self,
        blocks: list[ResBlock],
        attentions: list[nn.Module],
        resample: nn.Module | None,
        crosses: list[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(attentions)
        self.resample = resample
        # one per block where the UNet reads a context (nn.Identity where it has no attention); none otherwise
        self.crosses = nn.ModuleList(crosses or [])


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """ε/v-prediction network: ``forward(x, t, class_labels=None)`` returns a tensor shaped like ``x``
    (with ``out_channels`` channels, default ``in_channels``).

    ``num_classes > 0`` makes it class-conditional. Label ``num_classes`` (:attr:`null_label`) means "no
    class": train with some labels replaced by it and the same network is also the unconditional model
    that classifier-free guidance needs. ``class_labels=None`` on a conditional model uses it for all rows.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        width: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (8,),
        num_classes: int = 0,
        dropout: float = 0.0,
        out_channels: int | None = None,
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        _validate(in_channels, image_size, width, channel_mults, num_res_blocks, num_classes, dropout)
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.width = width
        self.context_dim = context_dim
        emb_dim = 4 * width

        self.time_mlp = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.context_pool = nn.Linear(context_dim, emb_dim) if context_dim > 0 else None
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)

        def attention(channels: int, resolution: int) -> nn.Module:
            return SelfAttention(channels) if resolution in attention_resolutions else nn.Identity()

        def cross(channels: int, resolution: int) -> list[nn.Module]:
            if context_dim <= 0:
                return []
            return [CrossAttention(channels, context_dim) if resolution in attention_resolutions else nn.Identity()]

        # Encoder. `skips` records the channels of every activation the decoder will concatenate.
        ch, res = width, image_size
        skips = [ch]
        self.down = nn.ModuleList()
        for i, mult in enumerate(channel_mults):
            blocks, attns, crosses = [], [], []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, width * mult, emb_dim, dropout))
                ch = width * mult
                attns.append(attention(ch, res))
                crosses += cross(ch, res)
                skips.append(ch)
            last = i == len(channel_mults) - 1
            downsample = None if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1)
            if not last:
                skips.append(ch)
                res //= 2
            self.down.append(Level(blocks, attns, downsample, crosses))

        self.mid_block1 = ResBlock(ch, ch, emb_dim, dropout)
        self.mid_attn = SelfAttention(ch)
        self.mid_cross = CrossAttention(ch, context_dim) if context_dim > 0 else None
        self.mid_block2 = ResBlock(ch, ch, emb_dim, dropout)

        # Decoder: one more block per level than the encoder, to consume the downsampling's skip too.
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mults))):
            blocks, attns, crosses = [], [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(ch + skips.pop(), width * mult, emb_dim, dropout))
                ch = width * mult
                attns.append(attention(ch, res))
                crosses += cross(ch, res)
            upsample = Upsample(ch) if i > 0 else None
            if i > 0:
                res *= 2
            self.up.append(Level(blocks, attns, upsample, crosses))

        self.norm_out = nn.GroupNorm(group_count(ch), ch)
        self.conv_out = nn.Conv2d(ch, self.out_channels, 3, padding=1)
        # Zero output at initialisation: the first loss is the target's variance, not a random network's
        # output on top of it, and early training does not fight a large random prediction.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def null_label(self) -> int:
        """The class index that means "unconditional" (classifier-free guidance's empty prompt)."""
        return self.num_classes

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``context`` (B, L, context_dim) and its ``context_mask`` (B, L; True: a real token) for a model built
        with ``context_dim > 0``, which needs one."""
        if (context is None) != (self.context_pool is None):
            raise ValueError("a UNet built with context_dim > 0 needs a context, and only such a UNet takes one")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t, self.width))
        if self.class_emb is not None:
            if class_labels is None:
                class_labels = torch.full((x.shape[0],), self.null_label, dtype=torch.long, device=x.device)
            emb = emb + self.class_emb(class_labels)
        elif class_labels is not None:
            raise ValueError("class_labels given to an unconditional UNet (num_classes=0)")
        if self.context_pool is not None:
            emb = emb + self.context_pool(context[:, 0])

        def attend(level: Level, i: int, h: torch.Tensor) -> torch.Tensor:
            h = level.attentions[i](h)
            if len(level.crosses) and not isinstance(level.crosses[i], nn.Identity):
                h = level.crosses[i](h, context, context_mask)
            return h

        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for i, block in enumerate(level.blocks):
                h = attend(level, i, block(h, emb))
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)

        h = self.mid_attn(self.mid_block1(h, emb))
        if self.mid_cross is not None:
            h = self.mid_cross(h, context, context_mask)
        h = self.mid_block2(h, emb)

        for level in self.up:
            for i, block in enumerate(level.blocks):
                h = attend(level, i, block(torch.cat([h, skips.pop()], dim=1), emb))
            if level.resample is not None:
                h = level.resample(h)

        return self.conv_out(F.silu(self.norm_out(h)))


def _validate(
    in_channels: int,
    image_size: int,
    width: int,
    channel_mults: tuple[int, ...],
    num_res_blocks: int,
    num_classes: int,
    dropout: float,
) -> None:
    if in_channels < 1:
        raise ConfigError(f"UNet needs at least 1 input channel, got {in_channels}")
    if not channel_mults or any(m < 1 for m in channel_mults):
        raise ConfigError(f"UNet channel_mults must be positive integers, got {list(channel_mults)}")
    factor = 2 ** (len(channel_mults) - 1)
    if not 8 <= image_size <= 64 or image_size % factor:
        raise ConfigError(
            f"UNet image size must be 8-64 px and divisible by {factor} (2^(levels-1) for "
            f"{len(channel_mults)} levels), got {image_size}"
        )
    if width < 1 or num_res_blocks < 1:
        raise ConfigError(f"UNet width and num_res_blocks must be >= 1, got {width} and {num_res_blocks}")
    if num_classes < 0:
        raise ConfigError(f"num_classes must be >= 0, got {num_classes}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
