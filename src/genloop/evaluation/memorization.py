"""Memorisation check: does the generator hand back (near) copies of its training images?

A low FID is also what a model that memorised its training set gets, so GenLoop looks for copies
directly: for every generated sample, find its nearest training image (in flattened pixels or in any
feature space) and decide whether that neighbour is suspiciously close.

The near-copy rule
------------------
Raw distances cannot be thresholded once for all: they depend on the space, the resolution and the
region of the data (two "1" digits are much closer than two "8"s). We therefore use a *relative*
distance, after Carlini et al., "Extracting Training Data from Diffusion Models" (USENIX Security
2023, Sec. 5), who judge a generation against its nearest training image relative to the distances
to its ``n`` nearest training images (n = 50 on CIFAR-10)::

    ratio(x) = d(x, nn_1) / mean(d(x, nn_1), ..., d(x, nn_n))

A copy sits on one training image and at the ordinary distance from all the others, so its ratio is
near 0; a novel sample is about as far from its nearest neighbour as from the next ones, so its ratio
is well above 0. Averaging over ``n`` neighbours, rather than the single runner-up of a ratio test
``d1 / d2``, keeps the rule working when the training set itself holds a near-duplicate pair: a copy
of one of them is close to *both*, and ``d1 / d2`` would be about 1.

Where to cut is calibrated on the data, never on the model: the same ratio is computed for real
training images against the rest of the training set (leave-one-out, on a seeded subset of up to
``calibration_size`` images), and a sample is a **near copy when its ratio is below ``alpha`` times the
median real ratio** (``alpha = 0.5`` by default: twice as close, relative to its neighbourhood, as a
typical real image is to its nearest real neighbour). The cut thus adapts to the space and the data
set — ratios concentrate near 1 in high dimensions and spread out in low ones — with one unitless knob.

On sklearn's 8x8 digits (pixels in [-1, 1]) the median real ratio is about 0.63, so the cut is about
0.31: exact copies score 0, copies with Gaussian noise of std 0.05 about 0.12 (all below), and held-out
real digits are flagged well under 1% of the time.

The floor
---------
Real data has near-duplicates too, so a share of flagged samples means little alone. The report
always gives the same share for *held-out real* images against the training set: a model generating
fresh images from the data distribution should sit near that floor, not near zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.image import to_float
from ..data.image_io import make_grid
from ..errors import DataError
from .manifold import knn


def _flat(x: Any, what: str) -> torch.Tensor:
    """Images (N, C, H, W) or feature vectors (N, D), torch or numpy, as float64 (N, D) on the CPU.

    uint8 images are mapped to [-1, 1] first, so a uint8 training set and float samples share one space.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{what} must be a torch tensor or numpy array, got {type(x).__name__}")
    if x.dim() < 2:
        raise DataError(f"{what} must be (N, ...) with one row per item, got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.numel() == 0:
        raise DataError(f"{what} is empty")
    if x.dtype == torch.uint8:
        x = to_float(x)
    x = x.detach().to("cpu", torch.float64).reshape(x.shape[0], -1)
    if not torch.isfinite(x).all():
        raise DataError(f"{what} contain NaN or infinite values")
    return x


def nearest_neighbours(
    queries: Any, train: Any, chunk: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest training point for each query: ``(dist (N,), index (N,), second_dist (N,))``.

    Any space works: images are flattened to pixel vectors, feature vectors are used as they are.
    Distances are Euclidean, in float64, computed ``chunk`` query rows at a time (default: a 64 MiB
    budget). ``second_dist`` is the distance to the runner-up, for a ratio test; it needs >= 2 training points.
    """
    q, t = _flat(queries, "queries"), _flat(train, "training points")
    if q.shape[1] != t.shape[1]:
        raise DataError(f"queries and training points differ in size: {q.shape[1]} vs {t.shape[1]} values per item")
    if t.shape[0] < 2:
        raise DataError(f"nearest_neighbours needs at least 2 training points, got {t.shape[0]}")
    d, i = knn(q, t, 2, chunk=chunk)
    return d[:, 0], i[:, 0], d[:, 1]


def _ratios(dists: torch.Tensor) -> torch.Tensor:
    """d1 / mean(d1..dn) per row; an exact copy among exact duplicates (0 / 0) counts as ratio 0."""
    mean = dists.mean(1)
    out = dists[:, 0] / mean.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(mean > 0, out, torch.zeros_like(out))


@dataclass
class MemorizationReport:
    """What :func:`memorization` found. Distances are Euclidean in the space the inputs were given in.

    ``ratio`` is the relative distance of the module docstring; ``threshold`` the calibrated cut below
    which a sample counts as a near copy. ``pairs`` holds ``(sample_index, train_index)`` of the most
    copy-like samples, lowest ratio first (the ones to look at, e.g. with :func:`closest_pairs_grid`).
    """

    n_samples: int
    n_train: int
    n_held_out: int
    n_neighbours: int
    alpha: float
    threshold: float
    train_ratio_median: float
    calibration_size: int
    near_copy_share: float
    near_copy_count: int
    held_out_near_copy_share: float
    held_out_near_copy_count: int
    nn_dist_mean: float
    nn_dist_median: float
    nn_dist_min: float
    held_out_nn_dist_mean: float
    held_out_nn_dist_median: float
    held_out_nn_dist_min: float
    ratio_median: float
    held_out_ratio_median: float
    nn_dist: torch.Tensor = field(repr=False)
    nn_index: torch.Tensor = field(repr=False)
    ratio: torch.Tensor = field(repr=False)
    is_copy: torch.Tensor = field(repr=False)
    pairs: torch.Tensor = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-able values: every scalar field, plus ``closest_pairs`` as a list of
        ``{"sample", "train", "distance", "ratio", "near_copy"}`` records (lowest ratio first)."""
        out = {k: v for k, v in asdict(self).items() if not isinstance(v, torch.Tensor)}
        out["closest_pairs"] = [
            {
                "sample": int(s),
                "train": int(t),
                "distance": float(self.nn_dist[s]),
                "ratio": float(self.ratio[s]),
                "near_copy": bool(self.is_copy[s]),
            }
            for s, t in self.pairs.tolist()
        ]
        return out


def memorization(
    samples: Any,
    train: Any,
    held_out: Any,
    *,
    alpha: float = 0.5,
    n_neighbours: int = 50,
    calibration_size: int = 2000,
    top: int = 16,
    seed: int = 0,
    chunk: int | None = None,
) -> MemorizationReport:
    """Flag generated ``samples`` that are near copies of ``train`` and report the held-out real floor.

    ``samples``, ``train`` and ``held_out`` are images (N, C, H, W) — float in [-1, 1] or uint8 — or
    feature vectors (N, D), all in the same space. The rule (see the module docstring) flags a sample
    when ``d(x, nn_1) / mean(d(x, nn_1..nn_n)) < alpha * median`` of that ratio over real training
    images (leave-one-out, on up to ``calibration_size`` of them, drawn with ``seed``). ``n`` is
    ``n_neighbours``, capped at the training-set size minus one. ``top`` most copy-like pairs are kept.
    """
    s, t, h = _flat(samples, "samples"), _flat(train, "training images"), _flat(held_out, "held-out images")
    for what, x in (("samples", s), ("held-out images", h)):
        if x.shape[1] != t.shape[1]:
            raise DataError(f"{what} and training images differ in size: {x.shape[1]} vs {t.shape[1]} values per item")
    if t.shape[0] < 3:
        raise DataError(f"memorization needs at least 3 training images, got {t.shape[0]}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise DataError(f"alpha must be a positive number, got {alpha!r}")
    if n_neighbours < 2 or calibration_size < 1 or top < 0:
        raise DataError(
            f"need n_neighbours >= 2, calibration_size >= 1 and top >= 0; got {n_neighbours}, {calibration_size}, {top}"
        )
    n = min(int(n_neighbours), t.shape[0] - 1)  # leave-one-out calibration has one point fewer to choose from

    g = torch.Generator().manual_seed(seed)
    calib = torch.randperm(t.shape[0], generator=g)[: min(calibration_size, t.shape[0])]
    calib_d, _ = knn(t[calib], t, n, exclude=calib, chunk=chunk)
    train_median = float(_ratios(calib_d).median())
    threshold = alpha * train_median

    s_d, s_i = knn(s, t, n, chunk=chunk)
    h_d, _ = knn(h, t, n, chunk=chunk)
    s_ratio, h_ratio = _ratios(s_d), _ratios(h_d)
    s_copy, h_copy = s_ratio < threshold, h_ratio < threshold

    order = torch.argsort(s_ratio, stable=True)[: min(top, s.shape[0])]
    pairs = torch.stack([order, s_i[order, 0]], dim=1)
    s_nn, h_nn = s_d[:, 0], h_d[:, 0]
    return MemorizationReport(
        n_samples=s.shape[0],
        n_train=t.shape[0],
        n_held_out=h.shape[0],
        n_neighbours=n,
        alpha=float(alpha),
        threshold=threshold,
        train_ratio_median=train_median,
        calibration_size=int(calib.numel()),
        near_copy_share=float(s_copy.double().mean()),
        near_copy_count=int(s_copy.sum()),
        held_out_near_copy_share=float(h_copy.double().mean()),
        held_out_near_copy_count=int(h_copy.sum()),
        nn_dist_mean=float(s_nn.mean()),
        nn_dist_median=float(s_nn.median()),
        nn_dist_min=float(s_nn.min()),
        held_out_nn_dist_mean=float(h_nn.mean()),
        held_out_nn_dist_median=float(h_nn.median()),
        held_out_nn_dist_min=float(h_nn.min()),
        ratio_median=float(s_ratio.median()),
        held_out_ratio_median=float(h_ratio.median()),
        nn_dist=s_nn,
        nn_index=s_i[:, 0],
        ratio=s_ratio,
        is_copy=s_copy,
        pairs=pairs,
    )


def closest_pairs_grid(
    samples: torch.Tensor, train: torch.Tensor, idx: Any, k: int = 16, pairs_per_row: int = 4
) -> torch.Tensor:
    """A picture of suspected copies: each sample beside its nearest training image, as one float grid.

    ``idx`` is either ``(P, 2)`` rows of ``(sample_index, train_index)`` — e.g. ``report.pairs``, most
    suspicious first — or ``(N,)`` nearest-training indices, one per sample (``report.nn_index``), in
    which case sample i is paired with ``train[idx[i]]``. The first ``k`` pairs are drawn,
    ``pairs_per_row`` to a row, sample left and training image right. Returns the (C, H', W') float
    tensor of :func:`genloop.data.image_io.make_grid`, in [-1, 1], ready for ``save_png``.
    """
    if not isinstance(samples, torch.Tensor) or not isinstance(train, torch.Tensor):
        raise DataError("closest_pairs_grid takes image tensors for samples and train")
    if samples.dim() != 4 or train.dim() != 4 or samples.shape[1:] != train.shape[1:]:
        raise DataError(
            "samples and train must be image batches of one shape (N, C, H, W), "
            f"got {tuple(samples.shape)} and {tuple(train.shape)}"
        )
    idx = torch.as_tensor(idx).to(torch.long)
    if idx.dim() == 1:
        idx = torch.stack([torch.arange(idx.shape[0]), idx], dim=1)
    if idx.dim() != 2 or idx.shape[1] != 2:
        raise DataError(
            f"idx must be (P, 2) (sample, train) pairs or (N,) nearest indices, got shape {tuple(idx.shape)}"
        )
    idx = idx[: max(0, int(k))]
    if idx.shape[0] == 0:
        raise DataError("no pairs to draw")
    si, ti = idx[:, 0], idx[:, 1]
    if si.min() < 0 or si.max() >= samples.shape[0] or ti.min() < 0 or ti.max() >= train.shape[0]:
        raise DataError(
            f"pair indices out of range for {samples.shape[0]} samples and {train.shape[0]} training images"
        )

    def as_float(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().cpu()
        return to_float(x) if x.dtype == torch.uint8 else x.float().clamp(-1.0, 1.0)

    interleaved = torch.stack([as_float(samples[si]), as_float(train[ti])], dim=1).flatten(0, 1)
    return make_grid(interleaved, nrow=2 * max(1, min(pairs_per_row, idx.shape[0])))


__all__ = ["nearest_neighbours", "MemorizationReport", "memorization", "closest_pairs_grid"]
