"""GenLoop's Python API: the whole loop as functions. The CLI and the server are thin clients of this.

    import genloop
    run = genloop.train("dcgan", data="digits", steps=500)
    pipe = genloop.load(run.id)
    out = pipe(n=16, seed=0)            # out.images: PIL images, out.tensors: floats in [-1, 1]
    genloop.evaluate(run.id, n=2000)    # FID/KID/IS beside the real-data floor
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__
from .config import apply_overrides, from_dict, load_yaml, to_dict
from .data import DataConfig, ImageBatches, ImageDataset, load_dataset
from .errors import ConfigError, GenLoopError, NotFoundError, TrainingDiverged
from .generation.pipelines import ImagePipeline, load_pipeline
from .runs import Run, RunStore
from .serialization import read_json, write_json
from .systems import DataSpec, System, models
from .training import TrainConfig, Trainer
from .training.config import SELECTABLE_METRICS
from .training.engine import pick_device

SECTIONS = ("model", "data", "train")


@dataclass
class ResolvedConfig:
    system_cls: type[System]
    model: Any
    data: Any  # DataConfig (images) or TextDataConfig (text), by the family's modality
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"model": to_dict(self.model), "data": to_dict(self.data), "train": to_dict(self.train)}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(
    model: str,
    data: str | None = None,
    config: str | Path | dict | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    steps: int | None = None,
    time_budget: float | None = None,
    seed: int | None = None,
) -> ResolvedConfig:
    """Layer the settings: family defaults < config file < ``--set`` overrides < explicit arguments."""
    cls = models[model]
    layered: dict[str, Any] = {"model": {"name": model}, "data": {}, "train": dict(cls.train_defaults)}
    if config is not None:
        file_cfg = config if isinstance(config, dict) else load_yaml(config)
        named = file_cfg["model"].get("name") if isinstance(file_cfg.get("model"), dict) else None
        if named and named != model:
            raise ConfigError(f"the config file is for model '{named}' but the command trains '{model}'")
        layered = _merge(layered, file_cfg)
    layered = apply_overrides(layered, list(overrides))
    for key, section in layered.items():
        if key not in SECTIONS:
            raise ConfigError(f"unknown config section '{key}'; valid sections: {', '.join(SECTIONS)}")
        if not isinstance(section, dict):
            raise ConfigError(f"config section '{key}' must be a mapping of settings, got {section!r}")
    if layered["model"].get("name", model) != model:
        raise ConfigError(f"model.name cannot be changed with --set; train another model with `genloop train NAME`")
    if data is not None:
        layered["data"]["name"] = data
    if steps is not None:
        layered["train"]["steps"] = steps
        if time_budget is None:
            layered["train"]["time_budget"] = None
    if time_budget is not None:
        layered["train"]["time_budget"] = time_budget
        if steps is None:
            layered["train"]["steps"] = None
    if seed is not None:
        layered["train"]["seed"] = seed
    return ResolvedConfig(
        cls,
        from_dict(cls.Config, layered["model"], "model."),
        from_dict(_data_config_cls(cls), layered["data"], "data."),
        from_dict(TrainConfig, layered["train"], "train."),
    )


def _data_config_cls(cls: type[System]) -> type:
    if cls.modality == "text":
        from .data.text import TextDataConfig

        return TextDataConfig
    return DataConfig


def _load_data(rc: ResolvedConfig) -> Any:
    """The prepared dataset: images, or a tokenised corpus (with the tokenizer a pretrained model brings)."""
    if rc.system_cls.modality == "text":
        from .data.text import load_text_dataset

        return load_text_dataset(rc.data, tokenizer=rc.system_cls.tokenizer_source(rc.model))
    return load_dataset(rc.data)


def _spec_of(rc: ResolvedConfig, dataset: Any) -> DataSpec:
    if rc.system_cls.modality == "text":
        return DataSpec(vocab_size=dataset.tokenizer.vocab_size)
    return _spec(dataset)


def _spec(dataset: ImageDataset) -> DataSpec:
    return DataSpec(dataset.channels, dataset.image_size, dataset.num_classes)


def train(
    model: str,
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
) -> Run:
    """Train a new run. Everything is validated (config, data, model) before the run directory exists.

    ``on_run`` is called with the new run before training starts (a job server records its id there, so
    a crash resumes this run instead of starting another); ``should_stop`` is polled between steps.
    """
    rc = resolve_config(model, data, config, overrides, steps, time_budget, seed)
    store = RunStore(runs_dir)  # checked before the (slower) data loading
    dataset = _load_data(rc)
    spec = _spec_of(rc, dataset)
    torch.manual_seed(rc.train.seed)  # the initial weights are part of what the seed decides
    system = rc.system_cls(rc.model, spec)
    run = store.create(model, rc.data.name, {**rc.to_dict(), "data_spec": dataclasses.asdict(spec)}, rc.train.seed)
    if system.modality == "text":  # the tokenizer travels with the weights
        system.tokenizer = dataset.tokenizer
        dataset.tokenizer.save(run.dir / "tokenizer")
    if on_run is not None:
        on_run(run)
    return _fit(store, run, system, dataset, rc, resume=False, progress=progress, should_stop=should_stop)


def resume(
    run_id: str,
    steps: int | None = None,
    time_budget: float | None = None,
    runs_dir: str | Path | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> Run:
    """Continue a run from its last checkpoint, exactly where it stopped.

    A run killed before its first checkpoint restarts from step 0 with its own id, seed and config: the
    same run an uninterrupted training would have made.
    """
    store = RunStore(runs_dir)
    run = store.get(run_id)
    store.ensure_free(run)
    fresh = not run.last_checkpoint.is_file()
    if fresh and int(run.info.get("step", 0)) > 0:
        raise NotFoundError(f"run {run.id} has no checkpoint to resume from ({run.last_checkpoint} is missing)")
    cfg = run.config
    train_cfg = dict(cfg["train"])
    if steps is not None:
        train_cfg["steps"] = steps
    if time_budget is not None:
        train_cfg["time_budget"] = time_budget
        if steps is None and train_cfg.get("steps") is not None and run.info.get("step", 0) >= train_cfg["steps"]:
            train_cfg["steps"] = None  # a new time budget on a run that met its step target: train on
    cfg = {**cfg, "train": train_cfg}
    rc = resolve_config(cfg["model"]["name"], config={k: cfg[k] for k in SECTIONS})
    done = int(run.info.get("step", 0))
    if rc.train.steps is not None and done >= rc.train.steps:
        raise ConfigError(f"run {run.id} already reached its {rc.train.steps} steps; pass --steps N (N > {done}) or --time-budget to train further")
    dataset = _load_data(rc)
    torch.manual_seed(rc.train.seed)  # as train() does: a fresh restart draws the same initial weights
    system = rc.system_cls(rc.model, DataSpec(**cfg["data_spec"]))
    if system.modality == "text":
        from .data.text import load_tokenizer

        if not (run.dir / "tokenizer").is_dir():  # killed before train() saved it: the data's is the same one
            dataset.tokenizer.save(run.dir / "tokenizer")
        system.tokenizer = load_tokenizer(run.dir / "tokenizer")
    if fresh:
        run.discard_progress()
    write_json(run.dir / "config.json", {**cfg, "train": to_dict(rc.train)})
    return _fit(store, run, system, dataset, rc, resume=not fresh, progress=progress, should_stop=should_stop)


def _fit(store: RunStore, run: Run, system: System, dataset: Any, rc: ResolvedConfig, resume: bool, progress: bool,
         should_stop: Callable[[], bool] | None = None) -> Run:
    if system.modality == "text":
        from .data.text import TokenBatches

        batches: Any = TokenBatches(dataset.train, rc.train.batch_size, system.block_size, seed=rc.train.seed)
        evaluator = _text_quick_evaluator(dataset, rc.train) if rc.train.eval_every else None
    else:
        images, labels = dataset.get("train")
        batches = ImageBatches(images, labels, rc.train.batch_size, seed=rc.train.seed, flip=rc.data.flip, shift=rc.data.shift)
        evaluator = _quick_evaluator(dataset, rc.train, progress) if rc.train.eval_every else None
    from .generation.preview import preview_writer

    trainer = Trainer(system, batches, rc.train, run.dir, progress=progress,
                      on_checkpoint=lambda step: store.update(run, step=step), evaluator=evaluator,
                      should_stop=should_stop, preview=preview_writer(run.dir, ema=rc.train.ema_decay is not None))
    if resume:
        trainer.resume(run.last_checkpoint)
    store.mark_running(run, device=str(trainer.device),
                 precision=str(trainer.dtype).replace("torch.", "") if trainer.dtype else "fp32")
    try:
        result = trainer.fit()
    except TrainingDiverged as e:
        store.update(run, status="diverged", error=str(e))
        raise
    except KeyboardInterrupt:
        store.update(run, status="interrupted")
        raise
    except BaseException as e:
        try:
            store.update(run, status="failed", error=f"{type(e).__name__}: {e}")
        except OSError:  # a full disk may refuse run.json too: the error to report is the first one
            pass
        raise
    status = "interrupted" if result.stopped_by == "interrupt" else "finished"
    timings = {"train_seconds": round(trainer.elapsed_before, 2), f"{system.unit}_per_s": round(result.units_per_s, 1)}
    if evaluator is not None:
        timings["eval_seconds"] = round(trainer.eval_seconds, 2)
    store.update(run, status=status, step=result.step, stopped_by=result.stopped_by, timings=timings,
                 **({"best": trainer.best} if trainer.best else {}))
    return run


def _quick_evaluator(dataset: ImageDataset, cfg: TrainConfig, progress: bool) -> Any:
    """What the engine calls every ``train.eval_every`` steps: a small-sample FID/KID/precision/recall
    (and class accuracy for conditional models) of the current EMA weights, on the reference net."""
    from .evaluation import evaluate_images, get_feature_extractor
    from .generation.pipelines import DiffusionPipeline

    extractor = get_feature_extractor(dataset, device=pick_device(cfg.device), progress=progress)

    def quick(system: System) -> dict[str, float]:
        pipe_cls = DiffusionPipeline if system.iterative else ImagePipeline
        out = pipe_cls(system, {"run_id": None, "model": system.config.name})(n=cfg.eval_samples, seed=2_000_000)
        r = evaluate_images(out.tensors, dataset, extractor, seed=0, labels=out.labels,
                            metrics=("fid", "kid", "prdc", "class"))
        return {k: float(r[k]) for k in SELECTABLE_METRICS if k in r}

    return quick


def _text_quick_evaluator(dataset: Any, cfg: TrainConfig) -> Any:
    """Validation loss of the current weights on the first ``train.eval_tokens`` validation tokens, in
    non-overlapping windows of the model's context (nanoGPT's protocol; cheap enough to run often)."""
    from .evaluation.text_metrics import sliding_window_loss

    def quick(system: System) -> dict[str, float]:
        lm = system.causal_lm()
        r = sliding_window_loss(lambda idx: lm(idx), dataset.val, lm.block_size, stride=lm.block_size,
                                max_tokens=cfg.eval_tokens or None, device=next(system.parameters()).device)
        return {"val_loss": float(r["loss"])}

    return quick


# --- inference ------------------------------------------------------------------------------------
def load(run: str | Path, device: str = "cpu", runs_dir: str | Path | None = None, checkpoint: str = "last") -> Any:
    """A generation pipeline for a run id (or a run directory): ``pipe(n=16, seed=0, ...)``.

    ``checkpoint``: "last" (the weights at the end of training) or "best" (the best quick evaluation,
    for runs trained with ``train.eval_every``). Diffusion runs get a pipeline whose ``steps``,
    ``sampler``, ``guidance`` and ``eta`` are chosen per call; language models a
    :class:`~genloop.generation.text_pipeline.TextPipeline` (``pipe(prompt=..., stream=True)``).
    """
    return load_pipeline(RunStore(runs_dir).get(str(run)).dir, device=device, checkpoint=checkpoint)


def generate(run_id: str, n: int = 64, seed: int = 0, out: str | Path | None = None,
             runs_dir: str | Path | None = None, device: str = "cpu", class_label: int | None = None,
             sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
             eta: float | None = None, checkpoint: str = "last") -> list[Path]:
    """Write ``n`` images (each PNG carrying its recipe), a grid and an interpolation grid; models with an
    encoder also get reconstructions of test images. A conditional model's grid has one class per column."""
    from .generation.io import make_grid, save_png

    if n < 1 or n > 10_000:
        raise ConfigError(f"--n must be between 1 and 10000, got {n}")
    if steps is not None and not 1 <= steps <= 10_000:
        raise ConfigError(f"--steps must be between 1 and 10000, got {steps}")
    run = RunStore(runs_dir).get(run_id)
    pipe = load_pipeline(run.dir, device, checkpoint)
    out_dir = Path(out) if out else run.dir / "generated"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    output = pipe(n=n, seed=seed, class_label=class_label, sampler=sampler, steps=steps, guidance=guidance, eta=eta)
    nrow = pipe.num_classes if pipe.num_classes and class_label is None else 8
    paths = [save_png(out_dir / "grid.png", make_grid(output.tensors, nrow=nrow), output.recipe, upscale=4)]
    for i, image in enumerate(output.tensors):
        paths.append(save_png(out_dir / f"sample_{seed + i:06d}.png", image, output.recipe_of(i)))
    lerp = pipe.interpolate(rows=6, steps=10, seed=seed)
    paths.append(save_png(out_dir / "interpolation.png", make_grid(lerp.tensors, nrow=10), lerp.recipe, upscale=4))
    if hasattr(pipe.system, "reconstruct"):
        dataset = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
        real, labels = dataset.get("test")
        real, labels = dataset.float_images("test")[:32], None if labels is None else labels[:32]
        if len(real):
            recon = pipe.reconstruct(real, labels)
            pairs = torch.stack([real, recon], 1).flatten(0, 1)  # real, reconstruction, real, ...
            paths.append(save_png(out_dir / "reconstructions.png", make_grid(pairs, nrow=16),
                                  pipe.recipe(kind="reconstructions", split="test"), upscale=4))
    return paths


