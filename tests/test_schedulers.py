"""Noise schedulers: the forward process, the contract, and sampling against an exact denoiser.

For Gaussian data x0 ~ N(μ, s²) (per dimension) the optimal denoiser is known in closed form, so the
samplers can be checked without training anything: with it, a correct sampler must reproduce N(μ, s²),
and a deterministic one must follow the probability-flow ODE, which for Gaussian data keeps each point's
standardised value z = (x_t − sqrt(ā)·μ) / sqrt(ā·s² + 1 − ā) fixed, i.e. maps x_T to μ + s·z_T.
"""

from __future__ import annotations

import math

import pytest
import torch

from genloop.errors import ConfigError, NotFoundError
from genloop.schedulers import (
    NoiseScheduleConfig,
    Scheduler,
    make_scheduler,
    randn,
    schedulers,
)

MU = torch.tensor([1.5, -0.5], dtype=torch.float64)
STD = torch.tensor([0.5, 1.2], dtype=torch.float64)


def exact_model(scheduler: Scheduler):
    """The MSE-optimal network output for data N(MU, STD²): E[ε | x_t] or E[v | x_t]."""

    def model(x: torch.Tensor, t: int) -> torch.Tensor:
        abar = float(scheduler.alphas_cumprod[t])
        a, s = math.sqrt(abar), math.sqrt(1 - abar)
        xd = x.double()
        var = abar * STD**2 + (1 - abar)  # Var[x_t]
        centred = xd - a * MU
        eps = s * centred / var  # Cov(ε, x_t) / Var(x_t) · (x_t − E x_t)
        if scheduler.config.prediction_type == "epsilon":
            return eps.to(x.dtype)
        x0 = MU + a * STD**2 * centred / var
        return (a * eps - s * x0).to(x.dtype)

    return model


def sample(scheduler: Scheduler, steps: int, n: int, seed: int, dtype=torch.float32):
    """Run the sampling loop with the exact model; returns (x_T, x0)."""
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    x_T = randn((n, 2), gen, "cpu", dtype)
    x, model = x_T, exact_model(scheduler)
    for t in scheduler.timesteps.tolist():
        x = scheduler.step(model(x, t), t, x, generator=gen)
    return x_T, x


def config(**kw) -> NoiseScheduleConfig:
    return NoiseScheduleConfig(clip_sample=None, **kw)  # the Gaussians' samples lie outside [-1, 1]


def ode_target(scheduler: Scheduler, x_T: torch.Tensor) -> torch.Tensor:
    """Where the probability-flow ODE takes x_T: the same standardised value under N(MU, STD²)."""
    abar = float(scheduler.alphas_cumprod[-1])
    z = (x_T.double() - math.sqrt(abar) * MU) / torch.sqrt(abar * STD**2 + 1 - abar)
    return MU + STD * z


# -- the forward process and the contract ------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_alphas_cumprod_decrease_within_unit_interval(schedule):
    s = make_scheduler("ddpm", config(beta_schedule=schedule))
    abar = s.alphas_cumprod
    assert abar.shape == (1000,)
    assert (abar > 0).all() and (abar < 1).all()
    assert (abar[1:] < abar[:-1]).all()
    assert abar[0] > 0.999 and abar[-1] < 1e-4  # starts almost clean, ends almost pure noise


def test_cosine_schedule_is_nichol_dhariwal():
    s = make_scheduler("ddpm", config())

    def f(t: int) -> float:
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 100, 500, 900):  # index t is the paper's step t + 1
        assert math.isclose(float(s.alphas_cumprod[t]), f(t + 1) / f(0), rel_tol=1e-9)
    assert math.isclose(float(s.betas.max()), 0.999)  # the clip, hit at the very end


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp-2m"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 5), (6, 2)])
def test_shapes(name, prediction_type, shape):
    s = make_scheduler(name, config(prediction_type=prediction_type, num_train_timesteps=100))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    t = torch.randint(0, 100, (shape[0],), generator=g)
    assert s.add_noise(x0, noise, t).shape == shape
    assert s.training_target(x0, noise, t).shape == shape
    assert s.predict_x0(noise, t, x0).shape == shape
    s.set_timesteps(7)
    assert s.timesteps.dtype == torch.int64 and len(s.timesteps) == 7
    assert (s.timesteps[1:] < s.timesteps[:-1]).all()
    assert s.timesteps[0] == 99 and s.timesteps[-1] >= 0
    x = noise
    for step in s.timesteps.tolist():
        x = s.step(torch.randn(shape, generator=g), step, x, generator=g)
        assert x.shape == shape and x.dtype == noise.dtype and torch.isfinite(x).all()


