"""Generating to files: a run's samples written where people look for them, each carrying its recipe.

:class:`~genloop.generation.pipelines.ImagePipeline` and friends return tensors and text; this module turns
one call into the files ``genloop generate`` promises (PNGs with their recipe, grids, on request an interpolation, a
``texts.jsonl`` that only ever grows by whole lines, music as ``sample_<seed>.mid`` with its recipe inside plus
``.mid.json``, ``.wav`` and a piano-roll ``.png``), so the CLI, the API and the studio write the same thing.

Every output is signed unless :func:`genloop.safety.provenance.enabled` says no (``--no-sign``, ``sign=False``):
a PNG and a MIDI file carry their manifest inside and as ``<file>.manifest.json``; each ``texts.jsonl`` record
carries its own under ``"manifest"``. Every PNG is also watermarked (:mod:`genloop.safety.image_watermark`,
before signing) unless :func:`genloop.safety.image_watermark.enabled` says no (``--no-watermark``,
``watermark=False``); the marks are indexed in the run store so ``genloop verify`` can name the generation.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..config import from_dict
from ..data import DataConfig, load_dataset
from ..data.image_io import make_grid, save_png
from ..errors import ConfigError
from ..modalities import modalities
from ..run_layout import RunLayout
from ..runs import RunStore
from ..safety import image_watermark, provenance
from ..serialization import atomic_write
from . import sharding
from .pipelines import load_pipeline


def _indexed(fn: Any) -> Any:
    """``fn`` with the watermarks it writes recorded in the index of its ``runs_dir``'s run store."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        runs_dir = sig.bind(*args, **kwargs).arguments.get("runs_dir")
        with image_watermark.indexing_to(runs_dir):
            return fn(*args, **kwargs)

    return wrapper


@_indexed
def generate_images(
    run_id: str,
    n: int = 64,
    seed: int = 0,
    out: str | Path | None = None,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    class_label: int | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    eta: float | None = None,
    checkpoint: str = "last",
    extras: bool = False,
    progress: Any = None,
    prompt: str | list[str] | None = None,
) -> list[Path]:
    """Write ``n`` images (each PNG carrying its recipe) and their grid. A conditional model's grid has one class
    per column. With ``extras`` also an interpolation grid (60 more images: for a diffusion model that is 60
    more full sampling runs) and, for models with an encoder, reconstructions of test images. ``progress(done,
    total)`` is called as sampling advances (diffusion: after each denoising step).

    Under torchrun the samples are shared out across the ranks (:mod:`~genloop.generation.sharding`): the same
    files, byte for byte when unsigned and unmarked (a signature carries a fresh generation id; the sharded grid is
    drawn from the marked sample files), plus
    ``index.jsonl``; samples already written by an interrupted run of the same
    command are kept. Rank 0 returns the paths; the other ranks return an empty list."""
    device = sharding.join(device)
    limit = sharding.MAX_SHARDED if sharding.sharded() else 10_000
    if n < 1 or n > limit:
        raise ConfigError(f"--n must be between 1 and {limit}, got {n}")
    if steps is not None and not 1 <= steps <= 10_000:
        raise ConfigError(f"--steps must be between 1 and 10000, got {steps}")
    run = RunStore(runs_dir).get(run_id)
    pipe = load_pipeline(run.dir, device, checkpoint)
    out_dir = Path(out) if out else run.files.generated
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    nrow = pipe.num_classes if pipe.num_classes and class_label is None else 8
    signed = provenance.enabled()
    mark = {"watermark": image_watermark.enabled()}
    options = {"sampler": sampler, "steps": steps, "guidance": guidance, "eta": eta}
    if getattr(pipe, "takes_prompt", False):
        options["prompt"] = prompt  # a text-to-image run: None is the empty prompt (the unconditional model)
    elif prompt is not None:
        raise ConfigError(
            f"--prompt: run {run.id} ({pipe.info['model']}) is not conditioned on text; train ddpm-text on captioned "
            "data for text to image"
        )
    if sharding.sharded():
        samples, recipe = sharding.write_samples(pipe, out_dir, n, seed, class_label, options)
        if not distributed.is_main():
            return []
        # the grid from the files: PNG bytes decode to tensors that encode back to the same bytes
        grid = make_grid(sharding.load_samples(samples[: sharding.GRID_MAX]), nrow=nrow)
        paths = [save_png(out_dir / RunLayout.GENERATED_GRID, grid, recipe, upscale=4, sign=signed, **mark), *samples]
    else:
        output = pipe(
            n=n, seed=seed, class_label=class_label, batch_size=sharding.chunk_size(), progress=progress, **options
        )
        grid = make_grid(output.tensors, nrow=nrow)
        paths = [save_png(out_dir / RunLayout.GENERATED_GRID, grid, output.recipe, upscale=4, sign=signed, **mark)]
        for i, image in enumerate(output.tensors):
            paths.append(
                save_png(out_dir / f"sample_{seed + i:06d}.png", image, output.recipe_of(i), sign=signed, **mark)
            )
    if extras:
        paths += _write_extras(pipe, run, out_dir, seed, signed, mark)
    return paths


