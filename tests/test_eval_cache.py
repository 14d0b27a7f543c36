"""Evaluation in seconds: real images' features cached by net and data (hits, invalidation, corrupt files), and
KID's whole-kernel path giving the per-subset numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genloop.data.image import ImageDataset
from genloop.evaluation import image_metrics
from genloop.evaluation.image_metrics import KernelInceptionDistance
from genloop.evaluation.real_cache import cached_features_and_probs, features_key
from genloop.evaluation.suite import evaluate_images
from genloop.paths import cache_dir


class CountingExtractor:
    """A fixed random projection standing in for the feature net; counts the images it is shown."""

    kind, accuracy, feature_dim, num_classes, accuracy_split, quality, sanity = (
        "classifier",
        1.0,
        8,
        3,
        "val",
        None,
        None,
    )

    def __init__(self, sha256: str = "a" * 64) -> None:
        self.id, self.sha256, self.seen = "test-net", sha256, 0
        self.proj = torch.randn(64, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def features_and_probs(self, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen += x.shape[0]
        x = x.double() / 255 if x.dtype == torch.uint8 else x.double()
        f = x.flatten(1) @ self.proj
        return f, torch.softmax(f[:, :3], dim=1)

    def features(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return self.features_and_probs(x, batch_size)[0]


def _images(n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_second_call_is_a_hit_with_the_same_numbers() -> None:
    net, images = CountingExtractor(), _images()
    first = cached_features_and_probs(net, images)
    assert net.seen == 40
    second = cached_features_and_probs(net, images)
    assert net.seen == 40  # read from the cache
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert (cache_dir("features", "real") / f"{features_key(net, images)}.safetensors").is_file()


def test_other_images_or_another_net_miss() -> None:
    net, images = CountingExtractor(), _images()
    cached_features_and_probs(net, images)
    changed = images.clone()
    changed[0, 0, 0, 0] ^= 1  # one bit of one pixel
    cached_features_and_probs(net, changed)
    assert net.seen == 80
    cached_features_and_probs(net, images[:39])  # another subset
    assert net.seen == 119
    retrained = CountingExtractor(sha256="b" * 64)  # same id, new weights
    cached_features_and_probs(retrained, images)
    assert retrained.seen == 40
    assert len({features_key(net, images), features_key(net, changed), features_key(retrained, images)}) == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupt_cache_file_is_recomputed(damage: str) -> None:
    net, images = CountingExtractor(), _images()
    want = cached_features_and_probs(net, images)
    path = cache_dir("features", "real") / f"{features_key(net, images)}.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a safetensors file")
    got = cached_features_and_probs(net, images)
    assert net.seen == 80 and torch.equal(got[0], want[0])
    cached_features_and_probs(net, images)
    assert net.seen == 80  # rewritten whole


def _dataset(tmp_path: Path) -> ImageDataset:
    images = _images(120, seed=1)
    splits = {"train": torch.arange(0, 80), "val": torch.arange(80, 100), "test": torch.arange(100, 120)}
    return ImageDataset(
        name="toy", images=images, labels=torch.arange(120) % 3, splits=splits, source_hash="toy", class_names=None
    )


def test_evaluate_images_computes_real_features_once(tmp_path: Path) -> None:
    dataset, net = _dataset(tmp_path), CountingExtractor()
    fake = _images(30, seed=2).float() / 127.5 - 1
    first = evaluate_images(fake, dataset, net, metrics=("fid", "kid"))
    shown = net.seen
    second = evaluate_images(fake, dataset, net, metrics=("fid", "kid"))
    assert net.seen - shown == 30  # only the generated images again
    assert first == second


def test_kid_whole_kernel_path_equals_per_subset(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(70, 16, generator=g, dtype=torch.float64), torch.randn(50, 16, generator=g).double() + 0.3

    def kid() -> dict[str, float]:
        m = KernelInceptionDistance(subsets=20, subset_size=30, seed=5)
        m.update(real, real=True)
        m.update(fake, real=False)
        return m.compute()

    whole = kid()
    monkeypatch.setattr(image_metrics, "KID_WHOLE_KERNEL_MAX", 0)
    per_subset = kid()
    assert whole["kid_mean"] == pytest.approx(per_subset["kid_mean"], rel=1e-12, abs=1e-15)
    assert whole["kid_std"] == pytest.approx(per_subset["kid_std"], rel=1e-9, abs=1e-15)
    assert whole["kid_mean"] > 0  # the shift is seen
