"""One training engine for every model family.

The loop is short on purpose: take the step's micro-batches, let the system compute its step (handing
each update's loss function to ``Optimizers.step``), update the EMA, log, checkpoint, repeat until the
step or time budget is spent.
Everything a family should not have to think about lives here once: device and precision, optimizer
construction and learning-rate schedule, gradient clipping, the NaN/Inf guard, EMA, checkpoints with
exact resume, Ctrl-C handling, progress display and metric logging.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..errors import ConfigError, StorageError, TrainingDiverged
from ..evaluation import catalog
from ..run_layout import RunLayout
from ..systems.base import LossFn, System
from .checkpoint import inference_state, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .dp import PrivateTraining
from .ema import EMA
from .logger import MetricsLogger
from .parallel import GroupSync, sync_batch_norm
from .progress import TrainProgress


class _NonFinite(Exception):
    def __init__(self, group: str, value: float) -> None:
        self.group, self.value = group, value


def pick_device(name: str) -> torch.device:
    """The device to train on; under torchrun, ``auto`` and ``cuda`` mean this process's GPU (``LOCAL_RANK``)."""
    local_rank = distributed.launched().local_rank
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device {name!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA GPU is available; use train.device=cpu or auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return device


def cpu_has_bf16_matmul() -> bool:
    """True on CPUs with AMX or AVX-512 BF16 units, where bf16 matrix products are several times faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


PRECISION_ENV = "GENLOOP_PRECISION"  # what ``precision: auto`` resolves to, when set (a fleet, a test suite)


def pick_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32.

    ``auto`` differs from machine to machine (bf16 only where the CPU has bf16 units), so whoever needs the
    same numerics everywhere pins it with ``GENLOOP_PRECISION=fp32|bf16|fp16`` without editing configs.
    """
    if name == "auto" and os.environ.get(PRECISION_ENV):
        forced = os.environ[PRECISION_ENV]
        if forced not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"{PRECISION_ENV}={forced!r}: expected fp32, bf16 or fp16")
        return pick_precision(forced, device)
    if name == "fp32":
        return None
    if name == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
        return torch.float16
    if name == "bf16":
        return torch.bfloat16
    # auto: bf16 where the hardware runs it natively and fast, else fp32.
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16_matmul() else None


def _flat(params: list[Any]) -> list[torch.nn.Parameter]:
    """The parameters of a group given as tensors or as AdamW's per-subgroup dicts
    (``{"params": ..., "weight_decay": 0}``)."""
    out: list[torch.nn.Parameter] = []
    for p in params:
        out.extend(p["params"] if isinstance(p, dict) else [p])
    return out


