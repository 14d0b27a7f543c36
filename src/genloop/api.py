"""GenLoop's Python API: the whole loop as functions. The CLI and the server are thin clients of this.

    import genloop
    run = genloop.train("dcgan", data="digits", steps=500)
    pipe = genloop.load(run.id)
    out = pipe(n=16, seed=0)            # out.images: PIL images, out.tensors: floats in [-1, 1]
    genloop.evaluate(run.id, n=2000)    # FID/KID/IS beside the real-data floor

Each function is a facade: it names the public contract (arguments, defaults, docstring) and hands the
work to the package that owns it — recipe layering to :mod:`genloop.resolve`, training runs to
:mod:`genloop.orchestrate`, writing samples to :mod:`genloop.generation.writer`, scoring to
:mod:`genloop.evaluation.protocol` and :mod:`genloop.evaluation.sweep`. Those are imported on first call:
a client that only loads pipelines never imports the training or evaluation stacks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import apply_overrides, from_dict
from .data import DataConfig, load_dataset
from .errors import ConfigError, GenLoopError
from .generation.pipelines import load_pipeline
from .resolve import ResolvedConfig, resolve_config
from .runs import Run, RunStore
from .systems import models


def train(
    model: str | None = None,
    data: str | None = None,
    config: str | Path | dict | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    steps: int | None = None,
    time_budget: float | None = None,
    seed: int | None = None,
    runs_dir: str | Path | None = None,
    progress: bool = True,
    on_run: Callable[[Run], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    recipe: Any = None,
) -> Run:
    """Train a new run. Everything is validated (config, data, model) before the run directory exists.

    ``on_run`` is called with the new run before training starts (a job server records its id there, so
    a crash resumes this run instead of starting another); ``should_stop`` is polled between steps.

    ``recipe="auto"`` looks at ``data`` and chooses the family (when ``model`` is None), image size,
    augmentation and budget settings; a recipe name applies that recipe (:mod:`genloop.recipes`). The config
    file and ``overrides`` still win over its settings; ``run.info["recipe"]`` says what it chose and why.
    """
    from .orchestrate import train_run

    return train_run(
        model, data, config, overrides, steps, time_budget, seed, runs_dir, progress, on_run, should_stop, recipe
    )


def resume(
    run_id: str,
    steps: int | None = None,
    time_budget: float | None = None,
    runs_dir: str | Path | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> Run:
    """Continue a run from its last checkpoint, exactly where it stopped."""
    from .orchestrate import resume_run

    return resume_run(run_id, steps, time_budget, runs_dir, progress, should_stop)


# --- inference ------------------------------------------------------------------------------------
def load(run: str | Path, device: str = "cpu", runs_dir: str | Path | None = None, checkpoint: str = "last") -> Any:
    """A generation pipeline for a run id (or a run directory): ``pipe(n=16, seed=0, ...)``.

    ``checkpoint``: "last" (the weights at the end of training) or "best" (the best quick evaluation,
    for runs trained with ``train.eval_every``). Diffusion runs get a pipeline whose ``steps``,
    ``sampler``, ``guidance`` and ``eta`` are chosen per call; language models a
    :class:`~genloop.generation.text_pipeline.TextPipeline` (``pipe(prompt=..., stream=True)``).
    """
    return load_pipeline(RunStore(runs_dir).get(str(run)).dir, device=device, checkpoint=checkpoint)


def generate(
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
    sign: bool = True,
    watermark: bool | None = None,
    extras: bool = False,
    progress: Callable[[int, int], None] | None = None,
    prompt: str | list[str] | None = None,
) -> list[Path]:
    """Write ``n`` images (each PNG carrying its recipe) and their grid; a conditional model's grid has one class
    per column. ``prompt`` (text-to-image runs, e.g. ``ddpm-text``): what to draw, one text for all images or one
    per image, stored in each image's recipe; None or "" is the unconditional model. ``extras``: also an
    interpolation grid and, for models with an encoder, reconstructions of test images (for a diffusion model the
    interpolation is 60 more sampling runs, so it is off by default).
    ``progress(done, total)`` is called as sampling advances (diffusion: after each denoising step).
    ``sign`` (default): each PNG also carries a signed provenance manifest, written beside it as
    ``<file>.manifest.json`` too (:func:`verify` checks it); ``sign=False`` writes none. ``watermark`` (default: on,
    unless inside ``watermarking(False)``): each PNG carries the invisible mark of its generation id
    (:mod:`genloop.safety.image_watermark`); ``watermark=False``: none."""
    from .generation.writer import generate_images
    from .safety.image_watermark import enabled as watermark_enabled
    from .safety.image_watermark import watermarking
    from .safety.provenance import signing

    with signing(sign), watermarking(watermark_enabled() if watermark is None else watermark):
        return generate_images(
            run_id,
            n,
            seed,
            out,
            runs_dir,
            device,
            class_label,
            sampler,
            steps,
            guidance,
            eta,
            checkpoint,
            extras,
            progress,
            prompt,
        )


def generate_text(
    run_id: str,
    prompt: str = "",
    n: int = 1,
    seed: int = 0,
    out: str | Path | None = None,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    checkpoint: str = "last",
    on_piece: Any = None,
    sign: bool = True,
    **sampling: Any,
) -> tuple[Any, Path]:
    """Complete ``prompt`` ``n`` times with a language-model run; append each completion with its recipe to
    ``<out>/texts.jsonl`` (default ``<run>/generated``). ``sampling``: max_tokens, temperature, top_k, top_p,
    repetition_penalty, stop, num_beams. With ``on_piece`` (and ``n == 1``) each piece of text is passed to it
    as it is generated (the CLI streams to the terminal this way). Returns (TextOutput, path of texts.jsonl).
    ``sign`` (default): each record also carries its signed provenance manifest; ``sign=False``: none."""
    from .generation.writer import generate_texts
    from .safety.provenance import signing

    with signing(sign):
        return generate_texts(run_id, prompt, n, seed, out, runs_dir, device, checkpoint, on_piece, **sampling)


def generate_music(
    run_id: str,
    n: int = 4,
    seed: int = 0,
    out: str | Path | None = None,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    checkpoint: str = "last",
    sign: bool = True,
    watermark: bool | None = None,
    **options: Any,
) -> list[Path]:
    """Write ``n`` pieces of a music run: ``sample_<seed>.mid`` (recipe inside), ``.mid.json``, ``.wav`` and a
    piano-roll ``.png`` each, in ``out`` (default ``<run>/generated``). ``options``: bars, prompt_midi,
    prompt_bars, temperature, top_p, top_k, key, time_signature, style, max_tokens. ``sign`` (default): each
    MIDI file also carries a signed provenance manifest, written as ``.mid.manifest.json`` too. ``watermark``
    (default: on): the velocities carry the generation id's hash (:mod:`genloop.safety.music_watermark`)."""
    from .generation.writer import generate_music as write
    from .safety.image_watermark import enabled as watermark_enabled
    from .safety.image_watermark import watermarking
    from .safety.provenance import signing

    with signing(sign), watermarking(watermark_enabled() if watermark is None else watermark):
        return write(run_id, n, seed, out, runs_dir, device, checkpoint, **options)


