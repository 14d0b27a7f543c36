"""The worker: takes jobs from the database and runs them through the library.

``genloop serve`` starts one per lane (``--workers N`` for more); ``genloop worker`` runs one by hand
(``--lane interactive|batch|all``: the jobs it takes, see :mod:`.jobs`). Each job runs in this process's main
thread while a heartbeat thread keeps the job's ``heartbeat`` fresh, copies new lines of a training run's
``metrics.jsonl`` into job events (the live loss curve), sends ``progress`` events (a training job's step of its
total, or its time of its budget; a generation's phase and then its sampling steps, or a streamed completion's
tokens; an evaluation's phases and its sampling steps) and notices a cancel request. Loaded pipelines are
cached, so repeated generations from one model skip the load.

A training job with ``nproc`` > 1 runs data-parallel under torchrun instead: a ``genloop train`` command from
:func:`genloop.launch.torchrun_command` in a subprocess (a session of its own, so a cancel or shutdown
signals it and not the worker's terminal), whose run this worker finds by the pid its rank 0 records in
``run.json``, records on the job and follows for progress. ``nproc`` = 1 stays in this process.

Durability: a training job records its run id before the first step, so if this process dies the job is
re-queued by :meth:`JobStore.recover` and the next attempt *resumes that run* from its last checkpoint
(from step 0, with the same run id, seed and config, if it died before its first checkpoint).
A generation job stores its outputs in one transaction; a retried job that finds outputs under its id
reports those instead of generating twice. A failed job's result says whose fault the failure was
(``{"failure": "request"}`` for a library error about its inputs, ``"server"`` for a bug or a storage
error), which is what the OpenAI routes answer it with (400 or 500). On SIGTERM a training job
checkpoints and goes back to the queue; the worker then exits.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..database import connect
from ..errors import ConfigError, GenLoopError, NotFoundError, StorageError
from ..feedback.store import FeedbackStore
from ..modalities import modalities
from .jobs import JobRow, JobStore, worker_id
from .liveness import Beating, WorkerRegistry, device_name
from .services.completions import text_report
from .settings import Settings


class _Heartbeat(threading.Thread):
    """Beats every ``interval`` s for one job; streams a training run's new metric lines as events, and the
    job's progress as a ``progress`` event whenever it changed since the last beat."""

    def __init__(self, jobs: JobStore, job: JobRow, worker: str, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.jobs, self.job, self.worker, self.interval = jobs, job, worker, interval
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.metrics_path: Path | None = None
        self.progress: dict[str, Any] = {}
        self._fresh = False  # progress changed since the last progress event
        self._sent = 0.0  # the fraction of the last progress event :meth:`advance` sent at once
        self._offset = 0
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        try:
            self._stream_metrics()
            with self.lock:
                progress, fresh, self._fresh = dict(self.progress), self._fresh, False
            if fresh:
                self.jobs.add_event(self.job.id, "progress", progress)
            if self.jobs.heartbeat(self.job.id, self.worker, progress):
                self.cancel.set()
        except Exception:  # noqa: BLE001 - a busy database must not kill the job; the next beat retries
            pass

    def report(self, now: bool = False, **progress: Any) -> None:
        """Set the job's progress (``phase``, ``step``, ``total``, ``unit``, ...): sent as a ``progress`` event at
        the next beat, or at once with ``now`` (a phase change, which a fast job would otherwise skip)."""
        with self.lock:
            self.progress, self._fresh = progress, not now
            if now:
                self._sent = float(progress.get("fraction") or 0.0)
        if now:
            try:
                self.jobs.add_event(self.job.id, "progress", progress)
                self.jobs.heartbeat(self.job.id, self.worker, progress)
            except Exception:  # noqa: BLE001 - as in beat(): progress is never worth a failed job
                pass

    def advance(self, **progress: Any) -> None:
        """Progress within a phase, with its ``fraction`` (a sampling step): sent at once whenever the fraction has
        moved on by :data:`ADVANCE_EVERY` since the last event (or reached 1), else with the next beat. A quick
        job's events still show it moving, and a long one writes at most about ``1 / ADVANCE_EVERY`` of them."""
        fraction = float(progress["fraction"])
        with self.lock:
            due = fraction >= 1.0 or fraction - self._sent >= ADVANCE_EVERY
            self.progress, self._fresh = progress, not due
            if due:
                self._sent = fraction
        if due:
            try:
                self.jobs.add_event(self.job.id, "progress", progress)
            except Exception:  # noqa: BLE001 - as in beat(): progress is never worth a failed job
                pass

    def _stream_metrics(self) -> None:
        path = self.metrics_path
        if path is None or not path.is_file():
            return
        from ..training.logger import read_metrics_from

        records, self._offset = read_metrics_from(path, self._offset)  # whole lines: the logger may be mid-write
        for record in records:
            self.jobs.add_event(self.job.id, "metrics", record)
        last = next((r for r in reversed(records) if r.get("step") is not None and "time" in r), None)
        if last is not None:
            with self.lock:
                self.progress, self._fresh = train_progress(last, self.job.params), True

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)
        self.beat()  # the last lines and the final progress


