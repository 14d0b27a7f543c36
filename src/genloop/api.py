"""GenLoop's Python API: the whole loop as functions. The CLI and the server are thin clients of this.

    import genloop
    run = genloop.train("dcgan", data="digits", steps=500)
    pipe = genloop.load(run.id)
    out = pipe(n=16, seed=0)            # out.images: PIL images, out.tensors: floats in [-1, 1]
    genloop.evaluate(run.id, n=2000)    # FID/KID/IS beside the real-data floor
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import apply_overrides, from_dict, load_yaml, to_dict
from .data import DataConfig, ImageBatches, ImageDataset, load_dataset
from .errors import ConfigError, GenLoopError, NotFoundError, TrainingDiverged
from .generation.pipelines import ImagePipeline
from .runs import Run, RunStore
from .serialization import read_json, write_json
from .systems import DataSpec, System, models
from .training import TrainConfig, Trainer

SECTIONS = ("model", "data", "train")


@dataclass
class ResolvedConfig:
    system_cls: type[System]
    model: Any
    data: DataConfig
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
        from_dict(DataConfig, layered["data"], "data."),
        from_dict(TrainConfig, layered["train"], "train."),
    )


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
) -> Run:
    """Train a new run. Everything is validated (config, data, model) before the run directory exists."""
    rc = resolve_config(model, data, config, overrides, steps, time_budget, seed)
    store = RunStore(runs_dir)  # checked before the (slower) data loading
    dataset = load_dataset(rc.data)
    spec = _spec(dataset)
    torch.manual_seed(rc.train.seed)  # the initial weights are part of what the seed decides
    system = rc.system_cls(rc.model, spec)
    run = store.create(model, rc.data.name, {**rc.to_dict(), "data_spec": dataclasses.asdict(spec)}, rc.train.seed)
    return _fit(store, run, system, dataset, rc, resume=False, progress=progress)


def resume(
    run_id: str,
    steps: int | None = None,
    time_budget: float | None = None,
    runs_dir: str | Path | None = None,
    progress: bool = True,
) -> Run:
    """Continue a run from its last checkpoint, exactly where it stopped."""
    store = RunStore(runs_dir)
    run = store.get(run_id)
    if not run.last_checkpoint.is_file():
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
    dataset = load_dataset(rc.data)
    system = rc.system_cls(rc.model, DataSpec(**cfg["data_spec"]))
    write_json(run.dir / "config.json", {**cfg, "train": to_dict(rc.train)})
    return _fit(store, run, system, dataset, rc, resume=True, progress=progress)


def _fit(store: RunStore, run: Run, system: System, dataset: ImageDataset, rc: ResolvedConfig, resume: bool, progress: bool) -> Run:
    images, labels = dataset.get("train")
    batches = ImageBatches(images, labels, rc.train.batch_size, seed=rc.train.seed, flip=rc.data.flip, shift=rc.data.shift)
    trainer = Trainer(system, batches, rc.train, run.dir, progress=progress, on_checkpoint=lambda step: store.update(run, step=step))
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
        store.update(run, status="failed", error=f"{type(e).__name__}: {e}")
        raise
    status = "interrupted" if result.stopped_by == "interrupt" else "finished"
    store.update(run, status=status, step=result.step, stopped_by=result.stopped_by,
                 timings={"train_seconds": round(trainer.elapsed_before, 2), "images_per_s": round(result.images_per_s, 1)})
    return run


# --- inference ------------------------------------------------------------------------------------
def load(run: str | Path, device: str = "cpu", runs_dir: str | Path | None = None) -> ImagePipeline:
    """A generation pipeline for a run id (or a run directory)."""
    return ImagePipeline.from_run(RunStore(runs_dir).get(str(run)).dir, device=device)


def generate(run_id: str, n: int = 64, seed: int = 0, out: str | Path | None = None,
             runs_dir: str | Path | None = None, device: str = "cpu") -> list[Path]:
    """Write ``n`` images (each PNG carrying its recipe) and a grid; VAE runs also get reconstructions."""
    from .generation.io import make_grid, save_png

    if n < 1 or n > 10_000:
        raise ConfigError(f"--n must be between 1 and 10000, got {n}")
    run = RunStore(runs_dir).get(run_id)
    pipe = ImagePipeline.from_run(run.dir, device)
    out_dir = Path(out) if out else run.dir / "generated"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    output = pipe(n=n, seed=seed)
    paths = [save_png(out_dir / "grid.png", make_grid(output.tensors), output.recipe, upscale=4)]
    for i, image in enumerate(output.tensors):
        paths.append(save_png(out_dir / f"sample_{seed + i:06d}.png", image, output.recipe_of(i)))
    lerp = pipe.interpolate(rows=6, steps=10, seed=seed)
    paths.append(save_png(out_dir / "interpolation.png", make_grid(lerp.tensors, nrow=10), lerp.recipe, upscale=4))
    if hasattr(pipe.system, "reconstruct"):
        dataset = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
        real = dataset.float_images("test")[:32]
        if len(real):
            recon = pipe.reconstruct(real)
            pairs = torch.stack([real, recon], 1).flatten(0, 1)  # real, reconstruction, real, ...
            paths.append(save_png(out_dir / "reconstructions.png", make_grid(pairs, nrow=16),
                                  pipe.recipe(kind="reconstructions", split="test"), upscale=4))
    return paths


def evaluate(run_id: str, n: int = 2000, seed: int = 0, runs_dir: str | Path | None = None,
             device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """FID / KID / IS of ``n`` samples against held-out real images, each beside its real-data floor."""
    from .evaluation import evaluate_images, get_feature_extractor

    if n < 2 or n > 100_000:
        raise ConfigError(f"--n must be between 2 and 100000, got {n}")
    store = RunStore(runs_dir)
    run = store.get(run_id)
    t0 = time.perf_counter()
    pipe = ImagePipeline.from_run(run.dir, device)
    dataset = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
    extractor = get_feature_extractor(dataset, device=device, progress=progress)
    samples = pipe(n=n, seed=1_000_000 + seed).tensors  # seeds apart from `generate`'s defaults
    result: dict[str, Any] = {"run_id": run.id, "model": pipe.info["model"], "step": pipe.info["step"],
                              "checkpoint_sha256": pipe.info["checkpoint_sha256"]}
    result.update(evaluate_images(samples, dataset, extractor, seed=seed))
    test = dataset.float_images("test")
    if len(test):
        torch.manual_seed(seed)
        family = pipe.system.evaluate(test.to(pipe.device))
        result.update({k: round(v, 4) for k, v in family.items()})
        if family:
            result["family_metrics_split"] = "test"
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["genloop_version"] = __version__
    write_json(run.dir / "eval" / "metrics.json", result)
    headline = {k: result[k] for k in ("fid", "fid_floor", "kid", "is", "elbo_nats") if k in result}
    store.update(run, summary=headline)
    return result


def report(run_id: str, runs_dir: str | Path | None = None) -> Path:
    """Write the run's self-contained ``report.html``."""
    from .evaluation.report import write_report

    run = RunStore(runs_dir).get(run_id)
    return write_report(run.dir)


def dataset_info(name: str, image_size: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    data = apply_overrides({"data": {"name": name}}, [o if o.startswith("data.") else f"data.{o}" for o in overrides])["data"]
    if image_size is not None:
        data["image_size"] = image_size
    return load_dataset(from_dict(DataConfig, data, "data.")).info()


__all__ = ["train", "resume", "load", "generate", "evaluate", "report", "resolve_config", "dataset_info", "GenLoopError"]
