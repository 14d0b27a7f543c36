"""Fidelity and diversity as separate numbers: k-NN manifold metrics on feature vectors.

FID folds two failures into one number: samples that look wrong (low *fidelity*) and samples that all
look alike (low *diversity*, mode collapse). The metrics here keep them apart, so a report can say
which one a model suffers from:

* :class:`PrecisionRecall` — improved precision and recall (Kynkäänniemi et al., NeurIPS 2019).
  Each set's *manifold* is the union of balls around its points, each ball reaching that point's k-th
  nearest neighbour in the same set. Precision is the share of generated points inside the real
  manifold (fidelity); recall is the share of real points inside the generated manifold (diversity).
* :class:`DensityCoverage` — density and coverage (Naeem et al., ICML 2020), which use only the real
  manifold, so one outlier among the generated points cannot inflate a huge ball and fake a high
  recall. Density counts how many real balls contain each generated point, divided by k: about 1 when
  both sets come from one distribution, above 1 when samples crowd into dense regions. Coverage is the
  share of real balls that contain at least one generated point.

Balls are closed (a point at exactly the radius is inside), so a set compared with itself scores a
precision, recall and coverage of exactly 1.

All of them need every pairwise distance between the sets. Those are computed by :func:`knn` and
:func:`_ball_counts` in float64 and in row chunks of at most ``_CHUNK_ELEMENTS`` distances, so 10k x 10k
points take tens of MB at a time rather than the 800 MB of the full matrix.

Like the metrics in :mod:`.image_metrics`, these follow the torchmetrics pattern (``update(x, real)``,
``compute()``, ``reset()``) and take features, not images. Features are kept until ``compute()``,
because the k-NN radii depend on the whole set.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DataError
from .image_metrics import _as_2d_float64

# Distances held in memory at once by the chunked routines: 2**23 float64 values = 64 MiB.
_CHUNK_ELEMENTS = 1 << 23


def _rows_per_chunk(n_cols: int, chunk: int | None) -> int:
    """Query rows per block: ``chunk`` if given, else as many as fit the memory budget."""
    if chunk is not None:
        if int(chunk) < 1:
            raise DataError(f"chunk must be a positive number of rows, got {chunk}")
        return int(chunk)
    return max(1, _CHUNK_ELEMENTS // max(1, n_cols))


def _check_pair(queries: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    if queries.shape[1] != ref.shape[1]:
        raise DataError(f"{what}: dimensions differ ({queries.shape[1]} vs {ref.shape[1]})")


def knn(
    queries: Any,
    ref: Any,
    k: int,
    *,
    exclude: torch.Tensor | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest points of ``ref`` to each query: Euclidean distances (Q, k) float64 and indices (Q, k).

    Columns are sorted, nearest first. ``exclude`` (Q,) names, per query, one index of ``ref`` to skip
    (-1 for none); pass ``torch.arange(n)`` when ``queries`` *is* ``ref`` to get leave-one-out
    neighbours. Excluding by index rather than by "distance 0" matters: a genuine duplicate elsewhere
    in the set is a real neighbour at distance 0 and must stay one.

    Works block by block (``chunk`` query rows at a time; default: a 64 MiB budget of distances).
    """
    q = _as_2d_float64(queries, "queries")
    r = _as_2d_float64(ref, "reference points")
    _check_pair(q, r, "k-NN")
    available = r.shape[0] - (1 if exclude is not None else 0)
    if k < 1 or k > available:
        raise DataError(f"k-NN needs 1 <= k <= {available} (reference points available), got k={k}")
    if exclude is not None and exclude.shape != (q.shape[0],):
        raise DataError(f"exclude must hold one index per query, shape ({q.shape[0]},), got {tuple(exclude.shape)}")
    dists, idxs = [], []
    step = _rows_per_chunk(r.shape[0], chunk)
    for start in range(0, q.shape[0], step):
        d = torch.cdist(q[start : start + step], r)
        if exclude is not None:
            ex = exclude[start : start + step].to(torch.long)
            rows = torch.nonzero(ex >= 0).squeeze(1)
            d[rows, ex[rows]] = float("inf")
        v, i = d.topk(k, dim=1, largest=False, sorted=True)
        dists.append(v)
        idxs.append(i)
    if not dists:
        return torch.empty(0, k, dtype=torch.float64), torch.empty(0, k, dtype=torch.long)
    return torch.cat(dists), torch.cat(idxs)


