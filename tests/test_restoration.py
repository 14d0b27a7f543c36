"""Restoration metrics, degradations, classical baselines, evaluate_restoration and `genloop eval --task`.

The editing core (``pipe.edit``) is another part of GenLoop; here a fake pipe stands in for it, so these tests pin
the yardstick on its own: what the restorer is given, how each method is scored, and what the CLI writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, tiny
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from genloop.data import DataConfig, load_dataset, to_float
from genloop.errors import ConfigError, DataError
from genloop.evaluation import restoration as R
from genloop.evaluation import restoration_baselines as B


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """24 held-out 32 px photo tiles in [-1, 1] (natural images: smooth, where classical methods help)."""
    ds = load_dataset(DataConfig(name="photos", image_size=32, cache=False))
    return to_float(ds.get("test")[0][:24])


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset(DataConfig(name="digits", image_size=8, cache=False))
    x, y = ds.get("test")
    return to_float(x[:20]), y[:20]


def _mean(x: torch.Tensor) -> float:
    return float(x.mean())


# ------------------------------------------------------------------------------------------------ metrics
def test_psnr_matches_scikit_image_per_image(photos: torch.Tensor) -> None:
    noisy = (photos + 0.1 * torch.randn(photos.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    ours = R.psnr(noisy, photos)
    a, b = R.as_numpy_unit(photos), R.as_numpy_unit(noisy)
    ref = [peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b)]
    assert ours.shape == (photos.shape[0],)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-7)  # float32 pixels
    assert float(R.psnr(photos, photos)[0]) == R.PSNR_CAP  # exact: capped, not infinite


def test_hole_psnr_scores_only_the_hole(photos: torch.Tensor) -> None:
    mask = R.centre_mask(photos.shape[0], 32)
    broken = torch.where(mask.bool().expand_as(photos), -photos, photos)  # wrong inside, exact outside
    inside = mask[0, 0].bool().numpy()
    hole = R.psnr(broken, photos, mask)
    a, b = R.as_numpy_unit(photos), R.as_numpy_unit(broken)
    ref = [peak_signal_noise_ratio(x[inside], y[inside], data_range=1.0) for x, y in zip(a, b)]
    np.testing.assert_allclose(hole.numpy(), ref, rtol=1e-7)
    assert (hole < R.psnr(broken, photos)).all()  # the whole-image PSNR is flattered by the kept pixels
    assert (R.psnr(broken, photos, 1 - mask) == R.PSNR_CAP).all()
    with pytest.raises(DataError, match="empty"):
        R.psnr(broken, photos, torch.zeros_like(mask))
    with pytest.raises(DataError, match="mask"):
        R.psnr(broken, photos, mask[:, :, :8])


def test_ssim_paper_settings_and_order(photos: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(0)
    mild = (photos + 0.05 * torch.randn(photos.shape, generator=g)).clamp(-1, 1)
    strong = (photos + 0.3 * torch.randn(photos.shape, generator=g)).clamp(-1, 1)
    s_mild, s_strong = R.ssim(mild, photos), R.ssim(strong, photos)
    assert torch.allclose(R.ssim(photos, photos), torch.ones(photos.shape[0], dtype=torch.float64))
    assert (s_strong < s_mild).all() and (s_mild < 1).all()
    a, b = R.as_numpy_unit(photos[:1]), R.as_numpy_unit(mild[:1])
    ref = structural_similarity(
        a[0], b[0], data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert float(s_mild[0]) == pytest.approx(ref, abs=1e-7)  # float32 pixels
    with pytest.raises(DataError, match="shape"):
        R.ssim(photos[:, :, :16, :16], photos)


# ----------------------------------------------------------------------------------------------- degradations
def test_degradations_shapes_values_and_seeds(photos: torch.Tensor) -> None:
    mask = R.centre_mask(2, 32, 0.5)
    assert mask.shape == (2, 1, 32, 32) and int(mask[0].sum()) == 23 * 23  # a centred square of about half
    assert mask[0, 0, 16, 16] == 1 and mask[0, 0, 0, 0] == 0
    low = R.downsample(photos, 2)
    assert low.shape == (24, 3, 16, 16)
    assert torch.allclose(low[:, :, 0, 0], photos[:, :, :2, :2].mean(dim=(2, 3)))
    assert R.downsample(photos, 4).shape == (24, 3, 8, 8)
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(R.gaussian_blur(flat, 1.5), flat)  # reflected borders keep a flat image flat
    blurred = R.gaussian_blur(photos, 1.0)
    assert blurred.shape == photos.shape and blurred.std() < photos.std()
    n1 = R.add_noise(photos, 0.1, torch.Generator().manual_seed(3))
    n2 = R.add_noise(photos, 0.1, torch.Generator().manual_seed(3))
    assert torch.equal(n1, n2) and float((n1 - photos).std()) == pytest.approx(0.1, rel=0.05)  # [-1, 1] units
    grey = R.to_grey(photos)
    assert grey.shape == (24, 1, 32, 32)
    assert torch.allclose(R.to_grey(grey.expand(-1, 3, -1, -1)), grey, atol=1e-6)


def test_degrade_hides_the_hole_and_routes_parameters(photos: torch.Tensor) -> None:
    params, rest = R.degradation_params("inpaint", {"steps": 5})
    assert params == {"fraction": 0.5} and rest == {"steps": 5}
    d = R.degrade(photos, "inpaint", params)
    assert d.operator == {}  # the fraction shapes the mask; pipe.edit gets the mask itself
    assert (d.observation[d.mask.bool().expand_as(photos)] == 0).all()  # the hole's content cannot leak
    keep = ~d.mask.bool().expand_as(photos)
    assert torch.equal(d.observation[keep], photos[keep])
    d = R.degrade(photos, "upscale", R.degradation_params("upscale", {"scale": 4})[0])
    assert d.observation.shape == (24, 3, 8, 8) and d.operator == {"scale": 4}
    assert d.as_image(photos.shape).shape == photos.shape
    d = R.degrade(photos, "colorize", {})
    assert d.observation.shape == (24, 1, 32, 32) and d.as_image(photos.shape) is None
    a = R.degrade(photos, "denoise", {"sigma": 0.1}, seed=1).observation
    assert torch.equal(a, R.degrade(photos, "denoise", {"sigma": 0.1}, seed=1).observation)
    assert not torch.equal(a, R.degrade(photos, "denoise", {"sigma": 0.1}, seed=2).observation)


@pytest.mark.parametrize(
    "task, options, match",
    [
        ("sharpen", {}, "unknown restoration task"),
        ("upscale", {"scale": 3}, "divide"),
        ("upscale", {"scale": 1.5}, "whole number"),
        ("upscale", {"sigma": 0.1}, "does not apply to upscale"),
        ("denoise", {"sigma": 0}, "sigma must be > 0"),
        ("deblur", {"blur_sigma": -1}, "blur_sigma must be > 0"),
        ("deblur", {"blur_sigma": 20}, "too wide"),
        ("inpaint", {"fraction": 1.0}, "between 0 and 1"),
    ],
)
def test_bad_degradations_are_one_line_errors(photos: torch.Tensor, task: str, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        params, _ = R.degradation_params(task, options)
        R.degrade(photos, task, params)


def test_colorize_needs_rgb(digits) -> None:
    with pytest.raises(ConfigError, match="RGB"):
        R.degrade(digits[0], "colorize", {})


# -------------------------------------------------------------------------------------------------- baselines
def test_inpainting_baselines_keep_known_pixels_and_biharmonic_beats_mean(photos: torch.Tensor) -> None:
    d = R.degrade(photos, "inpaint", {"fraction": 0.5})
    keep = ~d.mask.bool().expand_as(photos)
    scores = {}
    for name, fn in B.for_task("inpaint").items():
        out = fn(d)
        assert out.shape == photos.shape and out.dtype == torch.float32
        assert torch.allclose(out[keep], photos[keep], atol=1e-5), name
        scores[name] = _mean(R.psnr(out, photos, d.mask))
    assert scores["biharmonic"] > scores["mean fill"] > _mean(R.psnr(d.observation, photos, d.mask)) - 10
    with pytest.raises(DataError, match="whole image"):
        B.mean_fill(photos[:2], torch.ones(2, 1, 32, 32))


def test_nearest_exemplar_is_a_reference_row_not_a_baseline(photos: torch.Tensor) -> None:
    d = R.degrade(photos, "inpaint", {"fraction": 0.5})
    exact = B.nearest_exemplar(d.observation, d.mask, photos.flip(0))  # every original is among the exemplars
    assert torch.equal(exact, photos)
    others = B.nearest_exemplar(d.observation, d.mask, (photos[:12] * 127.5 + 127.5).round().to(torch.uint8))
    keep = ~d.mask.bool().expand_as(photos)
    assert torch.equal(others[keep], photos[keep]) and torch.allclose(others[:12], photos[:12], atol=1 / 127)
    with pytest.raises(DataError, match="exemplars"):
        B.nearest_exemplar(d.observation, d.mask, photos[:, :1])
    r = R.evaluate_restoration(None, photos[12:], None, "inpaint", exemplars=photos[:12])
    assert r["methods"]["nearest exemplar"]["kind"] == "reference" and r["best_baseline"] == "biharmonic"
    assert B.references("upscale", photos) == {} and B.references("inpaint", None) == {}


def test_baselines_improve_on_the_degraded_input(photos: torch.Tensor) -> None:
    for task, options in (("upscale", {"scale": 2}), ("deblur", {"blur_sigma": 1.0}), ("denoise", {"sigma": 0.1})):
        d = R.degrade(photos, task, options, seed=0)
        before = _mean(R.psnr(d.as_image(photos.shape), photos))
        for name, fn in B.for_task(task).items():
            out = fn(d)
            assert out.shape == photos.shape, name
            assert out.min() >= -1 and out.max() <= 1
            assert _mean(R.psnr(out, photos)) > before + 0.5, (task, name)


def test_denoising_baselines_take_one_channel_images(digits) -> None:
    x = digits[0]
    noisy = R.add_noise(x, 0.1, torch.Generator().manual_seed(0))
    assert B.nl_means(noisy, 0.1).shape == x.shape and B.gaussian_smoothing(noisy).shape == x.shape


def test_colourisation_baselines_keep_the_luma(photos: torch.Tensor) -> None:
    grey = R.to_grey(photos)
    lum = B.luminance(grey)
    assert lum.shape == photos.shape and torch.allclose(R.to_grey(lum), grey, atol=1e-6)
    offset = B.chroma_offset(photos)
    assert offset.shape == (3,) and abs(float((offset * torch.tensor(R.LUMA)).sum())) < 1e-6
    coloured = B.mean_chroma(grey, offset)
    inside = grey.abs() < 1 - float(offset.abs().max())  # where no channel reaches the clamp
    assert inside.float().mean() > 0.5
    assert torch.allclose(R.to_grey(coloured)[inside], grey[inside], atol=1e-5)
    assert _mean(R.psnr(coloured, photos)) > _mean(R.psnr(lum, photos))  # photos are not grey on average
    with pytest.raises(DataError, match="1 channel"):
        B.luminance(photos)


# ------------------------------------------------------------------------------------------ evaluate_restoration
class FakePipe:
    """Stands in for the editing core: records what it is given and restores with a classical method."""

    def __init__(self, restore) -> None:
        self.restore, self.calls = restore, []

    def edit(self, images, task, seed, **options):
        self.calls.append({"images": images.clone(), "task": task, "seed": seed, **options})
        return self.restore(images, options)


class FakeClassifier:
    """A classifier that is right exactly when the image is close to its original."""

    kind, id = "classifier", "fake"

    def __init__(self, originals: torch.Tensor, labels: torch.Tensor) -> None:
        self.originals, self.labels = originals, labels

    def features_and_probs(self, x: torch.Tensor, batch_size: int = 256):
        d = torch.cdist(x.flatten(1).double(), self.originals.flatten(1).double())
        nearest = self.labels[d.argmin(1)]
        return x.flatten(1).double()[:, :4], torch.nn.functional.one_hot(nearest, 10).double()

    def features(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return self.features_and_probs(x)[0]


def test_evaluate_restoration_scores_every_method(photos: torch.Tensor) -> None:
    pipe = FakePipe(lambda x, o: B.biharmonic(x, o["mask"]))
    labels = torch.arange(photos.shape[0]) % 10
    clf = FakeClassifier(photos, labels)
    r = R.evaluate_restoration(
        pipe, photos, labels, "inpaint", {"steps": 7}, seed=3, classifier=clf, reference=photos.flip(0)
    )
    assert list(r["methods"]) == ["input", "mean fill", "biharmonic", "genloop"]
    call = pipe.calls[0]
    assert call["task"] == "inpaint" and call["seed"] == 3 and call["steps"] == 7
    assert call["mask"].shape == (24, 1, 32, 32)
    assert (call["images"][call["mask"].bool().expand_as(photos)] == 0).all()  # the restorer never sees the hole
    g, b = r["methods"]["genloop"], r["methods"]["biharmonic"]
    assert g["hole_psnr"] == pytest.approx(b["hole_psnr"]) and g["ssim"] == pytest.approx(b["ssim"])
    assert r["headline"] == "hole_psnr" and r["best_baseline"] == "biharmonic"
    assert r["genloop_margin_db"] == pytest.approx(0.0, abs=1e-9)
    assert r["class_kept_original"] == 1.0 and 0 <= g["class_kept"] <= 1 and "fid" in g and "fid_floor" in r
    assert g["seconds_per_image"] > 0 and "seconds_per_image" not in r["methods"]["input"]
    json.dumps(r)  # the result is JSON as it stands
    again = R.evaluate_restoration(pipe, photos, labels, "inpaint", {"steps": 7}, seed=3, classifier=clf)
    assert again["methods"]["genloop"]["psnr"] == g["psnr"]
    both = R.evaluate_restoration(pipe, photos, None, "inpaint", edit_tasks=("inpaint", "inpaint-fast"))
    assert [c["task"] for c in pipe.calls[-2:]] == ["inpaint", "inpaint-fast"]
    fast = both["methods"]["genloop inpaint-fast"]
    assert fast["kind"] == "genloop" and fast["edit_task"] == "inpaint-fast" and "margin_db" in fast


def test_evaluate_restoration_upscale_hands_the_small_image(photos: torch.Tensor) -> None:
    pipe = FakePipe(lambda x, o: B.bicubic(x, o["scale"]))
    r = R.evaluate_restoration(pipe, photos, None, "upscale", {"scale": 2}, keep_outputs=True)
    assert pipe.calls[0]["images"].shape == (24, 3, 16, 16) and pipe.calls[0]["scale"] == 2
    assert r["methods"]["genloop"]["psnr"] == pytest.approx(r["methods"]["bicubic"]["psnr"])
    assert r["methods"]["bicubic"]["psnr"] > r["methods"]["input"]["psnr"]
    assert "class_kept" not in r["methods"]["genloop"]
    assert r["outputs"]["genloop"].shape == photos.shape


def test_evaluate_restoration_bad_inputs(photos: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match="cannot edit"):
        R.evaluate_restoration(object(), photos, None, "denoise")
    wrong_size = FakePipe(lambda x, o: x[:, :, :16, :16])
    with pytest.raises(DataError, match="shape"):
        R.evaluate_restoration(wrong_size, photos, None, "denoise")
    nan = FakePipe(lambda x, o: torch.full_like(x, float("nan")))
    with pytest.raises(DataError, match="NaN"):
        R.evaluate_restoration(nan, photos, None, "deblur")
    with pytest.raises(DataError, match="labels"):
        R.evaluate_restoration(None, photos, torch.zeros(3, dtype=torch.long), "denoise")
    with pytest.raises(DataError, match="at least 2"):
        R.evaluate_restoration(None, photos[:1], None, "denoise")


def test_before_after_grid(photos: torch.Tensor, tmp_path: Path) -> None:
    from PIL import Image

    pipe = FakePipe(lambda x, o: B.luminance(x))
    r = R.evaluate_restoration(pipe, photos, None, "colorize", chroma=B.chroma_offset(photos), keep_outputs=True)
    assert list(r["methods"]) == ["luminance", "mean chroma", "genloop"]
    path = R.before_after_grid(r, tmp_path / "grid.png", k=4, upscale=3)
    img = Image.open(path)
    assert img.size == (5 * (96 + 4) + 4, 30 + 4 * (96 + 4))  # degraded, 2 baselines, GenLoop, original
    assert img.getpixel((4 + 48, 30 + 48)) == img.getpixel((4 + 100 + 48, 30 + 48))  # degraded == luminance column
    small = R.before_after_grid(r | {"outputs": {k: v[:, :, :16, :16] for k, v in r["outputs"].items()}}, path, k=2)
    assert Image.open(small).size == (5 * (80 + 4) + 4, 30 + 2 * (80 + 4))  # 16 px: cells of 80 px
    with pytest.raises(DataError, match="keep_outputs"):
        R.before_after_grid({"methods": {}}, tmp_path / "x.png")


# ------------------------------------------------------------------------------------------------------- CLI
def _tiny_ddpm(capsys) -> str:
    sets = [a for item in tiny("ddpm") for a in ("--set", item)]
    code, out, err = cli(capsys, "train", "ddpm", "--data", "digits", *sets, "--steps", "2", "--quiet")
    assert code == 0, err
    return out.strip().splitlines()[-1]


def _fast_refnet(monkeypatch: pytest.MonkeyPatch) -> None:
    """An untrained reference net of the real kind (training one takes half a minute on a busy CPU)."""
    from genloop.evaluation import features

    def fake(dataset, device="cpu", progress=False, **_):
        torch.manual_seed(0)
        net = features.ReferenceNet(dataset.channels, dataset.image_size, 10)
        return features.FeatureExtractor(net.eval(), id="untrained", sha256="", accuracy=0.0, kind="classifier")

    monkeypatch.setattr(features, "get_feature_extractor", fake)


def test_cli_eval_task_with_a_fake_edit(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genloop.generation.pipelines import DiffusionPipeline

    sets = [a for item in tiny("dcgan") for a in ("--set", item)]
    code, out, err = cli(capsys, "train", "dcgan", "--data", "digits", *sets, "--steps", "1", "--quiet")
    assert code == 0, err
    gan = out.strip().splitlines()[-1]
    code, out, err = cli(capsys, "eval", gan, "--task", "inpaint", "--n", "12")
    assert code == 2 and "needs a diffusion run" in err and len(err.strip().splitlines()) == 1
    run = _tiny_ddpm(capsys)
    _fast_refnet(monkeypatch)
    seen = {}

    def edit(self, images, task, seed=0, **options):
        seen.update(options, task=task, seed=seed)
        return B.bicubic(images, options["scale"]) if task == "upscale" else images

    monkeypatch.setattr(DiffusionPipeline, "edit", edit, raising=False)
    code, out, err = cli(capsys, "eval", run, "--task", "upscale", "--scale", "2", "--n", "12", "--steps", "3")
    assert code == 0, err
    assert seen == {"scale": 2, "steps": 3, "task": "upscale", "seed": 0}
    assert "bicubic" in out and "genloop" in out and "PSNR" in out and "class kept" in out
    result = json.loads((tmp_path / "runs" / run / "eval" / "restoration_upscale.json").read_text())
    assert result["n"] == 12 and result["dataset"] == "digits" and result["headline"] == "psnr"
    assert result["methods"]["genloop"]["psnr"] == pytest.approx(result["methods"]["bicubic"]["psnr"])
    assert (tmp_path / "runs" / run / "eval" / "restoration_upscale.png").is_file()
    for args, words in (
        (["--task", "colorize"], "RGB"),
        (["--task", "upscale", "--scale", "3"], "divide"),
        (["--task", "upscale", "--sigma", "0.1"], "does not apply"),
        (["--scale", "2"], "--task"),
        (["--task", "blur"], "unknown restoration task"),
        (["--task", "deblur", "--sweep", "5,10"], "does not combine with --sweep"),
    ):
        code, out, err = cli(capsys, "eval", run, *args, "--n", "12")
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (args, err)
    import genloop  # the Python API is the same function

    r = genloop.evaluate_restoration(run, "denoise", n=6, options={"sigma": 0.2}, seed=1)
    assert seen["sigma"] == 0.2 and r["n"] == 6 and Path(r["path"]).name == "restoration_denoise.json"
    assert r["methods"]["genloop"]["psnr"] == pytest.approx(r["methods"]["input"]["psnr"])  # it returned its input
