"""The GAN and VAE family variants: spectral norm, cgan, beta-vae, cvae, and the IWAE bound."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

import genloop
from genloop.data import ImageBatches
from genloop.errors import ConfigError
from genloop.runs import RunStore
from genloop.serialization import load_tensors
from genloop.systems import DataSpec, System, models
from genloop.systems.gan import discriminator_norm
from genloop.training import TrainConfig, Trainer

SMALL = {
    "dcgan": dict(z_dim=8, g_width=8, d_width=8),
    "cgan": dict(z_dim=8, g_width=8, d_width=8),
    "vae": dict(z_dim=4, width=8),
    "beta-vae": dict(z_dim=4, width=8),
    "cvae": dict(z_dim=4, width=8),
}
CONDITIONAL = ["cgan", "cvae"]


def _system(name: str, spec: DataSpec = DataSpec(1, 8, 4), **cfg) -> System:
    cls = models[name]
    return cls(cls.Config(**{**SMALL[name], **cfg}), spec)


def _cfg(name: str, **kw) -> TrainConfig:
    base = dict(
        models[name].train_defaults,
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


def _tiny(name: str, *extra: str) -> list[str]:
    return [*TINY, *(f"model.{k}={v}" for k, v in SMALL[name].items()), *extra]


def _patterns(size: int = 8) -> torch.Tensor:
    """Four equally distant toy classes in [-1, 1]: the top, bottom, left or right half is bright."""
    p = -torch.ones(4, 1, size, size)
    h = size // 2
    p[0, :, :h], p[1, :, h:], p[2, :, :, :h], p[3, :, :, h:] = 1, 1, 1, 1
    return p


def _toy_data(per_class: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and int64 labels: ``per_class`` copies of each pattern."""
    labels = torch.arange(4).repeat_interleave(per_class)
    images = ((_patterns()[labels] + 1) * 127.5).round().to(torch.uint8)
    return images, labels


def _nearest_pattern(images: torch.Tensor) -> torch.Tensor:
    dist = (images[:, None] - _patterns()[None]).pow(2).flatten(2).mean(2)  # (N, 4)
    return dist.argmin(1)


def _digits(n: int = 16) -> torch.Tensor:
    from sklearn.datasets import load_digits

    digits = torch.tensor(load_digits().images[:n], dtype=torch.float32)  # 0..16, 8x8
    return (digits / 16 * 255).round().to(torch.uint8)[:, None]


# --- registry, defaults and the conditioning contract ---------------------------------------------
def test_new_families_are_registered_with_their_defaults() -> None:
    for name in ("cgan", "beta-vae", "cvae"):
        assert name in models and models[name].Config().name == name
    assert models["beta-vae"].Config().beta == 4.0 and models["vae"].Config().beta == 1.0
    assert _system("beta-vae").config.beta == 4.0
    cgan = models["cgan"].Config()
    assert cgan.loss == "hinge" and cgan.spectral_norm and discriminator_norm(cgan) == "none"
    assert all(models[name].conditional for name in CONDITIONAL)
    assert not any(models[name].conditional for name in ("dcgan", "wgan-gp", "vae", "beta-vae"))
    assert models["vae"].Config().eval_k == 64


@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_family_needs_labelled_data(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} needs a labelled dataset") as err:
        _system(name, DataSpec(1, 8, 0))
    assert "\n" not in str(err.value)


def test_conditional_family_on_unlabelled_files_fails_before_training(tmp_path: Path) -> None:
    path = tmp_path / "faces.npz"
    np.savez(path, images=np.zeros((8, 8, 8), np.uint8))
    with pytest.raises(ConfigError, match="cvae needs a labelled dataset"):
        genloop.train("cvae", data=str(path), overrides=_tiny("cvae"), steps=1, progress=False)
    runs = tmp_path / "runs"
    assert not runs.exists() or not [d for d in runs.iterdir() if not d.name.startswith(".")]  # no run was created


