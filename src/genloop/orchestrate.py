"""Training orchestration: from a resolved recipe to a trained run folder.

The :class:`~genloop.training.engine.Trainer` knows how to step a system on batches; this module does
everything around it that a *run* needs — load the dataset, build the system with the seed's initial
weights, create (or reopen) the run folder, pick the quick evaluator, and keep ``run.json``'s status true
whatever way training ends. :func:`genloop.train` and :func:`genloop.resume` are thin calls into here.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .config import to_dict
from .errors import ConfigError, NotFoundError, TrainingDiverged
from .modalities import modalities
from .resolve import SECTIONS, ResolvedConfig, resolve_config
from .runs import Run, RunStore
from .serialization import write_json
from .systems import DataSpec, System, models
from .training.engine import Trainer, pick_device


def _load_data(rc: ResolvedConfig) -> Any:
    """The prepared dataset, as the family's modality loads it (images, a tokenised corpus, ...)."""
    return modalities[rc.system_cls.modality].load_data(rc)


def _spec_of(rc: ResolvedConfig, dataset: Any) -> DataSpec:
    return modalities[rc.system_cls.modality].data_spec(dataset)  # type: ignore[no-any-return]


def _load_data_once(rc: ResolvedConfig) -> Any:
    """Under torchrun, rank 0 prepares the data (and its cache) first; the other ranks then read the cache."""
    main = distributed.is_main()
    if not main:
        distributed.barrier()
    dataset = _load_data(rc)
    if main:
        distributed.barrier()
    return dataset


# torchrun restarts every worker of a job after one fails (--max-restarts): the restarted workers must resume the
# run the job created, not start another. Rank 0 notes the run id under the job's rendezvous id, which stays the
# same across restarts (TORCHELASTIC_RUN_ID; ``--standalone`` draws a fresh one per torchrun command).
def _elastic_marker(store: RunStore) -> Path | None:
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    return store.root / ".torchrun" / f"{job}.run" if job else None


def _restarted_run(store: RunStore) -> str | None:
    """The run this torchrun job created, when torchrun has restarted the job's workers after a failure."""
    marker = _elastic_marker(store)
    if marker is None or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) == 0:
        return None
    return marker.read_text().strip() if marker.is_file() else None


def _note_elastic_run(store: RunStore, run: Run) -> None:
    marker = _elastic_marker(store)
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(run.id)
        os.replace(tmp, marker)


def train_run(
    model: str | None,
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
    recipe: str | Any = None,
) -> Run:
    """Train a new run. Everything is validated (config, data, model) before the run directory exists.

    ``on_run`` is called with the new run before training starts (a job server records its id there, so
    a crash resumes this run instead of starting another); ``should_stop`` is polled between steps.
    ``recipe``: a :mod:`genloop.recipes` name ("auto" looks at the data), or a :class:`~genloop.recipes.Choice`
    made already (the CLI prints it first); its family and settings go under the config file's and ``--set``'s.
    """
    from .recipes import Choice, choose

    choice = recipe
    if isinstance(recipe, str):
        choice = choose(data, model, recipe, config, overrides, steps, time_budget)
    if choice is not None and not isinstance(choice, Choice):
        raise ConfigError(f"recipe must be a recipe name or a Choice, got {recipe!r}")
    if choice is not None:
        model = choice.model
    if model is None:
        raise ConfigError(f"name a model to train ({', '.join(models.names())}) or pass a recipe (recipe='auto')")
    rc = resolve_config(
        model, data, config, overrides, steps, time_budget, seed, choice.overrides if choice is not None else None
    )
    store = RunStore(runs_dir)  # checked before the (slower) data loading
    ctx = distributed.setup(pick_device(rc.train.device))  # under torchrun: join the job's process group
    restarted = _restarted_run(store)
    if restarted is not None:  # torchrun restarted this job after a worker failed: continue its run
        return resume_run(restarted, runs_dir=runs_dir, progress=progress, should_stop=should_stop)
    dataset = _load_data_once(rc)
    if ctx.main:  # said before training, not only when `genloop eval` fails afterwards
        for note in modalities[rc.system_cls.modality].data_warnings(dataset, rc.data):
            warnings.warn(note, UserWarning, stacklevel=2)
    spec = _spec_of(rc, dataset)
    torch.manual_seed(rc.train.seed)  # the initial weights are part of what the seed decides
    system = rc.system_cls(rc.model, spec)
    if ctx.main:  # one run folder, made by rank 0 and announced to the others
        cfg = {**rc.to_dict(), "data_spec": dataclasses.asdict(spec)}
        extra: dict[str, Any] = {"recipe": choice.record()} if choice is not None else {}
        if system.parent_run is not None:  # e.g. a distilled student's teacher
            extra["parent"] = system.parent_run
        run = store.create(model, rc.data.name, cfg, rc.train.seed, extra or None)
        modalities[system.modality].bind(system, dataset, run.files.tokenizer, new=True)
        _note_elastic_run(store, run)
    run_id = distributed.broadcast_object(run.id if ctx.main else None)
    if not ctx.main:
        run = store.get(run_id, paths=False)
        modalities[system.modality].bind(system, dataset, run.files.tokenizer, new=False)
    return _fit(
        store, run, system, dataset, rc, resume=False, progress=progress, should_stop=should_stop, on_run=on_run
    )


