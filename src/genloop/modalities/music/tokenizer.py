"""Pieces <-> token ids for a language model, on MidiTok (REMI by default), with a conditioning prefix.

Every sequence is ``BOS Style_x Key_y Meter_z Bars_n <MidiTok tokens> EOS``. The prefix is what a model is
conditioned on at generation time (write the prefix you want, let it continue): the style/corpus, the key
(``Key_Fmajor``, ``Key_none``), the first time signature (``Meter_3/4``) and the length in bars (``Bars_n``,
capped at ``max_bars``); REMI also emits ``Bar``, ``TimeSig``, ``KeySig`` and ``Tempo`` tokens inside.

All tracks go in one stream with ``Program`` tokens (``one_token_stream_for_programs``). MidiTok merges
tracks that share a program, so tracks with a duplicate program (four chorale voices all on program 0)
are moved to the next free program before encoding; decoding returns one track per program, in order.

Optional BPE (MidiTok's ``train``) learns merges of base tokens on the *training* pieces only. The whole
tokenizer is saved to a folder (MidiTok's ``tokenizer.json`` plus ours) so a run can store and reload it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from symusic.core import ScoreTick

from ...errors import ConfigError, DataError, NotFoundError
from ...serialization import read_json, write_json
from .piece import Piece, key_name

KINDS = ("REMI", "TSD", "MIDILike")  # single-stream tokenizations that support programs and time signatures
METERS = ("2/2", "3/2", "4/2", "2/4", "3/4", "4/4", "5/4", "6/4", "3/8", "6/8", "9/8", "12/8")
MIDITOK_FILE = "tokenizer.json"
GENLOOP_FILE = "genloop_music_tokenizer.json"
PREFIX_TYPES = ("BOS", "EOS", "PAD", "Style", "Key", "Meter", "Bars")


@dataclass
class MusicTokenizerConfig:
    """How pieces become tokens. Everything here changes the ids, so all of it goes into the fingerprint."""

    kind: str = "REMI"
    styles: list[str] = field(default_factory=list)  # the Style_ tokens (an unknown style -> Style_unknown)
    resolution: int = 8  # positions per beat for notes starting/lasting < 4 beats; half that up to 12 beats
    use_velocities: bool = False  # chorales and ABC have no dynamics; turn on for performed MIDI
    use_tempos: bool = True
    use_time_signatures: bool = True
    use_key_signatures: bool = True
    max_bars: int = 64  # Bars_1..Bars_max; longer pieces say Bars_max
    bpe_vocab: int | None = None  # set by train_bpe: the trained vocabulary size

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"music tokenizer '{self.kind}' is not supported (valid: {', '.join(KINDS)})")
        if self.resolution < 1 or self.resolution % 2:
            raise ConfigError(f"music tokenizer resolution must be a positive even number, got {self.resolution}")
        if self.max_bars < 1:
            raise ConfigError(f"music tokenizer max_bars must be >= 1, got {self.max_bars}")
        self.styles = sorted({_token_value(s) for s in self.styles} | {"unknown"})


def _token_value(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in str(text)) or "unknown"


def key_token(piece: Piece) -> str:
    """``Key_Fmajor``, ``Key_Bbminor`` (``-`` as flat becomes ``b``), or ``Key_none``."""
    name = piece.key_name
    return "Key_" + (name.replace("-", "b").replace(" ", "") if name is not None else "none")


def _all_key_tokens() -> list[str]:
    names = {key_name(f, m).replace("-", "b").replace(" ", "") for f in range(-7, 8) for m in (False, True)}
    return [f"Key_{n}" for n in sorted(names)] + ["Key_none"]


class MusicTokenizer:
    """A MidiTok tokenizer plus the conditioning prefix; see the module docstring."""

    def __init__(self, config: MusicTokenizerConfig | None = None, _miditok: Any = None) -> None:
        self.config = config or MusicTokenizerConfig()
        self.tok = _miditok if _miditok is not None else self._build()

    def _build(self) -> Any:
        import miditok

        c = self.config
        special = ["PAD", "BOS", "EOS", *[f"Style_{s}" for s in c.styles], *_all_key_tokens()]
        special += [f"Meter_{m}" for m in METERS] + ["Meter_other"] + [f"Bars_{n}" for n in range(1, c.max_bars + 1)]
        cfg = miditok.TokenizerConfig(
            pitch_range=(0, 127),
            beat_res={(0, 4): c.resolution, (4, 12): c.resolution // 2},
            special_tokens=special,
            use_velocities=c.use_velocities,
            use_tempos=c.use_tempos,
            use_time_signatures=c.use_time_signatures,
            use_key_signatures=c.use_key_signatures,
            use_programs=True,
            one_token_stream_for_programs=True,
            remove_duplicated_notes=True,
        )
        return getattr(miditok, c.kind)(cfg)

    # ---------------------------------------------------------------------------------- vocabulary

    def __len__(self) -> int:
        return len(self.tok)

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    @property
    def pad_id(self) -> int:
        return int(self.tok.pad_token_id)

    def token_id(self, token: str) -> int:
        """The base id of a token (``"BOS_None"``, ``"Style_bach"``, ...); KeyError if not in the vocabulary."""
        return int(self.tok.vocab[token])

    def fingerprint(self) -> str:
        """A hash of everything that decides the ids (config + learned merges), for cache keys."""
        blob = json.dumps({"config": asdict(self.config), "miditok": self.tok.to_dict()}, sort_keys=True, default=str)
        extra = self.tok._model.to_str() if self.tok.is_trained else ""
        return hashlib.sha256((blob + extra).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------------------- encode/decode

    def prefix_tokens(self, piece: Piece, style: str | None = None, bars: int | None = None) -> list[str]:
        """The conditioning tokens for a piece (or override its style/bar count to ask for something else)."""
        style = _token_value(style or piece.style)
        if style not in self.config.styles:
            style = "unknown"
        meter = "{}/{}".format(*piece.time_signature)
        n_bars = min(max(1, bars or piece.bars()), self.config.max_bars)
        return [
            "BOS_None",
            f"Style_{style}",
            key_token(piece),
            f"Meter_{meter if meter in METERS else 'other'}",
            f"Bars_{n_bars}",
        ]

    def encode(self, piece: Piece) -> list[int]:
        """Token ids (BPE-merged once trained): prefix, the piece's MidiTok tokens, EOS."""
        from miditok import TokSequence

        base = self._tokens(piece)
        seq = TokSequence(tokens=base)
        self.tok.complete_sequence(seq)
        if self.tok.is_trained:
            self.tok.encode_token_ids(seq)
        return [int(i) for i in seq.ids]

    def _tokens(self, piece: Piece) -> list[str]:
        score = distinct_programs(piece.score)
        seq = self.tok.encode(score, encode_ids=False)
        if isinstance(seq, list):  # defensive: one stream is configured
            seq = seq[0]
        return self.prefix_tokens(piece) + list(seq.tokens) + ["EOS_None"]

    def tokens(self, ids: list[int]) -> list[str]:
        """Ids (BPE-merged or not) back to base token strings."""
        from miditok import TokSequence

        seq = TokSequence(ids=[int(i) for i in ids], are_ids_encoded=self.tok.is_trained)
        if self.tok.is_trained:
            self.tok.decode_token_ids(seq)
        self.tok.complete_sequence(seq)
        return list(seq.tokens)

    def decode(self, ids: list[int], tpq: int = 480) -> ScoreTick:
        """Ids -> Score at ``tpq`` (prefix and EOS dropped; anything after the first EOS ignored)."""
        from miditok import TokSequence

        tokens = self.tokens(ids)
        if "EOS_None" in tokens:
            tokens = tokens[: tokens.index("EOS_None")]
        body = [t for t in tokens if t.split("_", 1)[0] not in PREFIX_TYPES]
        seq = TokSequence(tokens=body)
        self.tok.complete_sequence(seq)
        score = self.tok.decode(seq)
        return score.resample(tpq, min_dur=1) if score.tpq != tpq else score

    def conditions(self, ids: list[int]) -> dict[str, str]:
        """The conditioning prefix of a sequence as ``{"Style": "bach", "Key": "Fmajor", ...}``."""
        out = {}
        for t in self.tokens(ids[:16]):
            kind, _, value = t.partition("_")
            if kind in ("Style", "Key", "Meter", "Bars") and kind not in out:
                out[kind] = value
        return out

    # ----------------------------------------------------------------------------------------- BPE

    def train_bpe(self, pieces: list[Piece], vocab_size: int) -> None:
        """Learn BPE merges on ``pieces`` (the training split) up to ``vocab_size`` ids."""
        if vocab_size <= len(self.tok):
            raise ConfigError(f"BPE vocab_size must exceed the {len(self.tok)} base tokens, got {vocab_size}")
        if not pieces:
            raise DataError("cannot train BPE on zero pieces")
        from miditok import TokSequence

        corpus = []
        for piece in pieces:
            seq = TokSequence(tokens=self._tokens(piece))
            self.tok.complete_sequence(seq, complete_bytes=True)
            chunks = seq.split_per_bars() if self.tok.config.encode_ids_split == "bar" else [seq]
            corpus.append([self.tok._ids_to_bytes(c.ids, as_one_str=True) for c in chunks if len(c)])
        self.tok.train(vocab_size=vocab_size, model="BPE", iterator=corpus)
        self.config.bpe_vocab = vocab_size

    # --------------------------------------------------------------------------------- persistence

    def save(self, folder: str | Path) -> None:
        """Write ``tokenizer.json`` (MidiTok: config, vocabulary, merges) and our config beside it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tok.save(folder / MIDITOK_FILE)
        write_json(folder / GENLOOP_FILE, {"config": asdict(self.config), "fingerprint": self.fingerprint()})

    @classmethod
    def load(cls, folder: str | Path) -> MusicTokenizer:
        import miditok

        folder = Path(folder)
        if not (folder / GENLOOP_FILE).is_file() or not (folder / MIDITOK_FILE).is_file():
            raise NotFoundError(f"{folder}: not a music tokenizer folder (needs {GENLOOP_FILE} and {MIDITOK_FILE})")
        state = read_json(folder / GENLOOP_FILE)
        try:
            config = MusicTokenizerConfig(**state["config"])
            tok = getattr(miditok, config.kind)(params=folder / MIDITOK_FILE)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{folder}: unreadable music tokenizer ({e})") from None
        return cls(config, tok)


def distinct_programs(score: ScoreTick) -> ScoreTick:
    """A copy where no two pitched tracks share a program (a repeat moves to the next free one)."""
    score = score.copy()
    used: set[int] = set()
    for track in score.tracks:
        if track.is_drum:
            continue
        p = int(track.program)
        while p in used and len(used) < 128:
            p = (p + 1) % 128
        track.program = p
        used.add(p)
    return score
