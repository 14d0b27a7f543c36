"""Differentially private training (train.dp): Opacus's per-sample clipping and noise, the accountant, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_GPT, tiny
from torch import nn

import genloop
from genloop.data.image import ImageBatches
from genloop.errors import ConfigError
from genloop.resolve import resolve_config
from genloop.runs import RunStore
from genloop.serialization import load_tensors
from genloop.systems import models
from genloop.systems.base import DataSpec, System
from genloop.training.config import DPConfig, TrainConfig
from genloop.training.dp import make_accountant, noise_for_target
from genloop.training.engine import Optimizers, Trainer

pytest.importorskip("opacus")


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _spent(run_dir: Path) -> list[float]:
    return [m["dp_epsilon"] for m in _metrics(run_dir) if "dp_epsilon" in m]


def _check_private_run(run: Any, target: float, steps: int) -> None:
    eps = _spent(run.dir)
    assert len(eps) == steps and all(b > a > 0 for a, b in zip(eps, eps[1:])), eps  # logged every step, growing
    dp = RunStore().get(run.id).info["dp"]  # run.json
    assert dp["epsilon"] == pytest.approx(eps[-1])
    assert dp["updates"] == steps and dp["noise_multiplier"] > 0
    assert target - 0.01 <= dp["epsilon"] <= target  # the planned steps spend the target (Opacus's tolerance)


@pytest.mark.parametrize("name", ["vae", "ddpm"])
def test_private_image_families_train_and_log_epsilon(name: str) -> None:
    run = genloop.train(name, overrides=tiny(name, "train.dp.epsilon=8"), steps=4, progress=False)
    _check_private_run(run, 8.0, 4)
    assert RunStore().get(run.id).info["precision"] == "fp32"
    if name == "vae":  # `genloop report` states the privacy spent in its summary
        from genloop.evaluation.report import write_report

        text = write_report(run.dir).read_text(encoding="utf-8")
        assert "Privacy (DP-SGD)" in text and "ε = " in text and "rdp" in text


def test_private_gpt_trains_and_logs_epsilon(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog. 机器学习很有趣。\n" * 60, encoding="utf-8")
    overrides = [*TINY_GPT, "train.dp.epsilon=8", "train.dp.accountant=prv"]
    run = genloop.train("gpt", data=str(corpus), overrides=overrides, steps=3, progress=False)
    _check_private_run(run, 8.0, 3)
    assert RunStore().get(run.id).info["dp"]["accountant"] == "prv"


def _image_trainer(model: str, *extra: str, n: int = 160, size: int = 8) -> Trainer:
    rc = resolve_config(model, overrides=tiny(model, *extra, f"data.image_size={size}"))
    system = rc.system_cls(rc.model, DataSpec(channels=1, image_size=size))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    return Trainer(system, ImageBatches(images, None, rc.train.batch_size), rc.train, progress=False)


def test_private_dcgan_privatises_the_discriminator_only() -> None:
    trainer = _image_trainer("dcgan", "train.dp.noise_multiplier=1.0", "train.steps=3", "train.ema_decay=null", size=16)
    system = trainer.system
    assert set(trainer.dp.optimizers) == {"discriminator"}
    # BatchNorm mixes a batch's examples: under DP the discriminator gets GroupNorm (model.d_norm auto -> layer)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in system.discriminator.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in system.discriminator.modules())
    before = {k: v.clone() for k, v in system.generator.state_dict().items()}
    trainer.fit()
    assert trainer.dp.updates_done == 3  # the accountant counts the discriminator's updates, not the generator's
    assert all(getattr(p, "grad_sample", None) is None for p in system.generator.parameters())
    assert any(not torch.equal(before[k], v) for k, v in system.generator.state_dict().items())  # G still learns


@pytest.mark.parametrize("name", ["vae", "ddpm", "gpt", "dcgan"])
def test_per_example_gradients_sum_to_the_batch_gradient(name: str) -> None:
    """Opacus's per-example gradients (hooks, functorch, GenLoop's LayerNorm rule, GPT's tied and positional
    embeddings) average to autograd's gradient of the batch loss, parameter by parameter."""
    from genloop.training.dp import per_example_gradients

    torch.manual_seed(0)
    if name == "gpt":
        rc = resolve_config("gpt", overrides=TINY_GPT)
        system = rc.system_cls(rc.model, DataSpec(vocab_size=50))
        batch: Any = (torch.randint(0, 50, (5, 16)), torch.randint(0, 50, (5, 16)))
    else:
        rc = resolve_config(name, overrides=tiny(name, "data.image_size=16", "train.dp.noise_multiplier=1"))
        system = rc.system_cls(rc.model, DataSpec(channels=1, image_size=16))
        batch = (torch.rand(5, 1, 16, 16) * 2 - 1, None)
    module = next(iter(system.dp_private().values()))[0]
    per_example_gradients(module)
    system.train()
    if name == "gpt":
        loss = system.loss(*batch)
    else:
        loss = (system._critic_loss if name == "dcgan" else system._loss)(batch)["loss"]
    loss.backward()
    for pname, p in module.named_parameters():
        assert p.grad_sample.shape[0] == 5, pname
        torch.testing.assert_close(p.grad_sample.sum(0) / 5, p.grad, rtol=1e-4, atol=1e-6, msg=pname)