def train_progress(record: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A training job's progress from its latest metrics line: the step of ``steps`` (or the seconds of
    ``time_budget``: whichever ends the run first sets ``fraction``), the seconds left at this pace, the losses."""
    step, seconds = int(record["step"]), float(record.get("time") or 0.0)
    total, budget = params.get("steps"), params.get("time_budget")
    fractions = [step / int(total)] if total else []
    fractions += [seconds / float(budget)] if budget else []
    fraction = min(max(fractions), 1.0) if fractions else None
    out: dict[str, Any] = {"phase": "training", "step": step, "total": total, "unit": "steps", "time": seconds}
    if fraction is not None:
        out["fraction"] = round(fraction, 4)
        if fraction > 0:
            out["eta_s"] = round(max(seconds / fraction - seconds, 0.0), 1)
    if budget:
        out["time_budget"] = float(budget)
    return {**out, **{k: v for k, v in record.items() if k.startswith("loss")}}


class _TextEvents:
    """Writes a streamed completion's pieces as ``text`` events, from a thread of its own, the moment they come.

    Every piece the sampler hands over stays a piece: an event carries ``pieces`` (and ``text``, their join,
    for readers that want the text), so a follower can relay each piece as its own chunk. Writing in a thread
    keeps the database's per-write cost (a few ms on SQLite) out of the sampling loop: a fast model's pieces
    that arrive while one write is in flight go into the next event together instead of waiting on it.
    """

    def __init__(self, jobs: JobStore, job_id: str) -> None:
        self.jobs, self.job_id = jobs, job_id
        self.pending: list[str] = []
        self.closed = False
        self.error: BaseException | None = None
        self.ready = threading.Condition()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def put(self, row: int, piece: str) -> None:
        with self.ready:
            self.pending.append(piece)
            self.ready.notify()

    def _write(self) -> None:
        while True:
            with self.ready:
                while not self.pending and not self.closed:
                    self.ready.wait()
                if not self.pending:
                    return
                batch, self.pending = self.pending, []
            try:
                self.jobs.add_event(self.job_id, "text", {"text": "".join(batch), "pieces": batch})
            except BaseException as e:  # noqa: BLE001 - reported by close(), which fails the job
                self.error = e
                return

    def close(self) -> None:
        """Write what is left and stop; the job's final status event then follows every text event."""
        with self.ready:
            self.closed = True
            self.ready.notify()
        self.thread.join()
        if self.error is not None:
            raise self.error


