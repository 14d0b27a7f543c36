"""Streaming image metrics on reference-net features: FID, KID and the Inception Score.

Each metric follows the torchmetrics pattern: ``update()`` as batches arrive, ``compute()`` once, ``reset()``
to reuse. They take *features* (or class probabilities), not images, so the same code serves any feature
net; :func:`genloop.evaluation.suite.evaluate_images` wires them to a feature net and adds the real-data floor.

A metric without context misleads: an FID of 3.2 means nothing until you know that two disjoint sets of
*real* images score 1.9 on the same net and sample sizes. So :func:`evaluate_images` always reports the
floor (real training images vs the same held-out reference) beside each number.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DataError


def _as_2d_float64(x: Any, what: str) -> torch.Tensor:
    """Accept a torch tensor or numpy array of shape (N, D); return it as float64 on the CPU."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{what} must be a torch tensor or numpy array, got {type(x).__name__}")
    if x.dim() != 2:
        raise DataError(f"{what} must be 2-D (N, D), got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise DataError(f"{what} contain NaN or infinite values")
    return x


# --------------------------------------------------------------------------------------------- FID


class GaussianStats:
    """Running mean and covariance of a stream of feature vectors, in float64.

    Batches are merged with Chan et al.'s pairwise update (mean and centred scatter), not a raw sum of
    outer products: with features whose mean is large relative to their spread, ``E[xx^T] - mu mu^T``
    cancels catastrophically, while the centred form stays accurate and still equals the one-shot result.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._mean: torch.Tensor | None = None
        self._scatter: torch.Tensor | None = None  # sum of (x - mean)(x - mean)^T

    def update(self, x: Any) -> None:
        x = _as_2d_float64(x, "features")
        n_b = x.shape[0]
        if n_b == 0:
            return
        if self._mean is not None and x.shape[1] != self._mean.shape[0]:
            raise DataError(f"feature dimension changed from {self._mean.shape[0]} to {x.shape[1]} between updates")
        mean_b = x.mean(0)
        xc = x - mean_b
        scatter_b = xc.T @ xc
        if self._mean is None:
            self.count, self._mean, self._scatter = n_b, mean_b, scatter_b
            return
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._scatter = self._scatter + scatter_b + torch.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    @property
    def mean(self) -> torch.Tensor:
        if self._mean is None:
            raise DataError("no features were added")
        return self._mean

    @property
    def cov(self) -> torch.Tensor:
        """Unbiased sample covariance (divides by n - 1)."""
        if self.count < 2:
            raise DataError(f"a covariance needs at least 2 samples, got {self.count}")
        return self._scatter / (self.count - 1)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via its eigendecomposition."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):

        |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))

    ``sigma1 sigma2`` is not symmetric, and ``scipy.linalg.sqrtm`` on it can return complex noise or fail
    for the rank-deficient covariances that few samples give. Instead we use the identity
    tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the inner matrix is symmetric PSD, so its
    eigenvalues are real and non-negative, and the trace is just the sum of their square roots.
    """
    mu1, mu2 = np.asarray(mu1, np.float64).ravel(), np.asarray(mu2, np.float64).ravel()
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise DataError(
            f"Fréchet distance needs matching shapes, got mu {mu1.shape}/{mu2.shape} and sigma {s1.shape}/{s2.shape}"
        )
    root1 = _psd_sqrt(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    fid = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(fid, 0.0)  # rounding can leave -1e-13 for identical inputs; a distance is never negative


class FrechetDistance:
    """FID: the Fréchet distance between Gaussians fitted to real and generated features. Lower is better."""

    def __init__(self) -> None:
        self.real, self.fake = GaussianStats(), GaussianStats()

    def update(self, x: Any, real: bool) -> None:
        (self.real if real else self.fake).update(x)

    def compute(self) -> dict[str, float]:
        for name, s in (("real", self.real), ("generated", self.fake)):
            if s.count < 2:
                raise DataError(f"FID needs at least 2 {name} samples, got {s.count}")
        fid = frechet_distance(self.real.mean, self.real.cov, self.fake.mean, self.fake.cov)
        return {"fid": fid}

    def reset(self) -> None:
        self.real.reset()
        self.fake.reset()


# --------------------------------------------------------------------------------------------- KID


def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


# KID computes the kernels over all points once when the larger set has at most this many squared points
# (2048^2 float64 entries: 32 MiB per kernel); beyond that, per subset as before.
KID_WHOLE_KERNEL_MAX = 2048**2


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel (diagonals of k(x,x), k(y,y) excluded)."""
    return _mmd2_from_kernels(_poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y))


def _mmd2_from_kernels(kxx: torch.Tensor, kyy: torch.Tensor, kxy: torch.Tensor) -> float:
    m, n = kxx.shape[0], kyy.shape[0]
    a = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    b = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(a + b - 2.0 * kxy.mean())


class KernelInceptionDistance:
    """KID: unbiased MMD^2 (cubic polynomial kernel), averaged over random subsets. Lower is better.

    Unlike FID it is unbiased, so it is near 0 (and can be slightly negative) for two samples of one
    distribution at any sample size, which makes small-sample comparisons fairer. Features are kept
    (not summarised) because the subsets are drawn at compute time.
    """

    def __init__(self, subsets: int = 100, subset_size: int | None = None, seed: int = 0) -> None:
        if subsets < 1:
            raise DataError(f"KID subsets must be >= 1, got {subsets}")
        self.subsets, self.subset_size, self.seed = subsets, subset_size, seed
        self.reset()

    def update(self, x: Any, real: bool) -> None:
        x = _as_2d_float64(x, "features")
        (self._real if real else self._fake).append(x)

    def compute(self) -> dict[str, float]:
        real = torch.cat(self._real) if self._real else torch.empty(0, 0, dtype=torch.float64)
        fake = torch.cat(self._fake) if self._fake else torch.empty(0, 0, dtype=torch.float64)
        n = min(real.shape[0], fake.shape[0])
        if n < 2:
            raise DataError(
                f"KID needs at least 2 real and 2 generated samples, got {real.shape[0]} and {fake.shape[0]}"
            )
        if real.shape[1] != fake.shape[1]:
            raise DataError(f"real and generated features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
        m = min(self.subset_size or 1000, n)
        if m < 2:
            raise DataError(f"KID subset_size must be >= 2, got {self.subset_size}")
        rng = np.random.default_rng(self.seed)
        # Every subset's kernel values are entries of the kernels over all points: computed once (when they
        # fit in memory), each subset only gathers its block instead of multiplying its features again (the
        # same numbers up to summation order; `genloop eval` spent most of its metric time here).
        whole = max(real.shape[0], fake.shape[0]) ** 2 <= KID_WHOLE_KERNEL_MAX
        if whole:
            kxx, kyy, kxy = _poly_kernel(real, real), _poly_kernel(fake, fake), _poly_kernel(real, fake)
        scores = []
        for _ in range(self.subsets):
            ir = torch.from_numpy(rng.choice(real.shape[0], m, replace=False))
            if_ = torch.from_numpy(rng.choice(fake.shape[0], m, replace=False))
            if whole:
                scores.append(_mmd2_from_kernels(kxx[ir][:, ir], kyy[if_][:, if_], kxy[ir][:, if_]))
            else:
                scores.append(mmd2_unbiased(real[ir], fake[if_]))
        s = np.asarray(scores)
        return {"kid_mean": float(s.mean()), "kid_std": float(s.std())}

    def reset(self) -> None:
        self._real: list[torch.Tensor] = []
        self._fake: list[torch.Tensor] = []


# ---------------------------------------------------------------------------------- Inception Score


class InceptionScore:
    """IS = exp(E_x KL(p(y|x) || p(y))) on class probabilities, mean and std over ``splits`` chunks.

    High when each image is confidently one class (sharp p(y|x)) and the classes are balanced (flat p(y)):
    it ranges from 1 to the number of classes. Higher is better. It ignores the real data entirely, so
    compare it with the IS of real held-out images (``is_real``), not with an absolute target.
    """

    def __init__(self, splits: int = 10) -> None:
        if splits < 1:
            raise DataError(f"Inception Score splits must be >= 1, got {splits}")
        self.splits = splits
        self.reset()

    def update(self, probs: Any) -> None:
        p = _as_2d_float64(probs, "class probabilities")
        if p.numel() and ((p < -1e-6).any() or (p.sum(1) - 1).abs().max() > 1e-3):
            raise DataError(
                "InceptionScore expects class probabilities (non-negative rows summing to 1), e.g. softmax outputs"
            )
        if self._probs and p.shape[1] != self._probs[0].shape[1]:
            raise DataError(f"number of classes changed from {self._probs[0].shape[1]} to {p.shape[1]} between updates")
        self._probs.append(p.clamp_min(0))

    def compute(self) -> dict[str, float]:
        if not self._probs:
            raise DataError("Inception Score needs at least 1 sample, got 0")
        p = torch.cat(self._probs)
        n = p.shape[0]
        if n == 0:
            raise DataError("Inception Score needs at least 1 sample, got 0")
        splits = max(1, min(self.splits, n // 2))  # each chunk needs a few samples for p(y) to mean anything
        scores = []
        for chunk in torch.tensor_split(p, splits):
            py = chunk.mean(0, keepdim=True)
            kl = (torch.special.xlogy(chunk, chunk) - torch.special.xlogy(chunk, py)).sum(1)
            scores.append(float(torch.exp(kl.mean())))
        s = np.asarray(scores)
        return {"is_mean": float(s.mean()), "is_std": float(s.std()), "is_splits": splits}

    def reset(self) -> None:
        self._probs: list[torch.Tensor] = []


__all__ = [
    "GaussianStats",
    "frechet_distance",
    "FrechetDistance",
    "mmd2_unbiased",
    "KernelInceptionDistance",
    "InceptionScore",
]