def test_all_training_timesteps_are_visited_at_full_steps():
    s = make_scheduler("ddpm", config(num_train_timesteps=50))
    s.set_timesteps(50)
    assert s.timesteps.tolist() == list(range(49, -1, -1))


@pytest.mark.parametrize("steps", [0, -3, 1001])
def test_set_timesteps_rejects_out_of_range(steps):
    s = make_scheduler("ddim", config())
    with pytest.raises(ConfigError, match="between 1 and 1000"):
        s.set_timesteps(steps)


def test_registry_and_options():
    assert schedulers.names() == ["ddim", "ddpm", "dpmpp-2m"]
    assert make_scheduler("ddim", config(), eta=0.5).eta == 0.5
    with pytest.raises(NotFoundError, match="valid: ddim, ddpm, dpmpp-2m"):
        make_scheduler("euler", config())
    with pytest.raises(ConfigError, match="no option eta"):
        make_scheduler("ddpm", config(), eta=1.0)
    with pytest.raises(ConfigError, match="eta"):
        make_scheduler("ddim", config(), eta=2.0)
    with pytest.raises(ConfigError, match="beta_schedule"):
        NoiseScheduleConfig(beta_schedule="sigmoid")  # type: ignore[arg-type]


def test_add_noise_keeps_unit_variance_for_unit_variance_data():
    s = make_scheduler("ddpm", config())
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(20000, 1, generator=g), torch.randn(20000, 1, generator=g)
    for t in (0, 10, 250, 500, 750, 999):
        xt = s.add_noise(x0, noise, torch.full((20000,), t))
        assert abs(xt.var().item() - 1) < 0.04, t
    # And the signal it keeps is exactly sqrt(ā): regress x_t on x0.
    xt = s.add_noise(x0, noise, torch.full((20000,), 500))
    slope = (xt * x0).mean() / (x0 * x0).mean()
    assert abs(slope.item() - s.alphas_cumprod[500].sqrt().item()) < 0.02


