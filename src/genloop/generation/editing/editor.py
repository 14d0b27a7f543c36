"""The front door of editing: ``pipe.edit(images, task=...)`` for a diffusion pipeline.

It does, once for every task: look the task up and refuse options it does not take; read and check the
inputs and masks (:mod:`~genloop.generation.editing.inputs`); convert them to the model's channels and
size; run the task in batches, image ``i`` with its own generator seeded ``seed + i`` (so an image edits the
same alone or in a batch); put the result back at each input's own size, with the known pixels of a masked
task put back exactly there too; and write the recipe (task, settings, seed, model calls and the sha256 of
every input and mask), as every generation carries one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import ConfigError
from ...systems import models
from ..pipelines import ImageOutput, moderate_images
from . import inputs as io
from .base import EditContext
from .tasks import check_channels, check_options, get_task


@dataclass
class EditOutput(ImageOutput):
    """An edit's results. ``tensors``: (N, C, S, S) at the model's size; ``full_size[i]``: image i at its
    input's own size (C, H_i, W_i), the model-size result resized back with PIL's bicubic filter and, for a
    masked task, the input's known pixels put back exactly; ``inputs``/``masks``: what the model was given (at
    its size); ``originals``/``original_masks``: the inputs (in the model's channels) and masks at their size."""

    full_size: list[torch.Tensor] = field(default_factory=list)
    inputs: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    originals: list[torch.Tensor] = field(default_factory=list)
    original_masks: list[torch.Tensor] | None = None
    names: list[str] = field(default_factory=list)

    def recipe_of(self, i: int) -> dict[str, Any]:
        r = super().recipe_of(i)
        for key in ("input_sha256", "mask_sha256", "input_size"):
            if key in r:
                r[key] = r[key][i]
        r["input_name"] = self.names[i]
        return r


def diffusion_families() -> list[str]:
    return [name for name in models.names() if getattr(models[name], "diffusion", False)]


def refusal(task: str, info: dict[str, Any]) -> ConfigError:
    """The one line a pipeline without a diffusion model answers ``edit`` with (an unknown task's name first)."""
    get_task(task)
    return ConfigError(
        f"task {task} needs a diffusion run (family {', '.join(diffusion_families())}); "
        f"run {info['run_id']} is {info['model']}"
    )


def edit(
    pipe: Any,
    images: Any,
    task: str,
    mask: Any = None,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    class_label: int | Sequence[int] | None = None,
    guidance: float | None = None,
    batch_size: int = 64,
    **task_options: Any,
) -> EditOutput:
    """See :meth:`genloop.generation.pipelines.DiffusionPipeline.edit`."""
    spec = get_task(task)
    options = check_options(spec, task_options)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if spec.mask and mask is None:
        raise ConfigError(f"task {task} needs a mask (white = fill, black = keep)")
    if not spec.mask and mask is not None:
        raise ConfigError(f"task {task} takes no mask (tasks with a mask: {', '.join(_masked())})")
    system, cfg = pipe.system, pipe.system.config
    sources = io.load_images(images)
    masks, mask_hashes = io.load_masks(mask, sources) if spec.mask else (None, None)
    n, size, channels = len(sources), system.spec.image_size, system.spec.channels
    check_channels(spec, channels, pipe.info["run_id"])
    labels = None if class_label is None else pipe.labels(n, class_label)
    if guidance is not None and labels is None:
        if not system.conditional:
            raise ConfigError(f"guidance needs a class-conditional model; run {pipe.info['run_id']} is unconditional")
        raise ConfigError("guidance needs class_label: the class to steer the edit towards")
    guidance = cfg.guidance if guidance is None else float(guidance)
    if spec.own_sampler is not None:
        if sampler is not None:
            raise ConfigError(f"task {task} uses its own update ({spec.own_sampler}), not a sampler; leave out sampler")
        sampler = spec.own_sampler
    else:
        sampler = sampler or spec.sampler or cfg.sampler
        system.make_scheduler(sampler)  # an unknown sampler is one line before any work
    steps = (spec.steps or cfg.sampling_steps) if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= system.schedule.num_train_timesteps:
        raise ConfigError(f"steps must be between 1 and {system.schedule.num_train_timesteps}, got {steps!r}")
    factor = 1 if spec.input_scale is None else options[spec.input_scale]
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1 or size % factor:
        raise ConfigError(
            f"{spec.input_scale} must be a whole number dividing the model's image size ({size}), got {factor!r}"
        )

    originals = [io.to_channels(s.pixels, channels) for s in sources]
    x = torch.stack([io.resize(o, size // factor, size // factor) for o in originals])
    m = None if masks is None else torch.stack([io.resize_mask(mk, size) for mk in masks]).float()
    out, info, calls = [], {}, 0
    device = pipe.device
    with torch.no_grad():
        for i in range(0, n, batch_size):
            rows = slice(i, min(i + batch_size, n))
            ctx = EditContext(
                system=system,
                x=x[rows].to(device),
                mask=None if m is None else m[rows].to(device),
                labels=None if labels is None else labels[rows].to(device),
                generators=[torch.Generator().manual_seed(seed + j) for j in range(rows.start, rows.stop)],
                steps=steps,
                sampler=sampler,
                guidance=guidance,
                options=dict(options),
            )
            result = spec.run(ctx)
            if result.shape != (ctx.batch_size, channels, size, size):
                raise RuntimeError(f"task {task} returned {tuple(result.shape)} for input {tuple(ctx.x.shape)}")
            out.append(result.float().cpu().clamp(-1, 1))
            info, calls = ctx.info, ctx.model_calls
    tensors = torch.cat(out)
    settings: dict[str, Any] = {
        "kind": "edit",
        "task": task,
        "sampler": sampler,
        "sampling_steps": steps,
        **{k: v for k, v in options.items() if v is not None},
        **info,
        "model_calls": calls,  # per image: each call denoises the whole batch once
        "input_sha256": [s.sha256 for s in sources],
        "input_size": [list(s.size) for s in sources],
        "model_size": size,
        **({"input_model_size": size // factor} if factor != 1 else {}),
        "resize": "PIL bicubic (masks: box, any white)",
    }
    if mask_hashes is not None:
        settings["mask_sha256"] = mask_hashes
    if labels is not None:
        settings["class_labels"] = labels.tolist()
        settings["guidance"] = guidance
    output = EditOutput(
        tensors,
        pipe.recipe(seed=seed, n=n, **settings),
        labels,
        inputs=x,
        masks=m,
        originals=originals,
        original_masks=masks,
        names=[s.name for s in sources],
    )
    moderate_images(output)
    for i, (o, s) in enumerate(zip(originals, sources, strict=True)):
        back = io.resize(output.tensors[i], *(factor * d for d in s.size))
        if masks is not None and output.moderation.get(i, {}).get("action") != "block":
            back = torch.where(masks[i], back, o)  # the known pixels, exactly, at the input's own size
        output.full_size.append(back)
    return output


def _masked() -> list[str]:
    from .tasks import EDIT_TASKS

    return sorted(name for name, t in EDIT_TASKS.items() if t.mask)
