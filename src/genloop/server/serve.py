"""Running the studio: uvicorn for the app plus worker processes for the jobs.

The workers are separate processes (``python -m genloop worker``) so that a training job's CPU work never
stalls the HTTP server and a crashing job cannot take the server down; a :class:`Supervisor` restarts a
worker that dies. On shutdown each worker gets SIGTERM: a training job saves a checkpoint and goes back to
the queue, to resume at the next start.

Workers come in lanes (:data:`.jobs.LANES`): ``settings.workers`` for the interactive lane (generations) and as
many for the batch lane (training, evaluation), so a generation never waits behind a training job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from .settings import Settings


def worker_command(settings: Settings) -> list[str]:
    cmd = [sys.executable, "-m", "genloop", "worker", "--runs-dir", str(settings.runs), "--lane", settings.lane]
    if settings.db_url:
        cmd += ["--db", settings.db_url]
    return cmd


def _spawn(settings: Settings) -> subprocess.Popen:
    env = {**os.environ, "GENLOOP_RUNS_DIR": str(settings.runs), "GENLOOP_PARENT_PID": str(os.getpid())}
    env["GENLOOP_LANE"] = settings.lane
    if settings.db_url:
        env["GENLOOP_DB_URL"] = settings.db_url
    env["GENLOOP_MODERATION"] = "on" if settings.moderation else "off"  # workers moderate as the server does
    if settings.moderation_rules:
        env["GENLOOP_MODERATION_RULES"] = settings.moderation_rules
    return subprocess.Popen(worker_command(settings), env=env)


class Supervisor(threading.Thread):
    """Keeps ``settings.workers`` worker processes running in each lane (``settings.lane`` ``all``: one set per
    lane of :data:`.jobs.LANES`; a single lane: that lane's set): a worker that dies (a crash, the OOM killer, a
    SIGKILL) is reaped at once (no zombie) and restarted after a back-off that doubles from
    :data:`FIRST_BACKOFF` to :data:`MAX_BACKOFF` while it keeps dying, and starts over once a worker has
    lived :data:`STEADY_SECONDS`. Its running job is recovered by the new worker (``JobStore.recover``).
    """

    FIRST_BACKOFF, MAX_BACKOFF, STEADY_SECONDS, CHECK_SECONDS = 1.0, 60.0, 60.0, 0.5

    def __init__(self, settings: Settings, spawn: Callable[[Settings], subprocess.Popen] = _spawn) -> None:
        super().__init__(daemon=True, name="worker-supervisor")
        self.settings, self.spawn = settings, spawn
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.procs: list[subprocess.Popen | None] = []
        self.slots: list[Settings] = []  # the settings (lane) each process was started with
        self.started_at: list[float] = []
        self.backoff: list[float] = []
        self.restart_at: list[float] = []
        self.restarts = 0

    def start(self) -> None:
        from .jobs import LANES

        lanes = LANES if self.settings.lane == "all" else (self.settings.lane,)
        per_lane = range(self.settings.workers)
        self.slots = [self.settings.model_copy(update={"lane": lane}) for lane in lanes for _ in per_lane]
        for slot in self.slots:
            self.procs.append(self.spawn(slot))
            self.started_at.append(time.monotonic())
            self.backoff.append(self.FIRST_BACKOFF)
            self.restart_at.append(0.0)
        super().start()

    def run(self) -> None:
        while not self.stopping.wait(self.CHECK_SECONDS):
            with self.lock:
                if not self.stopping.is_set():
                    self.check()

    def check(self) -> None:
        """One pass: reap the dead, restart those whose back-off has passed."""
        now = time.monotonic()
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is not None:  # poll() reaps the exited child
                lived = now - self.started_at[i]
                self.backoff[i] = self.FIRST_BACKOFF if lived >= self.STEADY_SECONDS else self.backoff[i]
                self.restart_at[i] = now + self.backoff[i]
                print(
                    f"genloop serve: worker pid {p.pid} exited with {p.returncode} after {lived:.0f} s; "
                    f"restarting in {self.backoff[i]:g} s",
                    file=sys.stderr,
                    flush=True,
                )
                self.backoff[i] = min(self.backoff[i] * 2, self.MAX_BACKOFF)
                self.procs[i] = None
            elif p is None and now >= self.restart_at[i]:
                self.procs[i], self.started_at[i] = self.spawn(self.slots[i]), now
                self.restarts += 1

    def stop(self, grace: float = 60.0) -> None:
        """No more restarts; SIGTERM every worker (a training job checkpoints), SIGKILL after ``grace``."""
        with self.lock:
            self.stopping.set()
        if self.is_alive():
            self.join(timeout=5)
        stop_workers([p for p in self.procs if p is not None], grace)


def stop_workers(procs: list[subprocess.Popen], grace: float = 60.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()


def serve(settings: Settings) -> None:
    import uvicorn

    from .app import create_app

    settings.check()
    app = create_app(settings)  # opens (and creates) the database before any worker starts
    threading.Thread(target=app.state.ctx.models.models, daemon=True, name="model-index").start()  # warm it
    supervisor = Supervisor(settings)
    supervisor.start()
    # uvicorn re-raises the SIGTERM/SIGINT it caught once it has shut down; with the default handler that
    # would end this process before `finally` stops the workers, so turn it into an ordinary exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    finally:
        supervisor.stop()
