"""The music pipeline: a trained music language model in, MIDI/WAV/piano rolls out, with a recipe on each.

    pipe = MusicPipeline(system, info)            # info: run_id, model, checkpoint_sha256, step, ...
    out = pipe(n=4, bars=16, seed=0, key="F major", time_signature="3/4", style="bach")
    out[0].midi_bytes                             # a MIDI file carrying its recipe in a text meta event
    audio, rate = out[0].wav                      # rendered on first use (FluidSynth, else NumPy)
    out[0].save("outputs/sample")                 # sample.mid, sample.mid.json, sample.wav, sample.png
    pipe(n=1, bars=8, prompt_midi="theme.mid", prompt_bars=2)   # continue the first 2 bars of a file

How a sample is made. The conditioning prefix ``BOS Style_x Key_y Meter_a/b Bars_n`` is written from the
arguments; a slot left as None (key, time signature, style) is drawn by the model itself, restricted to
tokens of that kind, with the row's seed, so unconditional samples follow the training data's mix of keys
and meters. Rows whose prefixes agree are sampled together by the shared sampler
(:func:`genloop.generation.text_sampling.generate_ids`: temperature, top-k, top-p, KV cache, a generator
per row), and the pipeline stops each row itself: at EOS, or just before the ``Bar`` token that would
open bar ``bars + 1`` (bars are counted on the tokens as they arrive; a BPE token holding a ``Bar`` counts
too), or after ``max_tokens``. The decoded score is then cut at the end of bar ``bars`` (:func:`clip_to_bars`):
an undertrained model may write no ``Bar`` token at all and still run on (a far ``Position``, a note lasting
several bars), so counting tokens alone let a 4-bar request come back ~6.5 bars long. Sample ``i``
depends only on ``seed + i`` (as for images and text): the same seed gives byte-identical MIDI, and any
sample can be regenerated alone.

Decoding never fails on what an undertrained model writes: ids outside the vocabulary and tokens that
MidiTok cannot place are dropped (:func:`safe_decode`); an unreadable remainder is an empty score.
BPE tokenizers are supported when every prefix slot is given (merged prefix tokens cannot be drawn one
slot at a time).
"""

from __future__ import annotations

import hashlib
import inspect
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from symusic.core import ScoreTick

from ...errors import ConfigError, DataError
from ...generation.text_sampling import SamplingParams, generate_ids
from .piece import Piece, piece_from_score
from .tokenizer import METERS, PREFIX_TYPES, MusicTokenizer, _token_value

TPQ = 480
TOKENS_PER_BAR = 160  # default max_tokens per requested bar: a dense 4-voice bar of eighths is ~100 tokens
BODY_TYPES = ("Bar", "Position", "TimeShift", "Program", "Pitch", "Velocity", "Duration", "NoteOn", "NoteOff")


# ------------------------------------------------------------------------------------------ decoding


def safe_decode(tokenizer: MusicTokenizer, ids: list[int], tpq: int = TPQ) -> ScoreTick:
    """Ids -> score, dropping what cannot be decoded; never raises on any list of ints.

    Ids outside the vocabulary are dropped first; if MidiTok still fails, only the plain note and timing
    tokens (:data:`BODY_TYPES`) are kept and decoding is tried again; failing that the score is empty.
    """
    from symusic import Score

    vocab = tokenizer.vocab_size
    ids = [int(i) for i in ids if 0 <= int(i) < vocab]
    try:
        return tokenizer.decode(ids, tpq)
    except Exception:  # noqa: BLE001 - MidiTok raises many kinds on ill-formed sequences
        pass
    try:
        from miditok import TokSequence

        tokens = tokenizer.tokens(ids)
        if "EOS_None" in tokens:
            tokens = tokens[: tokens.index("EOS_None")]
        body = [t for t in tokens if t.split("_", 1)[0] in BODY_TYPES]
        seq = TokSequence(tokens=body)
        tokenizer.tok.complete_sequence(seq)
        score = tokenizer.tok.decode(seq)
        return score.resample(tpq, min_dur=1) if score.tpq != tpq else score
    except Exception:  # noqa: BLE001
        return Score(tpq)


