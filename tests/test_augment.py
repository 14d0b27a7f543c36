"""Differentiable augmentation for GANs (DiffAugment, ADA): gradients flow, each op does what it says,
ADA's probability adapts up and down, and a GAN trained with it logs p, is seeded and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny

import genloop
from genloop.errors import ConfigError
from genloop.models.diffaugment import POLICIES, DiffAugment, _saturation, color, cutout, translation
from genloop.runs import RunStore
from genloop.serialization import load_tensors
from genloop.systems import DataSpec, models

AUG = ("model.augment=color,translation,cutout", "model.ada=true", "model.ada_interval=1", "model.ada_kimg=0.1")


def _images(n: int = 6, c: int = 3, size: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, c, size, size) * 1.6 - 0.8  # away from 0, so zero-filled pixels are easy to find


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_is_differentiable_and_keeps_the_shape(name: str) -> None:
    x = _images().requires_grad_(True)
    out = POLICIES[name](x)
    assert out.shape == x.shape
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_the_generator_gets_gradients_through_the_augmented_discriminator() -> None:
    cls = models["dcgan"]
    system = cls(cls.Config(z_dim=8, g_width=8, d_width=8, augment="color,translation,cutout"), DataSpec(3, 8, 0))
    fake = system.generator(torch.randn(4, 8))
    system._discriminate(fake, None).sum().backward()
    grads = [p.grad for p in system.generator.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_translation_moves_whole_images_by_whole_pixels_filling_with_zero() -> None:
    x = _images(8)
    out = translation(x, ratio=0.125)  # up to 2 px at 16 px
    for i in range(x.shape[0]):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros_like(x[i])
                ys, xs = slice(max(0, -dy), 16 - max(0, dy)), slice(max(0, -dx), 16 - max(0, dx))
                src_y, src_x = slice(max(0, dy), 16 + min(0, dy)), slice(max(0, dx), 16 + min(0, dx))
                shifted[:, ys, xs] = x[i][:, src_y, src_x]
                found = found or torch.equal(shifted, out[i])
        assert found, f"image {i} is not a whole-pixel shift of its input"
    assert not all(torch.equal(out[i], x[i]) for i in range(8)), "no image moved"


def test_cutout_greys_one_square_per_image() -> None:
    x = _images(8)
    out = cutout(x, ratio=0.5)
    zeros = (out == 0).all(dim=1)  # (n, h, w): pixels zeroed in every channel
    for i in range(8):
        ys, xs = torch.nonzero(zeros[i], as_tuple=True)
        assert 0 < ys.numel() <= 64  # an 8x8 square, clipped at the border
        assert ys.numel() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # one rectangle
        assert torch.equal(out[i][:, ~zeros[i]], x[i][:, ~zeros[i]])  # the rest is untouched


def test_color_changes_images_independently_and_saturation_leaves_grey_alone() -> None:
    x = _images(8)
    out = color(x)
    assert not torch.allclose(out, x)
    deltas = (out - x).flatten(1).mean(1)
    assert deltas.std() > 0.01  # one draw per image, not one per batch
    grey = _images(4, c=1)
    assert torch.allclose(_saturation(grey), grey)  # one channel: nothing to saturate


def test_no_policy_is_the_identity_and_holds_no_state() -> None:
    aug = DiffAugment("")
    x = _images()
    assert aug(x) is x
    assert dict(aug.state_dict()) == {}
    assert DiffAugment("color", p=0.0)(x).equal(x)


def test_probability_applies_per_image() -> None:
    aug = DiffAugment("cutout", p=0.5)
    x = _images(64)
    torch.manual_seed(0)
    out = aug(x)
    changed = sum(not torch.equal(out[i], x[i]) for i in range(64))
    assert 16 < changed < 48, changed


def test_ada_raises_p_when_the_discriminator_overfits_and_lowers_it_when_it_cannot_tell() -> None:
    aug = DiffAugment("color", p=0.0, adaptive=True, target=0.6, interval=2, kimg=0.064)  # 64 images move p by 1
    history = []
    for _ in range(8):  # D is sure of every real image: r_t = 1 > 0.6
        aug.observe(torch.full((16,), 3.0))
        history.append(aug.end_step())
    assert history[0] == {"ada_p": 0.0, "ada_r_t": 0.0}  # adjusts only every `interval` steps
    assert history[1]["ada_r_t"] == 1.0 and history[1]["ada_p"] == pytest.approx(0.5)  # 32 images: +0.5
    assert history[-1]["ada_p"] == 1.0  # clamped at 1
    for _ in range(4):  # D is at chance on reals: r_t = 0 < 0.6
        aug.observe(torch.tensor([1.0, -1.0] * 8))
        logs = aug.end_step()
    assert logs["ada_r_t"] == 0.0 and logs["ada_p"] == pytest.approx(0.0)
    aug.observe(torch.full((16,), -1.0))
    aug.end_step()
    aug.observe(torch.full((16,), -1.0))
    assert aug.end_step()["ada_p"] == 0.0  # clamped at 0


def test_fixed_probability_does_not_adapt() -> None:
    aug = DiffAugment("color", p=0.3)
    aug.observe(torch.full((16,), 3.0))
    assert aug.end_step() == {} and float(aug.p) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(policy="color,zoom"), "unknown policy 'zoom'"),
        (dict(policy="color,color"), "twice"),
        (dict(policy="color", p=1.5), "augment_p"),
        (dict(policy="", adaptive=True), "name policies"),
        (dict(policy="color", adaptive=True, target=1.0), "ada_target"),
        (dict(policy="color", adaptive=True, interval=0), "ada_interval"),
        (dict(policy="color", adaptive=True, kimg=0), "ada_kimg"),
    ],
)
def test_bad_settings_are_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DiffAugment(**kwargs)


def test_a_bad_policy_fails_before_the_run_exists(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown policy"):
        genloop.train("dcgan", overrides=tiny("dcgan", "model.augment=colour"), steps=1, progress=False)


def _weights(run) -> dict[str, torch.Tensor]:
    return load_tensors(run.dir / "checkpoints" / "last.safetensors")[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gan_with_ada_logs_p_is_seeded_and_resumes_bit_exact(precision: str) -> None:
    extra = (*AUG, f"train.precision={precision}")
    full = genloop.train("dcgan", overrides=tiny("dcgan", *extra), steps=6, seed=1, progress=False)
    again = genloop.train("dcgan", overrides=tiny("dcgan", *extra), steps=6, seed=1, progress=False)
    part = genloop.train("dcgan", overrides=tiny("dcgan", *extra), steps=3, seed=1, progress=False)
    resumed = genloop.resume(part.id, steps=6, progress=False)
    a, b, c = _weights(full), _weights(again), _weights(resumed)
    assert any(k.endswith("augment.p") for k in a)
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    assert not [k for k in a if not torch.equal(a[k], c[k])]
    lines = [json.loads(line) for line in (full.dir / "metrics.jsonl").read_text().splitlines()]
    assert all("ada_p" in line and "ada_r_t" in line for line in lines)
    assert len({line["ada_p"] for line in lines}) > 1  # p moved (interval 1, fast kimg)
    assert RunStore().get(resumed.id).info["step"] == 6
