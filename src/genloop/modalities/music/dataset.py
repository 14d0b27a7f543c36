"""A music dataset: pieces read once, split by piece with a seed, optionally transposed, tokenised once.

Same conventions as the image and text data: parsing notation is the slow step, so the parsed pieces are
cached (as MIDI bytes in one safetensors file, labels in its JSON metadata) under a key hashing the
source's *content* (file sizes + sha256, or the corpus name + music21 version) and the settings; the split
is a cheap seeded permutation (:func:`genloop.data.prepare.split_indices`, 0.8/0.1/0.1 by default)
recomputed on every load. Token ids are cached separately, keyed by the pieces' key, the tokenizer's
fingerprint and the transposition range, because one parse serves many tokenizers.

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

from ...data.prepare import split_indices
from ...errors import ConfigError, GenLoopError
from ...paths import cache_dir
from ...serialization import load_tensors, save_tensors, sha256_file
from . import sources
from .piece import Piece
from .sources import read_midi_bytes

PREP_VERSION = 1  # bump when reading notation or flattening to a Score changes
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
    splits = split_indices(len(loaded.pieces), list(cfg.split), cfg.seed)
    return MusicDataset(
        name=cfg.name,
        pieces=loaded.pieces,
        splits={k: v.tolist() for k, v in splits.items()},
        source_hash=key,
        skipped=loaded.skipped,
        transpose=cfg.transpose,
        meta={"from_cache": from_cache, "prep_version": PREP_VERSION, "skipped": len(loaded.skipped)},
    )


def tokenize_dataset(ds: MusicDataset, tokenizer, cache: bool = True) -> dict[str, list[np.ndarray]]:  # noqa: ANN001
    """Token ids per split (train augmented), one int32 array per piece; cached by data, tokenizer, transpose."""
    blob = {"data": ds.source_hash, "tok": tokenizer.fingerprint(), "transpose": ds.transpose, "splits": ds.splits}
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