def _write_extras(pipe: Any, run: Any, out_dir: Path, seed: int, signed: bool, mark: dict[str, Any]) -> list[Path]:
    """``generate --extras``: an interpolation grid, and reconstructions of test images (models with an encoder)."""
    lerp = pipe.interpolate(rows=6, steps=10, seed=seed)
    lerp_grid = make_grid(lerp.tensors, nrow=10)
    paths = [save_png(out_dir / "interpolation.png", lerp_grid, lerp.recipe, upscale=4, sign=signed, **mark)]
    if hasattr(pipe.system, "reconstruct"):
        dataset = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
        real, labels = dataset.get("test")
        real, labels = dataset.float_images("test")[:32], None if labels is None else labels[:32]
        if len(real):
            recon = pipe.reconstruct(real, labels)
            pairs = torch.stack([real, recon], 1).flatten(0, 1)  # real, reconstruction, real, ...
            paths.append(
                save_png(
                    out_dir / "reconstructions.png",
                    make_grid(pairs, nrow=16),
                    pipe.recipe(kind="reconstructions", split="test"),
                    upscale=4,
                    sign=signed,
                    **mark,
                )
            )
    return paths


def generate_texts(
    run_id: str,
    prompt: str = "",
    n: int = 1,
    seed: int = 0,
    out: str | Path | None = None,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    checkpoint: str = "last",
    on_piece: Any = None,
    **sampling: Any,
) -> tuple[Any, Path]:
    """Complete ``prompt`` ``n`` times with a language-model run; append each completion with its recipe to
    ``<out>/texts.jsonl`` (default ``<run>/generated``). ``sampling``: max_tokens, temperature, top_k, top_p,
    repetition_penalty, stop, num_beams. With ``on_piece`` (and ``n == 1``) each piece of text is passed to it
    as it is generated (the CLI streams to the terminal this way). Returns (TextOutput, path of texts.jsonl).

    More than :func:`~genloop.generation.sharding.chunk_size` completions are drawn chunk by chunk. Under
    torchrun the chunks are shared out (:func:`~genloop.generation.sharding.write_texts`; nothing streams):
    the same texts as one process, appended by rank 0 in item order; completions an interrupted run of the
    same command recorded are reused. Rank 0 returns the output; the other ranks return (None, path)."""
    if n < 1 or n > 1000:
        raise ConfigError(f"--n must be between 1 and 1000, got {n}")
    device = sharding.join(device)
    run = RunStore(runs_dir).get(run_id)
    pipe = load_pipeline(run.dir, device, checkpoint)
    if not modalities[pipe.modality].prompted:
        raise ConfigError(
            f"run {run.id} is an {pipe.modality} model ({pipe.info['model']}); "
            "--prompt and the text controls apply to text models"
        )
    out_dir = Path(out) if out else run.files.generated
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    path = out_dir / RunLayout.GENERATED_TEXTS
    if sharding.sharded():
        output = sharding.write_texts(pipe, out_dir, prompt, n, seed, sampling)
        if output is None:
            return None, path
    elif on_piece is not None and n == 1 and sampling.get("num_beams", 1) == 1:
        output = pipe.stream_to(on_piece, prompt, seed, **sampling)
    else:
        output = sharding.sample_texts(pipe, prompt, n, seed, **sampling)
    previous = path.read_text(encoding="utf-8") if path.is_file() else ""
    records = [{"text": t, "recipe": output.recipe_of(i)} for i, t in enumerate(output.texts)]
    if provenance.enabled():  # each record carries its signed manifest: the JSONL is the texts' sidecar
        for rec in records:
            rec["manifest"] = provenance.sign(rec["recipe"], provenance.text_sha256(rec["text"]))
    lines = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    with atomic_write(path, "w") as f:  # appended by rewriting: a crash never leaves a half line
        f.write(previous + lines)
    return output, path


MUSIC_OPTIONS = (
    "bars",
    "prompt_midi",
    "prompt_bars",
    "temperature",
    "top_p",
    "top_k",
    "key",
    "time_signature",
    "style",
    "max_tokens",
)