class Optimizers:
    """The handle a system's ``training_step`` gets: ``opt.step(group, loss_fn)``.

    A system hands the engine a *function* of a batch, not a loss: with gradient accumulation
    (``train.grad_accum`` = K) the engine runs that function on each of the step's K micro-batches, scales
    each loss by 1/K and back-propagates it, and only then updates the group. So every update sees exactly
    the gradient of its own loss over the whole K-micro-batch batch, also when a family updates one group
    several times per step (WGAN-GP's ``n_critic`` critic updates, each of which needs the critic as the
    previous update left it). The group's gradients are cleared before and after each of its updates, so
    nothing leaks from one update into the next nor from another group's backward pass.
    """

    def __init__(self, system: System, cfg: TrainConfig, device: torch.device, dtype: torch.dtype | None) -> None:
        self.cfg, self.device_type = cfg, device.type
        groups = system.param_groups()
        self.groups = {name: _flat(params) for name, params in groups.items()}
        beta1, beta2 = cfg.betas  # two, as TrainConfig checks
        fused = {"fused": True} if device.type == "cuda" else {}  # one kernel per update on a GPU
        self.optimizers = {
            name: torch.optim.AdamW(params, lr=cfg.lr, betas=(beta1, beta2), weight_decay=cfg.weight_decay, **fused)
            for name, params in groups.items()
        }
        # under torchrun: gradients all-reduced through DistributedDataParallel, one wrapper per group
        self.sync = GroupSync(self.groups, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.grad_norms: dict[str, float] = {}
        self.micro_batches: list[Any] = []  # this step's micro-batches (set by the engine before each step)
        self.dp: PrivateTraining | None = None  # train.dp: Opacus's noisy, per-sample-clipped optimizers

    def set_lr(self, lr: float) -> None:
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def step(self, group: str, loss_fn: LossFn) -> dict[str, torch.Tensor]:
        """Update ``group`` once on the gradient of ``loss_fn`` summed over this step's micro-batches.

        ``loss_fn(batch)`` returns ``{"loss": tensor, ...}``; ``"loss"`` is back-propagated and every entry
        comes back averaged over the micro-batches and detached (for logging).
        """
        if not self.micro_batches:
            raise RuntimeError("Optimizers.step outside a training step: the engine sets micro_batches first")
        dp = self.dp if self.dp is not None and group in self.dp.optimizers else None
        opt = dp.optimizers[group] if dp is not None else self.optimizers[group]  # DPOptimizer wraps the AdamW
        k = len(self.micro_batches)
        opt.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        with self.dp.hooks_for(group) if self.dp is not None else contextlib.nullcontext():
            self._backward(group, loss_fn, sums)
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_(self.groups[group], self.cfg.grad_clip)
            self.grad_norms[group] = float(norm)
        if dp is not None:
            dp.before_update(group)
        self.scaler.step(opt)  # a DP group: clip each example's gradient, sum, add noise, then AdamW
        self.scaler.update()
        if dp is not None:
            dp.after_update(group)
        opt.zero_grad(set_to_none=True)  # the next update of this group starts from nothing (and frees memory)
        return {name: value / k if k > 1 else value for name, value in sums.items()}

    def _backward(self, group: str, loss_fn: LossFn, sums: dict[str, torch.Tensor]) -> None:
        """Forward and backward ``loss_fn`` on each micro-batch; its terms are added to ``sums``."""
        k = len(self.micro_batches)
        for i, batch in enumerate(self.micro_batches):
            last = i == k - 1  # gradients are all-reduced across ranks once, after the last micro-batch
            terms = self.sync.loss(group, loss_fn, batch, sync=last)
            loss = terms["loss"]
            bad = not bool(torch.isfinite(loss.detach()).all())
            if self.sync.ddp and distributed.any_true([bad])[0]:  # every rank stops together, or none does
                raise _NonFinite(group, float(loss.detach().float().mean()) if bad else math.nan)
            if bad:
                raise _NonFinite(group, float(loss.detach().float().mean()))
            with torch.autocast(self.device_type, enabled=False), self.sync.backward_context(group, sync=last):
                self.scaler.scale(loss / k if k > 1 else loss).backward()  # backward runs in the forward's dtypes
            for name, value in terms.items():
                sums[name] = sums[name] + value.detach() if name in sums else value.detach()


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Warm-up then constant, cosine or linear decay; ``progress`` in [0, 1] is how far training is."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    p = min(max(progress, 0.0), 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * p))
    return cfg.lr - (cfg.lr - floor) * p


@dataclass
class FitResult:
    step: int
    seconds: float  # training time in this session
    stopped_by: str  # "steps", "time", "interrupt", "early_stop"
    units_per_s: float  # the system's unit (images or tokens) per second of training
    checkpoint: Path | None


@contextlib.contextmanager
def _stop_requests() -> Iterator[list[str]]:
    """Turn the first Ctrl-C / SIGTERM into a request to stop at the next step boundary.

    Stopping between steps (never inside one) keeps the checkpoint consistent: a GAN interrupted
    between its discriminator and generator updates would otherwise save half a step. A second
    Ctrl-C stops at once.
    """
    requests: list[str] = []
    handlers: dict[signal.Signals, Any] = {}

    def handle(signum: int, frame: Any) -> None:
        if requests:
            raise KeyboardInterrupt
        requests.append(signal.Signals(signum).name)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, handle)
    except ValueError:  # not in the main thread (a server worker): no signal handling
        pass
    try:
        yield requests
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)


