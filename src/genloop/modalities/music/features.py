"""Reward-model inputs for music: a fixed-length feature vector and two scripted raters.

The vector (12 pitch-class shares, 25 interval shares, 11 note-length shares, 12 onset-position shares
within the beat on a 12-per-beat grid: 60 floats) is cheap, deterministic and length-independent, so a
small reward model can be fitted on human ratings without a music encoder. The scripted raters are pure
functions of a piece, giving the feedback loop a known target to test against (``in-key:C``: share of notes
in the C-major scale; ``range:60-72``: share of notes in that MIDI pitch range).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from ...errors import ConfigError
from .metrics import MAJOR, MINOR, interval_histogram, note_length_histogram, pitch_class_histogram
from .piece import ONSET, PITCH, Piece

FEATURE_DIM = 12 + 25 + 11 + 12
_NOTE = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def feature_vector(piece: Piece) -> np.ndarray:
    """The :data:`FEATURE_DIM` float32 features of a piece (zeros for a piece with no notes)."""
    notes = piece.notes
    pos = np.rint(notes[:, ONSET] * 12 / piece.tpq).astype(np.int64) % 12 if len(notes) else np.zeros(0, np.int64)
    onset = np.bincount(pos, minlength=12).astype(np.float64)
    onset = onset / onset.sum() if onset.sum() else onset
    parts = [
        pitch_class_histogram(notes[:, PITCH]),
        interval_histogram(piece),
        note_length_histogram(notes, piece.tpq),
        onset,
    ]
    return np.concatenate(parts).astype(np.float32)


def parse_key(name: str) -> tuple[int, bool]:
    """``"C"``, ``"F#m"``, ``"Bb minor"``, ``"e-"`` -> (tonic pitch class, minor?). Lower-case tonic = minor."""
    m = re.fullmatch(r"\s*([A-Ga-g])([#b-]?)\s*(m|min|minor|maj|major)?\s*", name)
    if not m:
        raise ConfigError(f"unknown key '{name}' (examples: C, F#, Bb, Am, C# minor)")
    letter, acc, mode = m.groups()
    pc = (_NOTE[letter.upper()] + {"#": 1, "b": -1, "-": -1, "": 0}[acc]) % 12
    minor = mode in ("m", "min", "minor") or (mode is None and letter.islower())
    return pc, minor


def in_key_share(piece: Piece, key: str = "C") -> float:
    """Share of notes whose pitch class is in the key's scale (major, or natural minor)."""
    tonic, minor = parse_key(key)
    pitches = piece.notes[:, PITCH]
    if not len(pitches):
        return 0.0
    scale = {(tonic + s) % 12 for s in (MINOR if minor else MAJOR)}
    return float(np.isin(pitches % 12, list(scale)).mean())


def in_range_share(piece: Piece, low: int = 60, high: int = 72) -> float:
    """Share of notes with ``low <= pitch <= high``."""
    pitches = piece.notes[:, PITCH]
    return float(((pitches >= low) & (pitches <= high)).mean()) if len(pitches) else 0.0


def scripted_rater(spec: str) -> Callable[[Piece], float]:
    """``"in-key:C"`` / ``"in-key:F#m"`` / ``"range:60-72"`` -> a function piece -> score in [0, 1]."""
    kind, _, arg = spec.partition(":")
    if kind == "in-key":
        parse_key(arg or "C")
        return lambda piece: in_key_share(piece, arg or "C")
    if kind == "range":
        m = re.fullmatch(r"(\d+)-(\d+)", arg)
        if not m or not 0 <= int(m.group(1)) <= int(m.group(2)) <= 127:
            raise ConfigError(f"rater '{spec}': range must be LOW-HIGH MIDI pitches in 0..127, e.g. range:60-72")
        low, high = int(m.group(1)), int(m.group(2))
        return lambda piece: in_range_share(piece, low, high)
    raise ConfigError(f"unknown music rater '{spec}' (valid: in-key:<key>, range:<low>-<high>)")