def test_resolved_dcgan_config_records_groupnorm() -> None:
    rc = resolve_config("dcgan", overrides=tiny("dcgan", "train.dp.epsilon=3"))
    assert rc.model.d_norm == "layer"
    assert resolve_config("dcgan", overrides=tiny("dcgan")).model.d_norm == "auto"  # unchanged without DP


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("target", [1.0, 4.0])
def test_noise_for_a_target_epsilon_spends_it_at_the_planned_steps(accountant: str, target: float) -> None:
    q, steps, delta = 64 / 1438, 200, 1e-5
    sigma = noise_for_target(target, delta, q, steps, accountant)
    acc = make_accountant(accountant)
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)
    assert target - 0.01 <= acc.get_epsilon(delta=delta) <= target


@pytest.mark.parametrize("poisson", ["true", "false"])
def test_resume_spends_the_same_epsilon_and_trains_the_same_weights(poisson: str) -> None:
    """Interrupted after 3 of 6 steps and resumed: the accountant continues (it is in the checkpoint) and the
    weights are bit-exact, since the noise of update k is seeded from (train.seed, k) and Poisson sample s from
    (train.seed, s)."""
    over = tiny("vae", "train.dp.epsilon=4", f"train.dp.poisson={poisson}")
    full = genloop.train("vae", overrides=over, steps=6, progress=False)
    calls = iter(range(100))
    part = genloop.train("vae", overrides=over, steps=6, progress=False, should_stop=lambda: next(calls) >= 3)
    assert RunStore().get(part.id).info["step"] == 3
    resumed = genloop.resume(part.id, progress=False)
    a = load_tensors(full.dir / "checkpoints" / "last.safetensors")[0]
    b = load_tensors(resumed.dir / "checkpoints" / "last.safetensors")[0]
    assert a.keys() == b.keys()
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    assert _spent(resumed.dir) == _spent(full.dir)  # every logged epsilon, also the 3 after the resume
    info_full, info_resumed = RunStore().get(full.id).info["dp"], RunStore().get(resumed.id).info["dp"]
    assert info_resumed["epsilon"] == info_full["epsilon"] and info_resumed["updates"] == 6
    assert info_full["sampling"].startswith("poisson") == (poisson == "true")


@pytest.mark.parametrize("poisson", [True, False])
def test_a_checkpoint_resumes_only_with_its_own_sampling(poisson: bool) -> None:
    """Poisson samples and shuffled batches are different streams with different budgets: one line, not a mix."""
    trainer = _image_trainer("vae", "train.dp.noise_multiplier=1", f"train.dp.poisson={str(poisson).lower()}")
    other = {**trainer.dp.state_dict(), "poisson": not poisson}
    with pytest.raises(ConfigError, match=f"resume it with train.dp.poisson={str(not poisson).lower()}") as excinfo:
        trainer.dp.load_state_dict(other)
    _one_line(excinfo)
    if poisson:  # a data state of shuffled batches (epoch, position) cannot continue a Poisson stream
        with pytest.raises(ConfigError, match="train.dp.poisson=false") as excinfo:
            trainer.batches.load_state_dict({"epoch": 1, "position": 16})
        _one_line(excinfo)


