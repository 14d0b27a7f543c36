"""resgan: the residual generator/discriminator, lazy R1, minibatch std, learning, determinism, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny

import genloop
from genloop.data import ImageBatches
from genloop.errors import ConfigError
from genloop.models.resgan import MinibatchStd, ResDiscriminator, ResGenerator, level_channels
from genloop.runs import RunStore
from genloop.serialization import load_tensors
from genloop.systems import DataSpec, models
from genloop.systems.resgan import ResGANConfig, ResGANSystem
from genloop.training import TrainConfig, Trainer

SMALL = dict(z_dim=8, g_width=4, d_width=4)


def _system(spec: DataSpec = DataSpec(1, 8, 4), **cfg) -> ResGANSystem:
    return ResGANSystem(ResGANConfig(**{**SMALL, **cfg}), spec)


def _cfg(**kw) -> TrainConfig:
    base = dict(
        ResGANSystem.train_defaults,
        steps=10,
        batch_size=16,
        log_every=1,
        sample_every=0,
        precision="fp32",
        tensorboard=False,
        threads=1,
        ema_decay=None,
    )
    return TrainConfig(**{**base, **kw})


def _digits(n: int) -> torch.Tensor:
    from sklearn.datasets import load_digits

    digits = torch.tensor(load_digits().images[:n], dtype=torch.float32)  # 0..16, 8x8
    return (digits / 16 * 255).round().to(torch.uint8)[:, None]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run_dir / "checkpoints" / "last.safetensors")[0]


# --- networks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("classes", [0, 5])
def test_shapes(size: int, channels: int, classes: int) -> None:
    g = ResGenerator(8, channels, size, width=4, num_classes=classes)
    d = ResDiscriminator(channels, size, width=4, num_classes=classes, mbstd_group=2)
    labels = torch.tensor([0, 1, 4]) if classes else None
    x = g(torch.randn(3, 8), labels)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x, labels).shape == (3,)


def test_widths_double_per_halving_up_to_eight_times() -> None:
    assert [level_channels(16, 64, r) for r in (64, 32, 16, 8, 4)] == [16, 32, 64, 128, 128]
    g = ResGenerator(8, 3, 64, width=4)
    assert g.top == 32 and g.to_rgb.in_channels == 4


def test_unsupported_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="8, 16, 32, 64"):
        ResGenerator(8, 3, 24)


def test_class_changes_the_image_and_the_score() -> None:
    system = _system(DataSpec(3, 8, 4), class_conditional=True).eval()
    assert system.conditional and not ResGANSystem.conditional  # per instance, as ddpm
    with torch.no_grad():  # the modulations and the class embedding start at zero / small: give them weight
        for m in system.generator.modules():
            if hasattr(m, "style"):
                m.style.weight.normal_(0, 0.5)
    z, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    assert not torch.equal(system.decode(z, labels), system.decode(z, (labels + 1) % 4))
    assert torch.equal(system.decode(z), system.decode(z, torch.arange(4) % 4))  # no labels: classes in turn
    x = system.decode(z, labels)
    d = system.discriminator
    assert not torch.equal(d(x, labels), d(x, (labels + 1) % 4))
    uncond = _system(DataSpec(3, 8, 4)).eval()
    assert not uncond.conditional and torch.equal(uncond.decode(z, labels), uncond.decode(z))


def test_minibatch_std_adds_one_channel_from_groups_of_the_set_size() -> None:
    x = torch.randn(8, 5, 4, 4)
    out = MinibatchStd(group=4)(x)
    assert out.shape == (8, 6, 4, 4) and torch.equal(out[:, :5], x)
    # groups of 4 consecutive images: {0, 1, 2, 3} and {4, 5, 6, 7} (a rank's half of a batch holds whole groups)
    for members in ([0, 1, 2, 3], [4, 5, 6, 7]):
        std = (x[members].var(0, unbiased=False) + 1e-8).sqrt().mean()
        for i in members:
            assert torch.allclose(out[i, 5], std.expand(4, 4))
    # group 2: four groups, four different values; a batch the group does not divide uses a divisor
    assert out[:, 5, 0, 0].unique().numel() == 2
    assert MinibatchStd(group=2)(x)[:, 5, 0, 0].unique().numel() == 4
    assert MinibatchStd(group=4).group_size(6) == 3 and MinibatchStd(group=4).group_size(7) == 1
    assert MinibatchStd(group=4)(torch.randn(6, 5, 4, 4)).shape == (6, 6, 4, 4)
    # one image per group: the map carries nothing about the other images
    assert torch.allclose(MinibatchStd(group=1)(x)[:, 5], torch.full((8, 4, 4), 1e-4))
    # in the discriminator: before the last block, which takes one channel more
    d = ResDiscriminator(3, 8, width=4, mbstd_group=3)
    assert d.mbstd.group == 3 and d.conv.in_channels == d.conv.out_channels + 1


# --- config ---------------------------------------------------------------------------------------
def test_defaults() -> None:
    c = models["resgan"].Config()
    assert c.name == "resgan" and c.loss == "bce" and c.r1_gamma > 0 and c.r1_interval == 16
    assert not c.class_conditional and c.mbstd_group == 4
    assert ResGANSystem.train_defaults["betas"] == [0.0, 0.99] and ResGANSystem.ema_target == "generator"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (dict(r1_interval=0), "model.r1_interval must be >= 1"),
        (dict(r1_gamma=-0.1), "model.r1_gamma must be >= 0"),
        (dict(mbstd_group=0), "model.mbstd_group must be >= 1"),
        (dict(d_norm="batch"), "no normalisation layers"),
        (dict(n_critic=0), "model.n_critic must be >= 1"),
    ],
)
def test_bad_config_is_a_config_error(setting: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ResGANConfig(**setting)


def test_bad_config_from_overrides_fails_before_training() -> None:
    with pytest.raises(ConfigError, match="r1_interval"):
        genloop.train("resgan", overrides=tiny("resgan", "model.r1_interval=0"), steps=1, progress=False)


def test_class_conditional_needs_labels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^resgan with model.class_conditional=true needs a labelled dataset"):
        _system(DataSpec(3, 8, 0), class_conditional=True)
    path = tmp_path / "faces.npz"
    np.savez(path, images=np.zeros((8, 8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match="needs a labelled dataset"):
        genloop.train(
            "resgan", data=str(path), overrides=tiny("resgan", "model.class_conditional=true"), steps=1, progress=False
        )


# --- lazy R1 --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("interval", "n_critic", "gamma", "due"),
    [(3, 1, 1.0, [0, 3, 6]), (3, 2, 1.0, [0, 3, 6, 9, 12]), (1, 1, 1.0, list(range(7))), (3, 1, 0.0, [])],
)
def test_r1_only_on_every_interval_th_discriminator_step(
    interval: int, n_critic: int, gamma: float, due: list[int]
) -> None:
    system = _system(r1_interval=interval, r1_gamma=gamma, n_critic=n_critic)
    calls: list[int] = []
    penalty = system._r1_penalty

    def spy(real: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        calls.append(int(system.d_steps))
        return penalty(real, labels)

    system._r1_penalty = spy
    Trainer(system, ImageBatches(_digits(16), None, 16), _cfg(steps=7), progress=False).fit()
    assert calls == due
    assert int(system.d_steps) == 7 * n_critic


def test_r1_adds_interval_times_gamma_over_two_times_the_penalty() -> None:
    """On an R1 step the discriminator's loss is the adversarial loss plus k * gamma/2 * E||grad||^2."""
    torch.manual_seed(0)
    system = _system(r1_interval=4, r1_gamma=2.0, augment="translation")
    batch = (_digits(8).float() / 127.5 - 1,)
    torch.manual_seed(1)
    plain = system._critic_loss(batch)["loss"]
    system.r1_due = True
    torch.manual_seed(1)
    with_r1 = system._critic_loss(batch)["loss"]
    assert float(system.r1_last) > 0
    assert torch.allclose(with_r1 - plain, 4 * 2.0 / 2 * system.r1_last, rtol=1e-4)