def edit(
    run_id: str,
    images: Any,
    task: str = "inpaint",
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
    sign: bool = True,
    watermark: bool | None = None,
    **options: Any,
) -> list[Path]:
    """Edit images with a diffusion run as the prior (``task``: inpaint, inpaint-fast, img2img, ...; ``options``:
    the task's own, e.g. ``strength=0.6``) and write, per image, the result at the input's size, at the model's
    size and a before/after PNG into ``out`` (default ``<run>/generated/edits``), each carrying its recipe (task,
    settings, seed, model calls, the input's and mask's sha256), watermarked and signed as :func:`generate`'s.
    In memory instead: ``load(run).edit(images, task=...)``."""
    from .generation.writer import edit_images
    from .safety.image_watermark import enabled as watermark_enabled
    from .safety.image_watermark import watermarking
    from .safety.provenance import signing

    with signing(sign), watermarking(watermark_enabled() if watermark is None else watermark):
        return edit_images(
            run_id,
            images,
            task,
            mask,
            seed,
            out,
            runs_dir,
            device,
            steps,
            sampler,
            class_label,
            guidance,
            checkpoint,
            **options,
        )


def verify(path: str | Path, runs_dir: str | Path | None = None) -> Any:
    """Check a generated file's signed provenance: a PNG, a ``.mid``, a ``texts.jsonl`` or a ``.manifest.json``
    sidecar. Returns a :class:`~genloop.safety.provenance.VerifyResult` whose ``status`` is ``valid`` (signature
    good, content unchanged, key trusted), ``tampered`` (``detail`` names the field), ``unsigned``,
    ``unknown key`` or ``error`` (not a file it can read); ``bool(result)`` is True only when valid. Never
    raises for a bad file. For an image (a PNG, or a JPEG/WebP/... copy) or a MIDI file, ``result.watermark``
    says what its invisible watermark names, signed or stripped: ``watermark: generation <id> (run <run>)`` by
    the run store's watermark index, or ``no watermark``."""
    from .safety.provenance import verify_file

    return verify_file(path, runs_dir)


