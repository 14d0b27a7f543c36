"""Restoration tasks for the editing front door: super-resolution, deblurring, denoising and colourisation,
each a known linear degradation inverted by DDRM (:mod:`.inverse`) with the trained DDPM as the prior.

They take the degraded image (for ``upscale``, the low-resolution one: the front door resizes an input to the
model's size divided by ``scale``, and the result comes back ``scale`` times the input's own size) and the
degradation's settings; ``noise`` is the known noise standard deviation of the input in [-1, 1] pixel units
(a saved 8-bit image has about 0.004 from rounding alone). DDRM uses its own update, so these tasks take no
``sampler``; ``steps`` is DDRM's (20 by default), one model call each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .base import EditContext, EditTask, check_int
from .inverse import DEFAULT_ETA, DEFAULT_ETA_B, DEFAULT_STEPS, colorize, deblur, denoise, upscale

_COMMON = ("noise", "eta", "eta_b")
_DEFAULTS = {"noise": 0.0, "eta": DEFAULT_ETA, "eta_b": DEFAULT_ETA_B}


def _adapter(fn: Callable[..., torch.Tensor], own: tuple[str, ...]) -> Callable[[EditContext], torch.Tensor]:
    def run(ctx: EditContext) -> torch.Tensor:
        options: dict[str, Any] = {k: ctx.options[k] for k in own}
        if "scale" in options:
            options["scale"] = check_int("scale", options["scale"], 2)
        out = fn(
            ctx.system,
            ctx.x,
            **options,
            generators=ctx.generators,
            steps=ctx.steps,
            labels=ctx.labels,
            guidance=ctx.guidance,
        )
        ctx.model_calls += ctx.steps
        ctx.info.update(method="ddrm", **{k: ctx.options[k] for k in own})
        return out

    return run


def _task(
    name: str,
    fn: Callable[..., torch.Tensor],
    own: dict[str, Any],
    description: str,
    common: tuple[str, ...] = _COMMON,
    **kw: Any,
) -> EditTask:
    names = tuple(own) + tuple(k for k in common if k not in own)
    return EditTask(
        name,
        _adapter(fn, names),
        options=names,
        description=description,
        defaults={**{k: _DEFAULTS[k] for k in names if k in _DEFAULTS}, **own},
        sampler=None,
        own_sampler="ddrm",
        steps=DEFAULT_STEPS,
        **kw,
    )


TASKS = (
    _task(
        "upscale",
        upscale,
        {"scale": 2},
        "super-resolution by --scale (block averaging inverted by DDRM)",
        input_scale="scale",
    ),
    _task("deblur", deblur, {"blur_sigma": 1.0}, "remove a Gaussian blur of --blur-sigma pixels (DDRM)"),
    _task(
        "denoise",
        denoise,
        {"sigma": 0.1},
        "remove noise of standard deviation --sigma ([-1, 1] units; DDRM)",
        common=("eta", "eta_b"),  # sigma is the noise
    ),
    _task("colorize", colorize, {}, "colour a grey image (its luminance kept; DDRM)", channels=3),
)