@_indexed
def generate_music(
    run_id: str,
    n: int = 4,
    seed: int = 0,
    out: str | Path | None = None,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    checkpoint: str = "last",
    **options: Any,
) -> list[Path]:
    """Write ``n`` pieces of a music run as ``sample_<seed>.mid`` (recipe inside), ``.mid.json``, ``.wav`` and a
    piano-roll ``.png`` in ``out`` (default ``<run>/generated``). ``options``: the pipeline's own (bars,
    prompt_midi, prompt_bars, temperature, top_p, top_k, key, time_signature, style, max_tokens). Nothing is
    written unless every piece was made (a bad ``prompt_midi`` is a one-line DataError).

    More than :func:`~genloop.generation.sharding.chunk_size` pieces are drawn chunk by chunk. Under torchrun
    the chunks are shared out (:func:`~genloop.generation.sharding.write_music`): the same files, byte for
    byte, plus ``index.jsonl``; pieces an interrupted run of the same command finished are kept. Rank 0
    returns the paths; the other ranks return an empty list."""
    if n < 1 or n > 1000:
        raise ConfigError(f"--n must be between 1 and 1000, got {n}")
    other = sorted(k for k, v in options.items() if v is not None and k not in MUSIC_OPTIONS)
    if other:
        raise ConfigError(f"{', '.join(other)}: not a music generation option (valid: {', '.join(MUSIC_OPTIONS)})")
    device = sharding.join(device)
    run = RunStore(runs_dir).get(run_id)
    out_dir = Path(out) if out else run.files.generated
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    pipe = load_pipeline(run.dir, device, checkpoint)
    given = {k: v for k, v in options.items() if v is not None}
    if sharding.sharded():
        return sharding.write_music(pipe, out_dir, n, seed, given)
    output = sharding.sample_music(pipe, n, seed, **given)
    return list(output.save(out_dir))


@_indexed
def edit_images(
    run_id: str,
    images: Any,
    task: str,
    mask: Any = None,
    seed: int = 0,
    out: str | Path | None = None,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    steps: int | None = None,
    sampler: str | None = None,
    class_label: int | None = None,
    guidance: float | None = None,
    checkpoint: str = "last",
    **options: Any,
) -> list[Path]:
    """Edit ``images`` with a diffusion run (:meth:`~genloop.generation.pipelines.DiffusionPipeline.edit`) and write,
    per image ``i`` (named after its file, else ``input<i>``), in ``out`` (default ``<run>/generated/edits``):
    ``<name>_<task>_<seed+i>.png`` (the result at the input's size), ``..._<S>px.png`` (at the model's size) and
    ``..._compare.png`` (input | masked input | result, side by side, enlarged to at least 128 px high). Every PNG
    carries its recipe, and is watermarked and signed as ``generate``'s are."""
    run = RunStore(runs_dir).get(run_id)
    out_dir = Path(out) if out else run.files.generated / "edits"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    pipe = load_pipeline(run.dir, device, checkpoint)
    if getattr(pipe, "edit", None) is None:  # a text or music run
        from .editing.editor import refusal

        raise refusal(task, pipe.info)
    output = pipe.edit(
        images,
        task=task,
        mask=mask,
        seed=seed,
        steps=steps,
        sampler=sampler,
        class_label=class_label,
        guidance=guidance,
        **options,
    )
    signed = provenance.enabled()
    mark = {"watermark": image_watermark.enabled()}
    size = int(output.tensors.shape[-1])
    paths = []
    for i, result in enumerate(output.full_size):
        recipe = output.recipe_of(i)
        stem = out_dir / f"{output.names[i]}_{task}_{seed + i}"
        paths.append(save_png(f"{stem}.png", result, {**recipe, "output": "input size"}, sign=signed, **mark))
        paths.append(
            save_png(f"{stem}_{size}px.png", output.tensors[i], {**recipe, "output": "model size"}, sign=signed, **mark)
        )
        original = output.originals[i]
        if original.shape != result.shape:  # super-resolution: the input shown enlarged (nearest) beside it
            original = torch.nn.functional.interpolate(original[None], size=result.shape[1:], mode="nearest")[0]
        panels = [original]
        if output.original_masks is not None:
            panels.append(_masked_view(original, output.original_masks[i]))
        panels.append(result)
        upscale = max(1, -(-128 // int(result.shape[1])))  # small images enlarged (nearest) to be seen
        paths.append(
            save_png(
                f"{stem}_compare.png",
                make_grid(torch.stack(panels), nrow=len(panels)),
                {**recipe, "output": "compare: " + " | ".join(["input", "masked input", "result"][-len(panels) :])},
                upscale=upscale,
                sign=signed,
                **mark,
            )
        )
    return paths


def _masked_view(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``image`` with its pixels to fill shown as a grey checkerboard (cells of 1/16 of the shorter side)."""
    h, w = image.shape[1:]
    cell = max(1, min(h, w) // 16)
    yy, xx = torch.meshgrid(torch.arange(h) // cell, torch.arange(w) // cell, indexing="ij")
    checker = ((yy + xx) % 2).float() - 0.5  # -0.5 / 0.5: two greys
    return torch.where(mask, checker.expand_as(image), image)
