"""A decoder-only transformer over music tokens (``music-gpt``): the text GPT, trained on tokenised pieces.

Music here is a language: :class:`~genloop.modalities.music.tokenizer.MusicTokenizer` turns each piece
into ``BOS Style_x Key_y Meter_a/b Bars_n <MidiTok tokens> EOS``, the pieces of the (augmented) training
split are concatenated into one stream, and the model learns next-token prediction on random windows of
it (:class:`~genloop.modalities.text.batches.TokenBatches`, resumable). Everything else is shared with the text family:
the engine (precision, schedules, clipping, checkpoints, exact resume), the loss, the KV-cached sampler.
Only the defaults differ: a wider model with a longer context (a chorale is ~60 tokens a bar), dropout
for small corpora, and music's tokenizer attached as ``system.tokenizer``.

    tok = MusicTokenizer(MusicTokenizerConfig(styles=["bach"]))
    ids = tokenize_dataset(ds, tok)
    system = MusicGPTSystem(MusicGPTConfig(), DataSpec(vocab_size=tok.vocab_size))
    system.tokenizer = tok
    Trainer(system, music_batches(ids["train"], 12, system.block_size, seed=0), cfg, run_dir).fit()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError, DataError
from ..models.transformer import GPT, GPTConfig
from .base import DataSpec
from .lm import GPTSystem


@dataclass
class MusicGPTConfig(GPTConfig):
    """GPT sizes for music on a CPU: 4 layers, 256 wide, 512 tokens of context (8 chorale bars or so)."""

    name: str = "music-gpt"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 512
    dropout: float = 0.1  # chorale corpora are small (a few hundred pieces): some regularisation helps


class MusicGPTSystem(GPTSystem):
    """The GPT over music tokens (``genloop train music-gpt`` once registered); ``tokenizer``: a MusicTokenizer."""

    Config = MusicGPTConfig

    @classmethod
    def dp_config(cls, config: GPTConfig) -> GPTConfig:
        raise ConfigError("train.dp is not supported for music-gpt yet (untested); train gpt on text with DP")

    modality: ClassVar[str] = "music"
    unit: ClassVar[str] = "tokens"
    train_defaults: ClassVar[dict[str, Any]] = {
        **GPTSystem.train_defaults,
        "batch_size": 8,
        "lr": 6e-4,
        "warmup_steps": 50,
    }

    def __init__(self, config: GPTConfig, spec: DataSpec) -> None:
        if spec.vocab_size < 2:
            raise ConfigError("model 'music-gpt' trains on music: use a music corpus (bach, essen, a MIDI folder)")
        super(GPTSystem, self).__init__(config, spec)  # skip GPTSystem's text-only message, build the same net
        self.net = GPT(config, spec.vocab_size)


def token_stream(pieces: list[np.ndarray]) -> np.ndarray:
    """The pieces' ids end to end (each already starts with BOS and ends with EOS), as one int64 array."""
    if not pieces:
        raise DataError("no tokenised pieces to train on")
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in pieces])


def music_batches(pieces: list[np.ndarray], batch_size: int, block_size: int, seed: int = 0) -> Any:
    """Resumable random windows over the training stream (:class:`~genloop.modalities.text.batches.TokenBatches`).

    A stream shorter than one window (a handful of short pieces) is repeated until it fills one, so a tiny
    corpus still trains; windows then wrap across piece boundaries exactly as they do between pieces.
    """
    from ..modalities.text.batches import TokenBatches

    stream = token_stream(pieces)
    if len(stream) < block_size + 1:
        stream = np.tile(stream, -(-(block_size + 1) // len(stream)) + 1)
    return TokenBatches(stream, batch_size, block_size, seed=seed)


__all__ = ["MusicGPTConfig", "MusicGPTSystem", "music_batches", "token_stream"]