def resume_run(
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
    main = distributed.is_main()
    if main:
        store.ensure_free(run)
    fresh = not run.last_checkpoint.is_file()
    if fresh and int(run.info.get("step", 0)) > 0:
        raise NotFoundError(f"run {run.id} has no checkpoint to resume from ({run.last_checkpoint} is missing)")
    cfg = run.config
    train_cfg = dict(cfg["train"])
    dp = train_cfg.get("dp")
    if isinstance(dp, dict) and "poisson" not in dp:  # a DP run from before train.dp.poisson: shuffled batches
        train_cfg["dp"] = {**dp, "poisson": False}
    if steps is not None:
        train_cfg["steps"] = steps
    if time_budget is not None:
        train_cfg["time_budget"] = time_budget
        if steps is None and train_cfg.get("steps") is not None and run.info.get("step", 0) >= train_cfg["steps"]:
            train_cfg["steps"] = None  # a new time budget on a run that met its step target: train on
    cfg = {**cfg, "train": train_cfg, "model": models[cfg["model"]["name"]].saved_model_config(cfg["model"])}
    rc = resolve_config(cfg["model"]["name"], config={k: cfg[k] for k in SECTIONS})
    done = int(run.info.get("step", 0))
    if rc.train.steps is not None and done >= rc.train.steps:
        raise ConfigError(
            f"run {run.id} already reached its {rc.train.steps} steps; "
            f"pass --steps N (N > {done}) or --time-budget to train further"
        )
    distributed.setup(pick_device(rc.train.device))
    dataset = _load_data_once(rc)
    torch.manual_seed(rc.train.seed)  # as train() does: a fresh restart draws the same initial weights
    system = rc.system_cls(rc.model, DataSpec(**cfg["data_spec"]))
    if main:
        modalities[system.modality].bind(system, dataset, run.files.tokenizer, new=False)
        if fresh:
            run.discard_progress()
        write_json(run.files.config, {**cfg, "train": to_dict(rc.train)})
    distributed.barrier()
    if not main:
        modalities[system.modality].bind(system, dataset, run.files.tokenizer, new=False)
    return _fit(store, run, system, dataset, rc, resume=not fresh, progress=progress, should_stop=should_stop)


def _fit(
    store: RunStore,
    run: Run,
    system: System,
    dataset: Any,
    rc: ResolvedConfig,
    resume: bool,
    progress: bool,
    should_stop: Callable[[], bool] | None = None,
    on_run: Callable[[Run], None] | None = None,
) -> Run:
    modality = modalities[system.modality]
    from .generation.preview import preview_writer

    try:
        batches = modality.batches(dataset, rc, system)
        evaluate = rc.train.eval_every and distributed.is_main()  # rank 0 evaluates; the others wait at the next step
        evaluator = modality.quick_evaluator(dataset, rc.train, progress) if evaluate else None
        trainer = Trainer(
            system,
            batches,
            rc.train,
            run.dir,
            progress=progress,
            on_checkpoint=lambda step: store.update(run, step=step),
            evaluator=evaluator,
            should_stop=should_stop,
            preview=preview_writer(run.dir, ema=rc.train.ema_decay is not None),
        )
    except ConfigError:
        # settings only the engine can check (DP's delta against the data's size, a network Opacus cannot
        # take): a new run that never trained leaves nothing behind, like any other bad setting
        if not resume and distributed.is_main():
            store.remove(run.id)
        raise
    if on_run is not None and distributed.is_main():
        on_run(run)
    if resume:
        trainer.resume(run.last_checkpoint)
    if not trainer.main:  # ranks other than 0 train and leave the run's files to rank 0
        trainer.fit()
        return run
    precision = str(trainer.dtype).replace("torch.", "") if trainer.dtype else "fp32"
    world = distributed.world_size()
    scrubbed = (getattr(dataset, "info_", None) or {}).get("pii_scrubbed")  # text ingest with data.scrub_pii
    extra = {"pii_scrubbed": scrubbed} if scrubbed is not None else {}
    chat = (getattr(dataset, "info_", None) or {}).get("chat")  # a chat set: its template and truncation counts
    if chat is not None:
        extra["chat"] = chat
    store.mark_running(run, device=str(trainer.device), precision=precision, processes=world, **extra)
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
    store.update(
        run,
        status=status,
        step=result.step,
        stopped_by=result.stopped_by,
        timings=timings,
        **({"best": trainer.best} if trainer.best else {}),
        **({"dp": trainer.dp.summary()} if trainer.dp is not None else {}),
    )
    return run
