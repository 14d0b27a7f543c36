"""A responsive studio: job lanes (a generation never waits behind training), progress events that move
(training: step of steps or time of budget; generation: its phases), and ``/v1/models`` from an index that
does not rescan the run store on every call."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import tiny
from fastapi.testclient import TestClient
from studio_support import drain, events_of

import genloop
from genloop.runs import RunStore
from genloop.server.app import create_app
from genloop.server.jobs import JobStore, lane_kinds, lane_of
from genloop.server.settings import Settings
from genloop.server.worker import Worker, train_progress


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("lanes") / "runs"
    run = genloop.train("vae", "digits", overrides=tiny("vae"), steps=3, runs_dir=root, progress=False)
    return root, run.id


@pytest.fixture
def settings(runs, tmp_path: Path) -> Settings:
    return Settings(
        runs=runs[0], db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}", media_dir=tmp_path / "media", poll_interval=0.01
    )


def wait_for(cond: Callable[[], object], timeout: float = 120.0) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


class LaneWorker:
    """A worker of one lane in a thread."""

    def __init__(self, settings: Settings, lane: str) -> None:
        self.worker = Worker(settings.model_copy(update={"lane": lane}), name=f"test-{lane}:0")
        self.thread = threading.Thread(target=self.worker.run_forever, daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.worker.shutdown.set()
        self.thread.join(timeout=120)


def test_lanes_split_the_kinds() -> None:
    assert lane_of("train") == lane_of("evaluate") == "batch" and lane_of("generate") == "interactive"
    assert set(lane_kinds("interactive")) | set(lane_kinds("batch")) == set(lane_kinds("all"))
    assert not set(lane_kinds("interactive")) & set(lane_kinds("batch"))
    with pytest.raises(Exception, match="unknown lane 'fast'"):
        lane_kinds("fast")
    from genloop.errors import ConfigError

    with pytest.raises(ConfigError, match="lane"):
        Worker(Settings(runs=Path("/nonexistent-runs"), lane="fast", db_url="sqlite://"))


def test_a_generation_never_waits_behind_training(settings: Settings, runs) -> None:
    client = TestClient(create_app(settings))
    long_train = {"model": "vae", "data": "digits", "time_budget": 300, "overrides": tiny("vae")}
    train = client.post("/v1/jobs", json={"kind": "train", "params": long_train}).json()
    gen = client.post("/v1/generations", json={"run_id": runs[1], "n": 1}).json()
    job = lambda j: client.get(f"/v1/jobs/{j['id']}").json()  # noqa: E731
    assert train["lane"] == "batch" and gen["lane"] == "interactive"
    health = client.get("/v1/health").json()["queue"]["lanes"]
    assert health["batch"]["queued"] == 1 and health["interactive"]["queued"] == 1

    with LaneWorker(settings, "interactive"):
        # The older training job is first in the queue; the interactive worker leaves it there.
        wait_for(lambda: job(gen)["status"] == "succeeded")
        assert job(train)["status"] == "queued"
        lanes = client.get("/v1/health").json()["queue"]["lanes"]
        assert lanes["interactive"]["workers"] == 1 and lanes["batch"]["workers"] == 0
        with LaneWorker(settings, "batch"):
            wait_for(lambda: (job(train)["progress"] or {}).get("step", 0) >= 1)
            second = client.post("/v1/generations", json={"run_id": runs[1], "n": 1, "seed": 1}).json()
            wait_for(lambda: job(second)["status"] == "succeeded")
            assert job(train)["status"] == "running"  # the generation finished while training went on
            client.post(f"/v1/jobs/{train['id']}/cancel")
            wait_for(lambda: job(train)["status"] in ("cancelled", "succeeded"))
    assert job(train)["status"] == "cancelled"


def test_training_and_generation_send_progress_events(settings: Settings, runs) -> None:
    client = TestClient(create_app(settings))
    params = {"model": "vae", "data": "digits", "steps": 6, "overrides": tiny("vae")}
    train = client.post("/v1/jobs", json={"kind": "train", "params": params}).json()
    gen = client.post("/v1/generations", json={"run_id": runs[1], "n": 2}).json()
    drain(settings)

    events = events_of(client, train["id"])
    assert events[-1] == ("status", {"status": "succeeded"})
    progress = [d for k, d in events if k == "progress"]
    assert progress[0]["phase"] == "preparing the data and the model" and progress[0]["total"] == 6
    training = [d for d in progress if d["phase"] == "training" and "fraction" in d]
    assert training and training[-1]["step"] == 6 and training[-1]["fraction"] == 1.0
    assert all(0 <= d["fraction"] <= 1 and "loss" in " ".join(d) for d in training)
    steps = [d["step"] for d in training]
    assert steps == sorted(steps)
    assert client.get(f"/v1/jobs/{train['id']}").json()["progress"]["step"] == 6

    phases = [d["phase"] for k, d in events_of(client, gen["id"]) if k == "progress"]
    phases = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]  # sampling: its phase, then its steps
    assert phases == ["loading the model", "sampling", "storing the outputs", "done"]
    assert client.get(f"/v1/jobs/{gen['id']}").json()["progress"] == {
        "phase": "done",
        "step": 3,
        "total": 3,
        "unit": "phases",
        "fraction": 1.0,
    }


def test_train_progress_follows_steps_or_the_time_budget() -> None:
    p = train_progress({"step": 5, "time": 2.0, "loss": 0.5}, {"steps": 20})
    assert p["fraction"] == 0.25 and p["eta_s"] == 6.0 and p["loss"] == 0.5 and p["total"] == 20
    p = train_progress({"step": 50, "time": 3.0}, {"time_budget": 12})
    assert p["fraction"] == 0.25 and p["eta_s"] == 9.0 and p["total"] is None and p["time_budget"] == 12.0
    p = train_progress({"step": 10, "time": 9.0}, {"steps": 100, "time_budget": 10})  # the budget ends it first
    assert p["fraction"] == 0.9
    assert "fraction" not in train_progress({"step": 1, "time": 1.0}, {})


def _copy_run(src: Path, store: Path, new_id: str) -> None:
    shutil.copytree(src, store / new_id)
    info = json.loads((store / new_id / "run.json").read_text())
    (store / new_id / "run.json").write_text(json.dumps({**info, "id": new_id}))


def test_models_come_from_an_index_not_a_scan(runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "runs"
    store.mkdir()
    src = runs[0] / runs[1]
    _copy_run(src, store, "20260101-000000-vae-aaaa")
    _copy_run(src, store, "20260101-000001-vae-bbbb")
    client = TestClient(create_app(Settings(runs=store, db_url=f"sqlite:///{tmp_path / 's.sqlite'}")))
    index = client.app.state.ctx.models

    first = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert first == ["20260101-000001-vae-bbbb", "20260101-000000-vae-aaaa"]  # newest first
    assert (index.builds, index.listings) == (2, 1)

    def no_scan(*a, **k):
        raise AssertionError("the run store was scanned")

    monkeypatch.setattr(RunStore, "list", no_scan)
    monkeypatch.setattr(RunStore, "_sync", no_scan)
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == first
    assert (index.builds, index.listings) == (2, 1)  # nothing rebuilt, the folder not listed again

    _copy_run(src, store, "20260101-000002-vae-cccc")  # a new run appears...
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids[0] == "20260101-000002-vae-cccc" and (index.builds, index.listings) == (3, 2)  # ...built alone

    info = json.loads((store / "20260101-000000-vae-aaaa" / "run.json").read_text())
    (store / "20260101-000000-vae-aaaa" / "run.json").write_text(json.dumps({**info, "step": 99, "note": "x"}))
    by_id = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert by_id["20260101-000000-vae-aaaa"]["step"] == 99 and index.builds == 4  # a changed run is rebuilt

    shutil.rmtree(store / "20260101-000001-vae-bbbb")  # a removed run disappears
    assert "20260101-000001-vae-bbbb" not in [m["id"] for m in client.get("/v1/models").json()["data"]]


def test_a_worker_of_one_lane_claims_only_its_kinds(settings: Settings) -> None:
    from genloop.database import connect

    jobs = JobStore(connect(settings.db_url, settings.runs))
    jobs.enqueue("train", {"model": "vae"})
    jobs.enqueue("generate", {"run_id": "x"})
    assert jobs.claim("w:1", "interactive").kind == "generate"
    assert jobs.claim("w:2", "interactive") is None
    assert jobs.claim("w:3", "batch").kind == "train"


def test_genloop_worker_refuses_an_unknown_lane(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from conftest import cli

    code, out, err = cli(capsys, "worker", "--lane", "fast", "--runs-dir", tmp_path / "runs")
    assert code != 0 and "lane" in err and "fast" in err and len(err.strip().splitlines()) == 1, (code, out, err)


def test_each_lane_has_its_own_queue_limit(settings: Settings, runs) -> None:
    client = TestClient(create_app(settings.model_copy(update={"max_queued": 2})))
    train = {"kind": "train", "params": {"model": "vae", "data": "digits", "steps": 2, "overrides": tiny("vae")}}
    assert [client.post("/v1/jobs", json=train).status_code for _ in range(2)] == [202, 202]
    r = client.post("/v1/jobs", json=train)
    assert r.status_code == 429 and "the batch lane's queue is full (2 jobs waiting)" in r.json()["detail"]
    # a full batch lane never turns a generation away
    assert client.post("/v1/generations", json={"run_id": runs[1], "n": 1}).status_code == 202


def test_the_index_reports_a_run_whose_trainer_died_as_killed(runs, tmp_path: Path) -> None:
    store = tmp_path / "runs"
    store.mkdir()
    _copy_run(runs[0] / runs[1], store, "20260101-000000-vae-dead")
    client = TestClient(create_app(Settings(runs=store, db_url=f"sqlite:///{tmp_path / 's.sqlite'}")))
    assert client.get("/v1/models").json()["data"][0]["status"] == "finished"
    info_path = store / "20260101-000000-vae-dead" / "run.json"
    info = json.loads(info_path.read_text())
    import socket

    info_path.write_text(json.dumps({**info, "status": "running", "pid": 999_999_999, "host": socket.gethostname()}))
    assert client.get("/v1/models").json()["data"][0]["status"] == "killed"
