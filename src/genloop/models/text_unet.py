"""A text-conditioned UNet: a small byte-level transformer reads the caption, the UNet cross-attends to it.

Why bytes: a UTF-8 byte tokenizer has a fixed 256-symbol vocabulary that nothing has to be trained or saved for,
and every language is in it — a Chinese character is three bytes — so "一个粗的七" and "a thick seven" go through
the same encoder. Why a small transformer trained with the UNet (rather than a frozen pretrained one): captions of
a small data set use a small vocabulary, nothing has to be downloaded, and the encoder learns exactly the words
the images differ by.

Every sequence starts with a learned summary token (position 0), followed by the caption's bytes and padding.
The empty caption is that token alone: it is what classifier-free guidance's unconditional branch reads, and what
caption dropout trains it on. The summary token's output is the caption's global summary (added to the UNet's
timestep embedding); all outputs are the keys and values of the UNet's cross-attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .unet import UNet

PAD = 0  # token 0 is padding; byte b is token b + 1
VOCAB = 257


def encode_texts(texts: list[str], max_bytes: int) -> torch.Tensor:
    """Captions -> int64 (N, max_bytes) byte tokens (byte + 1, padded with 0). A caption longer than ``max_bytes``
    UTF-8 bytes is a ConfigError, never cut silently: the model would draw what the cut caption says."""
    out = torch.zeros(len(texts), max_bytes, dtype=torch.long)
    for i, text in enumerate(texts):
        data = text.strip().encode("utf-8")
        if len(data) > max_bytes:
            raise ConfigError(
                f"the caption {text[:40]!r}{'...' if len(text) > 40 else ''} is {len(data)} UTF-8 bytes; this model "
                f"reads at most {max_bytes} (model.max_caption_bytes)"
            )
        if data:
            out[i, : len(data)] = torch.tensor(list(data), dtype=torch.long) + 1
    return out


class TextEncoder(nn.Module):
    """Pre-norm transformer encoder over byte tokens with a summary token in front: (N, L) -> (N, L + 1, width)
    features and the (N, L + 1) mask of real positions."""

    def __init__(self, max_bytes: int, width: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(f"model.text_width ({width}) must be a multiple of model.text_heads ({heads})")
        self.max_bytes = max_bytes
        self.tok = nn.Embedding(VOCAB, width, padding_idx=PAD)
        self.summary = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, max_bytes + 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = tokens.shape[0]
        mask = torch.cat([torch.ones(n, 1, dtype=torch.bool, device=tokens.device), tokens != PAD], dim=1)
        h = torch.cat([self.summary.expand(n, -1, -1), self.tok(tokens)], dim=1) + self.pos[:, : tokens.shape[1] + 1]
        h = self.layers(h, src_key_padding_mask=~mask)
        return self.norm(h), mask


class TextUNet(nn.Module):
    """The UNet and its caption encoder as one module (so EMA averages both): ``forward(x, t, tokens)``."""

    def __init__(self, unet_kwargs: dict, max_bytes: int, text_width: int, text_layers: int, text_heads: int) -> None:
        super().__init__()
        self.text = TextEncoder(max_bytes, text_width, text_layers, text_heads)
        self.unet = UNet(**unet_kwargs, context_dim=text_width)

    def forward(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        context, mask = self.text(tokens)
        return self.unet(x, t, context=context, context_mask=mask)


def null_tokens_like(tokens: torch.Tensor) -> torch.Tensor:
    """The empty caption for every row (the unconditional branch of classifier-free guidance)."""
    return F.pad(tokens[:, :0], (0, tokens.shape[1]), value=PAD)
