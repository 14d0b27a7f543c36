"""Workers on several machines: `genloop worker` processes sharing one PostgreSQL database and run store.

Two worker processes stand for two machines (``GENLOOP_WORKER_HOST`` names them, as in containers): every
job runs exactly once, both report host, device and heartbeat in ``/v1/health``, and a training job that asks
for ``nproc`` processes runs under torchrun with its run recorded on the job. Needs the test PostgreSQL
(``scripts/test-postgres.sh``); the parts that do not (schema, claiming, the workers' rows) also run on SQLite.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_env, tiny
from fastapi.testclient import TestClient
from studio_support import BACKENDS, PG_URL, database_url

from genloop.database import connect
from genloop.runs import RunStore
from genloop.server.app import create_app
from genloop.server.jobs import JobStore
from genloop.server.liveness import WorkerRegistry
from genloop.server.settings import Settings

TRAIN = {"model": "vae", "data": "digits", "steps": 2, "overrides": tiny("vae")}


def _wait(cond, timeout: float = 90.0, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path)


def test_nproc_is_validated(tmp_path: Path) -> None:
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}", runs=tmp_path / "runs")
    client = TestClient(create_app(settings))
    for bad in (0, -1, 65, "two"):
        r = client.post("/v1/jobs", json={"kind": "train", "params": {**TRAIN, "nproc": bad}})
        assert r.status_code == 422, (bad, r.text)
        assert "nproc" in r.text
    r = client.post("/v1/jobs", json={"kind": "train", "params": {**TRAIN, "nproc": 2}})
    assert r.status_code == 202 and r.json()["params"]["nproc"] == 2


def test_concurrent_claims_take_each_job_once(db: str) -> None:
    """Eight claimers on their own connections race for 40 jobs: each job is claimed by exactly one."""
    jobs = JobStore(connect(db), max_queued=100)
    ids = [jobs.enqueue("train", {**TRAIN, "seed": i}).id for i in range(40)]
    taken: list[tuple[str, str]] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (job := jobs.claim(name)) is not None:
            with lock:
                taken.append((job.id, name))

    threads = [threading.Thread(target=claimer, args=(f"host{i}:{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(j for j, _ in taken) == sorted(ids)
    assert all(jobs.get(j).attempts == 1 for j in ids)


def test_health_reports_device_age_and_current_job(db: str) -> None:
    engine = connect(db)
    jobs, workers = JobStore(engine), WorkerRegistry(engine)
    workers.register("gpu-box-7:4242", "2 x NVIDIA H200")
    workers.register("laptop:99", None)
    job = jobs.enqueue("train", TRAIN)
    assert jobs.claim("gpu-box-7:4242").id == job.id
    rows = {w["id"]: w for w in workers.workers(30.0, jobs.running_jobs())}
    box = rows["gpu-box-7:4242"]
    assert box["host"] == "gpu-box-7" and box["pid"] == 4242 and box["device"] == "2 x NVIDIA H200"
    assert box["alive"] and 0 <= box["heartbeat_age"] < 30 and box["job"] == {"id": job.id, "kind": "train"}
    assert rows["laptop:99"]["job"] is None


def test_an_old_workers_table_gains_the_device_column(tmp_path: Path) -> None:
    from sqlalchemy import text

    engine = connect(f"sqlite:///{tmp_path / 'old.sqlite'}")
    with engine.begin() as conn:  # the table as releases before the device column made it
        conn.execute(
            text(
                "CREATE TABLE workers (id VARCHAR(128) PRIMARY KEY, host VARCHAR(128), pid INTEGER, "
                "started DATETIME, heartbeat DATETIME)"
            )
        )
    registry = WorkerRegistry(engine)
    registry.register("old-host:1", "cpu (2 cores)")
    assert registry.workers(30.0)[0]["device"] == "cpu (2 cores)"


@pytest.mark.skipif(not PG_URL, reason="no PostgreSQL server: set GENLOOP_TEST_PG_URL (scripts/test-postgres.sh)")
def test_two_worker_machines_share_a_postgres_queue(tmp_path: Path) -> None:
    """Two `genloop worker` processes named as two machines: each job runs once, both show in health, and a
    job with nproc=2 trains under torchrun (run.json: processes 2) with its run recorded on the job."""
    urls = database_url("postgresql", tmp_path)
    url = next(urls)
    runs = tmp_path / "runs"  # the shared run store (a shared file system between real machines)
    settings = Settings(db_url=url, runs=runs)
    client = TestClient(create_app(settings))
    procs = []
    try:
        for host in ("machine-a", "machine-b"):
            env = {**cli_env(tmp_path), "GENLOOP_WORKER_HOST": host, "GENLOOP_DB_URL": ""}
            cmd = [sys.executable, "-m", "genloop", "worker", "--database-url", url, "--runs-dir", str(runs)]
            procs.append(subprocess.Popen(cmd, env=env))

        def alive() -> list[dict]:
            return [w for w in client.get("/v1/health").json()["workers"] if w["alive"]]

        _wait(lambda: {w["host"] for w in alive()} == {"machine-a", "machine-b"})
        posted = [
            client.post("/v1/jobs", json={"kind": "train", "params": {**TRAIN, "seed": i}}).json() for i in range(4)
        ]
        wide = client.post(
            "/v1/jobs",
            json={"kind": "train", "params": {**TRAIN, "steps": 10, "nproc": 2, "overrides": tiny("vae")}},
        ).json()
        ids = [j["id"] for j in [*posted, wide]]

        def finished() -> list[dict] | None:
            got = [client.get(f"/v1/jobs/{i}").json() for i in ids]
            return got if all(j["status"] in ("succeeded", "failed", "cancelled") for j in got) else None

        done = _wait(finished, timeout=150)
        for j in done:
            assert j["status"] == "succeeded", j["error"]
            assert j["attempts"] == 1 and j["run_id"] == j["result"]["run_id"]
            events = client.get(f"/v1/jobs/{j['id']}/events").text
            assert events.count('"status": "running"') == 1  # claimed once, by one worker
        assert len({j["run_id"] for j in done}) == len(ids)  # five jobs, five runs: none ran twice
        assert sorted(r.id for r in RunStore(runs).list()) == sorted(j["run_id"] for j in done)
        wide_done = done[-1]
        run = RunStore(runs).get(wide_done["run_id"], paths=False)
        assert run.info["processes"] == 2 and run.info["step"] == 10 and wide_done["result"]["processes"] == 2
        assert wide_done["progress"].get("step") == 10  # followed through the run's metrics.jsonl

        health = client.get("/v1/health").json()
        assert health["status"] == "ok"
        seen = {w["host"]: w for w in health["workers"]}
        assert set(seen) == {"machine-a", "machine-b"}
        for w in seen.values():
            assert w["alive"] and w["last_heartbeat"] and w["heartbeat_age"] < 30 and w["device"]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        urls.close()
    assert all(p.returncode == 0 for p in procs)


def test_cancelling_a_torchrun_job_stops_every_process(tmp_path: Path) -> None:
    """Cancel an nproc=2 job mid-training: torchrun's ranks checkpoint and exit, none is left behind."""
    from studio_support import WorkerThread

    settings = Settings(db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}", runs=tmp_path / "runs")
    client = TestClient(create_app(settings))
    params = {**TRAIN, "steps": 20_000, "nproc": 2, "overrides": tiny("vae", "train.checkpoint_every=20")}
    with WorkerThread(settings):
        job = client.post("/v1/jobs", json={"kind": "train", "params": params}).json()
        running = _wait(lambda: (j := client.get(f"/v1/jobs/{job['id']}").json())["progress"].get("step") and j)
        assert running["run_id"]  # found through its rank 0's pid while it trains
        run = RunStore(settings.runs).get(running["run_id"], paths=False)
        ranks = [int(run.info["pid"])]
        assert run.info["processes"] == 2
        client.post(f"/v1/jobs/{job['id']}/cancel")
        done = _wait(lambda: (j := client.get(f"/v1/jobs/{job['id']}").json())["status"] != "running" and j)
    assert done["status"] == "cancelled" and done["result"]["run_id"] == run.id
    info = RunStore(settings.runs).get(run.id, paths=False).info
    assert info["status"] == "interrupted" and 0 < info["step"] < 20_000
    assert not any(Path(f"/proc/{pid}").exists() for pid in ranks)
