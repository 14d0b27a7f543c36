"""The run store: directories as the source of truth, a SQLite index kept in step with them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genloop.errors import NotFoundError
from genloop.runs import RunStore


def _make(store: RunStore, model: str = "dcgan", dataset: str = "digits"):
    return store.create(model, dataset, {"model": {"name": model}}, seed=0)


def test_create_get_update_list_remove(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    a, b = _make(store), _make(store, "vae")
    assert (a.dir / "config.json").is_file() and (a.dir / "run.json").is_file()
    assert not list((tmp_path / "runs").glob(".tmp-*"))
    assert store.get(a.id).info["model"] == "dcgan"
    assert store.get(str(a.dir)).id == a.id  # a run folder path works too
    store.update(a, status="finished", step=10, summary={"fid": 3.0, "fid_floor": 1.0}, timings={"train_seconds": 5.0})
    rows = {r.id: r for r in store.list()}
    assert rows[a.id].status == "finished" and rows[a.id].step == 10 and rows[a.id].summary["fid"] == 3.0
    assert [r.id for r in store.list(model="vae")] == [b.id]
    assert store.list(status="finished")[0].id == a.id
    store.remove(a.id)
    assert not a.dir.exists() and [r.id for r in store.list()] == [b.id]
    with pytest.raises(NotFoundError, match="no run"):
        store.get(a.id)


def test_index_follows_the_directories(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    a, b = _make(store), _make(store)
    shutil.rmtree(a.dir)  # removed by hand
    (tmp_path / "runs" / "index.sqlite").unlink()  # index lost
    assert [r.id for r in RunStore(tmp_path / "runs").list()] == [b.id]


def test_id_prefix_and_ambiguity(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    a = _make(store)
    assert store.get(a.id[:-2]).id == a.id
    _make(store)
    with pytest.raises(NotFoundError, match="ambiguous"):
        store.get(a.id[:8])
    with pytest.raises(NotFoundError, match="recent runs"):
        store.get("zzz")


def test_empty_store(tmp_path: Path) -> None:
    assert RunStore(tmp_path / "nothing").list() == []


def test_a_live_run_cannot_be_claimed_twice_and_a_dead_one_reads_killed(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from genloop.errors import ConfigError

    store = RunStore(tmp_path / "runs")
    run = _make(store)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store.update(run, status="running", pid=other.pid, host=__import__("socket").gethostname())
        with pytest.raises(ConfigError, match=f"being trained by process {other.pid}"):
            store.mark_running(store.get(run.id))
    finally:
        other.kill()
        other.wait()
    assert store.get(run.id).info["status"] == "killed"
    assert store.mark_running(store.get(run.id)).info["pid"] == os.getpid()


def test_a_run_index_created_by_another_process_at_the_same_moment_is_used(tmp_path, monkeypatch) -> None:
    """Two workers opening a fresh run store at once: the loser of the CREATE TABLE race uses the winner's table."""
    from sqlalchemy.exc import OperationalError

    from genloop import runs as runs_module

    real = runs_module._Base.metadata.create_all
    calls = []

    def racing(engine, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the other process creates the table between our check and our CREATE
            real(engine, *args, **kwargs)
            raise OperationalError("CREATE TABLE runs", {}, Exception("table runs already exists"))
        return real(engine, *args, **kwargs)

    monkeypatch.setattr(runs_module._Base.metadata, "create_all", racing)
    store = runs_module.RunStore(tmp_path / "runs")
    run = store.create("vae", "digits", {"model": {"name": "vae"}}, 0)
    assert [r.id for r in store.list()] == [run.id] and len(calls) == 2
