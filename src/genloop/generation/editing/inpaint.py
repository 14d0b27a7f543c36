"""Inpainting with a trained diffusion model as the prior: fill the white part of the mask, keep the rest.

Two tasks, both without retraining and both ending with the known pixels put back exactly
(``where(mask, result, input)``):

``inpaint`` — RePaint (Lugmayr et al. 2022). At every step the known region of ``x_t`` is replaced by the
original noised to ``t`` by the forward process, and the model denoises the whole image one step (by default
with DDPM's posterior step; any sampler works). Replacing alone leaves seams: the model only sees the known
region through the noise, so the fill does not agree with it. RePaint's *resampling* fixes that: after every
``jump_length`` steps it jumps back up ``jump_length`` noise levels with the forward process
(``q(x_{t+j} | x_t)``, fresh noise) and denoises them again, ``jump_n_sample - 1`` times per jump point, so the
fill is re-drawn several times against the known region. It costs about ``jump_n_sample`` times the model calls
of plain sampling: ``steps + (steps // jump_length) * (jump_n_sample - 1) * jump_length``.

``inpaint-fast`` — replacement in the clean-image estimate (the inpainting case of DDNM, Wang et al. 2023):
at every step the model's x0 estimate has its known pixels set to the original, and the sampler steps towards
that corrected estimate. The next ``x_t`` is then consistent with the known region by construction, so it needs
no resampling: one model call per step (``steps`` calls), with the deterministic DDIM by default.

Both record their method and ``model_calls`` in the recipe, so the cost of each is on every output.
"""

from __future__ import annotations

import math

import torch

from .base import EditContext, EditTask, check_int, noised, output_for_x0


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
    j = min(10, n) if j is None else check_int("jump_length", j, 1, n)
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


def run_x0_replacement(ctx: EditContext) -> torch.Tensor:
    scheduler = ctx.scheduler()
    y, fill = ctx.x.float(), ctx.mask.bool()
    x = ctx.noise(y)
    for t in scheduler.timesteps.tolist():
        x0 = torch.where(fill, scheduler.predict_x0(ctx.predict(x, t), t, x), y)
        x = scheduler.step(output_for_x0(scheduler, x0, t, x), t, x, generator=ctx.generators)
    ctx.info.update(method="x0-replacement")
    return torch.where(fill, x.clamp(-1, 1), y)


TASKS = (
    EditTask(
        "inpaint",
        run_repaint,
        options=("jump_length", "jump_n_sample"),
        description="fill the mask's white pixels (RePaint: known pixels replaced at every step, resampling jumps)",
        defaults={"jump_length": None, "jump_n_sample": 10},
        mask=True,
        sampler="ddpm",
    ),
    EditTask(
        "inpaint-fast",
        run_x0_replacement,
        description="fill the mask's white pixels in one model call per step (known pixels set in the x0 estimate)",
        mask=True,
        sampler="ddim",
    ),
)