@pytest.mark.parametrize("name", ["dcgan", "cgan", "vae", "beta-vae", "cvae"])
def test_decode_and_sample_shapes_and_seeds(name: str) -> None:
    system = _system(name, DataSpec(3, 16, 4)).eval()
    z, labels = torch.randn(6, system.latent_dim), torch.tensor([0, 1, 2, 3, 0, 1])
    x = system.decode(z, labels)
    assert x.shape == (6, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    a = system.sample(5, torch.Generator().manual_seed(7))
    b = system.sample(5, torch.Generator().manual_seed(7))
    c = system.sample(5, torch.Generator().manual_seed(8))
    assert a.shape == (5, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    if system.conditional:  # the class changes the image; no labels means the classes in turn
        assert not torch.equal(system.decode(z, labels), system.decode(z, (labels + 1) % 4))
        assert torch.equal(system.decode(z), system.decode(z, torch.arange(6) % 4))
        assert torch.equal(a, system.sample(5, torch.Generator().manual_seed(7), labels=torch.arange(5) % 4))
    else:  # unconditional families ignore labels
        assert torch.equal(system.decode(z, labels), system.decode(z))


# --- learning -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["beta-vae", "cvae"])
def test_vae_variants_overfit_one_batch(name: str) -> None:
    images, labels = _digits(16), torch.arange(16) % 4
    trainer = Trainer(_system(name), ImageBatches(images, labels, 16), _cfg(name, steps=300, lr=3e-3), progress=False)
    x, y = ImageBatches(images, labels, 16).__next__()
    with torch.no_grad():
        recon0, kl0 = trainer.system._terms(x, y if trainer.system.conditional else None)
    trainer.fit()
    with torch.no_grad():
        recon1, kl1 = trainer.system._terms(x, y if trainer.system.conditional else None)
    beta = trainer.system.config.beta
    loss0, loss1 = (recon0 + beta * kl0).mean(), (recon1 + beta * kl1).mean()
    assert loss1 < 0.7 * loss0 and recon1.mean() < 0.7 * recon0.mean(), (float(loss0), float(loss1))


def test_cgan_overfits_one_image_per_class() -> None:
    """Two classes, one image each: asked for a class, the generator must draw (nearly) its image."""
    digits = _digits(2)
    images, labels = digits.repeat(8, 1, 1, 1), torch.tensor([0, 1]).repeat(8)
    targets = digits.float() / 127.5 - 1
    trainer = Trainer(
        _system("cgan"), ImageBatches(images, labels, 16), _cfg("cgan", steps=250, lr=1e-3), progress=False
    )
    ask = torch.tensor([0, 1]).repeat(8)
    before = (trainer.system.eval().sample(16, torch.Generator().manual_seed(0), ask) - targets[ask]).abs().mean()
    trainer.system.train()
    trainer.fit()
    after = (trainer.system.eval().sample(16, torch.Generator().manual_seed(0), ask) - targets[ask]).abs().mean()
    assert after < 0.5 * before and after < 0.3, (float(before), float(after))


@pytest.mark.parametrize("name,steps,lr", [("cvae", 150, 3e-3), ("cgan", 350, 1e-3)])
def test_conditional_samples_honour_the_requested_class(name: str, steps: int, lr: float) -> None:
    images, labels = _toy_data()
    trainer = Trainer(_system(name), ImageBatches(images, labels, 16), _cfg(name, steps=steps, lr=lr), progress=False)
    trainer.fit()
    ask = torch.arange(4).repeat(8)
    samples = trainer.system.eval().sample(32, torch.Generator().manual_seed(0), ask)
    accuracy = (_nearest_pattern(samples) == ask).float().mean()
    assert accuracy >= 0.9, float(accuracy)


# --- spectral norm: checkpoints and exact resume --------------------------------------------------
def test_spectral_norm_discriminator() -> None:
    system = _system("dcgan", spectral_norm=True)
    keys = list(system.state_dict())
    assert any(k.endswith("parametrizations.weight.original") for k in keys)
    assert any(k.endswith("weight.0._u") for k in keys) and not any(
        k.startswith("generator.") and "parametrizations" in k for k in keys
    )
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in system.discriminator.modules())
    with torch.no_grad():  # each weight, as used, has largest singular value ~1 (after some power iterations)
        for _ in range(30):
            system.discriminator(torch.randn(4, 1, 8, 8))
        w = system.discriminator.body[0].weight.flatten(1)
    assert float(torch.linalg.matrix_norm(w, ord=2)) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    "name,extra",
    [
        ("dcgan", ("model.spectral_norm=true", "train.precision=fp32")),
        ("cgan", ("train.precision=fp32",)),
        ("cgan", ("train.precision=bf16",)),
    ],
)
def test_spectral_norm_resume_is_bit_exact(name: str, extra: tuple[str, ...]) -> None:
    """Stopping at step 3 and resuming to 7 gives the same weights, power-iteration vectors, EMA and RNG."""
    overrides = _tiny(name, *extra, "train.ema_decay=0.9")
    full = genloop.train(name, overrides=overrides, steps=7, progress=False)
    part = genloop.train(name, overrides=overrides, steps=3, progress=False)
    resumed = genloop.resume(part.id, steps=7, progress=False)
    a = load_tensors(full.dir / "checkpoints" / "last.safetensors")[0]
    b = load_tensors(resumed.dir / "checkpoints" / "last.safetensors")[0]
    assert a.keys() == b.keys() and any("_u" in k for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert RunStore().get(resumed.id).info["step"] == 7
    # The inference weights load into a fresh system and generate.
    system = models[name](
        models[name].Config(**SMALL[name], **({"spectral_norm": True} if name == "dcgan" else {})), DataSpec(1, 8, 10)
    )
    system.load_state_dict(load_tensors(resumed.dir / "model.safetensors")[0])
    assert system.eval().sample(4, torch.Generator().manual_seed(0)).isfinite().all()


# --- the importance-weighted bound ----------------------------------------------------------------
def _trained_vae(name: str = "vae") -> tuple[System, torch.Tensor, torch.Tensor]:
    """A VAE trained briefly on 64 digits, and 128 digits (with toy labels) to evaluate it on."""
    images, labels = _digits(128), torch.arange(128) % 4
    trainer = Trainer(
        _system(name), ImageBatches(images[:64], labels[:64], 32), _cfg(name, steps=150, lr=3e-3), progress=False
    )
    trainer.fit()
    return trainer.system.eval(), images.float() / 127.5 - 1, labels


def test_log_weights_match_the_densities() -> None:
    """log w = log p(x|z) + log p(z) - log q(z|x), checked against torch.distributions in float64."""
    system, x, _ = _system("vae").eval(), _digits(3).float() / 127.5 - 1, None
    torch.manual_seed(0)
    logw = system.log_weights(x, None, k=2)
    torch.manual_seed(0)
    with torch.no_grad():
        mu, logvar = (t.double() for t in system.vae.encoder(x))
        z = mu[:, None] + (0.5 * logvar).exp()[:, None] * torch.randn(3, 2, mu.shape[1]).double()
        logits = system.vae.decoder(z.flatten(0, 1).float()).double().view(3, 2, -1)
    target = ((x + 1) / 2).double().flatten(1)[:, None]
    log_px = (
        torch.distributions.Bernoulli(logits=logits, validate_args=False).log_prob(target.expand_as(logits)).sum(-1)
    )
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = torch.distributions.Normal(mu[:, None], (0.5 * logvar).exp()[:, None]).log_prob(z).sum(-1)
    assert logw.dtype == torch.float64 and logw.shape == (3, 2)
    torch.testing.assert_close(logw, log_px + log_pz - log_qz, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", ["vae", "cvae"])
def test_iwae_bound_is_above_the_elbo_and_tightens_with_k(name: str) -> None:
    system, x, labels = _trained_vae(name)
    y = labels if system.conditional else None
    runs = []
    for seed in range(3):  # the one-sample ELBO is noisy: average a few evaluations
        torch.manual_seed(seed)
        runs.append(system.evaluate(x, y))
    assert {"elbo_nats", "elbo_bits_per_dim", "iwae_nats", "iwae_bits_per_dim"} <= runs[0].keys()
    elbo, iwae = (sum(r[key] for r in runs) / len(runs) for key in ("elbo_nats", "iwae_nats"))
    assert iwae > elbo + 0.1, (elbo, iwae)
    assert runs[0]["iwae_bits_per_dim"] == pytest.approx(-runs[0]["iwae_nats"] / (64 * math.log(2)))

    bounds = []  # fresh samples for each k
    for k in (1, 4, 16, 64):
        torch.manual_seed(1)
        bounds.append(float(system.iwae_bound(x, y, k=k).mean()))
    assert bounds[0] == pytest.approx(elbo, abs=0.5)  # k = 1 is the (sampled-KL) ELBO
    assert all(b > a - 0.1 for a, b in zip(bounds, bounds[1:])) and bounds[-1] > bounds[0] + 0.1, bounds
    # On one shared set of samples, splitting them into groups of k is monotone in k (Burda et al., thm 1).
    torch.manual_seed(2)
    logw = system.log_weights(x, y, k=64)
    grouped = [float((logw.view(len(x), 64 // k, k).logsumexp(-1) - math.log(k)).mean()) for k in (1, 4, 16, 64)]
    assert grouped == sorted(grouped) and grouped[0] == pytest.approx(float(logw.mean()))
    # Pushing the k samples through the decoder in chunks changes only the memory used.
    torch.manual_seed(3)
    chunked = float(system.iwae_bound(x[:8], None if y is None else y[:8], k=64, max_batch=16).mean())
    torch.manual_seed(3)
    whole = float(system.iwae_bound(x[:8], None if y is None else y[:8], k=64, max_batch=4096).mean())
    assert chunked == pytest.approx(whole, abs=1.0)


def test_cvae_evaluate_needs_labels() -> None:
    system = _system("cvae")
    with pytest.raises(ValueError, match="class labels"):
        system.evaluate(torch.zeros(2, 1, 8, 8))