def modality(run_id: str, runs_dir: str | Path | None = None) -> str:
    """The name of the registered modality a run's model generates (``genloop.modalities``)."""
    run = RunStore(runs_dir).get(run_id)
    return models[run.config["model"]["name"]].modality


def text_conditional(run_id: str, runs_dir: str | Path | None = None) -> bool:
    """Whether a run's model family draws images from a text prompt (``genloop generate --prompt``)."""
    run = RunStore(runs_dir).get(run_id)
    return bool(models[run.config["model"]["name"]].text_conditional)


def evaluate(
    run_id: str,
    n: int = 2000,
    seed: int = 0,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool | Callable[[dict[str, Any]], None] = False,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    eta: float | None = None,
    checkpoint: str = "last",
    features: str = "ref",
    weights: str | Path | None = None,
    watermarked: bool = False,
) -> dict[str, Any]:
    """Score ``n`` samples against held-out real images: FID, KID, IS, precision/recall, density/coverage,
    conditional accuracy and per-class FID, memorisation — each beside its real-data floor.

    Writes ``eval/metrics.json`` (``eval/metrics_inception.json`` for the Inception backend) and
    ``eval/closest_pairs.png`` (the samples nearest to a training image, beside that image). The samples are
    scored unmarked; ``watermarked=True`` scores them with the image watermark generation puts in (the cost of
    the mark), written to ``eval/metrics_<features>-watermarked.json`` only. ``progress``: True prints each phase
    on standard error; a callable is handed ``{"phase", "step", "total", "unit"}`` as the work advances instead.
    """
    from .evaluation.protocol import evaluate_run

    return evaluate_run(
        run_id,
        n,
        seed,
        runs_dir,
        device,
        progress,
        sampler,
        steps,
        guidance,
        eta,
        checkpoint,
        features,
        weights,
        watermarked,
    )


def evaluate_restoration(
    run_id: str,
    task: str,
    n: int = 200,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    checkpoint: str = "last",
    progress: bool = False,
) -> dict[str, Any]:
    """Restoration on ``n`` held-out images: degrade them (``task``: inpaint, upscale, deblur, denoise, colorize;
    ``options``: ``fraction``, ``scale``, ``blur_sigma``, ``sigma`` and ``pipe.edit``'s own settings), restore them
    with the run's ``pipe.edit`` and with classical baselines, and score every method: PSNR, SSIM, PSNR in the hole
    (inpaint), class kept by the reference classifier (labelled data), FID, time per image.

    Writes ``eval/restoration_<task>.json`` and a before/after picture ``eval/restoration_<task>.png``.
    """
    from .evaluation.restoration import evaluate_restoration_run

    return evaluate_restoration_run(run_id, task, n, options, seed, runs_dir, device, checkpoint, progress)


