"""``genloop edit RUN --input photo.png --task inpaint --mask mask.png``: edit images with a diffusion run.

Thin: the task's options come from its explicit flags (``--strength``, ``--jump-length``, ...) or from
``--option key=value`` (any task's option, so a new task needs no new flag), and the registry of tasks
(:data:`genloop.generation.editing.tasks.EDIT_TASKS`) refuses an option the task does not take. The files are
written by :func:`genloop.api.edit`: the result at the input's size, at the model's size, and a before/after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import ConfigError

# explicit flags -> the option names tasks declare
FLAG_OPTIONS = {
    "--strength": "strength",
    "--jump-length": "jump_length",
    "--jump-n-sample": "jump_n_sample",
    "--scale": "scale",
    "--sigma": "sigma",
    "--blur-sigma": "blur_sigma",
}


def parse_value(text: str) -> Any:
    """A ``--option`` value: an integer, a float, true/false, null, or else the text itself."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# the edit's own settings (flags of their own, or none): never a task option
RESERVED = (
    "seed", "steps", "sampler", "class_label", "guidance", "mask", "task", "out", "device", "checkpoint",
    "sign", "watermark", "runs_dir", "images", "batch_size",
)  # fmt: skip


def parse_options(pairs: list[str], flags: dict[str, Any]) -> dict[str, Any]:
    """``--option key=value`` pairs and the explicit flags given, as one dict of task options."""
    options = {FLAG_OPTIONS[f]: v for f, v in flags.items() if v is not None}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key.isidentifier():
            raise ConfigError(f"--option wants key=value (e.g. strength=0.6), got {pair!r}")
        if key in RESERVED:
            raise ConfigError(f"--option {key}: not a task option but a setting of edit itself (see --help)")
        if key in options:
            raise ConfigError(f"option {key} is given twice")
        options[key] = parse_value(value)
    return options


def edit_command(
    run_id: str = typer.Argument(..., help="A diffusion run id (or a unique prefix, or the run's folder)."),
    input_: list[Path] = typer.Option(
        ..., "--input", "-i", help="An image to edit (PNG, JPEG, ...; any size); repeat for several."
    ),
    task: str = typer.Option(
        "inpaint",
        "--task",
        help="inpaint (RePaint), inpaint-fast (RePaint in 30 model calls), img2img (SDEdit), or any registered "
        "task (an unknown name lists them).",
    ),
    mask: list[Path] = typer.Option(
        [], "--mask", "-m", help="Masked tasks: white = fill, black = keep; its input's size. One, or one per --input."
    ),
    seed: int = typer.Option(0, "--seed", help="Image i uses seed + i."),
    steps: int | None = typer.Option(
        None, "--steps", help="Sampler timesteps (default: the task's, else the model's; inpaint-fast: 10)."
    ),
    sampler: str | None = typer.Option(
        None, "--sampler", help="ddpm, ddim or dpmpp-2m (default: the task's, else the model's)."
    ),
    class_label: int | None = typer.Option(
        None, "--class-label", "--class", help="Conditional models: steer towards this class (default: none)."
    ),
    guidance: float | None = typer.Option(
        None, "--guidance", help="Classifier-free guidance scale (with --class-label)."
    ),
    strength: float | None = typer.Option(
        None, "--strength", help="img2img: how far to noise the input, in (0, 1] (default 0.6)."
    ),
    jump_length: int | None = typer.Option(
        None, "--jump-length", help="inpaint: steps between RePaint's jumps back (default 2)."
    ),
    jump_n_sample: int | None = typer.Option(
        None,
        "--jump-n-sample",
        help="inpaint: times each stretch is resampled (default 5, inpaint-fast 3; 1: no resampling).",
    ),
    scale: int | None = typer.Option(None, "--scale", help="upscale: the factor (a task option)."),
    sigma: float | None = typer.Option(None, "--sigma", help="denoise: the noise's sigma (a task option)."),
    blur_sigma: float | None = typer.Option(None, "--blur-sigma", help="deblur: the blur's sigma (a task option)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Any task option as key=value (repeatable)."),
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder (default: <run>/generated/edits)."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last, or best."),
    no_sign: bool = typer.Option(False, "--no-sign", help="Write no signed provenance manifest."),
    no_watermark: bool = typer.Option(False, "--no-watermark", help="Put no invisible watermark in the PNGs."),
    runs_dir: Path | None = typer.Option(
        None, "--runs-dir", help="Run store folder (default: $GENLOOP_RUNS_DIR or ./runs)."
    ),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Edit images with a diffusion run as the prior, without retraining: fill a mask (inpaint), redraw
    (img2img), or any registered task. Writes, per input, the result at its size, at the model's size and a
    before/after PNG (input | masked input | result), each with its recipe (task, settings, seed, model calls, the
    input's and mask's sha256), signed and watermarked as `generate`'s are."""
    from .. import api
    from .main import say

    flags = {
        "--strength": strength,
        "--jump-length": jump_length,
        "--jump-n-sample": jump_n_sample,
        "--scale": scale,
        "--sigma": sigma,
        "--blur-sigma": blur_sigma,
    }
    options = parse_options(option, flags)
    paths = api.edit(
        run_id,
        [str(p) for p in input_],
        task,
        mask=([str(p) for p in mask] if len(mask) > 1 else str(mask[0])) if mask else None,
        seed=seed,
        out=out_dir,
        runs_dir=runs_dir,
        device=device,
        steps=steps,
        sampler=sampler,
        class_label=class_label,
        guidance=guidance,
        checkpoint=checkpoint,
        sign=not no_sign,
        watermark=not no_watermark,
        **options,
    )
    from ..data.image_io import read_recipe

    recipe = read_recipe(paths[0]) or {}
    say(
        f"wrote {len(paths)} PNGs to {paths[0].parent} ({task}, {recipe.get('model_calls')} model calls per image; "
        f"before/after: {paths[2].name})"
    )
