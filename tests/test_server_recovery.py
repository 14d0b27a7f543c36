"""Durability: killed workers and killed servers lose no job and duplicate none.

Real processes, real SIGKILLs: a training job whose worker dies is re-queued and its *run* resumes from
the last checkpoint (not a new run); a server killed mid-job comes back and finishes it; a generation job
that stored its outputs before dying reports them instead of generating twice; a job whose worker keeps
dying is failed with the reason.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from conftest import cli_env, tiny
from studio_support import drain

import genloop
from genloop.database import connect
from genloop.runs import RunStore
from genloop.server.jobs import JobStore
from genloop.server.settings import Settings

STEPS = 1500
TRAIN = {
    "model": "vae",
    "data": "digits",
    "steps": STEPS,
    "overrides": tiny("vae", "train.checkpoint_every=25", "train.log_every=25"),
}


def _wait(cond, timeout: float = 120.0, every: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def _checkpointed(runs: Path, jobs: JobStore, job_id: str, past: int = 50) -> bool:
    job = jobs.get(job_id)
    if not job.run_id:
        return False
    run = RunStore(runs).get(job.run_id)
    return run.last_checkpoint.is_file() and int(run.info.get("step", 0)) >= past


def test_killed_worker_job_resumes_its_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    url = f"sqlite:///{tmp_path / 'studio.sqlite'}"
    jobs = JobStore(connect(url))
    job = jobs.enqueue("train", TRAIN)
    env = {**cli_env(tmp_path), "GENLOOP_DB_URL": url}
    worker = [sys.executable, "-m", "genloop", "worker", "--runs-dir", str(runs)]
    first = subprocess.Popen(worker, env=env)
    try:
        _wait(lambda: _checkpointed(runs, jobs, job.id))
    finally:
        first.kill()  # SIGKILL: no checkpoint on the way out, no chance to tidy up
        first.wait()
    assert jobs.get(job.id).status == "running"  # as the dead worker left it
    run_id = jobs.get(job.id).run_id
    second = subprocess.Popen(worker, env=env)
    try:
        done = _wait(lambda: (j := jobs.get(job.id)).status in ("succeeded", "failed") and j, timeout=300)
    finally:
        second.terminate()
        second.wait(timeout=60)
    assert done.status == "succeeded", done.error
    assert done.attempts == 2 and done.run_id == run_id and done.result["run_id"] == run_id
    assert done.result["step"] == STEPS
    assert [r.id for r in RunStore(runs).list()] == [run_id]  # resumed, not started again
    statuses = [e.data["status"] for e in jobs.events(job.id) if e.type == "status"]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_killed_server_comes_back_and_finishes_the_job(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "genloop", "serve", "--port", str(port)]

    def start() -> subprocess.Popen:
        p = subprocess.Popen(serve, env=env, start_new_session=True)
        _wait(lambda: _up(base), timeout=60)
        return p

    server = start()
    try:
        job = httpx.post(f"{base}/v1/jobs", json={"kind": "train", "params": TRAIN}).json()
        jobs = JobStore(connect(f"sqlite:///{(tmp_path / 'runs' / 'studio.sqlite').resolve()}"))
        _wait(lambda: _checkpointed(tmp_path / "runs", jobs, job["id"]))
        os.kill(server.pid, signal.SIGKILL)  # the server dies; its orphaned worker checkpoints and hands the job back
        server.wait()
        _wait(lambda: jobs.get(job["id"]).status == "queued", timeout=60)
        server = start()
        done = _wait(
            lambda: (j := httpx.get(f"{base}/v1/jobs/{job['id']}").json())["status"] in ("succeeded", "failed") and j,
            timeout=300,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["step"] == STEPS and done["attempts"] == 2
    assert len(RunStore(tmp_path / "runs").list()) == 1


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_retried_generation_is_not_duplicated(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = genloop.train("vae", "digits", overrides=tiny("vae"), steps=3, runs_dir=runs, progress=False)
    settings = Settings(runs=runs, db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}", stale_after=0)
    from genloop.server.worker import Worker

    w = Worker(settings, name=f"{socket.gethostname()}:999999999")  # a pid that cannot exist: a dead worker
    job = w.jobs.enqueue("generate", {"run_id": run.id, "n": 3, "seed": 0})
    claimed = w.jobs.claim(w.name)
    stored = w.feedback.add_outputs(w.pipeline(run.id)(n=3, seed=0), job_id=job.id)  # ...then it died
    assert claimed.id == job.id and w.jobs.recover(stale_after=60) == [(job.id, "queued")]
    assert drain(settings) == 1
    done = w.jobs.get(job.id)
    assert done.status == "succeeded" and done.result["generation_ids"] == stored
    assert w.feedback.count() == 3


def test_a_job_that_keeps_killing_its_worker_fails_with_the_reason(tmp_path: Path) -> None:
    jobs = JobStore(connect(f"sqlite:///{tmp_path / 'studio.sqlite'}"), max_attempts=2)
    job = jobs.enqueue("evaluate", {"run_id": "x", "n": 10})
    dead = f"{socket.gethostname()}:999999999"
    for attempt, expect in ((1, "queued"), (2, "failed")):
        assert jobs.claim(dead).attempts == attempt
        assert jobs.recover() == [(job.id, expect)]
    failed = jobs.get(job.id)
    assert failed.status == "failed" and "gave up after 2 attempts" in failed.error
    assert jobs.claim(dead) is None


def test_a_killed_worker_is_reaped_restarted_and_reported(tmp_path: Path) -> None:
    """SIGKILL the worker of a live `genloop serve`: health stops saying "ok" for it, the supervisor reaps
    the process and starts another, and a job queued meanwhile runs."""
    env = cli_env(tmp_path)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "genloop", "serve", "--port", str(port)], env=env, start_new_session=True
    )

    def alive() -> list[dict]:
        return [w for w in httpx.get(f"{base}/v1/health", timeout=5).json()["workers"] if w["alive"]]

    try:
        _wait(lambda: _up(base), timeout=60)
        first = _wait(alive, timeout=60)[0]
        assert httpx.get(f"{base}/v1/health").json()["status"] == "ok"
        os.kill(first["pid"], signal.SIGKILL)
        job = httpx.post(f"{base}/v1/jobs", json={"kind": "train", "params": {**TRAIN, "steps": 2}}).json()
        # its replacement: a new worker of the same lane (serve runs one per lane)
        second = _wait(lambda: [w for w in alive() if w["pid"] != first["pid"] and w["lane"] == first["lane"]], 60)[0]
        assert not Path(f"/proc/{first['pid']}").exists()  # reaped, not a zombie
        health = httpx.get(f"{base}/v1/health").json()
        assert health["status"] == "ok" and first["pid"] not in [w["pid"] for w in health["workers"]]
        assert second["host"] == socket.gethostname() and second["last_heartbeat"]
        done = _wait(
            lambda: (j := httpx.get(f"{base}/v1/jobs/{job['id']}").json())["status"] in ("succeeded", "failed") and j,
            timeout=120,
        )
        assert done["status"] == "succeeded", done["error"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_a_run_killed_before_its_first_checkpoint_is_resumed_not_replaced(tmp_path: Path) -> None:
    """The worker died after creating the job's run and before its first checkpoint: the retry trains that
    same run from step 0 (same id, same seed), and no second run appears."""
    runs = tmp_path / "runs"
    settings = Settings(runs=runs, db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}")
    params = {"model": "vae", "data": "digits", "steps": 4, "seed": 7, "overrides": tiny("vae")}
    jobs = JobStore(connect(settings.db_url))
    job = jobs.enqueue("train", params)
    dead = f"{socket.gethostname()}:999999999"
    assert jobs.claim(dead).id == job.id

    class Died(Exception):
        pass

    def die(run: Any) -> None:  # the run exists, its id is recorded, and then the worker is gone
        jobs.set_run(job.id, run.id)
        raise Died

    try:
        genloop.train(
            "vae", "digits", overrides=tiny("vae"), steps=4, seed=7, runs_dir=runs, progress=False, on_run=die
        )
    except Died:
        pass
    run_id = jobs.get(job.id).run_id
    assert run_id and not RunStore(runs).get(run_id).last_checkpoint.is_file()
    assert jobs.requeue(job.id, dead, "the worker died")
    assert drain(settings) == 1
    done = jobs.get(job.id)
    assert done.status == "succeeded", done.error
    assert done.run_id == run_id and done.result["run_id"] == run_id and done.result["step"] == 4
    assert [r.id for r in RunStore(runs).list()] == [run_id]
    assert RunStore(runs).get(run_id).info["seed"] == 7