class Trainer:
    """Trains ``system`` on ``batches`` per ``cfg``; with ``run_dir`` it checkpoints and logs there."""

    def __init__(
        self,
        system: System,
        batches: Any,
        cfg: TrainConfig,
        run_dir: Path | None = None,
        progress: bool = True,
        on_checkpoint: Callable[[int], None] | None = None,
        evaluator: Callable[[System], dict[str, float]] | None = None,
        should_stop: Callable[[], bool] | None = None,
        preview: Callable[[System, int], Path | None] | None = None,
    ) -> None:
        self.cfg, self.batches, self.run_dir = cfg, batches, Path(run_dir) if run_dir else None
        self.should_stop = should_stop  # polled between steps (a server cancelling a job); like Ctrl-C
        self.progress, self.on_checkpoint, self.evaluator = progress, on_checkpoint, evaluator
        # (system, step) -> the file it wrote: samples every train.sample_every steps and at the end; built by
        # the caller (genloop.generation.preview), so the engine knows nothing of images, text or files
        self.preview = preview
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = pick_device(cfg.device)
        # DP-SGD runs in fp32 (TrainConfig refuses bf16/fp16 with train.dp; `auto` means fp32 there)
        self.dtype = None if cfg.dp.enabled else pick_precision(cfg.precision, self.device)
        # under torchrun: join the process group; rank 0 alone writes checkpoints, logs, samples and evaluations
        self.dist = distributed.setup(self.device)
        self.main = self.dist.main
        world = distributed.world_size()
        if cfg.batch_size % world:
            raise ConfigError(
                f"train.batch_size={cfg.batch_size} is the global batch and must split evenly over {world} "
                f"processes; use a multiple of {world}"
            )
        torch.manual_seed(cfg.seed)
        self.system = system.to(self.device).train()
        sync_batch_norm(self.system, self.device)  # batch statistics over the global batch, as in one process
        if self.device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in self.system.modules()):
            # faster convolutions on tensor cores (Module.to takes memory_format; its stubs do not say so)
            self.system.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if cfg.compile:
            for module in self.system.children():
                module.compile()  # in place: the state dict keys (and so the checkpoints) are unchanged
        if world > 1:
            batches = distributed.ShardedBatches(batches)
            self.batches = batches
        if hasattr(batches, "device"):
            batches.device = self.device
        self.opt = Optimizers(self.system, cfg, self.device, self.dtype)
        self.ema = EMA(getattr(system, system.ema_target), cfg.ema_decay) if cfg.ema_decay else None
        # train.dp: per-sample gradients on the family's private modules, DPOptimizers, the accountant (after the
        # EMA copy is made, so the copy carries none of Opacus's hooks)
        self.dp = PrivateTraining(self.system, batches, cfg, self.opt.optimizers, world) if cfg.dp.enabled else None
        self.opt.dp = self.dp
        if self.dp is not None:
            self.batches = self.dp.batches  # train.dp.poisson: Poisson samples of the data's examples
        self.step = 0
        self.elapsed_before = 0.0  # training seconds of earlier sessions of this run (from the checkpoint)
        self._session_start: float | None = None
        self.eval_seconds = 0.0  # time spent in quick evaluations (not counted as training time)
        self.best: dict[str, Any] | None = None  # {"metric", "value", "step"} of best.safetensors
        self.evals_since_best = 0  # quick evaluations in a row without a new best (for train.early_stop)

    @property
    def elapsed_total(self) -> float:
        """Training seconds over all sessions of this run."""
        now = time.perf_counter() - self._session_start if self._session_start is not None else 0.0
        return self.elapsed_before + now

    # --- checkpoints ------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path | None:
        return RunLayout(self.run_dir).checkpoints if self.run_dir else None

    def save(self) -> Path | None:
        if self.run_dir is None or not self.main:  # every rank holds the same state: rank 0 writes it
            return None
        state = {
            "step": self.step,
            "data": self.batches.state_dict(),
            "elapsed": self.elapsed_total,
            "precision": str(self.dtype).replace("torch.", "") if self.dtype else "fp32",
            "eval_seconds": self.eval_seconds,
            "best": self.best,
            "evals_since_best": self.evals_since_best,
        }
        if self.dp is not None:  # the accountant's history: the budget continues on resume, never restarts
            state["dp"] = self.dp.state_dict()
        last = RunLayout(self.run_dir).last_checkpoint
        try:
            self._write_checkpoint(last, state)
            if self.on_checkpoint:
                self.on_checkpoint(self.step)
        except OSError as e:  # disk full, no permission: one line that says which file and which run
            if isinstance(e, StorageError):
                what = str(e)
            else:
                what = f"could not write {e.filename2 or e.filename}: {e.strerror}"
            saved = self._last_saved_step()
            kept = f"its checkpoint of step {saved} is intact" if saved else "it has no checkpoint yet"
            raise StorageError(f"run {self.run_dir.name}: {what}; {kept}; resume it once that is fixed", e.errno) from e
        return last

    def _write_checkpoint(self, last: Path, state: dict[str, Any]) -> None:
        """last.safetensors, the inference weights beside it, and the numbered checkpoints kept."""
        assert self.run_dir is not None  # only save() calls this, and it returns first without a run directory
        save_checkpoint(last, self.system, self.opt.optimizers, self.ema, self.opt.scaler, state)
        weights = inference_state(self.system, self.ema, self.system.ema_target)
        RunLayout(self.run_dir).save_pretrained(weights, {"step": self.step})
        if self.cfg.keep_checkpoints > 0:
            numbered = RunLayout(self.run_dir).step_checkpoint(self.step)
            if not numbered.exists():
                os.link(last, numbered)  # a hard link: atomic, and no second copy on disk
            for old in RunLayout(self.run_dir).step_checkpoints()[: -self.cfg.keep_checkpoints]:
                old.unlink(missing_ok=True)

    def resume(self, path: Path) -> None:
        meta = load_checkpoint(path, self.system, self.opt.optimizers, self.ema, self.opt.scaler)
        self.step = int(meta["step"])
        self.elapsed_before = float(meta.get("elapsed", 0.0))
        self.eval_seconds = float(meta.get("eval_seconds", 0.0))
        self.best = meta.get("best")
        self.evals_since_best = int(meta.get("evals_since_best", 0))
        self.batches.load_state_dict(meta["data"])
        if self.dp is not None:
            if "dp" not in meta:
                raise ConfigError(f"{path} was written without train.dp; it cannot be resumed as a private run")
            self.dp.load_state_dict(meta["dp"])

    # --- quick evaluation and the best checkpoint -------------------------------------------------
    def quick_eval(self) -> dict[str, float] | None:
        """Score the EMA weights with ``evaluator``; keep them as best.safetensors if they beat the best so far.

        Skipped (returns None) while evaluations have already taken more than ``eval_time_share`` of the
        training time. The evaluator runs under a forked RNG, so evaluating never changes what training
        does next: a run with evaluations trains the same weights as one without.
        """
        cfg = self.cfg
        if self.evaluator is None or not self.main:
            return None
        if self.eval_seconds > cfg.eval_time_share * max(self.elapsed_total, 1e-9):
            return None
        t0 = time.perf_counter()
        was_training = self.system.training
        self.system.eval()
        ctx = self.ema.swapped_in(self.system, self.system.ema_target) if self.ema else contextlib.nullcontext()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), ctx:
            metrics = self.evaluator(self.system)
        self.system.train(was_training)
        name = cfg.select_metric
        if name not in metrics:
            raise ConfigError(
                f"train.select_metric '{name}' is not measured for this model; measured: {', '.join(metrics)}"
            )
        value = float(metrics[name])
        better = catalog.get(name).badness
        if self.best is None or better(value) < better(self.best["value"]):
            self.best = {"metric": name, "value": value, "step": self.step}
            self.evals_since_best = 0
            if self.run_dir is not None:
                weights = inference_state(self.system, self.ema, self.system.ema_target)
                RunLayout(self.run_dir).save_pretrained(weights, {"step": self.step, "best": self.best}, "best")
        else:
            self.evals_since_best += 1
        dt = time.perf_counter() - t0
        self.eval_seconds += dt
        return {**metrics, "seconds": dt}

    # --- sampling during training -----------------------------------------------------------------
    def write_samples(self) -> Path | None:
        """Have ``preview`` write samples of the inference weights (EMA, eval mode) at this step.

        Under a forked RNG, like the quick evaluations: a run with previews trains exactly the same weights
        as one without.
        """
        if self.preview is None or not self.main:
            return None
        was_training = self.system.training
        self.system.eval()
        ctx = self.ema.swapped_in(self.system, self.system.ema_target) if self.ema else contextlib.nullcontext()
        rng = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])
        with ctx, rng, torch.no_grad():
            path = self.preview(self.system, self.step)
        self.system.train(was_training)
        return path

    # --- the loop ---------------------------------------------------------------------------------
    def fit(self) -> FitResult:
        cfg = self.cfg
        start_step = self.step
        if cfg.steps is not None and self.step >= cfg.steps:
            return FitResult(self.step, 0.0, "steps", 0.0, None)
        logger = MetricsLogger(
            self.run_dir if self.main else None, cfg.tensorboard, resume_step=self.step if self.step else None
        )
        autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)
        sums: dict[str, float] = {}
        count, units_seen = 0, 0
        t0 = self._session_start = time.perf_counter()
        last_ckpt_time, last_log_time, last_log_units = t0, t0, 0
        stopped_by, checkpoint = "steps", None
        early_stop = False  # decided by rank 0's quick evaluation, acted on by every rank at the next step
        world = distributed.world_size()
        bar = TrainProgress(self.progress and self.main, cfg, start_step)
        bar_extra: dict[str, float] = {}  # logged numbers the bar keeps showing between logs (DP's epsilon)
        try:
            with _stop_requests() as stop, bar:
                while True:
                    # Every rank must stop at the same step (or the others wait forever in an all-reduce), so
                    # the reasons to stop, and the clock the schedule follows, are agreed on before each step.
                    reasons, elapsed = distributed.agree(
                        {
                            "steps": cfg.steps is not None and self.step >= cfg.steps,
                            "time": cfg.time_budget is not None and time.perf_counter() - t0 >= cfg.time_budget,
                            "interrupt": bool(stop) or (self.should_stop is not None and self.should_stop()),
                            "early_stop": early_stop,
                        },
                        time.perf_counter() - t0,
                    )
                    if any(reasons.values()):
                        stopped_by = next(reason for reason, hit in reasons.items() if hit)
                        bar.finish(stopped_by)
                        break
                    if cfg.steps:
                        progress = self.step / cfg.steps
                    else:
                        assert cfg.time_budget is not None  # TrainConfig: without steps, a time budget is set
                        progress = elapsed / cfg.time_budget
                    self.opt.set_lr(learning_rate(cfg, self.step, progress))
                    self.opt.micro_batches = [next(self.batches) for _ in range(cfg.grad_accum)]
                    units_seen += world * sum(self.system.batch_units(b) for b in self.opt.micro_batches)
                    try:
                        if self.dp is not None and self.dp.is_empty(self.opt.micro_batches, self.system.batch_units):
                            self.dp.empty_step()  # an empty Poisson sample: noise-only private updates
                            logs = {}
                        else:
                            with autocast:
                                logs = self.system.training_step(self.opt)
                    except _NonFinite as e:
                        raise TrainingDiverged(
                            f"the {e.group} loss became {e.value} at step {self.step + 1}; the last checkpoint "
                            f"(step {self._last_saved_step()}) is kept; try a lower train.lr or set train.grad_clip"
                        ) from None
                    finally:
                        self.opt.micro_batches = []  # not held in memory between steps
                    self.step += 1
                    if self.ema is not None:
                        self.ema.update(getattr(self.system, self.system.ema_target), self.step)
                    for k, v in logs.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1 if logs else 0  # an empty Poisson sample has no losses to average
                    now = time.perf_counter()
                    # every step, from the first: the step counter, the time, this rank's losses since the last log
                    bar.update(self.step, now - t0, {**{k: v / count for k, v in sums.items()}, **bar_extra})
                    if self.step % cfg.log_every == 0:
                        units_per_s = (units_seen - last_log_units) / max(now - last_log_time, 1e-9)
                        means = distributed.mean_over_ranks({k: v / count for k, v in sums.items()})
                        record = {
                            **means,
                            "lr": self.opt.optimizers[next(iter(self.opt.optimizers))].param_groups[0]["lr"],
                            "time": self.elapsed_total,
                            f"{self.system.unit}_per_s": units_per_s,
                        }
                        record.update({f"grad_norm_{k}": v for k, v in self.opt.grad_norms.items()})
                        if self.dp is not None:  # the privacy spent so far (curves, progress bar)
                            record["dp_epsilon"] = bar_extra["dp_epsilon"] = self.dp.epsilon()
                        logger.log(self.step, record)
                        sums, count, last_log_time, last_log_units = {}, 0, now, units_seen
                    if cfg.sample_every and self.step % cfg.sample_every == 0:
                        self.write_samples()
                    if cfg.eval_every and self.step % cfg.eval_every == 0:
                        t_eval = time.perf_counter()
                        quick = self.quick_eval()
                        pause = time.perf_counter() - t_eval  # evaluation is not training time
                        t0 += pause
                        self._session_start += pause
                        last_log_time += pause
                        now = time.perf_counter()
                        if quick is not None:  # with the training time it was reached at (curves over time)
                            logger.log(
                                self.step, {"time": self.elapsed_total, **{f"eval/{k}": v for k, v in quick.items()}}
                            )
                        if quick is not None and cfg.early_stop and self.evals_since_best >= cfg.early_stop:
                            early_stop = True  # every rank stops before the next step; the final checkpoint
                            # below is written as usual
                    if self.step % cfg.checkpoint_every == 0 or now - last_ckpt_time >= cfg.checkpoint_seconds:
                        checkpoint = self.save()
                        last_ckpt_time = time.perf_counter()
            seconds = time.perf_counter() - t0
            self.write_samples()
            checkpoint = self.save() or checkpoint
            distributed.barrier()  # the final checkpoint exists before any rank returns
        finally:
            logger.close()
            self.elapsed_before, self._session_start = self.elapsed_total, None
        return FitResult(self.step, seconds, stopped_by, units_seen / max(seconds, 1e-9), checkpoint)

    def _last_saved_step(self) -> int:
        from ..serialization import load_tensors

        last = RunLayout(self.run_dir).last_checkpoint if self.run_dir else None
        if last is None or not last.exists():
            return 0
        return int((load_tensors(last)[1] or {}).get("step", 0))
