"""The editing tasks a diffusion run can do: ``EDIT_TASKS`` maps a task name to its :class:`EditTask`.

The contract (:mod:`genloop.generation.editing.base`):

- ``EditTask(name, run, options, description, defaults, mask, sampler, steps)``: ``run(ctx) -> images``;
  ``options`` the names of the task's own keyword options (``pipe.edit(..., strength=0.6)``,
  ``--option strength=0.6``), ``defaults`` their defaults; ``mask=True`` if it needs a mask; ``sampler`` and
  ``steps`` its defaults for those (None: the model's).
- ``run`` gets an :class:`EditContext` whose ``x`` is the input at the model's size and channels, (N, C, S, S)
  floats in [-1, 1] on the model's device, with ``mask`` (N, 1, S, S) (1 = fill), ``labels``, one generator per
  image (seed + i), ``steps``, ``sampler``, ``guidance`` and ``options`` (defaults filled in). It calls the model
  through ``ctx.predict(x, t)`` (counted), draws noise with ``ctx.noise(like)``, and returns a tensor shaped
  like ``ctx.x``, clamped by the caller to [-1, 1]. It validates its own options (one line, ConfigError) and puts
  what the recipe should say in ``ctx.info``.
- The front door (:func:`genloop.generation.editing.editor.edit`) does the rest once for all tasks: reading,
  checking, converting and resizing inputs and masks, refusing unknown options, batching, the recipe with
  the inputs' sha256, resizing back, and putting the known pixels back at the input's size.

A new task is one module holding ``TASKS = (EditTask(...),)`` plus its line below.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from . import img2img, inpaint, restore
from .base import EditContext, EditTask

EDIT_TASKS: dict[str, EditTask] = {}
for _module in (inpaint, img2img, restore):  # one line per task module
    for _task in _module.TASKS:
        if _task.name in EDIT_TASKS:
            raise ValueError(f"edit task '{_task.name}' is registered twice")
        EDIT_TASKS[_task.name] = _task


def get_task(name: str) -> EditTask:
    """The task called ``name``, or one line listing the known ones."""
    if name not in EDIT_TASKS:
        raise ConfigError(f"unknown edit task '{name}'; known: {', '.join(sorted(EDIT_TASKS))}")
    return EDIT_TASKS[name]


def check_options(task: EditTask, given: dict[str, object]) -> dict[str, object]:
    """``given`` over the task's defaults; an option the task does not take is one line naming the ones it does."""
    unknown = sorted(k for k in given if k not in task.options)
    if unknown:
        takes = ", ".join(task.options) if task.options else "none"
        raise ConfigError(f"task {task.name} takes no option {', '.join(unknown)}; its options: {takes}")
    return {**{k: task.defaults.get(k) for k in task.options}, **given}


def _kind(value: object) -> str:
    """An option's type for a form, from its default (None: a number the task works out itself)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return "text" if isinstance(value, str) else "number"


def check_channels(task: EditTask, channels: int | None, run_id: str) -> None:
    """One line when the run's model makes images of other channels than the task needs (colorize: RGB)."""
    if task.channels is not None and channels is not None and channels != task.channels:
        need = f"task {task.name} needs a model of {task.channels}-channel images"
        raise ConfigError(f"{need}; run {run_id} makes {channels}-channel images")


def describe_tasks(channels: int | None = None) -> list[dict[str, Any]]:
    """The tasks a diffusion run of ``channels``-channel images can do (None: every task), as its ``/v1/models``
    descriptor lists them (``edit_tasks``) for the studio's Edit tab: name and description, whether it needs a
    mask, takes a sampler, has default steps of its own, and its options with their defaults (None: worked out
    by the task) and types."""
    return [
        {
            "name": t.name,
            "description": t.description,
            "mask": t.mask,
            "sampler": t.own_sampler is None,  # a task with its own update (DDRM) refuses a sampler
            "steps": t.steps,
            "input_scale": t.input_scale,
            "options": [{"name": k, "default": t.defaults.get(k), "type": _kind(t.defaults.get(k))} for k in t.options],
        }
        for t in EDIT_TASKS.values()
        if t.channels is None or channels is None or t.channels == channels
    ]


__all__ = ["EDIT_TASKS", "EditContext", "EditTask", "check_channels", "check_options", "describe_tasks", "get_task"]