def generate_text(run_id: str, prompt: str = "", n: int = 1, seed: int = 0, out: str | Path | None = None,
                  runs_dir: str | Path | None = None, device: str = "cpu", checkpoint: str = "last",
                  on_piece: Any = None, **sampling: Any) -> tuple[Any, Path]:
    """Complete ``prompt`` ``n`` times with a language-model run; append each completion with its recipe to
    ``<out>/texts.jsonl`` (default ``<run>/generated``). ``sampling``: max_tokens, temperature, top_k, top_p,
    repetition_penalty, stop, num_beams. With ``on_piece`` (and ``n == 1``) each piece of text is passed to it
    as it is generated (the CLI streams to the terminal this way). Returns (TextOutput, path of texts.jsonl)."""
    import json

    from .serialization import atomic_write

    run = RunStore(runs_dir).get(run_id)
    pipe = load_pipeline(run.dir, device, checkpoint)
    if getattr(pipe, "modality", "image") != "text":
        raise ConfigError(f"run {run.id} is an image model ({pipe.info['model']}); --prompt and the text controls apply to text models")
    out_dir = Path(out) if out else run.dir / "generated"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    if on_piece is not None and n == 1 and sampling.get("num_beams", 1) == 1:
        output = pipe.stream_to(on_piece, prompt, seed, **sampling)
    else:
        output = pipe(prompt=prompt, n=n, seed=seed, **sampling)
    path = out_dir / "texts.jsonl"
    previous = path.read_text(encoding="utf-8") if path.is_file() else ""
    lines = "".join(json.dumps({"text": t, "recipe": output.recipe_of(i)}, ensure_ascii=False) + "\n"
                    for i, t in enumerate(output.texts))
    with atomic_write(path, "w") as f:  # appended by rewriting: a crash never leaves a half line
        f.write(previous + lines)
    return output, path


