"""A decoder-only transformer language model (GPT-2 style, after Karpathy's nanoGPT), in one file.

``GPT(cfg, vocab_size)(idx)`` maps token ids (B, T) to next-token logits (B, T, vocab_size). Layout:

* a token embedding plus a learned absolute position embedding, then dropout;
* ``n_layer`` pre-norm blocks: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``, so the residual stream
  is never normalised and gradients reach the embeddings unchanged through it;
* causal multi-head self-attention with one fused q/k/v projection (``c_attn``), computed by
  :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels where the
  device has them, one fused call on the CPU); the MLP is 4x wide with GELU;
* a final LayerNorm and an output head that shares its weight with the token embedding (weight tying:
  fewer parameters, and rare tokens' output vectors learn from their input uses too).

Initialisation is GPT-2's: N(0, 0.02) for every matrix, zero biases, and the two projections that write
into the residual stream (``attn.c_proj``, ``mlp.c_proj``) scaled down by ``sqrt(2 * n_layer)``, so the
stream's variance does not grow with depth at the start of training.

**Incremental decoding.** Sampling one token at a time would recompute the keys and values of the whole
prefix at every step. :meth:`GPT.new_cache` allocates a :class:`KVCache` holding them for every layer;
``model(new_ids, cache=cache)`` embeds only the new tokens (at positions ``cache.length`` onwards), writes
their keys/values into the cache and attends over everything cached so far. The cache has room for
``block_size`` tokens and never slides: going past the context is the sampler's job (it starts a fresh
cache from a shifted window), because learned absolute positions cannot be shifted in place.
The cache is an inference device: use it under ``torch.no_grad()`` / ``torch.inference_mode()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


@dataclass
class GPTConfig:
    name: str = "gpt"
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block (n_embd must divide evenly among them)
    n_embd: int = 128  # width of the residual stream
    block_size: int = 64  # context length in tokens
    dropout: float = 0.0  # on embeddings, attention weights and residual branches (training only)
    bias: bool = False  # biases in Linear layers and LayerNorms (GPT-2 had them; without is a bit better and faster)

    def __post_init__(self) -> None:
        for key in ("n_layer", "n_head", "n_embd", "block_size"):
            value = getattr(self, key)
            if value < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {value}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


class KVCache:
    """Keys and values of the tokens seen so far, for every layer, pre-allocated to the full context.

    ``k`` and ``v`` have shape (n_layer, batch, n_head, block_size, head_dim); positions ``0..length-1``
    are filled. Pre-allocating (instead of concatenating each step) keeps decoding free of reallocation
    and makes the memory cost visible up front. Only :class:`GPT` writes to it.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        block_size: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (n_layer, batch_size, n_head, block_size, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def block_size(self) -> int:
        return self.k.shape[3]

    def reset(self) -> None:
        """Forget every position (the memory is kept: stale entries beyond ``length`` are never read)."""
        self.length = 0


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees only itself and earlier positions."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``kv``: this layer's cache tensors (B, n_head, block_size, head_dim), to be filled at positions
        ``start..start+T-1``; ``mask``: (T, start+T) booleans, True where attention is allowed (None: T == 1)."""
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hd)
        dropout_p = self.dropout if self.training else 0.0
        if kv is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            cache_k, cache_v = kv
            end = start + t
            cache_k[:, :, start:end] = k
            cache_v[:, :, start:end] = v
            # `.to` is a no-op in the usual case; under autocast it matches a full-precision cache to q.
            k, v = cache_k[:, :, :end].to(q.dtype), cache_v[:, :, :end].to(q.dtype)
            # is_causal would align the triangle to the top-left corner (query i sees keys <= i), which is
            # wrong once queries start at `start`; the explicit mask aligns it to the bottom-right.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network, 4x wide, as in GPT-2."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One pre-norm transformer block: attention then MLP, each added to the residual stream."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv, start, mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer: ``forward(idx, cache=None)`` returns next-token logits (B, T, vocab_size)."""

    def __init__(self, cfg: GPTConfig, vocab_size: int) -> None:
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.vocab_size = vocab_size
        self.wte = nn.Embedding(vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf, 2017)
        # True under train.dp: the position lookup gets a batch dimension, so Opacus's per-example gradient of
        # wpe has one row per example (the same values and the same summed gradient either way)
        self.batched_positions = False

        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * cfg.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token ids ``idx`` (B, T).

        Without a cache ``idx`` is a whole sequence at positions 0..T-1. With one, ``idx`` holds the T new
        tokens that follow the ``cache.length`` already cached: they take positions ``cache.length``
        onwards, their keys/values are stored, and ``cache.length`` grows by T.
        """
        b, t = idx.shape
        start = 0 if cache is None else cache.length
        if start + t > self.block_size:
            where = f"{start} cached + {t} new tokens" if cache is not None else f"a sequence of {t} tokens"
            raise ValueError(
                f"{where} exceed the model's context of {self.block_size} tokens; "
                "crop the input (or start a fresh cache from a shifted window)"
            )
        if cache is not None and cache.batch_size != b:
            raise ValueError(f"the cache was made for batch size {cache.batch_size}, got input of batch size {b}")

        pos = torch.arange(start, start + t, dtype=torch.long, device=idx.device)
        if self.batched_positions:  # per-example gradients (train.dp): each row looks its positions up itself
            pos = pos.expand(b, t)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        if cache is None:
            for block in self.blocks:
                x = block(x)
        else:
            # New token i (absolute position start+i) sees every cached position and new positions <= i.
            mask = None
            if t > 1:
                mask = torch.ones(t, start + t, dtype=torch.bool, device=idx.device).tril(diagonal=start)
            for i, block in enumerate(self.blocks):
                x = block(x, (cache.k[i], cache.v[i]), start, mask)
            cache.length = start + t
        return self.lm_head(self.ln_f(x))

    def new_cache(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty cache for ``batch_size`` sequences, on the parameters' device and dtype by default."""
        p = self.wte.weight
        cfg = self.cfg
        return KVCache(
            cfg.n_layer,
            batch_size,
            cfg.n_head,
            cfg.block_size,
            cfg.n_embd // cfg.n_head,
            device=device if device is not None else p.device,
            dtype=dtype if dtype is not None else p.dtype,
        )

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the targets (B, T); positions whose target is -1 are ignored."""
        logits = self(idx)
        # Cross-entropy in fp32 even under autocast: the log-softmax over a large vocabulary needs it.
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count (the tied head counted once). ``non_embedding`` leaves out the position
        embedding, as nanoGPT does: the token embedding stays in because it is also the output layer."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields the shared weight once
        if non_embedding:
            n -= self.wpe.weight.numel()
        return n


__all__ = ["GPTConfig", "KVCache", "GPT", "CompiledDecoder", "COMPILE_MAX_BATCH"]


# Batches above this size decode eagerly even when compilation is asked for. Measured by
# benchmarks/bench_compile.py (BENCHMARKS.md, "Text: compiled against eager decoding"; results/compile.json),
# generate_text tokens/s compiled / eager in two runs: 1 row 1.25-1.27x, 4 rows 1.18x, 8 rows 1.06-1.07x,
# 16 rows 0.85-0.88x, 32 rows 0.65-0.72x. Small batches are dominated by per-operation overhead, which
# compiling fuses; from 16 rows the work is in the matrix products, and the static-shape step's attention over
# the whole pre-allocated context (the eager step reads only the filled positions) costs more than it saves.
COMPILE_MAX_BATCH = 8


class _LayerCache(KVCache):
    """A :class:`KVCache` holding one separate tensor per layer (``k[i]``, ``v[i]``) instead of one stacked tensor.

    Why: the compiled step writes each new key/value in place. A write into a *view* of one stacked input
    (``k[i]``) makes the compiled graph copy the whole stacked cache every token (measured: 10x slower than
    eager at 32 rows), while a write into a whole input tensor stays one small in-place store.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, block_size: int, head_dim: int, **kw: Any) -> None:
        shape = (batch_size, n_head, block_size, head_dim)
        self.k = [torch.zeros(shape, **kw) for _ in range(n_layer)]  # type: ignore[assignment]
        self.v = [torch.zeros(shape, **kw) for _ in range(n_layer)]  # type: ignore[assignment]
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    @property
    def block_size(self) -> int:
        return self.k[0].shape[2]