def clip_to_bars(score: ScoreTick, bars: int) -> ScoreTick:
    """The score cut at the end of bar ``bars``: later notes dropped, notes sounding past it shortened.

    Bars are measured under the first time signature (4/4 without one), as :meth:`Piece.bars` counts them, so
    the piece a request for ``bars`` bars returns never measures more. Tempo, key and meter changes after
    the end go too (they would only stretch a player's timeline).
    """
    from symusic import Note

    ts = score.time_signatures
    num, den = (int(ts[0].numerator), int(ts[0].denominator)) if len(ts) else (4, 4)
    end = int(round(bars * num * 4 / den * int(score.tpq)))
    out = score.copy()
    for track in out.tracks:
        kept = [
            Note(int(n.time), max(1, min(int(n.duration), end - int(n.time))), int(n.pitch), int(n.velocity))
            for n in track.notes
            if int(n.time) < end
        ]
        track.notes.clear()
        track.notes.extend(kept)
    for events in (out.tempos, out.time_signatures, out.key_signatures):
        later = [e for e in events if int(e.time) >= end and int(e.time) > 0]
        if later:
            keep = [e for e in events if not (int(e.time) >= end and int(e.time) > 0)]
            events.clear()
            events.extend(keep)
    return out


def encode_tokens(tokenizer: MusicTokenizer, tokens: list[str]) -> list[int]:
    """Base token strings -> ids as the model sees them (BPE-merged once the tokenizer is trained)."""
    from miditok import TokSequence

    unknown = [t for t in tokens if t not in tokenizer.tok.vocab]
    if unknown:
        raise ConfigError(f"not in this model's music vocabulary: {', '.join(unknown)}")
    seq = TokSequence(tokens=list(tokens))
    tokenizer.tok.complete_sequence(seq)
    if tokenizer.tok.is_trained:
        tokenizer.tok.encode_token_ids(seq)
    return [int(i) for i in seq.ids]


# --------------------------------------------------------------------------------------- conditions


def key_token_of(key: str) -> str:
    """``"F major"``, ``"Fmajor"``, ``"B- minor"``, ``"Bb minor"``, ``"F"``, ``"none"`` -> ``Key_Fmajor`` etc."""
    text = str(key).strip().removeprefix("Key_").replace("-", "b").replace(" ", "")
    if text.lower() == "none":
        return "Key_none"
    if not text.lower().endswith(("major", "minor")):
        text += "major"
    tonic, mode = text[:-5], text[-5:].lower()
    return f"Key_{tonic[:1].upper()}{tonic[1:]}{mode}"


def meter_token_of(time_signature: str | tuple[int, int]) -> str:
    text = "{}/{}".format(*time_signature) if isinstance(time_signature, (tuple, list)) else str(time_signature)
    text = text.removeprefix("Meter_").replace(" ", "")
    return f"Meter_{text if text in METERS else 'other'}"


def style_token_of(tokenizer: MusicTokenizer, style: str) -> str:
    value = _token_value(style)
    if value not in tokenizer.config.styles:
        raise ConfigError(f"unknown style '{style}'; this model knows: {', '.join(tokenizer.config.styles)}")
    return f"Style_{value}"


# ------------------------------------------------------------------------------------------ outputs


@dataclass
class MusicSample:
    """One generated piece: its score and token ids, with lazily rendered MIDI bytes, audio and piano roll."""

    score: ScoreTick
    ids: list[int]
    recipe: dict[str, Any]
    _wav: tuple[np.ndarray, int] | None = field(default=None, repr=False)

    @property
    def piece(self) -> Piece:
        return piece_from_score(self.score, f"sample_{self.recipe.get('seed', 0):06d}", style="generated")

    @property
    def midi_bytes(self) -> bytes:
        from .render import midi_bytes

        return midi_bytes(self.score, self.recipe)

    @property
    def wav(self) -> tuple[np.ndarray, int]:
        """``(mono float32 audio, sample rate)``, rendered on first use and kept."""
        if self._wav is None:
            from .render import render_audio

            audio, rate = render_audio(self.score)
            self._wav = (np.asarray(audio, dtype=np.float32), int(rate))
        return self._wav

    def piano_roll_png(self, path: str | Path | None = None) -> bytes:
        """The piano roll as PNG bytes (also written to ``path`` when given)."""
        from .render import piano_roll_png

        if path is not None:
            return piano_roll_png(self.piece, path).read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            return piano_roll_png(self.piece, Path(tmp) / "roll.png").read_bytes()

    def save(self, path: str | Path, sign: bool | None = None, watermark: bool | None = None) -> list[Path]:
        """``path`` without suffix -> ``.mid`` (recipe inside), ``.mid.json``, ``.wav``, ``.png``. Signed (a manifest
        inside the MIDI file and ``.mid.manifest.json`` beside it) unless ``sign`` is False or, with ``sign``
        None, :func:`genloop.safety.provenance.enabled` says no; watermarked (the velocities' parity, see
        :mod:`genloop.safety.music_watermark`) likewise by ``watermark`` /
        :func:`genloop.safety.image_watermark.enabled`."""
        from ...safety import image_watermark, provenance
        from .render import write_midi, write_wav

        sign = provenance.enabled() if sign is None else sign
        watermark = image_watermark.enabled() if watermark is None else watermark
        base = Path(path)
        if base.suffix in (".mid", ".midi"):
            base = base.with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        mid = write_midi(base.with_name(base.name + ".mid"), self.score, self.recipe, sign=sign, watermark=watermark)
        audio, rate = self.wav
        wav = write_wav(base.with_name(base.name + ".wav"), audio, rate)
        png = base.with_name(base.name + ".png")
        self.piano_roll_png(png)
        return [mid, mid.with_name(mid.name + ".json"), wav, png]


