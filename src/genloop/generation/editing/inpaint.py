"""Inpainting with a trained diffusion model as the prior: fill the white part of the mask, keep the rest.

RePaint (Lugmayr et al. 2022). At every step the known region of ``x_t`` is replaced by the original noised to
``t`` by the forward process, and the model denoises the whole image one step (DDPM's posterior step by default;
any sampler works). Replacing alone leaves the fill disagreeing with its surroundings: the model sees the known
region only through the noise. RePaint's *resampling* fixes that: after every ``jump_length`` steps it jumps back
up ``jump_length`` noise levels with the forward process (``q(x_{t+j} | x_t)``, fresh noise) and denoises them
again, ``jump_n_sample - 1`` times per jump point, so the fill is re-drawn several times against the known region.
Model calls: ``steps + (steps // jump_length) * (jump_n_sample - 1) * jump_length``. The known pixels are put back
exactly at the end (``where(mask, result, input)``).

Two tasks run it with different defaults, both with jumps of 2 steps:

- ``inpaint``: the model's number of steps (25 by default) and 5 samples per jump point (121 model calls at 25 steps);
- ``inpaint-fast``: 10 steps and 3 samples (30 model calls).

Short jumps are what works at these step counts: RePaint's own setting (jumps of 10 and 10 samples, for 250 steps)
is a jump of 40 % of a 25-step trajectory. Measured on held-out digits (``benchmarks/bench_editing.py``, a centre
hole of a quarter of the image, PSNR in the hole): 25 steps without resampling 8.7 dB; jumps of 10 x 10 samples
9.5 dB (205 calls); jumps of 5 x 5 samples 10.8 dB (125 calls); jumps of 2 x 5 samples 11.8 dB (121 calls); 10 steps,
jumps of 2 x 3 samples 10.5 dB (30 calls). Replacing the known pixels in the model's x0 estimate instead of in
``x_t`` (DDNM-style, one call per step) gave 8.2 dB at 25 calls and was dropped.
"""

from __future__ import annotations

import math

import torch

from .base import EditContext, EditTask, check_int, noised


def repaint_walk(steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """The positions RePaint visits in the sampler's timestep list (0: the noisiest, ``steps``: clean data).

    A move of +1 is one denoising step (one model call); a move of ``-jump_length`` is a jump back up the noise
    levels. Every ``jump_length``-th position is a jump point, left ``jump_n_sample - 1`` times.
    """
    left = {i: jump_n_sample - 1 for i in range(jump_length, steps + 1, jump_length)}
    i, walk = 0, [0]
    while i < steps:
        i += 1
        walk.append(i)
        if left.get(i, 0) > 0:
            left[i] -= 1
            i -= jump_length
            walk.append(i)
    return walk


def repaint_calls(steps: int, jump_length: int, jump_n_sample: int) -> int:
    """RePaint's model calls for these settings (the +1 moves of :func:`repaint_walk`)."""
    return steps + (steps // jump_length) * (jump_n_sample - 1) * jump_length


def run_repaint(ctx: EditContext) -> torch.Tensor:
    n = ctx.steps
    j = ctx.options["jump_length"]
    j = min(2, n) if j is None else check_int("jump_length", j, 1, n)
    r = check_int("jump_n_sample", ctx.options["jump_n_sample"], 1, 100)
    scheduler = ctx.scheduler()
    timesteps = [*scheduler.timesteps.tolist(), -1]  # position i -> its timestep; the last: clean data
    y, fill = ctx.x.float(), ctx.mask.bool()
    x = ctx.noise(y)
    walk = repaint_walk(n, j, r)
    for a, b in zip(walk, walk[1:], strict=False):
        if b == a + 1:  # one denoising step, the known region first set to the original noised to t
            t = timesteps[a]
            x = torch.where(fill, x, noised(scheduler, y, ctx.noise(y), t))
            x = scheduler.step(ctx.predict(x, t), t, x, generator=ctx.generators)
        else:  # a jump back from position a to b: the forward process from t_a to t_b, fresh noise
            ratio = scheduler.alpha_bar(timesteps[b]) / scheduler.alpha_bar(timesteps[a])
            x = math.sqrt(ratio) * x + math.sqrt(1 - ratio) * ctx.noise(x)
            scheduler.reset()  # a multistep sampler's history is of another branch now
    ctx.info.update(method="repaint", jump_length=j, jump_n_sample=r)
    return torch.where(fill, x.clamp(-1, 1), y)


TASKS = (
    EditTask(
        "inpaint",
        run_repaint,
        options=("jump_length", "jump_n_sample"),
        description="fill the mask's white pixels (RePaint: known pixels replaced at every step, resampling jumps)",
        defaults={"jump_length": None, "jump_n_sample": 5},
        mask=True,
        sampler="ddpm",
    ),
    EditTask(
        "inpaint-fast",
        run_repaint,
        options=("jump_length", "jump_n_sample"),
        description="inpaint with a quarter of the model calls (RePaint on 10 steps, 3 samples: 30 calls)",
        defaults={"jump_length": None, "jump_n_sample": 3},
        mask=True,
        sampler="ddpm",
        steps=10,
    ),
)
