"""Running the studio: uvicorn for the app plus worker processes for the jobs.

The workers are separate processes (``python -m genloop worker``) so that a training job's CPU work never
stalls the HTTP server and a crashing job cannot take the server down. On shutdown each worker gets
SIGTERM: a training job saves a checkpoint and goes back to the queue, to resume at the next start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from .settings import Settings


def worker_command(settings: Settings) -> list[str]:
    cmd = [sys.executable, "-m", "genloop", "worker", "--runs-dir", str(settings.runs)]
    if settings.db_url:
        cmd += ["--db", settings.db_url]
    return cmd


def start_workers(settings: Settings) -> list[subprocess.Popen]:
    env = {**os.environ, "GENLOOP_RUNS_DIR": str(settings.runs), "GENLOOP_PARENT_PID": str(os.getpid())}
    if settings.db_url:
        env["GENLOOP_DB_URL"] = settings.db_url
    return [subprocess.Popen(worker_command(settings), env=env) for _ in range(settings.workers)]


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
    procs = start_workers(settings)
    # uvicorn re-raises the SIGTERM/SIGINT it caught once it has shut down; with the default handler that
    # would end this process before `finally` stops the workers, so turn it into an ordinary exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    finally:
        stop_workers(procs)