def modality(run_id: str, runs_dir: str | Path | None = None) -> str:
    """"image" or "text": what a run's model generates."""
    run = RunStore(runs_dir).get(run_id)
    return models[run.config["model"]["name"]].modality


def _extractor(dataset: ImageDataset, features: str, weights: str | Path | None, device: str, progress: bool) -> Any:
    """The yardstick: GenLoop's reference net for the dataset, or Inception-v3 from a local weights file."""
    from .evaluation import get_feature_extractor

    if features == "ref":
        if weights is not None:
            raise ConfigError("--weights goes with --features inception; the reference net is trained by GenLoop")
        return get_feature_extractor(dataset, device=device, progress=progress)
    if features == "inception":
        if weights is None:
            raise ConfigError("--features inception needs --weights PATH (pt_inception-2015-12-05-6726825d.pth); "
                              "GenLoop never downloads at run time")
        from .evaluation.inception import load_inception

        return load_inception(weights, device=device)
    raise ConfigError(f"unknown --features '{features}'; valid: ref, inception")


def evaluate(run_id: str, n: int = 2000, seed: int = 0, runs_dir: str | Path | None = None,
             device: str = "cpu", progress: bool = False, sampler: str | None = None, steps: int | None = None,
             guidance: float | None = None, eta: float | None = None, checkpoint: str = "last",
             features: str = "ref", weights: str | Path | None = None) -> dict[str, Any]:
    """Score ``n`` samples against held-out real images: FID, KID, IS, precision/recall, density/coverage,
    conditional accuracy and per-class FID, memorisation — each beside its real-data floor.

    Writes ``eval/metrics.json`` (``eval/metrics_inception.json`` for the Inception backend) and
    ``eval/closest_pairs.png`` (the samples nearest to a training image, beside that image).
    """
    from .evaluation import evaluate_images
    from .generation.io import save_png

    if n < 2 or n > 100_000:
        raise ConfigError(f"--n must be between 2 and 100000, got {n}")
    store = RunStore(runs_dir)
    run = store.get(run_id)
    t0 = time.perf_counter()
    pipe = load_pipeline(run.dir, device, checkpoint)
    if getattr(pipe, "modality", "image") == "text":
        if sampler is not None or steps is not None or guidance is not None or eta is not None or features != "ref":
            raise ConfigError("--sampler/--steps/--guidance/--eta/--features apply to image models; a text model is "
                              "scored on validation loss and samples")
        return _evaluate_text(store, run, pipe, n, seed, t0)
    dataset = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
    extractor = _extractor(dataset, features, weights, device, progress)
    t_sample = time.perf_counter()
    out = pipe(n=n, seed=1_000_000 + seed, sampler=sampler, steps=steps, guidance=guidance, eta=eta)  # seeds apart from `generate`'s
    sampling_seconds = time.perf_counter() - t_sample
    recipe = {k: v for k, v in out.recipe.items() if k in ("sampler", "steps", "guidance", "eta")}
    result: dict[str, Any] = {"run_id": run.id, "model": pipe.info["model"], "step": pipe.info["step"],
                              "checkpoint": checkpoint, "checkpoint_sha256": pipe.info["checkpoint_sha256"], **recipe,
                              "sampling_ms_per_image": round(1000 * sampling_seconds / n, 3), "sampling_device": str(pipe.device)}
    result.update(evaluate_images(out.tensors, dataset, extractor, seed=seed, labels=out.labels))
    pairs = [(p["sample"], p["train"]) for p in result.get("memorization", {}).get("closest_pairs", [])]
    if pairs:
        from .evaluation import closest_pairs_grid

        grid = closest_pairs_grid(out.tensors, dataset.float_images("train"), torch.tensor(pairs), k=16)
        save_png(run.dir / "eval" / "closest_pairs.png", grid, {"run_id": run.id, "kind": "closest_pairs",
                                                                 "layout": "sample | nearest training image"}, upscale=4)
    real, labels = dataset.get("test")
    if len(real):
        torch.manual_seed(seed)
        keep = 1000  # bounds like IWAE cost k decoder passes per image: a fixed subset keeps eval time flat
        test = dataset.float_images("test")[:keep].to(pipe.device)
        family = pipe.system.evaluate(test, None if labels is None else labels[:keep].to(pipe.device))
        result.update({k: round(v, 4) for k, v in family.items()})
        if family:
            result["family_metrics_split"] = "test" if len(real) <= keep else f"test[:{keep}]"
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["genloop_version"] = __version__
    name = "metrics.json" if features == "ref" else f"metrics_{features}.json"
    write_json(run.dir / "eval" / name, result)
    if features == "ref":
        headline = {k: result[k] for k in ("fid", "fid_floor", "kid", "precision", "recall", "class_accuracy", "is",
                                           "elbo_nats", "iwae_nats") if k in result}
        store.update(run, summary=headline)
    return result