class CompiledDecoder:
    """A GPT whose one-token decoding step is compiled by ``torch.compile`` (Inductor), for fast generation.

    Decoding one token at a time is dominated by per-operation overhead in a small model (dozens of tiny
    kernels per token); compiling fuses them. The step is written with static shapes — the new token attends
    over the whole pre-allocated cache with the unfilled positions masked out, and its position is a tensor —
    so it compiles once per batch size (a few seconds on a 2-core CPU, then cached by PyTorch) and serves
    every position. Prefills of several tokens run eagerly, and so do batches of more than ``max_batch`` rows
    (:data:`COMPILE_MAX_BATCH`: where compiling was measured slower; None compiles every batch size). It
    drives the sampler through the same interface as :class:`GPT` (``block_size``, ``new_cache``,
    ``__call__(idx, cache)``); its logits equal the eager ones up to float rounding (~1e-6), so a sampled
    token can differ only where two are within rounding of a tie. Where compilation is not available (no C++
    compiler), it warns once and decodes eagerly.
    """

    def __init__(self, model: GPT, max_batch: int | None = COMPILE_MAX_BATCH) -> None:
        self.model = model.eval()
        self.block_size = model.block_size
        self.max_batch = max_batch
        self._step = torch.compile(self._static_step, dynamic=False)
        self._eager = False

    def parameters(self) -> Iterator[nn.Parameter]:  # the sampler finds the device here
        return self.model.parameters()

    def compiles(self, batch_size: int) -> bool:
        """Whether a batch of ``batch_size`` rows decodes through the compiled step (else eagerly)."""
        return not self._eager and (self.max_batch is None or batch_size <= self.max_batch)

    def new_cache(self, batch_size: int) -> KVCache:
        if not self.compiles(batch_size):
            return self.model.new_cache(batch_size)
        p, cfg = self.model.wte.weight, self.model.cfg
        return _LayerCache(
            cfg.n_layer,
            batch_size,
            cfg.n_head,
            cfg.block_size,
            cfg.n_embd // cfg.n_head,
            device=p.device,
            dtype=p.dtype,
        )

    def __call__(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if not isinstance(cache, _LayerCache) or idx.shape[1] != 1 or self._eager:
            return self.model(idx, cache)
        if cache.length + 1 > self.block_size:
            raise ValueError(
                f"{cache.length} cached + 1 new token exceed the model's context of {self.block_size} tokens"
            )
        pos = torch.full((1,), cache.length, dtype=torch.long, device=idx.device)
        idx = (
            idx.reshape(-1).clone().view(-1, 1)
        )  # a fresh (b, 1) tensor: a column of the sampler's token buffer has strides that would force recompiles
        try:
            logits = self._step(idx, pos, cache.k, cache.v)
        except Exception as e:  # noqa: BLE001 - any compiler failure: fall back, loudly, to the eager model
            import warnings

            warnings.warn(
                f"torch.compile is not available here ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                "decoding without it",
                RuntimeWarning,
                stacklevel=2,
            )
            self._eager = True
            return self.model(idx, cache)
        cache.length += 1
        return logits

    def _static_step(
        self, idx: torch.Tensor, pos: torch.Tensor, ks: list[torch.Tensor], vs: list[torch.Tensor]
    ) -> torch.Tensor:
        m = self.model
        b = idx.shape[0]
        n_head, n_embd = m.cfg.n_head, m.cfg.n_embd
        x = m.wte(idx) + m.wpe(pos)
        allowed = (torch.arange(self.block_size, device=idx.device) <= pos).view(1, 1, 1, -1)
        for i, block in enumerate(m.blocks):
            h = block.ln_1(x)
            q, k, v = block.attn.c_attn(h).split(n_embd, dim=2)
            q, k, v = (z.view(b, 1, n_head, n_embd // n_head).transpose(1, 2) for z in (q, k, v))
            ks[i].index_copy_(2, pos, k.to(ks[i].dtype))
            vs[i].index_copy_(2, pos, v.to(vs[i].dtype))
            y = F.scaled_dot_product_attention(q, ks[i].to(q.dtype), vs[i].to(q.dtype), attn_mask=allowed)
            x = x + block.attn.c_proj(y.transpose(1, 2).reshape(b, 1, n_embd))
            x = x + block.mlp(block.ln_2(x))
        return m.lm_head(m.ln_f(x))
