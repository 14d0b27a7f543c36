"""Turn a dataset name or path into a prepared :class:`ImageDataset`, decoding each source only once.

Decoding a folder of photos is the slow part, so its result (uint8 images at the configured size and
channel count, labels, class names) is cached under a key that hashes the source's content and those
settings: change a file, the size or the channels and the key changes; move the folder and it does not.
The split is a cheap seeded permutation, computed fresh on every load and never cached.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, GenLoopError, NotFoundError
from ..paths import cache_dir
from ..serialization import load_tensors, save_tensors, sha256_file
from . import sources
from .builtin import datasets
from .image import SPLITS, DataConfig, ImageDataset

IMAGE_PREP_VERSION = 1  # bump when decoding/resizing changes, so old caches are not reused


@dataclass
class Source:
    """Where a dataset comes from: a built-in (``builtin`` set) or a file/folder (``path`` set)."""

    name: str
    kind: str  # "builtin", "folder", "idx" or "npz"
    path: Path | None = None
    builtin: Any = None

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the content: name + version for built-ins; path, size and sha256 per file otherwise."""
        if self.builtin is not None:
            return {"builtin": self.name, "version": self.builtin.version}
        root = self.path if self.path.is_dir() else self.path.parent
        files = [
            [f.relative_to(root).as_posix(), f.stat().st_size, sha256_file(f)] for f in sources.source_files(self.path)
        ]
        return {"kind": self.kind, "files": files}


def resolve(name: str) -> Source:
    """A built-in name wins; otherwise ``name`` must be an existing, readable file or folder."""
    if name in datasets:
        return Source(name, "builtin", builtin=datasets[name])
    path = Path(name).expanduser()
    if not path.exists():
        raise NotFoundError(
            f"unknown dataset '{name}': not a built-in ({', '.join(datasets.names())}) and no such file or folder"
        )
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    return Source(name, sources.source_kind(path), path=path)


def _decode(source: Source, image_size: int, channels: int | None) -> sources.Decoded:
    """The slow step, which the cache exists to skip."""
    if source.builtin is not None:
        return sources.finish(source.builtin.load(), image_size, channels, source.name)
    return sources.decode(source.path, image_size, channels)


def split_indices(n: int, fractions: list[float], seed: int) -> dict[str, torch.Tensor]:
    """Seeded permutation cut into train / val / test: round(n*f0), round(n*f1), the rest. Sorted int64."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = min(round(n * fractions[0]), n)
    n_val = min(round(n * fractions[1]), n - n_train)
    cuts = [perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]]
    return {name: part.sort().values for name, part in zip(SPLITS, cuts)}


def cache_key(source: Source, image_size: int, channels: int | None) -> str:
    blob = {"prep": IMAGE_PREP_VERSION, "source": source.fingerprint(), "image_size": image_size, "channels": channels}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _cache_path(key: str) -> Path:
    return cache_dir("datasets", "prepared") / f"{key}.safetensors"


Prepared = tuple[torch.Tensor, torch.Tensor | None, list[str] | None, list[str] | None]  # + class names, captions


def _read_cache(path: Path, key: str, cfg: DataConfig) -> Prepared | None:
    """The cached tensors, or None if missing, unreadable or not what this key promises (then re-decode)."""
    if not path.is_file():
        return None
    try:
        tensors, state = load_tensors(path)
        images, labels = tensors["images"], tensors.get("labels")
        ok = (
            state["key"] == key
            and images.dtype == torch.uint8
            and images.ndim == 4
            and images.shape[0] > 0
            and images.shape[-2:] == (cfg.image_size, cfg.image_size)
            and (cfg.channels is None or images.shape[1] == cfg.channels)
            and (labels is None or (labels.dtype == torch.int64 and labels.shape == (images.shape[0],)))
        )
        captions = state.get("captions")
        ok = ok and (captions is None or len(captions) == images.shape[0])
        return (images, labels, state["class_names"], captions) if ok else None
    except (GenLoopError, KeyError, TypeError, ValueError, OSError):  # a cache must never be the reason a run fails
        return None


def _write_cache(
    path: Path, key: str, images: torch.Tensor, labels: torch.Tensor | None, class_names, captions=None
) -> None:
    tensors = {"images": images} if labels is None else {"images": images, "labels": labels}
    state = {"key": key, "class_names": class_names, "prep_version": IMAGE_PREP_VERSION}
    if captions is not None:
        state["captions"] = captions
    try:
        save_tensors(path, tensors, state=state)
    except OSError as e:  # e.g. a read-only or full disk: the data is still good, only the next load is slower
        warnings.warn(f"could not cache prepared dataset at {path}: {e}", stacklevel=3)


def load_dataset(cfg: DataConfig) -> ImageDataset:
    """Resolve ``cfg.name``, decode (or read from cache), and split. See the module docstring."""
    source = resolve(cfg.name)
    key = cache_key(source, cfg.image_size, cfg.channels)
    path = _cache_path(key) if cfg.cache else None
    cached = _read_cache(path, key, cfg) if path is not None else None
    if cached is not None:
        images, labels, class_names, captions = cached
    else:
        decoded = _decode(source, cfg.image_size, cfg.channels)
        images = torch.from_numpy(np.array(decoded.images.transpose(0, 3, 1, 2), order="C"))  # own, writable copy
        labels = torch.from_numpy(decoded.labels.astype(np.int64)) if decoded.labels is not None else None
        class_names, captions = decoded.class_names, decoded.captions
        if path is not None:
            _write_cache(path, key, images, labels, class_names, captions)
    meta = {
        "source": f"builtin:{source.name}" if source.builtin is not None else str(source.path.resolve()),
        "kind": source.kind,
        "from_cache": cached is not None,
        "prep_version": IMAGE_PREP_VERSION,
    }
    return ImageDataset(
        name=cfg.name,
        images=images,
        labels=labels,
        class_names=class_names,
        splits=split_indices(images.shape[0], cfg.split, cfg.split_seed),
        source_hash=key,
        meta=meta,
        captions=captions,
    )


def survey(name: str, sample: int = 64) -> dict[str, Any]:
    """What a dataset holds, cheaply, for choosing settings before anything is prepared: ``count`` images,
    their ``native_size`` (the median shorter side), ``channels`` (as ``data.channels=null`` would keep them)
    and ``class_names`` (None: unlabelled). A folder is read from the headers of up to ``sample`` files spread
    over it; built-ins, IDX and .npz files from their arrays."""
    source = resolve(name)
    if source.kind == "folder":
        files, classes = sources.folder_files(source.path)
        step = max(1, len(files) // sample)
        peeked = [sources.peek_image(f) for f in files[::step][:sample]]
        sides = sorted(min(w, h) for w, h, _ in peeked)
        channels = sources.auto_channels([c for _, _, c in peeked])
        return {
            "count": len(files),
            "native_size": sides[len(sides) // 2],
            "channels": channels,
            "class_names": classes or None,
        }
    raw = (
        source.builtin.load()
        if source.builtin is not None
        else (sources.read_idx(source.path) if source.kind == "idx" else sources.read_npz(source.path))
    )
    if raw.images.shape[0] == 0:
        raise DataError(f"{name}: holds no images")
    _, h, w, c = raw.images.shape
    return {
        "count": int(raw.images.shape[0]),
        "native_size": int(min(h, w)),
        "channels": sources.auto_channels([c]),
        "class_names": raw.class_names or None,
    }
