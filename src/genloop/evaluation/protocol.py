"""How ``genloop eval`` scores a run: the image protocol, and the choice between it and the text one.

An image run is scored on samples drawn with seeds apart from ``genloop generate``'s, against held-out real
images, every metric beside its real-data floor (:func:`~genloop.evaluation.suite.evaluate_images`); a text
run goes to :mod:`genloop.evaluation.text_eval`. Either way the result is written to ``eval/`` and its
headline numbers to the run's summary, so ``genloop runs list`` and ``genloop compare`` can show them.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__, distributed
from ..config import from_dict
from ..data import DataConfig, ImageDataset, load_dataset
from ..data.image_io import save_png
from ..errors import ConfigError
from ..generation import sharding
from ..generation.pipelines import load_pipeline
from ..modalities import modalities
from ..progress import Listener
from ..runs import RunStore
from ..serialization import write_json
from .backbones import features_tag
from .memorization import closest_pairs_grid
from .suite import evaluate_images


def feature_extractor(
    dataset: ImageDataset, features: str, weights: str | Path | None, device: str, progress: bool
) -> Any:
    """The yardstick: GenLoop's reference net for the dataset, Inception-v3 (a local weights file, or the
    standard one downloaded once into the cache), or a local Hugging Face vision model (``hf:PATH``)."""
    from .features import get_feature_extractor

    if features == "ref":
        if weights is not None:
            raise ConfigError("--weights goes with --features inception; the reference net is trained by GenLoop")
        return get_feature_extractor(dataset, device=device, progress=progress)
    if features == "inception":
        from .inception import load_inception

        return load_inception(weights, device=device)
    if features.startswith("hf:") and len(features) > 3:
        if weights is not None:
            raise ConfigError("--weights goes with --features inception; hf:PATH names the model folder itself")
        from .backbones import load_hf_backbone

        return load_hf_backbone(features[3:], device=device)
    raise ConfigError(f"unknown --features '{features}'; valid: ref, inception, hf:PATH (a local Hugging Face folder)")


def evaluate_run(
    run_id: str,
    n: int = 2000,
    seed: int = 0,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool | Listener = False,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    eta: float | None = None,
    checkpoint: str = "last",
    features: str = "ref",
    weights: str | Path | None = None,
    watermarked: bool = False,
) -> dict[str, Any]:
    """:func:`genloop.evaluate`, as the run's modality scores it: a text run goes to
    :func:`~genloop.evaluation.text_eval.evaluate_text`; an image run's ``n`` samples are scored against
    held-out real images: FID, KID, IS, precision/recall, density/coverage, conditional accuracy and per-class
    FID, memorisation — each beside its real-data floor.

    Writes ``eval/metrics.json`` (``eval/metrics_<tag>.json`` for Inception or ``hf:PATH``, see
    :func:`~genloop.evaluation.backbones.features_tag`; a copy per checkpoint in ``eval/by_checkpoint/``) and
    ``eval/closest_pairs.png`` (the samples nearest to a training image, beside that image).

    The samples scored are the pipeline's tensors, never watermarked, unless ``watermarked`` (image runs): then
    each is marked as generation marks its PNG (:func:`genloop.safety.image_watermark.mark_tensors`) and the
    result goes to ``eval/metrics_<features>-watermarked.json``, leaving the run's own metrics alone.

    ``progress``: True prints each phase on standard error; a callable (:data:`genloop.progress.Listener`) is
    told each phase and sampling step instead (the studio's evaluation jobs), where the modality reports them.
    """
    if n < 2 or n > 100_000:
        raise ConfigError(f"--n must be between 2 and 100000, got {n}")
    device = sharding.join(device)
    store = RunStore(runs_dir)
    run = store.get(run_id)
    t0 = time.perf_counter()
    pipe = load_pipeline(run.dir, device, checkpoint)
    if not modalities[pipe.modality].can_shard:
        sharding.refuse(f"{pipe.modality} evaluation")
    extra: dict[str, Any] = {}
    if watermarked:
        if not modalities[pipe.modality].can_score_watermarked:
            raise ConfigError(f"--watermarked applies to image runs; run {run.id} is a {pipe.modality} run")
        extra["watermarked"] = True
    return modalities[pipe.modality].evaluate(  # type: ignore[no-any-return]
        store,
        run,
        pipe,
        n,
        seed,
        t0,
        device=device,
        progress=progress,
        sampler=sampler,
        steps=steps,
        guidance=guidance,
        eta=eta,
        checkpoint=checkpoint,
        features=features,
        weights=weights,
        **extra,
    )


def evaluate_image_run(
    store: RunStore,
    run: Any,
    pipe: Any,
    n: int,
    seed: int,
    t0: float,
    device: str = "cpu",
    progress: bool | Listener = False,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    eta: float | None = None,
    checkpoint: str = "last",
    features: str = "ref",
    weights: str | Path | None = None,
    watermarked: bool = False,
) -> dict[str, Any]:
    """The image protocol of :func:`evaluate_run` (the image modality's ``evaluate``).

    Under torchrun the ranks share the sampling (:func:`~genloop.generation.sharding.sample_images`) and rank 0
    scores the gathered samples, which are the single-process samples tensor for tensor, so every metric equals
    the single-process one; only rank 0 writes, and the other ranks return an empty dict."""
    from ..progress import Phases

    # each phase is said as it starts (eval takes minutes); the feature net says itself when it trains, so a
    # bad --features or missing weights stays a one-line error with nothing printed before it
    listener = progress if callable(progress) else None
    phase = Phases(progress is True and distributed.is_main(), listener=listener if distributed.is_main() else None)
    prompted = getattr(pipe, "takes_prompt", False)  # text to image: sampled from held-out captions
    if prompted:
        sharding.refuse("text-to-image evaluation")
    if distributed.is_main():  # the yardstick (trained and cached on first use) is needed where the scoring is
        phase("the data and the reference network", say=False)
        dataset = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
        extractor = feature_extractor(dataset, features, weights, device, progress is True)
    prompt_options: dict[str, Any] = {}
    if prompted:
        from .text_image import eval_prompts

        prompt_options["prompt"] = eval_prompts(dataset, n, seed)
    phase(f"sampling {n} images")
    bar = phase.steps("sampling") if not sharding.sharded() else None
    t_sample = time.perf_counter()
    with bar or contextlib.nullcontext():
        # seeds apart from `generate`'s
        sampled = sharding.sample_images(
            pipe,
            n=n,
            seed=1_000_000 + seed,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            eta=eta,
            **prompt_options,
            **({"progress": bar} if bar is not None else {}),
        )
    sampling_seconds = time.perf_counter() - t_sample
    if sampled is None:
        return {}
    out = sampled
    if watermarked:  # as generation writes them: 8 bits, marked
        from ..safety.image_watermark import mark_tensors

        out.tensors = mark_tensors(out.tensors)
    # the result names the sampler's step count "steps", as it has since the first results were written
    recipe = {
        ("steps" if k == "sampling_steps" else k): v
        for k, v in out.recipe.items()
        if k in ("sampler", "sampling_steps", "guidance", "eta")
    }
    result: dict[str, Any] = {
        "run_id": run.id,
        "model": pipe.info["model"],
        "step": pipe.info["step"],
        "checkpoint": checkpoint,
        "checkpoint_sha256": pipe.info["checkpoint_sha256"],
        **recipe,
        "sampling_ms_per_image": round(1000 * sampling_seconds / n, 3),
        "sampling_device": str(pipe.device),
        **({"watermarked": True} if watermarked else {}),
    }
    phase(f"scoring {n} samples against the held-out images")
    labels, digit_grammar = out.labels, False
    if prompted:
        from .text_image import grammar_applies, requested_labels

        digit_grammar = grammar_applies(dataset)  # the prompts name classes: the classifier checks them
        labels = requested_labels(prompt_options["prompt"]) if digit_grammar else None
    result.update(evaluate_images(out.tensors, dataset, extractor, seed=seed, labels=labels))
    if prompted:
        from .text_image import text_image_metrics

        phase("prompt adherence (measured attributes, the contrastive image-text scorer)")
        result.update(text_image_metrics(out.tensors, prompt_options["prompt"], dataset, digit_grammar))
    pairs = [(p["sample"], p["train"]) for p in result.get("memorization", {}).get("closest_pairs", [])]
    if pairs:
        grid = closest_pairs_grid(out.tensors, dataset.float_images("train"), torch.tensor(pairs), k=16)
        save_png(
            run.files.closest_pairs,
            grid,
            {"run_id": run.id, "kind": "closest_pairs", "layout": "sample | nearest training image"},
            upscale=4,
        )
    real, labels = dataset.get("test")
    if len(real):
        phase("the model's own metrics on the test split")
        torch.manual_seed(seed)
        keep = 1000  # bounds like IWAE cost k decoder passes per image: a fixed subset keeps eval time flat
        test = dataset.float_images("test")[:keep].to(pipe.device)
        family = pipe.system.evaluate(test, None if labels is None else labels[:keep].to(pipe.device))
        result.update({k: round(v, 4) for k, v in family.items()})
        if family:
            result["family_metrics_split"] = "test" if len(real) <= keep else f"test[:{keep}]"
    phase.end()
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["genloop_version"] = __version__
    tag = features_tag(features)
    if watermarked:  # beside the run's own metrics, never in their place
        write_json(run.files.eval / f"metrics_{tag}-watermarked.json", result)
        return result
    write_json(run.files.eval_metrics(tag), result)
    # one copy per checkpoint, so that `genloop eval --agreement` can pair people's ratings of an earlier
    # checkpoint with that checkpoint's metrics after metrics.json has moved on
    write_json(run.files.eval / "by_checkpoint" / f"{tag}-{str(result['checkpoint_sha256'])[:16]}.json", result)
    if features == "ref":
        headline = {
            k: result[k]
            for k in (
                "fid",
                "fid_floor",
                "kid",
                "precision",
                "recall",
                "class_accuracy",
                "attribute_accuracy",
                "clip_score",
                "is",
                "elbo_nats",
                "iwae_nats",
            )
            if k in result
        }
        store.update(run, summary=headline)
    return result
