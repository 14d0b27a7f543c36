"""Image-to-image with SDEdit (Meng et al. 2022): noise the input part of the way, then denoise it.

Noise destroys detail before it destroys layout, so an image noised to a middle timestep and denoised by the
model keeps its overall composition while the model redraws the details in the style it learned. ``strength``
in (0, 1] says how far: the sampler's ``steps`` timesteps span the whole noise range, and only the last
``max(1, round(steps · strength))`` of them are run, starting from the input noised (by the forward process)
to the first of those. Near 0 the output stays close to the input; 1 starts from almost pure noise and keeps
little but the coarsest layout. A class-conditional model can be steered towards ``class_label`` with
classifier-free ``guidance`` (without a class it denoises unconditionally).
"""

from __future__ import annotations

import torch

from ...errors import ConfigError
from .base import EditContext, EditTask, noised


def check_strength(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"strength must be in (0, 1] (near 0: keep the input, 1: start from noise), got {value!r}")
    return float(value)


def run_sdedit(ctx: EditContext) -> torch.Tensor:
    strength = check_strength(ctx.options["strength"])
    scheduler = ctx.scheduler()
    timesteps = scheduler.timesteps.tolist()
    k = max(1, round(ctx.steps * strength))
    start = timesteps[len(timesteps) - k]
    x = noised(scheduler, ctx.x.float(), ctx.noise(ctx.x), start)
    for t in timesteps[len(timesteps) - k :]:
        x = scheduler.step(ctx.predict(x, t), t, x, generator=ctx.generators)
    ctx.info.update(method="sdedit", strength=strength, start_timestep=start)
    return x


TASKS = (
    EditTask(
        "img2img",
        run_sdedit,
        options=("strength",),
        description="redraw the image with the model (SDEdit: noise it to --strength, denoise)",
        defaults={"strength": 0.6},
    ),
)
