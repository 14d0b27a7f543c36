"""The one in-memory type every music module shares: a :class:`Piece` wrapping a symusic ``Score``.

Why a wrapper: a ``Score`` holds the notes but not where it came from, its style (the corpus token a model
is conditioned on) or a stable id for splits and caches; and metrics want notes as one flat NumPy array
instead of walking tracks. The score stays the source of truth (ticks, ``tpq`` per quarter note); the
derived views (``notes``, ``key``, ``time_signature``, ``tempo``) are computed from it on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from symusic import KeySignature, Note, Score, Tempo, TimeSignature, Track
from symusic.core import ScoreTick, TrackTick

# ``notes`` columns: one row per note, sorted by onset then pitch.
NOTE_COLUMNS = ("onset", "duration", "pitch", "velocity", "track")
ONSET, DURATION, PITCH, VELOCITY, TRACK = range(5)

_SHARP_NAMES = ("C", "C#", "D", "E-", "E", "F", "F#", "G", "A-", "A", "B-", "B")
_MAJOR_BY_FIFTHS = {f: _SHARP_NAMES[(7 * f) % 12] for f in range(-7, 8)}
_MAJOR_BY_FIFTHS.update({-7: "C-", -6: "G-", -5: "D-", -4: "A-", -3: "E-", -2: "B-", -1: "F", 6: "F#", 7: "C#"})


def key_name(fifths: int, minor: bool) -> str:
    """``(-1, False)`` -> ``"F major"``; ``(0, True)`` -> ``"A minor"`` (music21 spelling: ``-`` is flat)."""
    tonic = (
        _MAJOR_BY_FIFTHS[max(-7, min(7, int(fifths)))]
        if not minor
        else _MAJOR_BY_FIFTHS[max(-7, min(7, int(fifths) + 3))]
    )
    return f"{tonic} {'minor' if minor else 'major'}"


@dataclass
class Piece:
    """One piece of music: a score in ticks plus the labels the loop needs. See the module docstring."""

    id: str  # stable across runs: relative path (+ ``#n`` for the n-th tune of a multi-tune file)
    score: ScoreTick
    source: str = ""  # the file (or corpus entry) it was read from
    style: str = "unknown"  # corpus / style label: becomes a conditioning token
    meta: dict = field(default_factory=dict)  # e.g. title; JSON-able

    @property
    def tpq(self) -> int:
        return int(self.score.tpq)

    @property
    def track_names(self) -> list[str]:
        return [t.name or f"track{i}" for i, t in enumerate(self.score.tracks)]

    @property
    def programs(self) -> list[int]:
        return [int(t.program) for t in self.score.tracks]

    @property
    def notes(self) -> np.ndarray:
        """All notes as an int64 ``(n, 5)`` array (:data:`NOTE_COLUMNS`), sorted by onset, then pitch."""
        rows = [arr for i, t in enumerate(self.score.tracks) if len(t.notes) for arr in [_track_array(t, i)]]
        if not rows:
            return np.zeros((0, 5), dtype=np.int64)
        out = np.concatenate(rows)
        return out[np.lexsort((out[:, PITCH], out[:, ONSET]))]

    @property
    def num_notes(self) -> int:
        return int(sum(len(t.notes) for t in self.score.tracks))

    @property
    def time_signature(self) -> tuple[int, int]:
        """The first time signature, or 4/4 when the source has none (the MIDI default)."""
        ts = self.score.time_signatures
        return (int(ts[0].numerator), int(ts[0].denominator)) if len(ts) else (4, 4)

    @property
    def key(self) -> tuple[int, bool] | None:
        """The first key signature as ``(fifths, minor)``, or None when the source has none."""
        ks = self.score.key_signatures
        return (int(ks[0].key), bool(ks[0].tonality)) if len(ks) else None

    @property
    def key_name(self) -> str | None:
        return key_name(*self.key) if self.key is not None else None

    @property
    def tempo(self) -> float:
        """The first tempo in quarter notes per minute, or 120 (the MIDI default)."""
        return float(self.score.tempos[0].qpm) if len(self.score.tempos) else 120.0

    @property
    def beats(self) -> float:
        """Length in quarter notes, from time 0 to the last note-off."""
        n = self.notes
        return float((n[:, ONSET] + n[:, DURATION]).max() / self.tpq) if len(n) else 0.0

    def bars(self) -> int:
        """Number of bars under the first time signature (what REMI's Bar tokens count)."""
        num, den = self.time_signature
        bar_beats = num * 4 / den
        return max(1, int(np.ceil(self.beats / bar_beats - 1e-9)))

    def transposed(self, semitones: int) -> Piece:
        """A copy shifted by ``semitones`` (key signature moved too); notes leaving 0..127 raise ValueError."""
        n = self.notes
        if len(n) and (n[:, PITCH].min() + semitones < 0 or n[:, PITCH].max() + semitones > 127):
            raise ValueError(f"{self.id}: transposing by {semitones} leaves the MIDI pitch range 0..127")
        score = self.score.shift_pitch(semitones)
        if len(score.key_signatures):
            keys = [
                KeySignature(int(k.time), _fifths_after(int(k.key), semitones), int(k.tonality))
                for k in score.key_signatures
            ]
            score.key_signatures.clear()
            score.key_signatures.extend(keys)
        suffix = f"{semitones:+d}" if semitones else ""
        return Piece(f"{self.id}@{suffix}" if suffix else self.id, score, self.source, self.style, dict(self.meta))


def _fifths_after(fifths: int, semitones: int) -> int:
    """The key signature a transposition lands on, spelled with at most 6 sharps or 5 flats."""
    f = (fifths + 7 * semitones) % 12  # 7 fifths per semitone, mod the 12 keys
    return f - 12 if f > 6 else f


def _track_array(track: TrackTick, index: int) -> np.ndarray:
    soa = track.notes.numpy()
    n = len(soa["time"])
    return np.stack([soa["time"], soa["duration"], soa["pitch"], soa["velocity"], np.full(n, index)], axis=1).astype(
        np.int64
    )


def piece_from_score(
    score: ScoreTick, id: str, source: str = "", style: str = "unknown", meta: dict | None = None
) -> Piece:
    """Wrap a score as a piece, normalised to tick time; empty tracks are dropped (they carry no notes)."""
    score = score.copy() if "tick" in str(score.ttype).lower() else score.to("tick")
    keep = [t for t in score.tracks if len(t.notes)]
    score.tracks.clear()
    score.tracks.extend(keep)
    return Piece(id=id, score=score, source=source, style=style, meta=dict(meta or {}))


def build_score(
    tracks: list[tuple[str, int, list[tuple[int, int, int, int]]]],
    tpq: int = 480,
    time_signature: tuple[int, int] | None = (4, 4),
    key: tuple[int, bool] | None = None,
    tempo: float | None = 120.0,
) -> ScoreTick:
    """A score from plain data: ``[(name, program, [(onset, duration, pitch, velocity), ...]), ...]`` in ticks."""
    score = Score(tpq)
    for name, program, notes in tracks:
        track = Track(name=name, program=program)
        for onset, duration, pitch, velocity in notes:
            track.notes.append(Note(int(onset), int(duration), int(pitch), int(velocity)))
        score.tracks.append(track)
    if time_signature is not None:
        score.time_signatures.append(TimeSignature(0, *time_signature))
    if key is not None:
        score.key_signatures.append(KeySignature(0, int(key[0]), int(key[1])))
    if tempo is not None:
        score.tempos.append(Tempo(0, float(tempo)))
    return score