def test_a_run_from_before_poisson_sampling_resumes_on_its_shuffled_batches() -> None:
    """A DP run whose saved config has no train.dp.poisson (written before it existed) trained on shuffled
    batches; `genloop resume` continues it on them instead of refusing it for the new default."""
    over = tiny("vae", "train.dp.epsilon=4", "train.dp.poisson=false")
    calls = iter(range(100))
    part = genloop.train("vae", overrides=over, steps=4, progress=False, should_stop=lambda: next(calls) >= 2)
    path = RunStore().get(part.id).files.config
    cfg = json.loads(path.read_text())
    del cfg["train"]["dp"]["poisson"]
    path.write_text(json.dumps(cfg))
    resumed = genloop.resume(part.id, progress=False)
    info = RunStore().get(resumed.id).info["dp"]
    assert info["updates"] == 4 and not info["sampling"].startswith("poisson")
    assert json.loads(path.read_text())["train"]["dp"]["poisson"] is False


# --- Poisson sampling (train.dp.poisson) ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["image", "text"])
def test_poisson_batches_have_the_expected_size_on_average(kind: str) -> None:
    """Each example joins each batch with probability q = batch / n: the sizes' mean is q n and their variance
    n q (1 - q) (a Binomial), the examples of a batch are distinct, and every example gets drawn."""
    from genloop.modalities.text.batches import TokenBatches
    from genloop.training.dp import PoissonBatches

    n, batch, draws = 1000, 50, 400
    if kind == "image":
        images = torch.arange(n, dtype=torch.int64).reshape(n, 1, 1, 1).to(torch.uint8)
        labels = torch.arange(n)
        stream: Any = ImageBatches(images, labels, batch, seed=3)
    else:
        stream = TokenBatches(np.arange(n + 8), batch, 8, seed=3)  # window i starts with token i
    q = batch / stream.population
    poisson = PoissonBatches(stream, q, seed=3)
    sizes, seen = [], set()
    for _ in range(draws):
        x, y = next(poisson)
        sizes.append(x.shape[0])
        ids = (y if kind == "image" else x[:, 0]).tolist()  # which examples
        assert len(set(ids)) == len(ids)  # no example twice in one batch
        seen.update(ids)
    mean, var = float(np.mean(sizes)), float(np.var(sizes))
    expected = q * stream.population
    # the mean of 400 Binomial(1000, 0.05) sizes has standard deviation ~0.34: a 2.0 margin is ~6 of them
    assert abs(mean - expected) < 2.0, (mean, expected)
    assert 0.6 * expected * (1 - q) < var < 1.5 * expected * (1 - q), var
    assert len(set(sizes)) > 10  # the size varies from step to step
    assert len(seen) > 0.9 * stream.population  # 1 - (1 - q)^400: all but ~1e-9 of them
    assert stream.state_dict() == ({"epoch": 0, "position": 0} if kind == "image" else {"step": 0})  # untouched
    assert poisson.state_dict() == {"poisson_step": draws}


def test_poisson_samples_depend_only_on_seed_and_step() -> None:
    from genloop.training.dp import poisson_indices

    a = poisson_indices(5000, 0.01, seed=7, step=12)
    assert np.array_equal(a, poisson_indices(5000, 0.01, seed=7, step=12))
    assert not np.array_equal(a, poisson_indices(5000, 0.01, seed=7, step=13))
    assert not np.array_equal(a, poisson_indices(5000, 0.01, seed=8, step=12))
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 5000  # sorted, distinct, in range
    assert poisson_indices(10, 0.0, seed=0, step=0).size == 0


