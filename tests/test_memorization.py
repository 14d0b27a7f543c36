"""Memorisation detector: planted copies among novel digits are flagged, real held-out images are not."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genloop.errors import DataError
from genloop.evaluation.memorization import (
    MemorizationReport,
    closest_pairs_grid,
    memorization,
    nearest_neighbours,
)


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    """sklearn's 8x8 digits in [-1, 1], split into train / held-out / 'novel' (stand-ins for good samples)."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    return {"train": x[perm[:1200]], "held_out": x[perm[1200:1500]], "novel": x[perm[1500:1700]]}


def _planted(digits, noise: float = 0.05) -> torch.Tensor:
    """200 novel digits, then 10 exact copies of train[0:10], then 10 noisy copies of train[10:20]."""
    g = torch.Generator().manual_seed(1)
    train = digits["train"]
    noisy = train[10:20] + noise * torch.randn(10, 1, 8, 8, generator=g)
    return torch.cat([digits["novel"], train[:10], noisy])


def test_planted_copies_are_flagged_and_novel_samples_are_not(digits):
    report = memorization(_planted(digits), digits["train"], digits["held_out"])
    assert isinstance(report, MemorizationReport)
    assert report.is_copy[200:].all(), f"missed copies: ratios {report.ratio[200:].tolist()}"
    assert int(report.is_copy[:200].sum()) <= 4  # at most 2% false positives among novel real digits
    assert report.near_copy_count == int(report.is_copy.sum())
    assert report.near_copy_share == pytest.approx(report.near_copy_count / 220)
    # the floor: held-out real images against train
    assert report.n_held_out == 300 and report.held_out_near_copy_share <= 0.03
    assert report.threshold == pytest.approx(report.alpha * report.train_ratio_median)
    assert 0.3 < report.train_ratio_median < 0.95 and report.held_out_ratio_median > report.threshold
    # exact copies: distance 0 to the very image they copy, and they come first among the closest pairs
    assert report.nn_dist_min == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(report.nn_index[200:210], torch.arange(10))
    assert set(report.pairs[:10, 0].tolist()) == set(range(200, 210))
    torch.testing.assert_close(report.pairs[:10, 1], report.nn_index[report.pairs[:10, 0]])
    assert report.nn_dist_min <= report.nn_dist_median <= report.nn_dist_mean * 2
    assert report.held_out_nn_dist_min > 0


def test_report_summary_is_json_able(digits):
    report = memorization(_planted(digits), digits["train"], digits["held_out"], top=5)
    summary = report.as_dict()
    json.dumps(summary)  # plain values only
    for key in (
        "near_copy_share", "near_copy_count", "held_out_near_copy_share", "held_out_near_copy_count",
        "nn_dist_mean", "nn_dist_median", "nn_dist_min", "held_out_nn_dist_mean", "held_out_nn_dist_median",
        "held_out_nn_dist_min", "threshold", "alpha", "n_neighbours", "train_ratio_median", "closest_pairs",
    ):  # fmt: skip
        assert key in summary
    assert len(summary["closest_pairs"]) == 5
    first = summary["closest_pairs"][0]
    assert first["near_copy"] is True and first["distance"] == pytest.approx(0.0, abs=1e-6)
    assert set(first) == {"sample", "train", "distance", "ratio", "near_copy"}


def test_works_in_feature_space_with_numpy_and_uint8_inputs(digits):
    # random 32-d "features": ratios concentrate near 1 in higher dimensions, and the calibrated cut follows
    rng = np.random.default_rng(2)
    train, held, novel = rng.normal(size=(500, 32)), rng.normal(size=(200, 32)), rng.normal(size=(100, 32))
    samples = np.concatenate([novel, train[:5], train[5:10] + 0.05 * rng.normal(size=(5, 32))])
    report = memorization(samples, train, held, n_neighbours=20)
    assert report.is_copy[100:].all() and int(report.is_copy[:100].sum()) <= 2
    assert report.train_ratio_median > 0.7 and report.n_neighbours == 20

    # uint8 training images are mapped to [-1, 1], the same space as float samples
    as_uint8 = ((digits["train"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    r = memorization(digits["train"][:3], as_uint8, digits["held_out"][:20])
    assert r.is_copy.all() and r.nn_dist_mean < 0.05  # only uint8 rounding apart


def test_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(3)
    train, queries = rng.normal(size=(30, 2, 3, 3)), rng.normal(size=(11, 2, 3, 3))
    full = np.sqrt(((queries.reshape(11, 1, -1) - train.reshape(1, 30, -1)) ** 2).sum(-1))
    for chunk in (None, 1, 4):
        d, i, d2 = nearest_neighbours(torch.from_numpy(queries), train, chunk=chunk)
        np.testing.assert_allclose(d.numpy(), full.min(1), rtol=1e-10)
        np.testing.assert_array_equal(i.numpy(), full.argmin(1))
        np.testing.assert_allclose(d2.numpy(), np.sort(full, 1)[:, 1], rtol=1e-10)
        assert d.dtype == torch.float64 and i.dtype == torch.long


def test_closest_pairs_grid_puts_each_sample_beside_its_training_image(digits):
    samples = _planted(digits)
    report = memorization(samples, digits["train"], digits["held_out"])
    grid = closest_pairs_grid(samples, digits["train"], report.pairs, k=16)
    # 16 pairs, 4 pairs (8 tiles) to a row, 8 px tiles, 2 px padding
    assert grid.shape == (1, 4 * 10 + 2, 8 * 10 + 2) and grid.dtype == torch.float32
    s, t = report.pairs[1].tolist()  # second pair: top row, tiles 2 (sample) and 3 (train)
    torch.testing.assert_close(grid[:, 2:10, 22:30], samples[s])
    torch.testing.assert_close(grid[:, 2:10, 32:40], digits["train"][t])
    # (N,) nearest indices: sample i beside train[idx[i]]
    small = closest_pairs_grid(samples[:3], digits["train"], report.nn_index[:3], k=16)
    assert small.shape == (1, 12, 6 * 10 + 2)
    torch.testing.assert_close(small[:, 2:10, 12:20], digits["train"][report.nn_index[0]])


def test_bad_input_raises_data_error(digits):
    train, held = digits["train"], digits["held_out"]
    with pytest.raises(DataError, match="differ in size"):
        memorization(torch.zeros(4, 1, 4, 4), train, held)
    with pytest.raises(DataError, match="at least 3 training images"):
        memorization(train[:4], train[:2], held)
    with pytest.raises(DataError, match="empty"):
        memorization(train[:0], train, held)
    with pytest.raises(DataError, match="alpha"):
        memorization(train[:4], train, held, alpha=0)
    with pytest.raises(DataError, match="NaN"):
        nearest_neighbours(torch.full((2, 64), float("nan")), train)
    with pytest.raises(DataError, match="out of range"):
        closest_pairs_grid(train[:2], train, torch.tensor([[0, 5000]]))
    with pytest.raises(DataError, match="one shape"):
        closest_pairs_grid(train[:2], torch.zeros(3, 3, 8, 8), torch.tensor([0, 1]))
