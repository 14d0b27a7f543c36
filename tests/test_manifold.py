"""k-NN manifold metrics (precision/recall, density/coverage) on toy manifolds and against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genloop.errors import DataError
from genloop.evaluation import catalog
from genloop.evaluation.manifold import DensityCoverage, PrecisionRecall, knn, knn_radii


def _normal(n: int, d: int, seed: int, mean: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) * scale + mean


def _scores(real, fake, k_pr: int = 3, k_dc: int = 5, chunk: int | None = None) -> dict[str, float]:
    pr, dc = PrecisionRecall(k_pr, chunk=chunk), DensityCoverage(k_dc, chunk=chunk)
    for m in (pr, dc):
        m.update(real, real=True)
        m.update(fake, real=False)
    return {**pr.compute(), **dc.compute()}


def _brute_force(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> dict[str, float]:
    """The papers' definitions with the full distance matrices, written independently of the module."""

    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def radii(a, k):
        return np.sort(dist(a, a), axis=1)[:, k]  # column 0 is the point itself

    d_rf = dist(real, fake)  # (N real, M fake)
    r3_real, r3_fake = radii(real, k_pr), radii(fake, k_pr)
    r5_real = radii(real, k_dc)
    return {
        "precision": float((d_rf <= r3_real[:, None]).any(0).mean()),
        "recall": float((d_rf <= r3_fake[None, :]).any(1).mean()),
        "density": float((d_rf <= r5_real[:, None]).sum() / (k_dc * fake.shape[0])),
        "coverage": float((d_rf.min(1) <= r5_real).mean()),
    }


def test_same_distribution_scores_high():
    s = _scores(_normal(600, 8, 0), _normal(600, 8, 1))
    assert 0.75 <= s["precision"] <= 1.0 and 0.75 <= s["recall"] <= 1.0
    assert s["density"] == pytest.approx(1.0, abs=0.15)
    assert s["coverage"] >= 0.9  # theory: 1 - 2^-k = 0.97 for equal sizes


def test_a_set_against_itself_is_perfect():
    x = _normal(100, 4, 2)
    s = _scores(x, x)
    assert s["precision"] == s["recall"] == s["coverage"] == 1.0


def test_samples_far_from_the_data_score_zero():
    s = _scores(_normal(300, 8, 3), _normal(300, 8, 4, mean=50.0))
    assert s == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # the catalogue's direction ranks the matching distribution above the one far off (what compare and
    # train.select_metric rely on)
    good = _scores(_normal(300, 8, 3), _normal(300, 8, 5))
    for key in s:
        assert catalog.get(key).badness(good[key]) < catalog.get(key).badness(s[key]), key


def test_mode_collapse_keeps_precision_and_loses_recall_and_coverage():
    # every sample inside a small cluster at the centre of the real data
    s = _scores(_normal(600, 8, 5), _normal(600, 8, 6, scale=0.05))
    assert s["precision"] >= 0.95
    assert s["recall"] <= 0.1
    assert s["coverage"] <= 0.2
    assert s["density"] > 1.0  # crowded into the densest real region


def test_matches_the_definitions_computed_by_brute_force_with_tiny_chunks():
    real, fake = _normal(57, 5, 7), _normal(43, 5, 8, mean=0.4, scale=1.3)
    expected = _brute_force(real, fake, 3, 5)
    for chunk in (None, 1, 7):
        got = _scores(real, fake, chunk=chunk)
        assert got == pytest.approx(expected, abs=1e-12)


def test_knn_and_radii_match_brute_force():
    x, q = _normal(40, 6, 9), _normal(13, 6, 10)
    full = np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1))
    d, i = knn(q, x, 4, chunk=5)
    np.testing.assert_allclose(d.numpy(), np.sort(full, 1)[:, :4], rtol=1e-10)
    np.testing.assert_array_equal(i.numpy(), np.argsort(full, 1)[:, :4])
    assert d.dtype == torch.float64

    self_d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.testing.assert_allclose(knn_radii(x, 3, chunk=3).numpy(), np.sort(self_d, 1)[:, 3], rtol=1e-10)
    # leave-one-out by index: a genuine duplicate elsewhere in the set stays a neighbour at distance 0
    dup = np.concatenate([x, x[:1]])
    d, i = knn(dup, dup, 1, exclude=torch.arange(dup.shape[0]))
    assert d[0, 0] == pytest.approx(0.0, abs=1e-6) and int(i[0, 0]) == 40


def test_streaming_equals_one_shot_and_reset():
    real, fake = _normal(130, 6, 11), _normal(90, 6, 12, mean=0.3)
    one = _scores(real, fake)
    pr, dc = PrecisionRecall(), DensityCoverage()
    for m in (pr, dc):
        for chunk in np.array_split(real, 5):
            m.update(torch.from_numpy(chunk).float().double(), real=True)
        for chunk in np.array_split(fake, 3):
            m.update(chunk, real=False)
    assert {**pr.compute(), **dc.compute()} == pytest.approx(one, abs=1e-12)
    for m in (pr, dc):
        m.reset()
        with pytest.raises(DataError):
            m.compute()
    pr.update(real, real=True)
    pr.update(fake, real=False)
    assert pr.compute() == pytest.approx({"precision": one["precision"], "recall": one["recall"]}, abs=1e-12)


def test_bad_input_raises_data_error():
    for bad_k in (0, -1, 2.5, True):
        with pytest.raises(DataError, match="k must be a positive integer"):
            PrecisionRecall(bad_k)  # type: ignore[arg-type]
    m = PrecisionRecall(k=3)
    with pytest.raises(DataError):
        m.compute()  # nothing added
    with pytest.raises(DataError, match="2-D"):
        m.update(np.zeros(5), real=True)
    with pytest.raises(DataError, match="NaN"):
        m.update(np.full((4, 2), np.nan), real=True)
    m.update(_normal(10, 4, 13), real=True)
    with pytest.raises(DataError, match="dimension changed from 4 to 5"):
        m.update(_normal(10, 5, 14), real=False)
    m.update(_normal(3, 4, 15), real=False)
    with pytest.raises(DataError, match="at least 4 generated samples, got 3"):
        m.compute()
    d = DensityCoverage(k=5)
    d.update(_normal(5, 2, 16), real=True)
    d.update(_normal(50, 2, 17), real=False)
    with pytest.raises(DataError, match="at least 6 real samples, got 5"):
        d.compute()
    with pytest.raises(DataError, match="chunk"):
        knn(_normal(3, 2, 18), _normal(3, 2, 19), 1, chunk=0)
    with pytest.raises(DataError, match="k <= 3"):
        knn(_normal(3, 2, 18), _normal(3, 2, 19), 4)
