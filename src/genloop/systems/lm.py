"""Language models: next-token prediction on a token stream, sampling through the shared text sampler.

A language-model system owns three things: its network, its loss (mean next-token cross-entropy) and
the adapter the sampler drives (``causal_lm()``: ``block_size``, ``new_cache(batch)``, ``lm(idx, cache)``
-> logits). Everything else is shared with the image families: the engine trains it (precision,
gradient accumulation, warm-up + cosine schedule, clipping, checkpoints, exact resume, quick
validation evaluations, early stopping), and ``genloop.generation.text_sampling`` samples from it with
every control (temperature, top-k, top-p, repetition penalty, stop strings, beams, streaming), including
the text previews written during training (``genloop.generation.preview``).

A new text family (another architecture, or :mod:`genloop.systems.hf_lm`'s pretrained models) subclasses
:class:`LanguageModelSystem` and provides ``causal_lm()`` and ``loss()``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..models.transformer import GPT, GPTConfig
from .base import DataSpec, StepFn, System


class LanguageModelSystem(System):
    """Base of every text family. ``tokenizer`` is attached after construction (by training or loading)."""

    modality: ClassVar[str] = "text"
    unit: ClassVar[str] = "tokens"
    ema_target: ClassVar[str] = "net"
    # nanoGPT's proven recipe for small models: AdamW (0.9, 0.99), warm-up then cosine decay, clipping at 1,
    # weight decay on matrices only; no EMA (the last weights of a cosine schedule are already averaged out).
    train_defaults: ClassVar[dict[str, Any]] = {
        "batch_size": 12,
        "lr": 1e-3,
        "betas": [0.9, 0.99],
        "weight_decay": 0.1,
        "schedule": "cosine",
        "warmup_steps": 100,
        "grad_clip": 1.0,
        "ema_decay": None,
        "select_metric": "val_loss",
        "sample_every": 0,
        "checkpoint_every": 1000,
    }
    tokenizer: Any = None

    # --- what a subclass provides -----------------------------------------------------------------
    def causal_lm(self) -> Any:
        """The object the sampler drives: ``block_size``, ``new_cache(batch)``, ``__call__(idx, cache=None)``."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def tokenizer_source(cls, config: Any) -> str | None:
        """A tokenizer the data must be encoded with (a pretrained model's own), or None: ``data.tokenizer`` decides."""
        return None

    # --- shared -----------------------------------------------------------------------------------
    @property
    def block_size(self) -> int:
        return int(self.causal_lm().block_size)

    def param_groups(self) -> dict[str, list[Any]]:
        """One group; weight decay only on matrices (embeddings and linear weights), as in nanoGPT."""
        params = [p for p in self.parameters() if p.requires_grad]
        seen: set[int] = set()
        unique = [p for p in params if not (id(p) in seen or seen.add(id(p)))]
        decay = [p for p in unique if p.dim() >= 2]
        no_decay = [p for p in unique if p.dim() < 2]
        groups: list[dict[str, Any]] = [{"params": decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return {"model": groups}

    def training_step(self, opt: StepFn) -> dict[str, torch.Tensor]:
        return opt.step("model", lambda batch: {"loss": self.loss(*batch)})

    def batch_units(self, batch: Any) -> int:
        return int(batch[0].numel())

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        return {}


class GPTSystem(LanguageModelSystem):
    """A decoder-only transformer trained from scratch (``genloop train gpt``)."""

    Config = GPTConfig

    def __init__(self, config: GPTConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if spec.vocab_size < 2:
            from ..errors import ConfigError

            raise ConfigError(
                "model 'gpt' trains on text: use a text corpus (--data pydoc, a .txt, a folder or a .jsonl)"
            )
        self.net = GPT(config, spec.vocab_size)

    def causal_lm(self) -> GPT:
        return self.net

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net.loss(x, y)

    def dp_private(self) -> dict[str, tuple[torch.nn.Module, int]]:
        self.net.batched_positions = True  # the position embedding's lookup per example, for Opacus's hooks
        return {"model": (self.net, 1)}  # the privacy unit is one training window (see genloop.training.dp)


__all__ = ["LanguageModelSystem", "GPTSystem"]