def test_an_empty_poisson_sample_is_a_noise_only_update() -> None:
    """At an expected batch of one example a third of the steps sample nothing: the engine still makes each of
    those private updates (noise only, as the accountant assumes), so every step is counted and moves the model."""
    from genloop.training.dp import poisson_indices

    trainer = _image_trainer("vae", "train.dp.noise_multiplier=1.0", "train.steps=6", "train.batch_size=1", n=40)
    n, q = trainer.dp.n, trainer.dp.sample_rate
    sizes = [poisson_indices(n, q, trainer.cfg.seed, s).size for s in range(6)]
    assert 0 in sizes and max(sizes) > 0, sizes  # this seed has both kinds of step
    states = []
    real_step = trainer.dp.empty_step

    def watched() -> None:
        before = [p.detach().clone() for p in trainer.system.vae.parameters()]
        real_step()
        after = list(trainer.system.vae.parameters())
        states.append(any(not torch.equal(a, b) for a, b in zip(before, after)))

    trainer.dp.empty_step = watched  # type: ignore[method-assign]
    trainer.fit()
    assert len(states) == sizes.count(0) and all(states)  # each empty step was a (noise) update
    assert trainer.dp.updates_done == 6
    assert all(torch.isfinite(p).all() for p in trainer.system.parameters())


def test_a_stream_that_cannot_take_examples_is_refused_for_poisson() -> None:
    from genloop.training.dp import PoissonBatches

    with pytest.raises(ConfigError, match="train.dp.poisson=false") as excinfo:
        PoissonBatches(SimpleNamespace(population=100, batch_size=4), 0.04, seed=0)
    _one_line(excinfo)


def test_resume_cannot_train_past_the_planned_budget() -> None:
    run = genloop.train("vae", overrides=tiny("vae", "train.dp.epsilon=4"), steps=2, progress=False)
    with pytest.raises(ConfigError, match="spend more than the target"):
        genloop.resume(run.id, steps=4, progress=False)


class _Linear(System):
    """y = w.x + b with a squared error: per-example gradients have a closed form to check clipping against."""

    Config = SimpleNamespace
    ema_target = "lin"
    modality = "image"

    def __init__(self) -> None:
        super().__init__(SimpleNamespace(name="linear"), DataSpec())
        self.lin = nn.Linear(3, 1)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": list(self.lin.parameters())}

    def dp_private(self) -> dict[str, tuple[nn.Module, int]]:
        return {"model": (self.lin, 1)}

    def loss(self, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": ((self.lin(x).squeeze(1) - y) ** 2).mean()}


def test_per_sample_clipping_bounds_each_examples_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """One example with a 1e6-times larger gradient moves the model no more than max_grad_norm / batch."""
    from genloop.training.dp import PrivateTraining

    torch.manual_seed(0)
    system = _Linear()
    cfg = TrainConfig(
        steps=1, batch_size=4, ema_decay=None, dp=DPConfig(noise_multiplier=0.0, max_grad_norm=1.0, poisson=False)
    )
    x = torch.randn(4, 3)
    x[0] *= 1e6  # the outlier
    y = torch.randn(4)
    per_example = []
    for i in range(4):
        system.zero_grad()
        system.loss((x[i : i + 1], y[i : i + 1]))["loss"].backward()
        per_example.append(torch.cat([p.grad.flatten() for p in system.lin.parameters()]))
    norms = torch.stack([g.norm() for g in per_example])
    assert norms[0] > 1e5
    clipped = torch.stack([g * min(1.0, 1.0 / float(g.norm())) for g in per_example])
    expected = clipped.sum(0) / 4  # Opacus: clipped sum + noise (0 here), divided by the expected batch size
    system.zero_grad(set_to_none=True)
    opt = Optimizers(system, cfg, torch.device("cpu"), None)
    batches = SimpleNamespace(population=100, batch_size=4)
    opt.dp = PrivateTraining(system, batches, cfg, opt.optimizers, world=1)
    seen: list[torch.Tensor] = []
    adam = opt.optimizers["model"]
    real_step = adam.step
    monkeypatch.setattr(adam, "step", lambda *a, **k: (seen.append(_flat_grad(system)), real_step(*a, **k))[1])
    opt.micro_batches = [(x, y)]
    opt.step("model", system.loss)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], expected, rtol=1e-5, atol=1e-6)
    assert float(seen[0].norm()) <= 1.0 + 1e-6  # the mean of four vectors of norm <= 1


def _flat_grad(system: System) -> torch.Tensor:
    return torch.cat([p.grad.detach().flatten().clone() for p in system.parameters()])


