"""Image metrics (FID, KID, IS) against closed forms, and the reference feature net on sklearn's digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from genloop.data.image import ImageDataset
from genloop.errors import DataError
from genloop.evaluation import (
    FrechetDistance,
    InceptionScore,
    KernelInceptionDistance,
    catalog,
    evaluate_images,
    frechet_distance,
    get_feature_extractor,
    mmd2_unbiased,
)
from genloop.evaluation import features as features_mod
from genloop.serialization import sha256_file


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLOOP_CACHE_DIR", str(tmp_path / "cache"))


def _digits(size: int = 16, labelled: bool = True, limit: int | None = None) -> ImageDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    images = (x * 255).round().clamp(0, 255).to(torch.uint8)
    labels = torch.tensor(d.target, dtype=torch.int64)
    if limit:
        images, labels = images[:limit], labels[:limit]
    n = images.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_train, n_val = int(0.8 * n), int(0.1 * n)
    splits = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
    return ImageDataset(
        name="digits-test",
        images=images,
        labels=labels if labelled else None,
        class_names=[str(i) for i in range(10)] if labelled else None,
        splits=splits,
        source_hash=f"test-digits-{size}-{labelled}-{limit}",
    )


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return _digits(16)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("features-cache")


@pytest.fixture(scope="module")
def extractor(digits, module_cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_CACHE_DIR", str(module_cache))
        return get_feature_extractor(digits, seed=0)


def _gaussian(n, d, seed, mean=0.0, scale=1.0, shape_seed=0):
    """n samples of a correlated Gaussian; ``shape_seed`` fixes the covariance, ``seed`` the draw."""
    a = np.random.default_rng(1000 + shape_seed).normal(size=(d, d)) * scale / np.sqrt(d)
    return np.random.default_rng(seed).normal(size=(n, d)) @ a + mean


def _fid_reference(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula, via scipy's general sqrtm: independent of frechet_distance's eigen route."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# ----------------------------------------------------------------------------------------------- FID


def _fid(x, y) -> float:
    m = FrechetDistance()
    m.update(x, real=True)
    m.update(y, real=False)
    return m.compute()["fid"]


def test_fid_of_a_set_with_itself_is_zero():
    x = _gaussian(400, 16, seed=0, mean=5.0)
    assert _fid(x, x) < 1e-6 * np.trace(np.cov(x, rowvar=False))
    # the catalogue ranks the identical set above a shifted one (compare and checkpoint selection use it)
    fid = catalog.get("fid")
    assert fid.badness(_fid(x, x)) < fid.badness(_fid(x, x + 0.5))


def test_fid_matches_closed_form_and_is_symmetric():
    x = _gaussian(300, 8, seed=1, mean=0.5)
    y = _gaussian(500, 8, seed=2, mean=-0.3, scale=2.0, shape_seed=1)
    expected = _fid_reference(x, y)
    assert _fid(x, y) == pytest.approx(expected, rel=1e-6)
    assert _fid(y, x) == pytest.approx(_fid(x, y), rel=1e-9)
    # numpy and torch inputs give the same answer
    assert _fid(torch.from_numpy(x).float(), y) == pytest.approx(expected, rel=1e-5)


def test_fid_of_unit_gaussians_with_known_means_is_squared_mean_distance():
    rng = np.random.default_rng(3)
    m = np.array([1.0, 0.5, 0.0, -1.0])
    x, y = rng.normal(size=(20000, 4)), rng.normal(size=(20000, 4)) + m
    assert _fid(x, y) == pytest.approx(float(m @ m), abs=0.08)
    # the function form on the true parameters is exact
    assert frechet_distance(np.zeros(4), np.eye(4), m, np.eye(4)) == pytest.approx(float(m @ m), abs=1e-12)


def test_fid_streaming_equals_one_shot_and_reset():
    x = _gaussian(257, 6, seed=4, mean=1e3)  # a large mean stresses the covariance accumulation
    y = _gaussian(190, 6, seed=5, mean=1e3 + 0.5)
    one = _fid(x, y)
    m = FrechetDistance()
    for chunk in np.array_split(x, 7):
        m.update(chunk, real=True)
    for chunk in np.array_split(y, 3):
        m.update(torch.from_numpy(chunk), real=False)
    assert m.compute()["fid"] == pytest.approx(one, rel=1e-9)
    np.testing.assert_allclose(m.real.cov.numpy(), np.cov(x, rowvar=False), rtol=1e-9)
    m.reset()
    with pytest.raises(DataError):
        m.compute()
    m.update(x, real=True)
    m.update(y, real=False)
    assert m.compute()["fid"] == pytest.approx(one, rel=1e-12)


def test_fid_rejects_bad_input():
    m = FrechetDistance()
    with pytest.raises(DataError):
        m.update(np.zeros(5), real=True)
    m.update(np.zeros((3, 4)), real=True)
    with pytest.raises(DataError):
        m.update(np.zeros((3, 5)), real=True)


# ----------------------------------------------------------------------------------------------- KID


def test_mmd2_unbiased_matches_explicit_sums():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.3

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(a, b) for a in x for b in y) / (7 * 5)
    assert mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kid_near_zero_for_same_distribution_and_positive_for_different():
    same, diff = (
        KernelInceptionDistance(subsets=20, subset_size=200),
        KernelInceptionDistance(subsets=20, subset_size=200),
    )
    x, y, z = _gaussian(400, 16, 7), _gaussian(400, 16, 8), _gaussian(400, 16, 9, mean=0.7)
    same.update(x, real=True)
    same.update(y, real=False)
    diff.update(x, real=True)
    diff.update(z, real=False)
    s, d = same.compute(), diff.compute()
    assert d["kid_mean"] > 0.05 and d["kid_mean"] > 5 * d["kid_std"]
    assert abs(s["kid_mean"]) < 0.05 * d["kid_mean"]
    assert catalog.get("kid").badness(s["kid_mean"]) < catalog.get("kid").badness(d["kid_mean"])
    # seeded: the same subsets every time; reset empties it
    assert diff.compute() == d
    diff.reset()
    with pytest.raises(DataError):
        diff.compute()


# ------------------------------------------------------------------------------------------------ IS


def test_inception_score_bounds():
    k = 5
    identical = InceptionScore(splits=4)
    identical.update(np.tile([0.1, 0.2, 0.3, 0.2, 0.2], (100, 1)))
    assert identical.compute()["is_mean"] == pytest.approx(1.0, abs=1e-9)

    confident = InceptionScore(splits=4)
    onehot = torch.eye(k).repeat(40, 1)  # each split of 50 holds every class 10 times
    for chunk in onehot.split(33):
        confident.update(chunk)
    out = confident.compute()
    assert out["is_mean"] == pytest.approx(k, rel=1e-9) and out["is_std"] == pytest.approx(0, abs=1e-9)
    assert catalog.get("is").badness(out["is_mean"]) < catalog.get("is").badness(identical.compute()["is_mean"])

    confident.reset()
    confident.update(torch.full((10, k), 1 / k))
    assert confident.compute()["is_mean"] == pytest.approx(1.0)
    with pytest.raises(DataError):
        confident.update(torch.randn(10, k))  # logits, not probabilities


# ------------------------------------------------------------------------------------- feature net


def test_feature_extractor_trains_caches_and_extracts(digits, extractor, module_cache, monkeypatch):
    assert extractor.kind == "classifier" and extractor.num_classes == 10
    assert extractor.accuracy >= 0.9
    assert extractor.id.startswith("refnet-v2-") and len(extractor.id) == len("refnet-v2-") + 12
    assert extractor.quality["linear_probe_accuracy"] >= 0.9 and extractor.sanity["n_reference"] > 0
    path = module_cache / "features" / f"{features_mod.cache_key(digits)}.safetensors"
    assert extractor.sha256 == sha256_file(path)

    x = digits.float_images("val")
    f, p = extractor.features(x), extractor.probs(x, batch_size=16)
    assert f.shape == (x.shape[0], 128) and f.dtype == torch.float64
    assert p.shape == (x.shape[0], 10) and torch.allclose(p.sum(1), torch.ones(x.shape[0], dtype=torch.float64))
    assert torch.allclose(extractor.features(x, batch_size=7), f, atol=1e-5)  # batching does not change features

    def no_training(*a, **k):
        raise AssertionError("should have loaded from the cache")

    monkeypatch.setattr(features_mod, "train_reference_net", no_training)
    monkeypatch.setenv("GENLOOP_CACHE_DIR", str(module_cache))
    again = get_feature_extractor(digits)
    assert (again.id, again.sha256, again.accuracy) == (extractor.id, extractor.sha256, extractor.accuracy)
    assert torch.allclose(again.features(x), f)
    with pytest.raises(DataError):
        extractor.features(torch.zeros(2, 3, 16, 16))  # wrong channel count


def test_unlabelled_dataset_trains_contrastive_net_and_corrupt_cache_is_retrained(tmp_path, monkeypatch):
    ds = _digits(8, labelled=False, limit=300)
    fe = get_feature_extractor(ds, sanity=False)
    assert fe.kind == "contrastive" and fe.num_classes == 64 and fe.sanity is None
    assert fe.accuracy == fe.quality["retrieval_top1"] > 5 / fe.quality["retrieval_n"]  # well above chance

    path = tmp_path / "cache" / "features" / f"{features_mod.cache_key(ds)}.safetensors"
    path.write_bytes(b"not a safetensors file")
    calls = []
    real_train = features_mod.train_reference_net
    monkeypatch.setattr(features_mod, "train_reference_net", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    again = get_feature_extractor(ds, sanity=False)
    assert calls == [1]
    assert again.sha256 == fe.sha256  # seeded training is deterministic

    # no classes -> no Inception Score
    result = evaluate_images(ds.float_images("val"), ds, fe)
    assert "is" not in result and "is_real" not in result and result["feature_net"]["kind"] == "contrastive"


# ----------------------------------------------------------------------------------- evaluate_images


def test_evaluate_images_real_beats_noise_and_reports_floor(digits, extractor):
    held_out = torch.cat([digits.float_images("val"), digits.float_images("test")])
    real = evaluate_images(held_out, digits, extractor, seed=0)
    noise = torch.rand(held_out.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fake = evaluate_images(list(noise.split(50)), digits, extractor, seed=0)  # an iterable of batches

    assert real["fid"] < 1e-6 and fake["fid"] > 20 * real["fid_floor"]
    assert fake["kid"] > real["kid_floor"] > real["kid"] - 1e-9
    assert 0 < real["fid_floor"] < fake["fid"]
    assert real["is_real"] == pytest.approx(real["is"]) and real["is"] > fake["is"]
    assert real["n_generated"] == real["n_reference"] == held_out.shape[0]
    assert real["n_floor"] == min(held_out.shape[0], digits.splits["train"].numel())
    assert real["reference_split"] == "val+test" and real["seed"] == 0
    assert real["feature_net"] == {
        "id": extractor.id,
        "sha256": extractor.sha256,
        "kind": "classifier",
        "accuracy": extractor.accuracy,
        "feature_dim": 128,
        "quality": extractor.quality,
    }
    assert real["sanity"] == extractor.sanity
    json.dumps(real)  # flat and JSON-able
    assert evaluate_images(held_out, digits, extractor, seed=0) == real  # seeded

    with pytest.raises(DataError):
        evaluate_images(torch.zeros(4, 1, 8, 8), digits, extractor)
    with pytest.raises(DataError):
        evaluate_images(torch.full((4, 1, 16, 16), float("nan")), digits, extractor)