@dataclass
class MusicOutput:
    modality: ClassVar[str] = "music"  # which registered modality stores and scores it (as Image/TextOutput say)
    samples: list[MusicSample]
    recipe: dict[str, Any] = field(default_factory=dict)  # shared by the batch; sample i used seed + i

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> MusicSample:
        return self.samples[i]

    def __iter__(self) -> Any:
        return iter(self.samples)

    @property
    def pieces(self) -> list[Piece]:
        return [s.piece for s in self.samples]

    def recipe_of(self, i: int) -> dict[str, Any]:
        return self.samples[i].recipe

    def save(self, folder: str | Path) -> list[Path]:
        """Every sample as ``sample_<seed>.{mid,mid.json,wav,png}`` in ``folder``."""
        out = []
        for s in self.samples:
            out += s.save(Path(folder) / f"sample_{s.recipe['seed']:06d}")
        return out


# ----------------------------------------------------------------------------------------- pipeline


class MusicPipeline:
    """Inference for a music language model run; see the module docstring."""

    modality = "music"

    def __init__(self, system: Any, info: dict[str, Any]) -> None:
        self.system = system.eval()
        self.info = dict(info)  # run_id, model, checkpoint, checkpoint_sha256, step
        self.tokenizer: MusicTokenizer = system.tokenizer
        if self.tokenizer is None:
            raise ConfigError(f"run {info.get('run_id')} has no music tokenizer saved beside its weights")
        self._bar_counts: np.ndarray | None = None

    @property
    def lm(self) -> Any:
        return self.system.causal_lm()

    def bar_counts(self) -> np.ndarray:
        """How many ``Bar`` tokens each id stands for (0/1 without BPE; a merged token may hold more)."""
        if self._bar_counts is None:
            tok, vocab = self.tokenizer, self.tokenizer.vocab_size
            if tok.tok.is_trained:
                counts = [tok.tokens([i]).count("Bar_None") for i in range(vocab)]
            else:
                counts = [0] * vocab
                counts[tok.token_id("Bar_None")] = 1
            self._bar_counts = np.asarray(counts, dtype=np.int64)
        return self._bar_counts

    def _kind_ids(self, kind: str) -> list[int]:
        return [int(i) for t, i in self.tokenizer.tok.vocab.items() if t.split("_", 1)[0] == kind]

    def _prompt(
        self, prompt_midi: str | Path | bytes, prompt_bars: int
    ) -> tuple[Piece, list[str], str]:  # piece, body tokens, sha256
        from .sources import read_midi_bytes

        data = bytes(prompt_midi) if isinstance(prompt_midi, (bytes, bytearray)) else Path(prompt_midi).read_bytes()
        piece = read_midi_bytes(data, "prompt", "" if isinstance(prompt_midi, (bytes, bytearray)) else str(prompt_midi))
        num, den = piece.time_signature
        end = int(round(prompt_bars * num * 4 / den * piece.tpq))
        clipped = piece.score.clip(0, end, clip_end=True)
        if not sum(len(t.notes) for t in clipped.tracks):
            raise DataError(f"the prompt has no notes in its first {prompt_bars} bar(s)")
        piece = piece_from_score(clipped, "prompt", piece.source, piece.style)
        tokens = self.tokenizer.tokens(self.tokenizer.encode(piece))
        body = [t for t in tokens if t.split("_", 1)[0] not in PREFIX_TYPES]
        return piece, body, hashlib.sha256(data).hexdigest()

    @torch.inference_mode()
    def _draw(self, ids: list[int], allowed: list[int], seed: int, params: SamplingParams) -> int:
        """One prefix slot: the model's next token among ``allowed``, drawn with the row's own generator."""
        ban = {i: -100.0 for i in range(self.tokenizer.vocab_size) if i not in set(allowed)}
        one = SamplingParams(
            max_tokens=1, temperature=params.temperature, top_k=0, top_p=params.top_p, logit_bias=ban, stop_at_eot=False
        )
        (token,) = generate_ids(self.lm, ids, one, [seed])
        return int(token[0])

    def _plan(
        self,
        n: int,
        bars: int,
        seed: int,
        temperature: float,
        top_p: float,
        top_k: int,
        prompt_midi: str | Path | bytes | None,
        prompt_bars: int,
        key: str | None,
        time_signature: str | tuple[int, int] | None,
        style: str | None,
        max_tokens: int | None,
    ) -> tuple[SamplingParams, list[tuple[str, str | None]], list[str], dict[str, Any]]:
        """The checked request: (sampling settings, prefix slots, prompt tokens, batch recipe), nothing sampled.
        Split from :meth:`__call__` so that :meth:`recipe_for` can say what a call would record."""
        tok = self.tokenizer
        if not (isinstance(n, int) and n >= 1):
            raise ConfigError(f"n must be at least 1, got {n}")
        if not (isinstance(bars, int) and 1 <= bars <= tok.config.max_bars):
            raise ConfigError(f"bars must be between 1 and {tok.config.max_bars}, got {bars}")
        max_tokens = int(max_tokens or TOKENS_PER_BAR * bars)
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
        params.validate()

        prompt_body: list[str] = []
        prompt_sha = None
        if prompt_midi is not None:
            if not (isinstance(prompt_bars, int) and 1 <= prompt_bars < bars):
                raise ConfigError(f"prompt_bars must be between 1 and bars - 1 = {bars - 1}, got {prompt_bars}")
            piece, prompt_body, prompt_sha = self._prompt(prompt_midi, prompt_bars)
            key = key if key is not None else (piece.key_name or "none")
            time_signature = time_signature if time_signature is not None else piece.time_signature
        slots: list[tuple[str, str | None]] = [
            ("Style", style_token_of(tok, style) if style is not None else None),
            ("Key", key_token_of(key) if key is not None else None),
            ("Meter", meter_token_of(time_signature) if time_signature is not None else None),
        ]
        for _, t in slots:
            if t is not None and t not in tok.tok.vocab:
                raise ConfigError(f"{t} is not in this model's music vocabulary")
        if tok.tok.is_trained and any(t is None for _, t in slots):
            raise ConfigError("a BPE music tokenizer needs key, time_signature and style given (no slot drawing)")
        recipe = self._recipe(
            n=n,
            bars=bars,
            seed=seed,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_tokens=max_tokens,
            key=key,
            time_signature="{}/{}".format(*time_signature)
            if isinstance(time_signature, (tuple, list))
            else time_signature,
            style=style,
            prompt_midi_sha256=prompt_sha,
            prompt_bars=prompt_bars if prompt_midi is not None else None,
        )
        return params, slots, prompt_body, recipe

    def recipe_for(self, n: int = 1, seed: int = 0, **options: Any) -> dict[str, Any]:
        """The batch recipe ``self(n=n, seed=seed, **options)`` returns, without sampling (the request is checked
        as the call checks it): what a resumed generation compares finished pieces against."""
        defaults = {k: p.default for k, p in inspect.signature(MusicPipeline.__call__).parameters.items()}
        merged = {
            k: options.get(k, defaults[k]) for k in defaults if k not in ("self", "n", "seed", "batch_size", "progress")
        }
        return self._plan(n=n, seed=seed, **merged)[3]

    def __call__(
        self,
        n: int = 1,
        bars: int = 16,
        seed: int = 0,
        temperature: float = 0.9,
        top_p: float = 0.95,
        top_k: int = 0,
        prompt_midi: str | Path | bytes | None = None,
        prompt_bars: int = 4,
        key: str | None = None,
        time_signature: str | tuple[int, int] | None = None,
        style: str | None = None,
        max_tokens: int | None = None,
        batch_size: int = 16,
        progress: Callable[[int, int], None] | None = None,
    ) -> MusicOutput:
        """``progress(done, total)`` is called as each batch of pieces is finished (``total``: ``n``)."""
        tok = self.tokenizer
        params, slots, prompt_body, recipe = self._plan(
            n, bars, seed, temperature, top_p, top_k, prompt_midi, prompt_bars, key, time_signature, style, max_tokens
        )
        # Each row's prefix: the given tokens, the others drawn by the model with the row's seed.
        rows: list[list[str]] = []
        for i in range(n):
            tokens = ["BOS_None"]
            for kind, given in slots:
                if given is None:
                    ids = encode_tokens(tok, tokens)
                    drawn = self._draw(ids, self._kind_ids(kind), _slot_seed(seed + i, kind), params)
                    given = tok.tok[drawn]
                tokens.append(given)
            rows.append(tokens + [f"Bars_{bars}"] + prompt_body)

        groups: dict[tuple[str, ...], list[int]] = {}
        for i, tokens in enumerate(rows):
            groups.setdefault(tuple(tokens), []).append(i)
        results: list[tuple[list[int], str] | None] = [None] * n
        for tokens, members in groups.items():
            prompt_ids = encode_tokens(tok, list(tokens))
            for first in range(0, len(members), batch_size):
                chunk = members[first : first + batch_size]
                made = self._sample(prompt_ids, [seed + i for i in chunk], params, bars)
                for i, r in zip(chunk, made):
                    results[i] = (prompt_ids + r[0], r[1])
                if progress is not None:
                    progress(sum(r is not None for r in results), n)

        samples = []
        for i, (ids, reason) in enumerate(r for r in results if r is not None):
            conditions = tok.conditions(ids)
            row_recipe = {
                **recipe,
                "seed": seed + i,
                "n": 1,
                "index": i,
                "batch_seed": seed,
                "conditions": conditions,
                "tokens": len(ids),
                "finish_reason": reason,
            }
            samples.append(MusicSample(clip_to_bars(safe_decode(tok, ids), bars), ids, row_recipe))
        return MusicOutput(samples, recipe)

    def _sample(
        self, prompt_ids: list[int], seeds: list[int], params: SamplingParams, bars: int
    ) -> list[tuple[list[int], str]]:
        """Rows continuing one prompt until EOS, the Bar that opens bar ``bars + 1``, or ``max_tokens``."""
        counts = self.bar_counts()
        eos = self.tokenizer.token_id("EOS_None")
        start_bars = int(counts[np.asarray(prompt_ids, dtype=np.int64)].sum())
        bar_count = [start_bars] * len(seeds)
        out: list[list[int]] = [[] for _ in seeds]
        reason = ["length"] * len(seeds)
        running = set(range(len(seeds)))
        for step in generate_ids(self.lm, prompt_ids, params, seeds, eot_id=eos):
            for r, t in enumerate(step.tolist()):
                if r not in running:
                    continue
                if t == eos:
                    running.discard(r)
                    reason[r] = "eos"
                    continue
                if bar_count[r] + counts[t] > bars:
                    running.discard(r)
                    reason[r] = "bars"
                    continue
                bar_count[r] += int(counts[t])
                out[r].append(int(t))
            if not running:
                break
        return list(zip(out, reason))

    def _recipe(self, **settings: Any) -> dict[str, Any]:
        from ... import __version__
        from ...generation.pipelines import recipe_info

        return {
            **recipe_info(self.info),
            "modality": "music",
            "tokenizer": self.tokenizer.config.kind,
            "tokenizer_fingerprint": self.tokenizer.fingerprint(),
            **settings,
            "genloop_version": __version__,
        }


def _slot_seed(row_seed: int, kind: str) -> int:
    """A generator seed for drawing one prefix slot, apart from the row's body generator (same row seed)."""
    digest = hashlib.sha256(f"{row_seed}:{kind}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFFFFFFFFFFFFFF


__all__ = [
    "MusicPipeline",
    "MusicOutput",
    "MusicSample",
    "safe_decode",
    "encode_tokens",
    "key_token_of",
    "meter_token_of",
]