def _one_line(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and text
    return text


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["train.dp.epsilon=0"], "finite number > 0"),
        (["train.dp.epsilon=-1"], "finite number > 0"),
        (["train.dp.epsilon=inf"], "finite number > 0"),
        (["train.dp.epsilon=2", "train.dp.noise_multiplier=1"], "not both"),
        (["train.dp.epsilon=2", "train.steps=null", "train.time_budget=60"], "needs train.steps"),
        (["train.dp.epsilon=2", "train.precision=bf16"], "fp32"),
        (["train.dp.epsilon=2", "train.grad_accum=2"], "grad_accum"),
        (["train.dp.epsilon=2", "train.grad_clip=1"], "max_grad_norm"),
        (["train.dp.epsilon=2", "train.dp.max_grad_norm=0"], "max_grad_norm must be > 0"),
        (["train.dp.epsilon=2", "train.dp.delta=1.5"], "delta must be in"),
        (["train.dp.epsilon=2", "train.dp.poisson=maybe"], "train.dp.poisson"),
    ],
)
def test_bad_dp_settings_get_one_line(extra: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as excinfo:
        resolve_config("vae", overrides=tiny("vae", *extra))
    _one_line(excinfo)


@pytest.mark.parametrize(
    ("model", "extra", "match"),
    [
        ("dcgan", ["model.d_norm=batch"], "d_norm=batch"),
        ("wgan-gp", [], "WGAN-GP"),
        ("dcgan", ["model.spectral_norm=true"], "spectral_norm"),
        ("dcgan", ["model.augment=translation", "model.ada=true"], "model.ada"),
        ("resgan", [], "resgan"),
    ],
)
def test_families_dp_cannot_handle_are_refused(model: str, extra: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as excinfo:
        resolve_config(model, overrides=tiny(model, "train.dp.epsilon=2", *extra))
    _one_line(excinfo)


def test_language_families_without_dp_are_refused() -> None:
    with pytest.raises(ConfigError, match="music-gpt") as excinfo:
        models["music-gpt"].dp_config(SimpleNamespace(name="music-gpt"))
    _one_line(excinfo)
    with pytest.raises(ConfigError, match="'hf-causal-lm' does not support") as excinfo:
        models["hf-causal-lm"].dp_config(SimpleNamespace(name="hf-causal-lm"))
    _one_line(excinfo)


def test_delta_must_be_below_one_over_n() -> None:
    with pytest.raises(ConfigError, match=r"delta=0.01 must be below 1/n") as excinfo:
        _image_trainer("vae", "train.dp.epsilon=2", "train.dp.delta=0.01", n=160)
    _one_line(excinfo)
    # the default delta shrinks below 1/n on a large data set: 1/(10 n)
    trainer = _image_trainer("vae", "train.dp.noise_multiplier=1", n=160)
    assert trainer.dp.delta == 1e-5
    assert math.isclose(trainer.dp.summary()["sample_rate"], 16 / 160)


def test_batchnorm_in_a_private_network_is_refused() -> None:
    """A family whose private network has BatchNorm and no fix: Opacus's validator, as one ConfigError line."""
    rc = resolve_config("vae", overrides=tiny("vae", "train.dp.noise_multiplier=1"))
    system = rc.system_cls(rc.model, DataSpec(channels=1, image_size=8))
    system.vae.encoder.extra = nn.BatchNorm2d(4)  # smuggled in: never used in forward, still refused
    images = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="BatchNorm") as excinfo:
        Trainer(system, ImageBatches(images, None, 16), rc.train, progress=False)
    _one_line(excinfo)


def test_a_setting_only_the_engine_can_check_leaves_no_run(tmp_path) -> None:
    """delta >= 1/n is known only once the data is loaded and the engine starts: the new run folder goes again."""
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match="must be below 1/n"):
        genloop.train(
            "vae",
            overrides=tiny("vae", "train.dp.epsilon=2", "train.dp.delta=0.01"),
            steps=2,
            runs_dir=runs,
            progress=False,
        )
    leftover = [p.name for p in runs.iterdir() if p.is_dir()] if runs.exists() else []
    assert leftover == [] and RunStore(runs).list() == []
