"""Linear inverse problems: the degradation operators' SVDs, and DDRM restoration with a tiny DDPM prior."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny

import genloop
from genloop.errors import ConfigError
from genloop.generation.editing.degradations import Downsample, GaussianBlur, Grey, Identity, Mask
from genloop.generation.editing.inverse import colorize, ddrm, deblur, denoise, dps, upscale
from genloop.generation.pipelines import denoise as sample_loop
from genloop.systems import DataSpec
from genloop.systems.ddpm import DDPMConfig, DDPMSystem
from genloop.systems.gan import GANConfig, GANSystem

TINY_UNET = {"width": 8, "channel_mults": [1, 2], "attention_resolutions": [], "num_train_timesteps": 100}

OPERATORS = [
    (Identity(), (3, 8, 8), (3, 8, 8)),
    (Downsample(2), (3, 8, 8), (3, 4, 4)),
    (Downsample(4), (1, 16, 16), (1, 4, 4)),
    (GaussianBlur(1.0), (2, 8, 12), (2, 8, 12)),
    (GaussianBlur(2.5), (1, 8, 8), (1, 8, 8)),
    (Grey(), (3, 6, 6), (1, 6, 6)),
    (Mask(torch.rand(6, 6, generator=torch.Generator().manual_seed(0)) > 0.5), (3, 6, 6), (3, 6, 6)),
]


@pytest.fixture(scope="module")
def digits_system(tmp_path_factory):
    """A tiny DDPM trained a few steps on the 8 px digits (quality is irrelevant: the tests check the maths)."""
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        run = genloop.train("ddpm", overrides=tiny("ddpm"), steps=4, runs_dir=runs, progress=False)
        system = genloop.load(run.id, runs_dir=runs).system
    return system


def _system(channels: int = 3, size: int = 8, classes: int = 0, **config) -> DDPMSystem:
    torch.manual_seed(0)
    cfg = DDPMConfig(**TINY_UNET, class_conditional=classes > 0, **config)
    return DDPMSystem(cfg, DataSpec(channels, size, classes)).eval()


def _gens(seed: int, n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def _images(n: int, c: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- operators ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("op", "shape", "out"), OPERATORS, ids=lambda v: repr(v) if not isinstance(v, tuple) else "")
def test_svd_reconstructs_h_exactly(op, shape, out) -> None:
    x = torch.randn(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = op.H(x)
    assert tuple(y.shape) == (4, *out) and op.output_shape(shape) == out
    z = op.vt(x)
    s = op.singulars(shape)
    assert z.shape[1:] == s.shape and z.numel() == x.numel()
    assert torch.allclose(op.u(s * z), y, atol=1e-12)  # H = U Σ Vᵀ
    assert torch.allclose(op.v(z), x, atol=1e-12)  # V Vᵀ = I
    assert torch.allclose(z.norm(), x.norm())  # Vᵀ is a rotation
    assert torch.allclose(op.u(op.ut(y)), y, atol=1e-12)  # U Uᵀ = I on the observed coordinates
    assert (s >= 0).all() and (s > 0).any()


@pytest.mark.parametrize(("op", "shape", "out"), OPERATORS, ids=lambda v: repr(v) if not isinstance(v, tuple) else "")
def test_pseudo_inverse(op, shape, out) -> None:
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = op.H(x)
    p = op.H_pinv(y)
    assert p.shape == x.shape
    assert torch.allclose(op.H(p), y, atol=1e-5)  # H H⁺ H = H
    assert torch.allclose(op.H_pinv(op.H(p)), p, atol=1e-5)  # H⁺ H H⁺ = H⁺


def test_operators_are_what_they_say() -> None:
    x = _images(2, 3, 8).double()
    assert torch.equal(Downsample(2).H(x), F.avg_pool2d(x, 2))
    assert torch.equal(Downsample(2).H_pinv(Downsample(2).H(x)), F.interpolate(F.avg_pool2d(x, 2), scale_factor=2))
    colour = torch.tensor([0.2, -0.4, 0.9], dtype=torch.float64)[None, :, None, None].expand(1, 3, 4, 4)
    assert torch.allclose(Grey().H(colour), torch.full((1, 1, 4, 4), 0.299 * 0.2 - 0.587 * 0.4 + 0.114 * 0.9).double())
    # the blur is a normalised Gaussian convolution with reflected borders (a constant image stays constant)
    blur = GaussianBlur(1.0)
    taps = torch.exp(-0.5 * torch.arange(-3, 4, dtype=torch.float64) ** 2)
    k2 = (taps[:, None] * taps[None, :]) / taps.sum() ** 2
    conv = F.conv2d(F.pad(x.reshape(6, 1, 8, 8), (3, 3, 3, 3), mode="reflect"), k2[None, None]).reshape(2, 3, 8, 8)
    assert torch.allclose(blur.H(x), conv, atol=1e-12)
    assert torch.allclose(blur.H(torch.full((1, 1, 8, 8), 0.3)), torch.full((1, 1, 8, 8), 0.3))
    known = torch.zeros(8, 8, dtype=torch.bool)
    known[:4] = True
    assert torch.equal(Mask(known).H(x)[..., 4:, :], torch.zeros(2, 3, 4, 8).double())


def test_degrade_is_seeded_and_has_the_noise_asked() -> None:
    x = _images(4, 3, 16)
    op = Downsample(2)
    a = op.degrade(x, 0.1, _gens(0, 4))
    assert a.shape == (4, 3, 8, 8)
    assert torch.equal(a, op.degrade(x, 0.1, _gens(0, 4)))
    assert torch.equal(a[2:3], op.degrade(x[2:3], 0.1, _gens(2, 1)))  # image i's noise is its own
    assert not torch.equal(a, op.degrade(x, 0.1, _gens(1, 4)))
    assert 0.09 < float((a - op.H(x)).std()) < 0.11
    assert torch.equal(op.degrade(x, 0.0), op.H(x))


def test_operator_errors() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        Downsample(3).H(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="integer >= 2"):
        Downsample(1)
    with pytest.raises(ConfigError, match="integer >= 2"):
        Downsample(2.5)
    with pytest.raises(ConfigError, match="blur_sigma must be > 0"):
        GaussianBlur(0)
    with pytest.raises(ConfigError, match="blur_sigma must be > 0"):
        GaussianBlur(-1.0)
    with pytest.raises(ConfigError, match="finite"):
        GaussianBlur(float("nan"))
    with pytest.raises(ConfigError, match="noise_sigma must be >= 0"):
        Identity().degrade(torch.zeros(1, 1, 4, 4), -0.1)
    with pytest.raises(ConfigError, match="RGB"):
        Grey().H(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ConfigError, match="the mask is 1x4x4 but the images are 3x8x8"):
        Mask(torch.ones(4, 4)).singulars((3, 8, 8))
    with pytest.raises(ConfigError, match="only 0 and 1"):
        Mask(torch.full((4, 4), 0.5))


# --- DDRM -----------------------------------------------------------------------------------------------------


def test_tasks_shapes_range_and_seeds(digits_system) -> None:
    system = digits_system
    x = _images(3, 1, 8, seed=3)
    for low, scale in ((Downsample(2).H(x), 2), (Downsample(4).H(x), 4)):
        out = upscale(system, low, scale=scale, generators=_gens(0, 3), steps=4)
        assert out.shape == (3, 1, 8, 8) and out.abs().max() <= 1
    blurred = GaussianBlur(1.0).H(x)
    a = deblur(system, blurred, blur_sigma=1.0, noise=0.05, generators=_gens(5, 3), steps=4)
    assert a.shape == (3, 1, 8, 8)
    assert torch.equal(a, deblur(system, blurred, blur_sigma=1.0, noise=0.05, generators=_gens(5, 3), steps=4))
    alone = deblur(system, blurred[1:2], blur_sigma=1.0, noise=0.05, generators=_gens(6, 1), steps=4)
    assert torch.allclose(a[1:2], alone, atol=1e-5)  # image i's seed gives it alone or in a batch
    assert not torch.equal(a, deblur(system, blurred, blur_sigma=1.0, noise=0.05, generators=_gens(9, 3), steps=4))
    noisy = Identity().degrade(x, 0.2, _gens(0, 3))
    d = denoise(system, noisy, sigma=0.2, generators=_gens(0, 3), steps=4)
    assert d.shape == (3, 1, 8, 8) and d.abs().max() <= 1 and not torch.equal(d, noisy.clamp(-1, 1))


CONSISTENT = [
    (op, kind)
    for op in (Downsample(2), Downsample(4), GaussianBlur(1.0), Mask(torch.eye(8, dtype=torch.bool)))
    for kind in ("epsilon", "v_prediction")
    # an unclipped, untrained ε-model's x0 reaches ~1e3 (noise / sqrt(ā_T)); the blur's faint coordinates
    # (s < 3e-2, left to the prior) would carry a share of that into H x. A v-model's x0 stays O(1).
    if not (isinstance(op, GaussianBlur) and kind == "epsilon")
]


@pytest.mark.parametrize(("op", "prediction_type"), CONSISTENT, ids=str)
def test_noiseless_restoration_is_consistent_with_y(op, prediction_type) -> None:
    """σ_y = 0, η_b = 1: the observed coordinates end at ȳ, so H x0 = y up to the coordinates below min_singular.

    The schedule here does not clip (as for unbounded data), so the final clamp cannot move a pixel: an
    untrained network's wild details would otherwise be clamped and shift the block means.
    """
    system = _system(1, 8, prediction_type=prediction_type)
    system.schedule = dataclasses.replace(system.schedule, clip_sample=None)
    x = _images(4, 1, 8, seed=4) * 0.8
    y = op.H(x)
    out = ddrm(system, _gens(0, 4), y, op, 0.0, steps=5)
    # in spectral space: every coordinate seen through s >= 3e-2·max (all but the blur's faintest) matches y
    sv = op.singulars((1, 8, 8)).float()
    seen = sv >= 3e-2 * sv.max()
    assert torch.allclose((sv * op.vt(out))[:, seen], op.ut(y)[:, seen], atol=1e-3)
    if not isinstance(op, GaussianBlur):  # float32 rounding of the unclipped ε-model's ~1e3 details costs ~1e-4
        assert float((op.H(out) - y).norm() / y.norm()) < 1e-3
    assert not torch.allclose(out, op.H_pinv(y), atol=1e-2)  # the prior filled in what y does not say


def test_noiseless_restoration_keeps_what_was_seen(digits_system) -> None:
    """With the clamp: the known pixels of an inpainting mask, and every block mean that no clamp touched."""
    x = _images(4, 1, 8, seed=4) * 0.8
    known = torch.eye(8, dtype=torch.bool) | torch.eye(8, dtype=torch.bool).flip(1)
    out = ddrm(digits_system, _gens(0, 4), Mask(known).H(x), Mask(known), 0.0, steps=5)
    assert torch.allclose(out[:, :, known], x[:, :, known], atol=1e-5)
    op = Downsample(2)
    out = ddrm(digits_system, _gens(0, 4), op.H(x), op, 0.0, steps=5)
    untouched = -F.max_pool2d(-((out.abs() < 1).float()), 2) > 0
    assert untouched.sum() > 8
    assert torch.allclose(op.H(out)[untouched], op.H(x)[untouched], atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_colorize_keeps_the_luminance(prediction_type) -> None:
    system = _system(3, 8, prediction_type=prediction_type)
    x = _images(2, 3, 8, seed=5) * 0.5
    grey = Grey().H(x)
    out = colorize(system, grey, generators=_gens(0, 2), steps=4)
    assert out.shape == (2, 3, 8, 8)
    inside = (out.abs() < 1).all(1, keepdim=True)  # the final clamp moves the pixels an untrained net throws out
    assert inside.sum() > 16
    assert torch.allclose(Grey().H(out)[inside], grey[inside], atol=1e-5)
    assert torch.allclose(colorize(system, x, generators=_gens(0, 2), steps=4), out, atol=1e-6)  # RGB in: its luminance


def test_identity_without_noise_returns_y_and_nothing_observed_is_ddim(digits_system) -> None:
    system = digits_system
    x = _images(2, 1, 8, seed=6) * 0.9
    assert torch.allclose(ddrm(system, _gens(0, 2), x, Identity(), 0.0, steps=3), x, atol=1e-5)
    # with nothing observed and η = 0, DDRM is DDIM (η = 0) from the same starting noise
    steps = 4
    nothing = Mask(torch.zeros(8, 8, dtype=torch.bool))
    out = ddrm(system, _gens(0, 2), torch.zeros(2, 1, 8, 8), nothing, 0.0, steps=steps, eta=0.0)
    scheduler = system.make_scheduler("ddim", eta=0.0)
    scheduler.set_timesteps(steps)
    abar = scheduler.alpha_bar(int(scheduler.timesteps[0]))
    z = torch.stack([torch.randn(1, 8, 8, generator=g) for g in _gens(0, 2)])
    ref = sample_loop(system, scheduler, (1 - abar) ** 0.5 * z, None, 1.0).clamp(-1, 1)
    assert torch.allclose(out, ref, atol=1e-5)


def test_class_guidance_reaches_the_model() -> None:
    system = _system(1, 8, classes=3)
    with torch.no_grad():  # an untrained class embedding may be zero: make the label matter
        for p in system.unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    low = Downsample(2).H(_images(2, 1, 8, seed=7))
    kw = {"scale": 2, "noise": 0.1, "steps": 3}
    a = upscale(system, low, generators=_gens(0, 2), labels=torch.tensor([0, 1]), guidance=2.0, **kw)
    b = upscale(system, low, generators=_gens(0, 2), labels=torch.tensor([2, 2]), guidance=2.0, **kw)
    assert a.shape == (2, 1, 8, 8) and not torch.equal(a, b)


def test_bad_inputs(digits_system) -> None:
    system = digits_system
    x = _images(2, 1, 8)
    with pytest.raises(ConfigError, match=r"upscale by 3 needs the model's image size \(8\) to be divisible by 3"):
        upscale(system, x[..., :3, :3], scale=3)
    with pytest.raises(ConfigError, match=r"upscale by 2 expects images of shape \(N, 1, 4, 4\)"):
        upscale(system, x, scale=2)
    with pytest.raises(ConfigError, match="denoise sigma .* must be > 0"):
        denoise(system, x, sigma=-0.1)
    with pytest.raises(ConfigError, match="must be > 0"):
        denoise(system, x, sigma=0)
    with pytest.raises(ConfigError, match="blur_sigma must be > 0"):
        deblur(system, x, blur_sigma=-1)
    with pytest.raises(ConfigError, match="noise.* must be >= 0|sigma_y must be >= 0"):
        upscale(system, x[..., :4, :4], scale=2, noise=-0.5)
    with pytest.raises(ConfigError, match="colorize needs an RGB model; this model makes 1-channel images"):
        colorize(system, x)
    with pytest.raises(ConfigError, match="eta must be between 0 and 1"):
        denoise(system, x, sigma=0.1, eta=1.5)
    with pytest.raises(ConfigError, match="sampling steps must be between 1 and 100"):
        denoise(system, x, sigma=0.1, steps=0)
    with pytest.raises(ConfigError, match="got 3 generators for 2 images"):
        denoise(system, x, sigma=0.1, generators=_gens(0, 3))
    with pytest.raises(ConfigError, match=r"expects inputs of shape \(N, 1, 4, 4\)"):
        ddrm(system, None, x, Downsample(2), 0.0)
    gan = GANSystem(GANConfig(z_dim=4, g_width=4, d_width=4), DataSpec(1, 8, 0))
    with pytest.raises(ConfigError, match="needs a diffusion model as its prior .* 'dcgan' is not one"):
        denoise(gan, x, sigma=0.1)


def test_dps_pulls_samples_towards_y(digits_system) -> None:
    system = digits_system
    x = _images(3, 1, 8, seed=8) * 0.8
    op = Downsample(2)
    y = op.H(x)
    out = dps(system, _gens(0, 3), y, op, steps=8)
    assert out.shape == (3, 1, 8, 8) and out.abs().max() <= 1
    assert torch.equal(out, dps(system, _gens(0, 3), y, op, steps=8))
    assert torch.allclose(out[2:], dps(system, _gens(2, 1), y[2:], op, steps=8), atol=1e-5)
    free = dps(system, _gens(0, 3), y, op, steps=8, zeta=0.0)  # zeta 0: plain DDPM sampling, y ignored
    misfit = lambda im: float((op.H(im) - y).norm())  # noqa: E731
    assert misfit(out) < 0.9 * misfit(free), (misfit(out), misfit(free))
    with pytest.raises(ConfigError, match="zeta .* must be a finite number >= 0"):
        dps(system, None, y, op, zeta=-1.0)
