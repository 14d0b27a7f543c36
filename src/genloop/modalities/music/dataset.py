"""A music dataset: pieces read once, split by melody group with a seed, optionally transposed, tokenised once.

Same conventions as the image and text data: parsing notation is the slow step, so the parsed pieces are
cached (as MIDI bytes in one safetensors file, labels in its JSON metadata) under a key hashing the
source's *content* (file sizes + sha256, or the corpus name + music21 version) and the settings; the split
is recomputed on every load (cheap): a seeded permutation of *groups* of pieces cut 0.8/0.1/0.1 by piece
count. A group is every piece linked (transitively) by a shared melody: the Bach chorales hold several
harmonisations of one tune, and a plain per-piece split put 9 of 41 validation chorales next to a training
chorale with the same 30-note soprano run, so validation loss partly measured memorisation. Pieces share a
melody when their top lines (the highest track's pitch per onset) share a :data:`MELODY_WINDOW`-note run of
intervals (transposition-invariant: a harmonisation in another key is still the same tune). Without such
duplicates every group is one piece and the split equals :func:`genloop.data.prepare.split_indices`. The
parse cache holds no split, so it stays valid; token ids are cached separately, keyed by the pieces' key,
the tokenizer's fingerprint, the transposition range and the split (with :data:`SPLIT_VERSION`), because one
parse serves many tokenizers.

Transposition augmentation applies to the *training* split only (val/test stay as written, so their
numbers are comparable across settings); a shift that would push a note outside 0..127 is left out.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError, GenLoopError
from ...paths import cache_dir
from ...serialization import load_tensors, save_tensors, sha256_file
from . import sources
from .piece import ONSET, PITCH, TRACK, Piece
from .sources import read_midi_bytes

PREP_VERSION = 1  # bump when reading notation or flattening to a Score changes
SPLIT_VERSION = 2  # bump when the split rule changes (2: near-duplicate melodies grouped); keys the token cache
MELODY_WINDOW = 30  # notes of top line two pieces must share (as intervals) to count as one tune
SPLITS = ("train", "val", "test")


@dataclass
class MusicDataConfig:
    name: str = "bach"  # a built-in corpus (bach, essen, ryans-mammoth) or a path to a music file/folder
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    limit: int | None = None  # at most this many pieces (first ones, in a stable order): for quick runs
    transpose: int = 0  # training split: every shift in -transpose..+transpose semitones
    cache: bool = True

    def __post_init__(self) -> None:
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"music data split must be three non-negative fractions summing to 1, got {self.split}")
        if not 0 <= self.transpose <= 12:
            raise ConfigError(f"music data transpose must be between 0 and 12 semitones, got {self.transpose}")


@dataclass
class MusicDataset:
    name: str
    pieces: list[Piece]
    splits: dict[str, list[int]]
    source_hash: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    transpose: int = 0
    meta: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Piece]:
        """The pieces of a split as written (no augmentation)."""
        return [self.pieces[i] for i in self.splits[name]]

    def train_pieces(self) -> list[Piece]:
        """The training pieces with every in-range transposition in ``-transpose..+transpose``."""
        return augment(self.split("train"), self.transpose)


def augment(pieces: list[Piece], k: int) -> list[Piece]:
    """Each piece at every shift in ``-k..k`` that keeps all pitches in 0..127 (shift 0 first)."""
    out = []
    for p in pieces:
        n = p.notes
        lo, hi = (int(n[:, 2].min()), int(n[:, 2].max())) if len(n) else (0, 127)
        for s in sorted(range(-k, k + 1), key=lambda s: (abs(s), s)):
            if lo + s >= 0 and hi + s <= 127:
                out.append(p.transposed(s))
    return out


def top_line(piece: Piece) -> np.ndarray:
    """The melody a listener follows: the highest-sounding track's highest pitch at each of its onsets.

    The highest track (by mean pitch), not a skyline of all tracks, because a lower voice moving while the
    soprano holds would otherwise splice its notes into the tune and hide a shared melody.
    """
    n = piece.notes
    if not len(n):
        return np.zeros(0, dtype=np.int64)
    tracks = np.unique(n[:, TRACK])
    top = max(tracks, key=lambda t: (float(n[n[:, TRACK] == t, PITCH].mean()), -int(t)))
    m = n[n[:, TRACK] == top]
    onsets, first = np.unique(m[:, ONSET], return_index=True)  # rows sorted by onset then pitch
    last = np.append(first[1:], len(m)) - 1
    return m[last, PITCH]


def melody_windows(piece: Piece, window: int = MELODY_WINDOW) -> set[bytes]:
    """Every ``window``-note run of the top line as its ``window - 1`` intervals (so any transposition matches)."""
    steps = np.diff(top_line(piece)).astype(np.int8)  # within +-127: one byte each
    if len(steps) < window - 1:
        return set()
    runs = np.lib.stride_tricks.sliding_window_view(steps, window - 1)
    return {r.tobytes() for r in runs}


def melody_groups(pieces: list[Piece], window: int = MELODY_WINDOW) -> list[list[int]]:
    """Piece indices grouped by shared melody runs (union-find), each sorted, groups ordered by first index."""
    parent = list(range(len(pieces)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[bytes, int] = {}
    for i, p in enumerate(pieces):
        for w in melody_windows(p, window):
            j = owner.setdefault(w, i)
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def grouped_split(groups: list[list[int]], fractions: list[float], seed: int) -> dict[str, list[int]]:
    """Whole groups into train / val / test: a seeded permutation of groups, cut by piece count.

    A group lands in the split where its middle piece falls on the cumulative count, so a large group at a
    boundary goes to whichever side holds most of it and the fractions stay close to the targets. With all
    groups singletons this is exactly :func:`genloop.data.prepare.split_indices` (same permutation, same
    cuts), so corpora without duplicates keep their split.
    """
    n = sum(len(g) for g in groups)
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
    n_train = min(round(n * fractions[0]), n)
    n_val = min(round(n * fractions[1]), n - n_train)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    seen = 0
    for g in perm:
        middle = seen + (len(groups[g]) - 1) / 2
        name = "train" if middle < n_train else "val" if middle < n_train + n_val else "test"
        out[name].extend(groups[g])
        seen += len(groups[g])
    return {s: sorted(v) for s, v in out.items()}


def fingerprint(name: str, limit: int | None) -> dict:
    if name in sources.CORPORA:
        import music21

        return {"corpus": name, "music21": music21.__version__, "limit": limit}
    path = Path(name).expanduser()
    root = path if path.is_dir() else path.parent
    files = [[f.relative_to(root).as_posix(), f.stat().st_size, sha256_file(f)] for f in sources.music_files(path)]
    return {"files": files, "limit": limit}


def cache_key(name: str, limit: int | None) -> str:
    blob = {"prep": PREP_VERSION, "source": fingerprint(name, limit)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _write_pieces(path: Path, key: str, loaded: sources.Loaded) -> None:
    blobs = [p.score.dumps_midi() for p in loaded.pieces]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    state = {
        "key": key,
        "pieces": [{"id": p.id, "source": p.source, "style": p.style, "meta": p.meta} for p in loaded.pieces],
        "skipped": loaded.skipped,
    }
    tensors = {
        "midi": torch.frombuffer(bytearray(b"".join(blobs)) or bytearray(1), dtype=torch.uint8),
        "offsets": torch.from_numpy(offsets),
    }
    try:
        save_tensors(path, tensors, state)
    except OSError as e:
        warnings.warn(f"could not cache parsed music at {path}: {e}", stacklevel=3)


def _read_pieces(path: Path, key: str) -> sources.Loaded | None:
    if not path.is_file():
        return None
    try:
        tensors, state = load_tensors(path)
        if state["key"] != key:
            return None
        data, offsets = tensors["midi"].numpy().tobytes(), tensors["offsets"].tolist()
        pieces = []
        for i, info in enumerate(state["pieces"]):
            p = read_midi_bytes(data[offsets[i] : offsets[i + 1]], info["id"], info["source"], info["style"])
            p.meta = info["meta"]
            pieces.append(p)
        return sources.Loaded(pieces, [tuple(s) for s in state["skipped"]])
    except (GenLoopError, KeyError, TypeError, ValueError, OSError, IndexError):
        return None  # a cache is never the reason a run fails: re-parse


def load_music_dataset(cfg: MusicDataConfig) -> MusicDataset:
    """Read (or reuse the cached parse of) ``cfg.name`` and split it by piece."""
    key = cache_key(cfg.name, cfg.limit)
    path = cache_dir("music", "parsed") / f"{key}.safetensors"
    loaded = _read_pieces(path, key) if cfg.cache else None
    from_cache = loaded is not None
    if loaded is None:
        loaded = sources.load_music(cfg.name, cfg.limit)
        if cfg.cache:
            _write_pieces(path, key, loaded)
    groups = melody_groups(loaded.pieces)
    splits = grouped_split(groups, list(cfg.split), cfg.seed)
    return MusicDataset(
        name=cfg.name,
        pieces=loaded.pieces,
        splits=splits,
        source_hash=key,
        skipped=loaded.skipped,
        transpose=cfg.transpose,
        meta={
            "from_cache": from_cache,
            "prep_version": PREP_VERSION,
            "split_version": SPLIT_VERSION,
            "groups": len(groups),
            "skipped": len(loaded.skipped),
        },
    )


def tokenize_dataset(ds: MusicDataset, tokenizer, cache: bool = True) -> dict[str, list[np.ndarray]]:  # noqa: ANN001
    """Token ids per split (train augmented), one int32 array per piece; cached by data, tokenizer, transpose."""
    blob = {
        "data": ds.source_hash,
        "tok": tokenizer.fingerprint(),
        "transpose": ds.transpose,
        "split_version": SPLIT_VERSION,
        "splits": ds.splits,
    }
    key = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()
    path = cache_dir("music", "tokens") / f"{key}.safetensors"
    if cache and path.is_file():
        try:
            tensors, state = load_tensors(path)
            if state["key"] == key:
                return {s: list(np.split(tensors[s].numpy(), tensors[f"{s}_offsets"].numpy()[1:-1])) for s in SPLITS}
        except (GenLoopError, KeyError, TypeError, ValueError, OSError):
            pass
    out = {}
    for s in SPLITS:
        pieces = ds.train_pieces() if s == "train" else ds.split(s)
        out[s] = [np.asarray(tokenizer.encode(p), dtype=np.int32) for p in pieces]
    if cache:
        tensors = {}
        for s in SPLITS:
            lens = [len(a) for a in out[s]]
            tensors[s] = torch.from_numpy(np.concatenate(out[s]) if out[s] else np.zeros(0, np.int32))
            tensors[f"{s}_offsets"] = torch.from_numpy(np.cumsum([0] + lens).astype(np.int64))
        try:
            save_tensors(path, tensors, {"key": key})
        except OSError as e:
            warnings.warn(f"could not cache music tokens at {path}: {e}", stacklevel=2)
    return out