def sweep(
    run_id: str,
    samplers: list[str] | tuple[str, ...] = ("ddim", "dpmpp-2m", "ddpm"),
    steps: list[int] | tuple[int, ...] = (5, 10, 20, 50),
    n: int = 500,
    seed: int = 0,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    checkpoint: str = "last",
    progress: bool = False,
) -> dict[str, Any]:
    """Steps-vs-FID across samplers for a diffusion run, with sampling time per image.

    Writes ``eval/sampler_sweep.json`` and ``eval/sampler_sweep.png``. Every point uses the same seeds, so
    the curves differ only by sampler and step count.
    """
    from .evaluation.sweep import sweep_run

    return sweep_run(run_id, samplers, steps, n, seed, runs_dir, device, checkpoint, progress)


def report(run_id: str, runs_dir: str | Path | None = None) -> Path:
    """Write the run's self-contained ``report.html``."""
    from .evaluation.report import write_report

    run = RunStore(runs_dir).get(run_id)
    return write_report(run.dir)


def compare(run_ids: list[str], out: str | Path = "compare", runs_dir: str | Path | None = None) -> dict[str, Any]:
    """One table (rows of headline metrics) and one plot across evaluated runs of any families."""
    from .evaluation.compare import compare_runs

    if not run_ids:
        raise ConfigError("name at least one run to compare")
    store = RunStore(runs_dir)
    runs = [store.get(r) for r in run_ids]
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    rows, json_path, png_path = compare_runs(runs, out_dir)
    return {"rows": rows, "json": json_path, "png": png_path}


def dataset_info(
    name: str,
    image_size: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    text: bool = False,
    music: bool = False,
) -> dict[str, Any]:
    """What a dataset holds. ``text=True`` (or a built-in text corpus name) prepares it as a text corpus
    (documents, tokens per split, vocabulary) with the tokenizer the overrides choose; ``music=True`` (or a
    built-in music corpus name) reads it as music (pieces per split, styles, meters, skipped pieces)."""
    data = apply_overrides({"data": {"name": name}}, [o if o.startswith("data.") else f"data.{o}" for o in overrides])[
        "data"
    ]
    from .modalities.music.sources import CORPORA
    from .modalities.text import TextDataConfig, builtin_corpora, load_text_dataset

    if music or name in CORPORA:
        if image_size is not None:
            raise ConfigError("--image-size applies to image datasets, not music")
        from collections import Counter

        from .modalities.music.dataset import MusicDataConfig, load_music_dataset

        ds = load_music_dataset(from_dict(MusicDataConfig, data, "data."))
        meters = Counter("{}/{}".format(*p.time_signature) for p in ds.pieces)
        return {
            "name": ds.name,
            "pieces": len(ds.pieces),
            "notes": sum(p.num_notes for p in ds.pieces),
            **{f"{k}_pieces": len(v) for k, v in ds.splits.items()},
            "melody_groups": ds.meta["groups"],  # pieces sharing a tune are split together
            "styles": sorted({p.style for p in ds.pieces}),
            "time_signatures": dict(meters.most_common(6)),
            "transpose": ds.transpose,
            "skipped": len(ds.skipped),
            "source_hash": ds.source_hash[:16],
        }

    if text or name in builtin_corpora():
        if image_size is not None:
            raise ConfigError("--image-size applies to image datasets, not text")
        return load_text_dataset(from_dict(TextDataConfig, data, "data.")).info()
    if image_size is not None:
        data["image_size"] = image_size
    return load_dataset(from_dict(DataConfig, data, "data.")).info()


__all__ = [
    "train",
    "resume",
    "load",
    "generate",
    "generate_text",
    "modality",
    "generate_music",
    "edit",
    "verify",
    "evaluate",
    "evaluate_restoration",
    "sweep",
    "report",
    "compare",
    "resolve_config",
    "ResolvedConfig",
    "dataset_info",
    "GenLoopError",
]
