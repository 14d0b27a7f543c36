"""The GAN training step: one generator forward per step (its fakes shared by both updates), DCGAN's layer
count by default with the older refine layer optional, and old runs still loading as they were trained."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY, TINY_MODEL

import genloop
from genloop.data import ImageBatches
from genloop.errors import ConfigError
from genloop.models.gan import Generator
from genloop.serialization import load_tensors
from genloop.systems import DataSpec, models
from genloop.training import TrainConfig, Trainer

SPEC = DataSpec(1, 8, 0)


def _system(name: str = "dcgan", **cfg) -> torch.nn.Module:
    cls = models[name]
    return cls(cls.Config(**{"z_dim": 8, "g_width": 8, "d_width": 8, **cfg}), SPEC)


def _trainer(system: torch.nn.Module, steps: int = 3, **kw) -> Trainer:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    cfg = dict(models["dcgan"].train_defaults, steps=steps, batch_size=16, log_every=1, sample_every=0)
    cfg.update(precision="fp32", tensorboard=False, threads=1, ema_decay=None, **kw)
    return Trainer(system, ImageBatches(images, None, 16), TrainConfig(**cfg), progress=False)


def _count_forwards(module: torch.nn.Module) -> list[torch.Tensor]:
    outputs: list[torch.Tensor] = []
    module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    return outputs


@pytest.mark.parametrize(("n_critic", "grad_accum", "forwards"), [(1, 1, 1), (1, 2, 2), (2, 1, 3)])
def test_generator_runs_forward_once_per_update_batch(n_critic: int, grad_accum: int, forwards: int) -> None:
    """One critic update: the generator runs once per micro-batch and both players see those fakes; with
    several critic updates each draws its own and the generator's update draws fresh ones (n_critic + 1)."""
    system = _system(n_critic=n_critic)
    g_out = _count_forwards(system.generator)
    trainer = _trainer(system, steps=2, grad_accum=grad_accum, batch_size=16 * grad_accum)
    trainer.fit()
    assert len(g_out) == 2 * forwards
    assert system._fakes == {}  # no graph outlives its step


def test_generator_update_scores_the_critic_steps_fakes() -> None:
    """The generator's loss is D (as its update left it) on exactly the fakes the critic step was shown."""
    system = _system()
    g_out, d_in = _count_forwards(system.generator), []
    system.discriminator.register_forward_pre_hook(lambda _m, args: d_in.append(args[0]))
    trainer = _trainer(system, steps=1)
    trainer.fit()
    assert len(g_out) == 1 and len(d_in) == 3  # real, fake (critic), fake (generator)
    assert torch.equal(d_in[1], g_out[0].detach()) and torch.equal(d_in[2], g_out[0])
    assert d_in[2].requires_grad and not d_in[1].requires_grad


def test_training_is_deterministic_and_finite() -> None:
    runs = []
    for _ in range(2):
        torch.manual_seed(1)  # the initial weights
        trainer = _trainer(_system(), steps=4)
        trainer.fit()
        runs.append({k: v.clone() for k, v in trainer.system.state_dict().items()})
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert all(v.isfinite().all() for v in runs[0].values() if v.is_floating_point())


def test_dcgan_layer_count_by_default_and_refine_optional() -> None:
    """dcgan: the last transposed convolution draws the image (pytorch/examples' DCGAN); g_refine adds the
    3x3 convolution at full resolution. cgan and wgan-gp keep the layer they were measured with."""
    plain, refined = Generator(8, 3, 16, 8), Generator(8, 3, 16, 8, refine=True)
    assert isinstance(plain.body[-2], torch.nn.ConvTranspose2d) and plain.body[-2].out_channels == 3
    assert isinstance(refined.body[-2], torch.nn.Conv2d) and refined.body[-2].kernel_size == (3, 3)
    z = torch.randn(2, 8)
    assert plain(z).shape == refined(z).shape == (2, 3, 16, 16)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in plain.modules()) == 2  # 4 -> 8 -> 16
    assert models["dcgan"].Config().g_refine is False
    assert models["cgan"].Config().g_refine is True and models["wgan-gp"].Config().g_refine is True
    with pytest.raises(ConfigError, match="g_refine"):
        models["resgan"].Config(g_refine=True)


def test_a_run_saved_before_g_refine_loads_and_resumes_with_its_layer() -> None:
    """A config.json without ``g_refine`` (every GAN saved before the key) is the refine layout: it generates
    and resumes with its own weights, while a new run gets DCGAN's layer count."""
    overrides = [*TINY, *TINY_MODEL["dcgan"], "model.g_refine=true"]
    run = genloop.train("dcgan", data="digits", overrides=overrides, steps=2, progress=False)
    config = json.loads((run.dir / "config.json").read_text())
    del config["model"]["g_refine"]
    (run.dir / "config.json").write_text(json.dumps(config))
    pipe = genloop.load(run.id)
    assert pipe.system.config.g_refine is True
    assert pipe(n=2, seed=0).tensors.isfinite().all()
    before = load_tensors(run.dir / "model.safetensors")[0]
    resumed = genloop.resume(run.id, steps=3, progress=False)
    after = load_tensors(resumed.dir / "model.safetensors")[0]
    assert after.keys() == before.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    new = genloop.train("dcgan", data="digits", overrides=[*TINY, *TINY_MODEL["dcgan"]], steps=1, progress=False)
    assert json.loads((new.dir / "config.json").read_text())["model"]["g_refine"] is False
    a, b = load_tensors(run.dir / "model.safetensors")[0], load_tensors(new.dir / "model.safetensors")[0]
    assert len(a) > len(b)  # the refine layer's conv, norm and bias
