"""Tiny music files the music tests write themselves (no network, no shared data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genloop.modalities.music.piece import Piece, build_score, piece_from_score

TWO_TUNES = """% a file with two tunes
X:1
T:First
M:3/4
L:1/8
K:G
GAB c2d | e2 d2 B2 | G6 |]

X:2
T:Second
M:4/4
L:1/4
K:D
D E F G | A B c d | d4 |]
"""
BROKEN_ABC = "X:1\nT:Broken\nM:4/4\nL:1/0\nK:C\nC D E F |]\n"


def two_track_score(tpq: int = 480):
    """A quantised two-track score (16th-note grid, 4/4, F major, 100 qpm): melody over a bass line."""
    melody = [(i * 240, 240 if i % 3 else 480, 65 + (i * 5) % 12, 80) for i in range(12)]
    bass = [(i * 960, 960, 41 + (i * 7) % 12, 70) for i in range(4)]
    return build_score([("melody", 0, melody), ("bass", 32, bass)], tpq, (4, 4), (-1, False), 100.0)


def write_midi(path: Path, score=None) -> Path:
    path.write_bytes(bytes((score or two_track_score()).dumps_midi()))
    return path


def scale_piece(seed: int, id: str = "p", tpq: int = 480) -> Piece:
    """A two-voice C-major piece on a quarter/eighth grid, random but tonal (for metric ranking tests)."""
    rng = np.random.default_rng(seed)
    scale = [0, 2, 4, 5, 7, 9, 11]
    tracks = []
    for voice, base in (("upper", 72), ("lower", 48)):
        notes, t, degree = [], 0, rng.integers(0, 7)
        while t < 16 * tpq:
            dur = int(rng.choice([tpq // 2, tpq, tpq, 2 * tpq]))
            degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, 13))
            pitch = base + 12 * (degree // 7) + scale[degree % 7]
            notes.append((t, dur, pitch, 80))
            t += dur
        tracks.append((voice, 0, notes))
    return piece_from_score(build_score(tracks, tpq, (4, 4), (0, False), 120.0), id, style="test")