class Worker:
    def __init__(self, settings: Settings, name: str | None = None) -> None:
        self.settings = settings
        self.engine = connect(settings.db_url, settings.runs)
        self.jobs = JobStore(self.engine, settings.max_queued, settings.max_attempts)
        self.feedback = FeedbackStore(engine=self.engine, media_dir=settings.media)
        self.name = name or worker_id(settings.worker_host)
        settings.check_lane()
        self.lane = settings.lane  # the jobs this worker takes (jobs.lane_kinds)
        self.shutdown = threading.Event()
        self._pipes: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        parent = os.environ.get("GENLOOP_PARENT_PID", "")
        self.parent_pid = int(parent) if parent.isdigit() else None  # started by `genloop serve`: leave with it

    def _orphaned(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    # --- the loop -----------------------------------------------------------------------------------
    def run_forever(self, max_jobs: int | None = None, idle_exit: float | None = None) -> int:
        """Run jobs until SIGTERM/SIGINT (or ``max_jobs`` done, or ``idle_exit`` seconds without work),
        registered as a live worker (``/v1/health``) for as long as the loop runs."""
        beating = Beating(WorkerRegistry(self.engine), self.name, device_name(), self.lane)
        beating.start()
        try:
            return self._loop(max_jobs, idle_exit)
        finally:
            beating.stop()

    def _loop(self, max_jobs: int | None, idle_exit: float | None) -> int:
        done, last_recover, idle_since = 0, 0.0, time.monotonic()
        while not self.shutdown.is_set():
            if self._orphaned():
                break
            if time.monotonic() - last_recover > 5:
                self.jobs.recover(self.settings.stale_after, exclude=self.name)
                last_recover = time.monotonic()
            job = self.jobs.claim(self.name, self.lane)
            if job is None:
                if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                    break
                self.shutdown.wait(max(self.settings.poll_interval, 0.05) * 4)
                continue
            self.execute(job)
            done += 1
            idle_since = time.monotonic()
            if max_jobs is not None and done >= max_jobs:
                break
        return done

    def execute(self, job: JobRow) -> None:
        beat = _Heartbeat(self.jobs, job, self.name)
        beat.start()
        status, result, error = "succeeded", None, None
        try:
            handler = {
                "train": self._train,
                "generate": self._generate,
                "evaluate": self._evaluate,
                "edit": self._edit,
            }[job.kind]
            result = handler(job, beat)
            if result is _REQUEUED:
                return
            if beat.cancel.is_set() and job.kind == "train":
                status = "cancelled"
        except GenLoopError as e:  # the job's inputs cannot be served (no such run, bad config or data)...
            status, error = "failed", str(e)
            result = {"failure": "server" if isinstance(e, StorageError) else "request"}  # ...unless the disk failed
        except Exception as e:  # noqa: BLE001 - a bug in one job must not take the worker down
            status, error, result = "failed", f"{type(e).__name__}: {e}", {"failure": "server"}
            traceback.print_exc()
        finally:
            beat.stop()
        self.jobs.finish(job.id, self.name, status, result if isinstance(result, dict) else None, error)

    # --- train --------------------------------------------------------------------------------------
    def _train(self, job: JobRow, beat: _Heartbeat) -> Any:
        from .. import api
        from ..runs import RunStore

        p = job.params
        if int(p.get("nproc") or 1) > 1:
            return self._train_processes(job, beat, int(p["nproc"]))
        store = RunStore(self.settings.runs)
        stop = lambda: beat.cancel.is_set() or self.shutdown.is_set() or self._orphaned()  # noqa: E731
        beat.report(now=True, phase="preparing the data and the model", step=0, total=p.get("steps"), unit="steps")

        def watch(run: Any) -> None:
            beat.metrics_path = run.files.metrics
            self.jobs.set_run(job.id, run.id)
            at = int(run.info.get("step", 0))
            beat.report(now=True, phase="training", step=at, total=p.get("steps"), unit="steps")

        run = None
        if job.run_id:  # a previous attempt died: continue its run, not a new one
            try:
                run = store.get(job.run_id, paths=False)
            except NotFoundError:
                run = None
            if run is not None:  # one that died before its first checkpoint restarts from step 0, same id and seed
                self.jobs.add_event(
                    job.id, "log", {"message": f"resuming run {run.id} from step {run.info.get('step', 0)}"}
                )
                watch(run)
                steps = p.get("steps")
                if steps is not None and int(run.info.get("step", 0)) >= int(steps):
                    pass  # it finished just before the crash
                else:
                    run = api.resume(
                        str(run.dir),
                        steps=steps,
                        time_budget=p.get("time_budget"),
                        runs_dir=self.settings.runs,
                        progress=False,
                        should_stop=stop,
                    )
        if run is None:
            run = api.train(
                p["model"],
                self._data(p.get("data")),
                overrides=tuple(p.get("overrides") or ()),
                steps=p.get("steps"),
                time_budget=p.get("time_budget"),
                seed=p.get("seed"),
                runs_dir=self.settings.runs,
                progress=False,
                on_run=watch,
                should_stop=stop,
            )
        run = store.get(run.id, paths=False)
        if run.info.get("status") == "interrupted" and not beat.cancel.is_set():
            self.jobs.requeue(job.id, self.name, "the worker was stopped; the run resumes from its checkpoint")
            self.shutdown.set()
            return _REQUEUED
        return {
            "run_id": run.id,
            "step": run.info.get("step"),
            "status": run.info.get("status"),
            "stopped_by": run.info.get("stopped_by"),
        }

    def _train_processes(self, job: JobRow, beat: _Heartbeat, nproc: int) -> Any:
        """Train on ``nproc`` local processes under torchrun, as ``genloop train --nproc`` would.

        The run is the subprocess's; this worker only watches: it finds the run (rank 0's pid in ``run.json``),
        records it on the job (so a retry resumes it, with ``--resume``), streams its metrics, and on a cancel
        or shutdown sends torchrun SIGTERM, which torchrun passes to every rank: they stop at the same step
        and checkpoint. Processes that outlive :data:`STOP_GRACE` seconds after that are killed.
        """
        from ..launch import torchrun_command
        from ..runs import RunStore

        p = job.params
        store = RunStore(self.settings.runs)
        steps, budget = p.get("steps"), p.get("time_budget")
        limits = [*(["--steps", str(steps)] if steps is not None else [])]
        limits += ["--time-budget", format(float(budget), "f")] if budget is not None else []
        run = self._resumable(job, store)
        if run is not None:
            at = run.info.get("step", 0)
            self.jobs.add_event(job.id, "log", {"message": f"resuming run {run.id} from step {at}"})
            beat.metrics_path = run.files.metrics
            if steps is not None and int(run.info.get("step", 0)) >= int(steps):  # it finished just before a crash
                return self._train_result(store.get(run.id, paths=False), nproc)
            args = ["train", "--resume", run.id, *limits]
        else:
            data = self._data(p.get("data"))
            args = ["train", p["model"], *(["--data", data] if data else [])]
            args += [a for o in p.get("overrides") or () for a in ("--set", o)]
            args += [*limits, *(["--seed", str(p["seed"])] if p.get("seed") is not None else [])]
        args += ["--runs-dir", str(self.settings.runs), "--quiet"]
        self.jobs.add_event(job.id, "log", {"message": f"training on {nproc} processes under torchrun"})
        since = time.time()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = _start(torchrun_command(nproc, args), out, err)
            stopping: float | None = None
            try:
                while proc.poll() is None:
                    if run is None:
                        run = _run_started_by(store, proc.pid, since)
                        if run is not None:
                            beat.metrics_path = run.files.metrics
                            self.jobs.set_run(job.id, run.id)
                    stop = beat.cancel.is_set() or self.shutdown.is_set() or self._orphaned()
                    if stop and stopping is None:
                        stopping = time.monotonic()
                        _signal_group(proc, signal.SIGTERM)
                    elif stopping is not None and time.monotonic() - stopping > STOP_GRACE:
                        _kill_tree(proc)
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:  # this worker is going down (an exception, a second Ctrl-C): take it along
                    _signal_group(proc, signal.SIGTERM)
                    try:
                        proc.wait(timeout=STOP_GRACE)
                    except subprocess.TimeoutExpired:
                        _kill_tree(proc)
                        proc.wait()
            if run is None:  # it ended before it was seen (a very short run): its last line of output names it
                run = _run_named_by(store, _tail(out, 1))
                if run is not None:
                    self.jobs.set_run(job.id, run.id)
            if run is not None:
                beat.metrics_path = run.files.metrics
                run = store.get(run.id, paths=False)
            if beat.cancel.is_set():
                return self._train_result(run, nproc)
            if run is not None and run.info.get("status") == "interrupted":
                self.jobs.requeue(job.id, self.name, "the worker was stopped; the run resumes from its checkpoint")
                self.shutdown.set()
                return _REQUEUED
            if proc.returncode != 0 or run is None or run.info.get("status") != "finished":
                tail = _tail(err, 8)
                sys.stderr.write(tail + "\n")
                code = proc.returncode
                raise GenLoopError(f"training on {nproc} processes failed (torchrun exit code {code}): {tail}")
        return self._train_result(run, nproc)

    def _resumable(self, job: JobRow, store: Any) -> Any:
        """The run an earlier attempt of ``job`` started, if it still exists."""
        if not job.run_id:
            return None
        try:
            return store.get(job.run_id, paths=False)
        except NotFoundError:
            return None

    def _train_result(self, run: Any, nproc: int) -> dict[str, Any]:
        info = run.info if run is not None else {}
        return {
            "run_id": run.id if run is not None else None,
            "step": info.get("step"),
            "status": info.get("status"),
            "stopped_by": info.get("stopped_by"),
            "processes": info.get("processes", nproc),
        }

    def _data(self, data: str | None) -> str | None:
        """Built-in names pass through; ``upload:<id>`` becomes that upload's data (ids were checked)."""
        if data and data.startswith("upload:"):
            from .services.uploads import data_path

            return str(data_path(self.settings.uploads, data))
        return data

    # --- generate -----------------------------------------------------------------------------------
    def pipeline(self, run_id: str, checkpoint: str = "last") -> Any:
        from ..generation.pipelines import load_pipeline
        from ..runs import RunStore

        run = RunStore(self.settings.runs).get(run_id, paths=False)
        weights = run.files.weights_for(checkpoint)
        key = (run.id, checkpoint, weights.stat().st_mtime_ns if weights.is_file() else 0)
        if key in self._pipes:
            self._pipes.move_to_end(key)
            return self._pipes[key]
        pipe = load_pipeline(run.dir, "cpu", checkpoint)
        self._pipes[key] = pipe
        while len(self._pipes) > 4:
            self._pipes.popitem(last=False)
        return pipe

    def _generate(self, job: JobRow, beat: _Heartbeat) -> dict[str, Any]:
        p = dict(job.params)
        already = self.feedback.list(job_id=job.id, limit=10_000)
        if already:  # an earlier attempt stored its outputs and died before saying so
            return self._generate_result(p, [g.id for g in sorted(already, key=lambda g: g.recipe.get("index", 0))])
        phases = GENERATE_PHASES  # ``fraction``: the share of the sampling done, so the bar only moves forward
        beat.report(now=True, phase=phases[0], step=0, total=len(phases), unit="phases", fraction=0.0)
        pipe = self.pipeline(p["run_id"], p.get("checkpoint", "last"))
        beat.report(now=True, phase=phases[1], step=1, total=len(phases), unit="phases", fraction=0.0)
        report: dict[str, Any] = {}  # text: finish reasons, usage, log-probabilities (what OpenAI clients read)
        modality = modalities[pipe.modality]
        if modality.prompted:  # a language model: completions, streamed, with a report OpenAI clients read
            output, report = self._generate_text(job, pipe, p, beat)
        else:
            keys = modality.generate_keys
            options = {k: p[k] for k in keys if p.get(k) is not None}  # unset: the pipeline's own default
            uploads = {k: v for k, v in options.items() if isinstance(v, str) and v.startswith("upload:")}

            def tick(done: int, total: int) -> None:  # every pipeline calls it as its sampling advances
                fraction = round(done / total, 4) if total else 0.0
                beat.advance(phase=phases[1], step=done, total=total, unit="steps", fraction=fraction)

            output = pipe(
                n=int(p.get("n", 1)),
                seed=int(p.get("seed", 0)),
                progress=tick,
                **{**options, **{k: self._data(v) for k, v in uploads.items()}},
            )
            if uploads:  # the recipe names the upload (a replay reads it again), never the server's path
                recipe_of = output.recipe_of
                output.recipe_of = lambda i: {**recipe_of(i), **uploads}
        beat.report(now=True, phase=phases[2], step=2, total=len(phases), unit="phases", fraction=1.0)
        from ..safety import image_watermark

        with image_watermark.indexing_to(self.settings.runs):  # a stripped copy is still traced to its generation
            ids = self.feedback.add_outputs(output, job_id=job.id, user=job.user, replay_of=p.get("replay_of"))
        beat.report(now=True, phase="done", step=len(phases), total=len(phases), unit="phases", fraction=1.0)
        return {**self._generate_result(p, ids), **report}

    def _generate_text(self, job: JobRow, pipe: Any, p: dict[str, Any], beat: _Heartbeat) -> tuple[Any, dict[str, Any]]:
        """The completions and their report. A single completion is streamed through :class:`_TextEvents`, and
        its progress is its pieces (about one a token) of ``max_tokens``, sent with each heartbeat."""
        keys = modalities[pipe.modality].generate_keys
        sampling = {k: p[k] for k in keys if k != "prompt" and p.get(k) is not None}
        prompt, n, seed = p.get("prompt", ""), int(p.get("n", 1)), int(p.get("seed", 0))
        events = _TextEvents(self.jobs, job.id) if n == 1 else None
        limit, pieces = p.get("max_tokens"), [0]

        def on_piece(row: int, piece: str) -> None:
            assert events is not None
            events.put(row, piece)
            pieces[0] += 1
            beat.report(phase="sampling", step=pieces[0], total=limit, unit="tokens")

        try:
            output, done = pipe.complete(
                prompt,
                n=n,
                seed=seed,
                request_id=job.id,  # the moderation log names the job
                moderator=self.settings.moderator(),
                top_logprobs=int(p.get("logprobs") or 0),
                on_piece=on_piece if events else None,
                **sampling,
            )
        finally:
            if events:
                events.close()
        if p.get("messages"):  # a chat reply: its recipe keeps the conversation it answers
            recipe_of, messages = output.recipe_of, p["messages"]
            output.recipe_of = lambda i: {**recipe_of(i), "messages": messages}
        tok = pipe.tokenizer
        report = text_report(tok.decode, tok.encode, prompt, done, p, pipe.score_prompt)
        # what the pipeline warned about the prompt (cut to fit the context, characters it never saw): the page shows it
        return output, {**report, "warnings": pipe.prompt_notes(prompt)}

    def _generate_result(self, p: dict[str, Any], ids: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = {"generation_ids": ids}
        if p.get("replay_of"):
            result["identical"] = self.identical(p["replay_of"], ids[0])
        return result

    def identical(self, a_id: str, b_id: str) -> bool:
        """The same output, as the modality compares them (same text, the same pixels, ...)."""
        a, b = self.feedback.get(a_id), self.feedback.get(b_id)
        return modalities[a.modality].same_item(self.feedback, a, b)

    # --- edit ---------------------------------------------------------------------------------------
    def _edit(self, job: JobRow, beat: _Heartbeat) -> dict[str, Any]:
        """Edit the uploaded image; the result (at the model's size) is stored as a generation, whose recipe names
        the uploads (never the server's paths) beside the input's and mask's sha256."""
        p = dict(job.params)
        already = self.feedback.list(job_id=job.id, limit=10_000)
        if already:  # an earlier attempt stored its output and died before saying so
            return self._generate_result(p, [g.id for g in already])
        phases = EDIT_PHASES
        beat.report(now=True, phase=phases[0], step=0, total=len(phases), unit="phases")
        pipe = self.pipeline(p["run_id"], p.get("checkpoint", "last"))
        mask = self._images(p["mask"]) if p.get("mask") else None
        beat.report(now=True, phase=phases[1], step=1, total=len(phases), unit="phases")
        output = pipe.edit(
            self._images(p["input"]),
            task=p.get("task", "inpaint"),
            mask=mask[0] if mask and len(mask) == 1 else mask,
            seed=int(p.get("seed", 0)),
            steps=p.get("steps"),
            sampler=p.get("sampler"),
            class_label=p.get("class_label"),
            guidance=p.get("guidance"),
            **p.get("options", {}),
        )
        uploads = {k: p[k] for k in ("input", "mask") if p.get(k)}
        recipe_of = output.recipe_of
        output.recipe_of = lambda i: {**recipe_of(i), **uploads}
        beat.report(now=True, phase=phases[2], step=2, total=len(phases), unit="phases")
        from ..safety import image_watermark

        with image_watermark.indexing_to(self.settings.runs):  # a stripped copy is still traced to its edit
            ids = self.feedback.add_outputs(output, job_id=job.id, user=job.user, replay_of=p.get("replay_of"))
        beat.report(now=True, phase="done", step=len(phases), total=len(phases), unit="phases")
        return {**self._generate_result(p, ids), "model_calls": output.recipe["model_calls"]}

    def _images(self, upload: str) -> list[str]:
        """The image files of an uploaded image (one) or zip (each, in name order), or one line naming the upload."""
        folder = self.settings.uploads / upload.split(":", 1)[1] / "images"
        files = sorted(str(f) for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else []
        if not files:
            raise NotFoundError(f"upload {upload} is gone, or holds no image")
        return files

    # --- evaluate -----------------------------------------------------------------------------------
    def _evaluate(self, job: JobRow, beat: _Heartbeat) -> dict[str, Any]:
        from .. import api
        from ..runs import RunStore

        p = job.params
        run = RunStore(self.settings.runs).get(p["run_id"], paths=False)  # the store only, then by its own folder
        beat.report(now=True, phase="sampling and scoring", step=0, total=1, unit="evaluations")

        def listen(news: dict[str, Any]) -> None:
            """The evaluation's phases (as they start) and a phase's steps (``genloop.progress.Phases``)."""
            if news.get("total"):
                beat.advance(**news, fraction=round(int(news.get("step") or 0) / int(news["total"]), 4))
            else:
                beat.report(now=True, **news)

        r = api.evaluate(
            str(run.dir),
            n=int(p.get("n", 500)),
            seed=int(p.get("seed", 0)),
            runs_dir=self.settings.runs,
            progress=listen,
        )
        beat.report(now=True, phase="done", step=1, total=1, unit="evaluations", fraction=1.0)
        return {"metrics": {k: v for k, v in r.items() if isinstance(v, (int, float, str, bool)) or v is None}}


_REQUEUED = object()
GENERATE_PHASES = ("loading the model", "sampling", "storing the outputs")  # a generation's progress events
EDIT_PHASES = ("loading the model", "editing", "storing the outputs")  # an edit's progress events
ADVANCE_EVERY = 0.05  # a sampling step's progress is sent at once each time its fraction moves on by this much
STOP_GRACE = 60.0  # seconds torchrun's processes get to checkpoint and exit after SIGTERM


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send the child SIGTERM when this worker dies (even by SIGKILL), so
    torchrun never trains on unwatched while a retry of its job resumes the same run. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)
    return lambda: prctl(pr_set_pdeathsig, sigterm)


def _start(cmd: list[str], out: IO[bytes], err: IO[bytes]) -> subprocess.Popen:
    """torchrun in a session of its own: a Ctrl-C in the worker's terminal reaches the worker, which stops it."""
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True, preexec_fn=_die_with_parent()
    )


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (Linux ``/proc``): torchrun starts its ranks in sessions of their own."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parents[int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])].append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun's process group and every rank it started (in their own sessions)."""
    for pid in _children(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _signal_group(proc, signal.SIGKILL)


def _parent(pid: Any) -> int | None:
    try:
        return int(Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError, TypeError):
        return None


def _run_started_by(store: Any, agent: int, since: float) -> Any:
    """The run whose rank 0 (a child of the torchrun process ``agent``, on this host) made it after ``since``.

    Only folders newer than ``since`` are read, so a large shared run store costs a directory listing."""
    root = Path(store.root)
    if not root.is_dir():
        return None
    for folder in root.iterdir():
        try:
            if folder.name.startswith(".") or folder.stat().st_mtime < since - 1:
                continue
            info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if info.get("host") == socket.gethostname() and _parent(info.get("pid")) == agent:
            try:
                return store.get(folder.name, paths=False)
            except GenLoopError:
                return None
    return None


def _run_named_by(store: Any, line: str) -> Any:
    """The run ``genloop train`` named on its last line of output, if that is one."""
    try:
        return store.get(line.strip(), paths=False) if line.strip() else None
    except GenLoopError:
        return None


def _tail(f: IO[bytes], lines: int) -> str:
    f.flush()
    f.seek(0)
    text = f.read()[-16384:].decode("utf-8", "replace")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def main(settings: Settings) -> None:
    """Entry point of ``genloop worker``: recover orphans once, then run jobs until told to stop."""
    w = Worker(settings)
    signal.signal(signal.SIGTERM, lambda *_: w.shutdown.set())
    recovered = w.jobs.recover(settings.stale_after, exclude=w.name)
    if recovered:
        print(
            f"worker {w.name}: recovered {len(recovered)} job(s): " + ", ".join(f"{j} → {s}" for j, s in recovered),
            flush=True,
        )
    w.run_forever()


__all__ = ["Worker", "main", "ConfigError"]
