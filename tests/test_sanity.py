"""The contrastive reference net and the metric sanity suite, on tiny toy data (seconds, one thread)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, tiny
from PIL import Image

import genloop
from genloop.data.image import ImageDataset
from genloop.evaluation import evaluate_images, sanity
from genloop.evaluation.features import (
    ContrastiveRecipe,
    FeatureExtractor,
    encoder_quality,
    nt_xent,
    simclr_views,
    train_reference_net,
)


def _shapes(n: int = 240, size: int = 16, seed: int = 0) -> ImageDataset:
    """Coloured squares, discs and bars at random places and scales on a dark background: structure, no labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        img = np.full((size, size, 3), rng.integers(0, 60, 3), np.uint8)
        for _ in range(2):
            cy, cx, r = rng.integers(3, size - 3, 2).tolist() + [int(rng.integers(2, size // 3))]
            kind = rng.integers(3)
            mask = (
                (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
                if kind == 0
                else ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
                if kind == 1
                else (abs(yy - cy) <= 1) & (abs(xx - cx) <= r + 2)
            )
            img[mask] = rng.integers(80, 256, 3)
        images[i] = img
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    a, b = int(0.6 * n), int(0.8 * n)
    return ImageDataset(
        name="shapes",
        images=x,
        labels=None,
        class_names=None,
        splits={"train": perm[:a], "val": perm[a:b], "test": perm[b:]},
        source_hash=f"shapes-{n}-{size}-{seed}",
    )


class _Toy:
    """A feature extractor for the suite's tests: any function of the images, no training."""

    kind, id, sha256, accuracy = "toy", "toy", "", float("nan")

    def __init__(self, fn) -> None:
        self.fn = fn

    def features(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return self.fn(x.float()).double()


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """A fixed random projection of the pixels: sees everything, understands nothing."""
    w = torch.randn(x[0].numel(), 32, generator=torch.Generator().manual_seed(0)) / x[0].numel() ** 0.5
    return torch.tanh(x.flatten(1) @ w * 3)


def _histogram(x: torch.Tensor) -> torch.Tensor:
    """Sorted pixel values (16 quantiles): blind to where pixels are, so blind to shuffled patches."""
    v = x.flatten(1).sort(dim=1).values
    return v[:, torch.linspace(0, v.shape[1] - 1, 16).long()] + 1e-3 * torch.arange(16)


def test_views_and_loss() -> None:
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(0)
    v1, v2 = simclr_views(x, g), simclr_views(x, g)
    assert v1.shape == x.shape and v1.min() >= -1 and v1.max() <= 1 and not torch.equal(v1, v2)
    grey = simclr_views(x[:, :1], torch.Generator().manual_seed(0))
    assert grey.shape == (6, 1, 16, 16)
    z = torch.randn(4, 8)
    assert nt_xent(z, z, 0.2) < nt_xent(z, torch.randn(4, 8), 0.2)  # matched views: lower loss


def test_contrastive_net_beats_chance_and_an_untrained_net_at_retrieval() -> None:
    ds = _shapes()
    recipe = ContrastiveRecipe(batch_size=64, min_steps=40, max_steps=40)
    net, state = train_reference_net(ds, seed=0, recipe=recipe)
    assert state["kind"] == "contrastive" and state["accuracy_metric"] == "retrieval_top1"
    q = state["quality"]
    chance = 1 / q["retrieval_n"]
    assert q["retrieval_top1"] > 10 * chance and "linear_probe_accuracy" not in q  # no labels, no probe
    untrained, _ = train_reference_net(ds, seed=0, recipe=ContrastiveRecipe(batch_size=64, min_steps=1, max_steps=1))
    fe = FeatureExtractor(untrained, id="", sha256="", accuracy=0, kind="contrastive")
    assert q["retrieval_top1"] > encoder_quality(fe, ds)["retrieval_top1"] + 0.1


def test_degradations_give_monotone_fid_in_a_pixel_feature_space() -> None:
    ds = _shapes(200)
    r = sanity.run_sanity(_Toy(_pixels), ds, degradations=("gaussian_noise", "noise_images", "drop_modes"))
    assert r["failures"] in ([], ["drop_modes"])  # 40 images, 10 clusters: dropping modes is noisy here
    for name in ("gaussian_noise", "noise_images"):
        fid = r["degradations"][name]["values"]["fid"]
        assert len(fid) == 6 and fid == sorted(fid) and r["degradations"][name]["rho"]["fid"] == 1.0
    assert r["modes"].startswith("k-means")  # unlabelled: modes are clusters of the features
    assert (sanity.format_warning(r) is None) == (r["failures"] == [])
    again = sanity.run_sanity(_Toy(_pixels), ds, degradations=("gaussian_noise",))
    assert again["degradations"]["gaussian_noise"] == r["degradations"]["gaussian_noise"]  # seeded


def test_every_degradation_runs_and_a_blind_net_is_named(capsys) -> None:
    ds = _shapes(120)
    r = sanity.run_sanity(_Toy(_histogram), ds)
    assert list(r["degradations"]) == list(sanity.DEGRADATIONS)
    assert "patch_shuffle" in r["failures"] and "gaussian_noise" not in r["failures"]
    assert r["degradations"]["patch_shuffle"]["rho"]["fid"] is None  # the histogram never changes
    warning = sanity.format_warning(r)
    assert warning and "shuffled patches" in warning and "\n" not in warning
    rows = {row["name"]: row for row in sanity.rows(r)}
    assert rows["patch_shuffle"]["failed"] and rows["patch_shuffle"]["cells"][0]["miss"]

    from genloop.cli.main import print_metrics

    result = {"run_id": "x", "n_generated": 2, "n_reference": 2, "fid": 1.0, "feature_net": {}, "sanity": r}
    print_metrics(result)
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if "not trustworthy" in line]
    assert len(lines) == 1 and "shuffled patches" in lines[0]


def _folder(root: Path, n: int = 64, size: int = 16) -> Path:
    ds = _shapes(n, size, seed=1)
    root.mkdir(parents=True)
    for i, img in enumerate(ds.images.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(img).save(root / f"{i:03d}.png")
    return root


def test_unlabelled_rgb_folder_run_gets_a_sanity_table_in_eval_and_report(tmp_path, capsys) -> None:
    folder = _folder(tmp_path / "shapes")
    run = genloop.train("dcgan", data=str(folder), overrides=tiny("dcgan"), steps=2, progress=False)
    r = genloop.evaluate(run.id, n=16)
    assert r["feature_net"]["kind"] == "contrastive" and "is" not in r
    assert r["feature_net"]["quality"]["retrieval_n"] > 0
    assert set(r["sanity"]["degradations"]) == set(sanity.DEGRADATIONS)
    html = Path(genloop.report(run.id)).read_text()
    assert "Metric sanity suite" in html and "elastic warp" in html and "View retrieval top-1" in html

    code, out, err = cli(capsys, "eval", run.id, "--sanity")
    assert code == 0, err
    assert "metric sanity" in out and "JPEG" in out and (run.dir / "eval" / "sanity.json").is_file()


@pytest.mark.parametrize("kind", ["classifier"])
def test_labelled_nets_report_probe_beside_accuracy(kind) -> None:
    from test_metrics import _digits

    ds = _digits(8, limit=600)
    from genloop.evaluation.features import TrainRecipe

    net, state = train_reference_net(ds, recipe=TrainRecipe(min_steps=60, max_steps=60), kind=kind)
    q = state["quality"]
    assert q["linear_probe_accuracy"] > 0.8 and q["knn_accuracy"] > 0.8 and q["knn_k"] == 10
    fe = FeatureExtractor(net, id="t", sha256="", accuracy=state["accuracy"], kind=kind, quality=q)
    result = evaluate_images(ds.float_images("val"), ds, fe, metrics=("fid",))
    assert result["feature_net"]["quality"] == q and "sanity" not in result