def knn_radii(x: Any, k: int, chunk: int | None = None) -> torch.Tensor:
    """Distance from each point of ``x`` to its k-th nearest *other* point of ``x``: (N,) float64."""
    x = _as_2d_float64(x, "features")
    if x.shape[0] < k + 1:
        raise DataError(f"k-NN radii with k={k} need at least {k + 1} points, got {x.shape[0]}")
    return knn(x, x, k, exclude=torch.arange(x.shape[0]), chunk=chunk)[0][:, -1]


def _ball_counts(
    queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """For each query, how many balls B(centre_i, radius_i) contain it (closed balls): (Q,) int64."""
    counts = []
    step = _rows_per_chunk(centres.shape[0], chunk)
    for start in range(0, queries.shape[0], step):
        d = torch.cdist(queries[start : start + step], centres)
        counts.append((d <= radii[None, :]).sum(1))
    return torch.cat(counts) if counts else torch.empty(0, dtype=torch.long)


class _TwoSetMetric:
    """Collects real and generated feature batches; ``compute`` sees each set as one (N, D) tensor."""

    name = "metric"

    def __init__(self, k: int, chunk: int | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise DataError(f"{self.name} k must be a positive integer, got {k!r}")
        self.k, self.chunk = k, chunk
        self.reset()

    def reset(self) -> None:
        self._real: list[torch.Tensor] = []
        self._fake: list[torch.Tensor] = []

    def update(self, x: Any, real: bool) -> None:
        """Add a batch of features (N, D), as real or generated."""
        x = _as_2d_float64(x, "features")
        store = self._real if real else self._fake
        dims = {t.shape[1] for t in self._real + self._fake}
        if dims and x.shape[1] not in dims:
            raise DataError(f"feature dimension changed from {dims.pop()} to {x.shape[1]} between updates")
        store.append(x)

    def _sets(self) -> tuple[torch.Tensor, torch.Tensor]:
        real = torch.cat(self._real) if self._real else torch.empty(0, 0, dtype=torch.float64)
        fake = torch.cat(self._fake) if self._fake else torch.empty(0, 0, dtype=torch.float64)
        need = self.k + 1
        for label, s in (("real", real), ("generated", fake)):
            if s.shape[0] < need:
                raise DataError(f"{self.name} with k={self.k} needs at least {need} {label} samples, got {s.shape[0]}")
        return real, fake


class PrecisionRecall(_TwoSetMetric):
    """Improved precision (fidelity) and recall (diversity), Kynkäänniemi et al. 2019. Higher is better.

    Same distribution: both high but below 1 (0.87 for 600 points of an 8-d Gaussian at k=3; lower in
    high dimensions, higher for larger k), so compare with real-vs-real, not with 1. Samples off the
    data: precision near 0. Mode collapse onto a small part of the data: precision high, recall low.
    """

    name = "precision/recall"

    def __init__(self, k: int = 3, chunk: int | None = None) -> None:
        super().__init__(k, chunk)

    def compute(self) -> dict[str, float]:
        real, fake = self._sets()
        r_real = knn_radii(real, self.k, self.chunk)
        r_fake = knn_radii(fake, self.k, self.chunk)
        precision = (_ball_counts(fake, real, r_real, self.chunk) > 0).double().mean()
        recall = (_ball_counts(real, fake, r_fake, self.chunk) > 0).double().mean()
        return {"precision": float(precision), "recall": float(recall)}


class DensityCoverage(_TwoSetMetric):
    """Density and coverage, Naeem et al. 2020: fidelity and diversity measured on the real manifold only.

    Density is about 1 for samples from the data distribution (it is unbounded above: samples piled in
    dense real regions score more); coverage is in [0, 1] and falls when modes are missing.
    """

    name = "density/coverage"

    def __init__(self, k: int = 5, chunk: int | None = None) -> None:
        super().__init__(k, chunk)

    def compute(self) -> dict[str, float]:
        real, fake = self._sets()
        r_real = knn_radii(real, self.k, self.chunk)
        density = _ball_counts(fake, real, r_real, self.chunk).double().sum() / (self.k * fake.shape[0])
        nearest_fake = knn(real, fake, 1, chunk=self.chunk)[0][:, 0]
        coverage = (nearest_fake <= r_real).double().mean()
        return {"density": float(density), "coverage": float(coverage)}


__all__ = ["knn", "knn_radii", "PrecisionRecall", "DensityCoverage"]