def test_training_target_and_predict_x0_invert_each_other():
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(8, 3, 4, 4, generator=g), torch.randn(8, 3, 4, 4, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    for prediction_type in ("epsilon", "v_prediction"):
        s = make_scheduler("ddpm", config(prediction_type=prediction_type))
        xt = s.add_noise(x0.double(), noise.double(), t)
        target = s.training_target(x0.double(), noise.double(), t)
        assert torch.allclose(s.predict_x0(target, t, xt), x0.double(), atol=1e-6)
    v = s.training_target(x0, noise, t)
    a = s.alphas_cumprod[t].sqrt().float().view(-1, 1, 1, 1)
    assert torch.allclose(v, a * noise - (1 - a**2).sqrt() * x0, atol=1e-6)


def test_clip_sample_bounds_x0_estimates():
    s = make_scheduler("ddpm", NoiseScheduleConfig())  # default: clip at 1 for pixels in [-1, 1]
    x0 = s.predict_x0(torch.randn(4, 1, 8, 8), 999, torch.randn(4, 1, 8, 8))
    assert x0.abs().max() <= 1


# -- samplers ------------------------------------------------------------------------------------------


def test_ddim_eta_one_equals_ddpm_step_for_step():
    cfg = config(num_train_timesteps=50)
    ddpm, ddim = make_scheduler("ddpm", cfg), make_scheduler("ddim", cfg, eta=1.0)
    ddpm.set_timesteps(50)
    ddim.set_timesteps(50)
    g1, g2, gm = (torch.Generator().manual_seed(s) for s in (7, 7, 8))
    x1 = x2 = torch.randn(16, 3, 4, 4, generator=gm)
    for t in ddpm.timesteps.tolist():
        out = torch.randn(x1.shape, generator=gm)  # any model output: the updates must agree exactly
        x1 = ddpm.step(out, t, x1, generator=g1)
        x2 = ddim.step(out, t, x2, generator=g2)
        assert torch.allclose(x1, x2, atol=1e-5, rtol=1e-5), t
    assert x1.std() > 0.1  # not trivially equal


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_stochastic_samplers_reproduce_the_data_distribution(prediction_type):
    cfg = config(prediction_type=prediction_type)
    samples = {
        "ddpm-1000": sample(make_scheduler("ddpm", cfg), 1000, 4000, seed=0)[1],
        "ddim-eta1-1000": sample(make_scheduler("ddim", cfg, eta=1.0), 1000, 4000, seed=1)[1],
        # Respaced: the "fixed_small" variance is a little low with few steps (Nichol & Dhariwal 2021).
        "ddpm-100": sample(make_scheduler("ddpm", cfg), 100, 4000, seed=2)[1],
    }
    for name, x in samples.items():
        x = x.double()
        assert torch.allclose(x.mean(0), MU, atol=0.06), (name, x.mean(0))
        assert torch.allclose(x.std(0), STD, rtol=0.06), (name, x.std(0))
    # Same distribution from the two formulations (different seeds, so compare the moments).
    a, b = samples["ddpm-1000"].double(), samples["ddim-eta1-1000"].double()
    assert torch.allclose(a.mean(0), b.mean(0), atol=0.08) and torch.allclose(a.std(0), b.std(0), rtol=0.06)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_deterministic_samplers_follow_the_probability_flow_ode(prediction_type):
    cfg = config(prediction_type=prediction_type)
    errors = {}
    for name, steps in [("ddim", 50), ("ddim", 10), ("dpmpp-2m", 10), ("dpmpp-2m", 20)]:
        s = make_scheduler(name, cfg)
        x_T, x = sample(s, steps, 2000, seed=3)
        x, target = x.double(), ode_target(s, x_T)
        assert torch.allclose(x.mean(0), MU, atol=0.1), (name, steps, x.mean(0))
        errors[name, steps] = (x - target).abs().mean().item()
        if steps >= 20:  # few-step samplers shrink the spread a little (the last jump is a posterior mean)
            assert torch.allclose(x.std(0), target.std(0), rtol=0.06), (name, steps, x.std(0))
        # Deterministic: the same start gives the same end.
        assert torch.equal(x.float(), sample(s, steps, 2000, seed=3)[1])
    assert errors["ddim", 50] < 0.03, errors
    assert errors["dpmpp-2m", 20] < 0.01, errors
    # Second order pays: at 10 steps DPM-Solver++ 2M is much closer to the ODE's solution than DDIM.
    assert errors["dpmpp-2m", 10] < 0.5 * errors["ddim", 10], errors


def test_first_order_dpmpp_step_is_ddim():
    """DPM-Solver++'s first step has no history, and first-order DPM-Solver++ is DDIM (η = 0)."""
    cfg = config()
    ddim, dpm = make_scheduler("ddim", cfg), make_scheduler("dpmpp-2m", cfg)
    ddim.set_timesteps(12)
    dpm.set_timesteps(12)
    g = torch.Generator().manual_seed(6)
    x, out = torch.randn(64, 2, generator=g).double(), torch.randn(64, 2, generator=g).double()
    t = int(ddim.timesteps[0])
    assert torch.allclose(ddim.step(out, t, x), dpm.step(out, t, x), atol=1e-9)
    t = int(ddim.timesteps[1])  # from here on 2M uses the history and differs
    assert not torch.allclose(ddim.step(out, t, x), dpm.step(out, t, x), atol=1e-3)


def test_dpmpp_history_is_reset_between_runs():
    s = make_scheduler("dpmpp-2m", config())
    _, first = sample(s, 8, 100, seed=4)
    s.step(torch.randn(100, 2), int(s.timesteps[0]), torch.randn(100, 2))  # an abandoned run
    s.step(torch.randn(100, 2), int(s.timesteps[1]), torch.randn(100, 2))
    _, again = sample(s, 8, 100, seed=4)
    assert torch.equal(first, again)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_per_image_generators_give_the_same_image_alone_or_batched(name):
    s = make_scheduler(name, config(num_train_timesteps=100), **({"eta": 1.0} if name == "ddim" else {}))
    s.set_timesteps(10)

    def model(x: torch.Tensor, t: int) -> torch.Tensor:
        return 0.3 * x  # any deterministic per-row function

    def run(seeds: list[int]) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(seed) for seed in seeds]
        x = randn((len(seeds), 1, 4, 4), gens, "cpu", torch.float32)
        for t in s.timesteps.tolist():
            x = s.step(model(x, t), t, x, generator=gens)
        return x

    batched = run([0, 1, 2, 3])
    alone = torch.cat([run([seed]) for seed in range(4)])
    assert torch.allclose(batched, alone, atol=1e-6)
    assert not torch.allclose(batched[0], batched[1])


def test_randn_is_drawn_on_the_cpu_in_float32():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = randn((3, 2), g1, "cpu", torch.bfloat16)
    b = torch.randn((3, 2), generator=g2).to(torch.bfloat16)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        randn((3, 2), [torch.Generator(), torch.Generator()], "cpu", torch.float32)