def test_r1_penalty_is_the_gradient_at_the_unaugmented_real_images() -> None:
    system = _system()
    real = torch.randn(4, 1, 8, 8)
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(system.discriminator(x).sum(), x)
    assert torch.allclose(system._r1_penalty(real, None), grad.square().sum((1, 2, 3)).mean())
    assert not real.requires_grad  # the batch itself is left alone


# --- learning and determinism ---------------------------------------------------------------------
def test_overfits_one_image() -> None:
    """Trained on a single image, the generator must learn to draw (nearly) that image."""
    image = _digits(1).repeat(16, 1, 1, 1)
    target = image[0].float() / 127.5 - 1
    torch.manual_seed(0)  # the initial weights, whatever tests ran before
    system = _system(g_width=8, d_width=8, r1_interval=4)
    trainer = Trainer(system, ImageBatches(image, None, 16), _cfg(steps=250, lr=5e-4), progress=False)
    before = (trainer.system.eval().sample(16, torch.Generator().manual_seed(0)) - target).abs().mean()
    trainer.system.train()
    trainer.fit()
    after = (trainer.system.eval().sample(16, torch.Generator().manual_seed(0)) - target).abs().mean()
    assert after < 0.5 * before and after < 0.3, (float(before), float(after))


def test_same_seed_same_weights() -> None:
    a = genloop.train("resgan", overrides=tiny("resgan"), steps=4, seed=3, progress=False)
    b = genloop.train("resgan", overrides=tiny("resgan"), steps=4, seed=3, progress=False)
    c = genloop.train("resgan", overrides=tiny("resgan"), steps=4, seed=4, progress=False)
    wa, wb, wc = _weights(a.dir), _weights(b.dir), _weights(c.dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa if not k.startswith("rng/"))
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if k.startswith("model/") and wa[k].is_floating_point())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_is_bit_exact_with_augmentation_ada_and_lazy_r1(precision: str) -> None:
    """Stopped at step 3 and resumed to 7: the same weights, EMA, optimizers, ADA state and R1 schedule.

    With R1 every 2nd discriminator step, steps 1, 3, 5, 7 regularise: a resume that lost the step counter
    would regularise step 4 instead of 5.
    """
    extra = (
        f"train.precision={precision}",
        "model.augment=color,translation,cutout",
        "model.ada=true",
        "model.ada_interval=2",
        "model.r1_interval=2",
        "data.shift=1",
    )
    full = genloop.train("resgan", overrides=tiny("resgan", *extra), steps=7, progress=False)
    part = genloop.train("resgan", overrides=tiny("resgan", *extra), steps=3, progress=False)
    resumed = genloop.resume(part.id, steps=7, progress=False)
    a, b = _weights(full.dir), _weights(resumed.dir)
    assert a.keys() == b.keys()
    assert any("d_steps" in k for k in a) and any("augment" in k for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert RunStore().get(resumed.id).info["step"] == 7
    lines = [json.loads(line) for line in (resumed.dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, 8))
    assert all("r1" in m and "ada_p" in m for m in lines), lines[0].keys()


def test_conditional_trains_and_generates_the_asked_class() -> None:
    run = genloop.train(
        "resgan", data="digits", overrides=tiny("resgan", "model.class_conditional=true"), steps=2, progress=False
    )
    out = genloop.load(run.id)(n=4, seed=0, class_label=3)
    assert out.tensors.shape == (4, 1, 8, 8) and out.labels.tolist() == [3] * 4