def _val_documents(dataset: Any) -> list[str]:
    """The held-out documents as text (decoded from the cached validation tokens)."""
    eot = dataset.tokenizer.eot_id
    docs, cur = [], []
    for t in dataset.val.tolist():
        if t == eot:
            if cur:
                docs.append(dataset.tokenizer.decode(cur))
            cur = []
        else:
            cur.append(t)
    if cur:
        docs.append(dataset.tokenizer.decode(cur))
    return docs


# How `genloop eval` scores a text model (recorded in each result): samples are plain ancestral samples
# (temperature 1, no top-k/top-p), so diversity and memorisation describe the model, not a sampler's filter.
TEXT_EVAL = {"max_tokens": 256, "temperature": 1.0, "top_p": 1.0, "eval_tokens": 200_000}


def _evaluate_text(store: RunStore, run: Run, pipe: Any, n: int, seed: int, t0: float) -> dict[str, Any]:
    """Validation loss / perplexity / bits per character and byte, then ``n`` samples scored for diversity
    (distinct-1/2/3, self-BLEU) and memorisation (longest verbatim span in the training text), each beside
    the same statistic of held-out real text (the floor)."""
    from .data.text import TextDataConfig, load_text_dataset
    from .evaluation import text_metrics as tm
    from .serialization import write_text

    cfg = run.config
    cls = models[cfg["model"]["name"]]
    model_cfg = from_dict(cls.Config, cfg["model"], "model.")
    dataset = load_text_dataset(from_dict(TextDataConfig, cfg["data"], "data."), tokenizer=cls.tokenizer_source(model_cfg))
    lm = pipe.system.causal_lm()
    block = lm.block_size
    stride = max(1, block // 2)
    loss = tm.sliding_window_loss(lambda idx: lm(idx), dataset.val, block, stride=stride,
                                  max_tokens=TEXT_EVAL["eval_tokens"], device=pipe.device)
    share = loss["tokens_scored"] / max(len(dataset.val) - 1, 1)  # < 1 when eval_tokens capped the scoring
    result: dict[str, Any] = {
        "run_id": run.id, "model": pipe.info["model"], "step": pipe.info["step"], "checkpoint": pipe.info["checkpoint"],
        "checkpoint_sha256": pipe.info["checkpoint_sha256"], "tokenizer": pipe.tokenizer.kind,
        "val_loss": loss["loss"], "perplexity": loss["perplexity"],
        "bits_per_char": tm.bits_per_unit(loss["loss"], loss["tokens_scored"], max(1, round(dataset.val_chars * share))),
        "bits_per_byte": tm.bits_per_unit(loss["loss"], loss["tokens_scored"], max(1, round(dataset.val_bytes * share))),
        "loss_protocol": {"split": "val", "block_size": block, "stride": stride, "tokens_scored": loss["tokens_scored"],
                          "val_tokens": int(len(dataset.val)), "max_tokens": TEXT_EVAL["eval_tokens"]},
    }
    t_sample = time.perf_counter()
    out = pipe(prompt="", n=n, seed=1_000_000 + seed, max_tokens=TEXT_EVAL["max_tokens"],
               temperature=TEXT_EVAL["temperature"], top_p=TEXT_EVAL["top_p"])
    sample_seconds = time.perf_counter() - t_sample
    texts = out.texts
    n_tokens = sum(len(pipe.tokenizer.encode(t)) for t in texts)
    mean_chars = max(1, round(sum(len(t) for t in texts) / len(texts)))
    corpus = tm.CorpusIndex(dataset.train_text)
    import warnings

    with warnings.catch_warnings(record=True) as caught:  # kept with the result: a floor can be weak
        warnings.simplefilter("always")
        real = tm.text_floor("\n".join(_val_documents(dataset)), corpus, mean_chars, n, seed=seed)
    for name, fn in (("distinct_1", lambda t: tm.distinct_n(t, 1)), ("distinct_2", lambda t: tm.distinct_n(t, 2)),
                     ("distinct_3", lambda t: tm.distinct_n(t, 3)), ("self_bleu", lambda t: tm.self_bleu(t, seed=seed))):
        result[name], result[f"{name}_floor"] = fn(texts), fn(real)
    mem, mem_floor = tm.memorization(texts, corpus), tm.memorization(real, corpus)
    result["memorization"] = mem
    result["copy_rate"], result["copy_rate_floor"] = mem["copy_rate"], mem_floor["copy_rate"]
    result["longest_span_mean"], result["longest_span_mean_floor"] = mem["longest_span_mean"], mem_floor["longest_span_mean"]
    result.update({"n": n, "sample_settings": {k: TEXT_EVAL[k] for k in ("max_tokens", "temperature", "top_p")},
                   "sample_seed": 1_000_000 + seed, "mean_sample_chars": mean_chars,
                   "generation_tokens_per_s": round(n_tokens / max(sample_seconds, 1e-9), 1),
                   "sampling_device": str(pipe.device), "seconds": round(time.perf_counter() - t0, 2),
                   "warnings": [str(w.message) for w in caught], "genloop_version": __version__})
    write_json(run.dir / "eval" / "metrics.json", result)
    write_text(run.dir / "eval" / "samples.txt", "\n\n-----\n\n".join(texts[:20]) + "\n")
    store.update(run, summary={k: result[k] for k in ("val_loss", "perplexity", "bits_per_char", "distinct_2",
                                                      "self_bleu", "copy_rate")})
    return result


def sweep(run_id: str, samplers: list[str] | tuple[str, ...] = ("ddim", "dpmpp-2m", "ddpm"),
          steps: list[int] | tuple[int, ...] = (5, 10, 20, 50), n: int = 500, seed: int = 0,
          runs_dir: str | Path | None = None, device: str = "cpu", checkpoint: str = "last",
          progress: bool = False) -> dict[str, Any]:
    """Steps-vs-FID across samplers for a diffusion run, with sampling time per image.

    Writes ``eval/sampler_sweep.json`` and ``eval/sampler_sweep.png``. Every point uses the same seeds, so
    the curves differ only by sampler and step count.
    """
    from .evaluation import evaluate_images
    from .evaluation.sweep import render_sweep
    from .serialization import atomic_write

    run = RunStore(runs_dir).get(run_id)
    pipe = load_pipeline(run.dir, device, checkpoint)
    if not pipe.system.iterative:
        raise ConfigError(f"model '{pipe.info['model']}' samples in one step; a sampler sweep needs a diffusion run")
    if n < 10 or n > 100_000:
        raise ConfigError(f"--n must be between 10 and 100000, got {n}")
    if not steps or any(s < 1 or s > 10_000 for s in steps):
        raise ConfigError(f"sweep steps must be between 1 and 10000, got {list(steps)}")
    for name in samplers:
        pipe.system.make_scheduler(name)  # a one-line error for an unknown sampler, before any sampling
    dataset = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
    extractor = _extractor(dataset, "ref", None, device, progress)
    points = []
    for name in samplers:
        for k in steps:
            t0 = time.perf_counter()
            out = pipe(n=n, seed=1_000_000 + seed, sampler=name, steps=k)
            ms = 1000 * (time.perf_counter() - t0) / n
            r = evaluate_images(out.tensors, dataset, extractor, seed=seed, labels=out.labels, metrics=("fid", "kid"))
            points.append({"sampler": name, "steps": k, "fid": r["fid"], "kid": r["kid"], "ms_per_image": ms})
            if progress:
                print(f"{name:>9} {k:>4} steps: FID {r['fid']:.3f} (floor {r['fid_floor']:.3f}), {ms:.1f} ms/image",
                      file=sys.stderr)
    result = {"run_id": run.id, "step": pipe.info["step"], "checkpoint_sha256": pipe.info["checkpoint_sha256"],
              "n": n, "seed": seed, "fid_floor": r["fid_floor"], "feature_net": r["feature_net"],
              "device": str(pipe.device), "points": points, "genloop_version": __version__}
    write_json(run.dir / "eval" / "sampler_sweep.json", result)
    with atomic_write(run.dir / "eval" / "sampler_sweep.png") as f:
        f.write(render_sweep(result))
    return result


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


def dataset_info(name: str, image_size: int | None = None, overrides: list[str] | tuple[str, ...] = (),
                 text: bool = False) -> dict[str, Any]:
    """What a dataset holds. ``text=True`` (or a built-in text corpus name) prepares it as a text corpus
    (documents, tokens per split, vocabulary) with the tokenizer the overrides choose."""
    data = apply_overrides({"data": {"name": name}}, [o if o.startswith("data.") else f"data.{o}" for o in overrides])["data"]
    from .data.text import TextDataConfig, builtin_corpora, load_text_dataset

    if text or name in builtin_corpora():
        if image_size is not None:
            raise ConfigError("--image-size applies to image datasets, not text")
        return load_text_dataset(from_dict(TextDataConfig, data, "data.")).info()
    if image_size is not None:
        data["image_size"] = image_size
    return load_dataset(from_dict(DataConfig, data, "data.")).info()


__all__ = ["train", "resume", "load", "generate", "generate_text", "modality", "evaluate", "sweep", "report", "compare", "resolve_config", "dataset_info", "GenLoopError"]
