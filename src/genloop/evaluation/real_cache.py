"""A disk cache of the feature net's features of *real* images (the held-out reference and the floor's subset).

Why: every ``genloop eval`` of a run on a dataset scores its samples against the same real images through the
same net; only the samples change. Their features (and class probabilities) are computed once and kept in
``cache_dir("features")/real/<key>.safetensors``.

The key is a sha256 over what determines the result: the net (its ``id`` and weights' ``sha256``) and the
images' bytes and shape — not a dataset name, so a re-prepared dataset, a retrained net or another subset of
train is a different key, never a stale hit. A file that cannot be read or does not match is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..paths import cache_dir
from ..serialization import load_tensors, save_tensors


def features_key(extractor: Any, images: torch.Tensor) -> str:
    """sha256 over the net's identity and the images' dtype, shape and bytes."""
    h = hashlib.sha256()
    net = {"id": str(extractor.id), "sha256": str(extractor.sha256), "kind": str(extractor.kind)}
    h.update(json.dumps({**net, "dtype": str(images.dtype), "shape": list(images.shape)}, sort_keys=True).encode())
    h.update(images.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def cached_features_and_probs(
    extractor: Any, images: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """``extractor.features_and_probs(images)``, read from the cache when these images met this net before."""
    key = features_key(extractor, images)
    path = cache_dir("features", "real") / f"{key}.safetensors"
    hit = _read(path, key, images.shape[0])
    if hit is not None:
        return hit
    feats, probs = extractor.features_and_probs(images, batch_size)
    save_tensors(path, {"features": feats, "probs": probs}, {"key": key, "n": int(images.shape[0])})
    return feats, probs


def _read(path: Path, key: str, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        tensors, state = load_tensors(path)
    except Exception:  # noqa: BLE001 - unreadable (truncated, foreign, corrupt): recompute and overwrite
        return None
    if not isinstance(state, dict) or state.get("key") != key or state.get("n") != n:
        return None
    feats, probs = tensors.get("features"), tensors.get("probs")
    if feats is None or probs is None or feats.shape[0] != n or probs.shape[0] != n:
        return None
    return feats, probs


__all__ = ["cached_features_and_probs", "features_key"]
