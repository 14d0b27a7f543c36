"""The Runs routes (``routes/runs.py``): the list with each run's headline metric beside its floor, a run's
detail, its report (404, built, served under a strict CSP), comparisons (ranked, or not ranked when reference nets
differ, as ``genloop compare``), deletion (409 while busy, 404 unknown, never by prefix), and auth."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import tiny
from fastapi.testclient import TestClient
from studio_support import TEXT, TINY_GPT, drain

import genloop
from genloop.runs import RunStore
from genloop.server.app import create_app
from genloop.server.settings import Settings

TOKEN = "runs-test-token-0123"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Two tiny image runs and a tiny text run (evaluated for real) in one store."""
    root = tmp_path_factory.mktemp("runs-api")
    runs = root / "runs"
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    a = genloop.train("dcgan", "digits", overrides=tiny("dcgan"), steps=2, runs_dir=runs, progress=False)
    b = genloop.train("dcgan", "digits", overrides=tiny("dcgan"), steps=1, runs_dir=runs, progress=False)
    gpt = genloop.train("gpt", str(corpus), overrides=TINY_GPT, steps=3, runs_dir=runs, progress=False)
    return runs, {"a": a.id, "b": b.id, "gpt": gpt.id, "corpus": str(corpus)}


def settings_for(runs: Path, tmp_path: Path, token: str | None = None) -> Settings:
    return Settings(
        runs=runs,
        db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}",
        media_dir=tmp_path / "media",
        uploads_dir=tmp_path / "uploads",
        poll_interval=0.01,
        token=token,
    )


@pytest.fixture
def settings(store, tmp_path: Path) -> Settings:
    return settings_for(store[0], tmp_path)


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


def fake_eval(runs: Path, run_id: str, values: dict) -> None:
    """An image evaluation's file with chosen numbers (a real one trains a reference net: tens of seconds)."""
    folder = runs / run_id / "eval"
    folder.mkdir(exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"step": 1, **values}), encoding="utf-8")


def row_of(client: TestClient, run_id: str) -> dict:
    [row] = [r for r in client.get("/v1/runs").json()["runs"] if r["id"] == run_id]
    return row


# --- list and detail -----------------------------------------------------------------------------------
def test_list_and_detail_before_and_after_an_evaluation_job(client: TestClient, settings: Settings, store) -> None:
    runs, ids = store
    listed = client.get("/v1/runs").json()["runs"]
    assert {ids["a"], ids["b"], ids["gpt"]} <= {r["id"] for r in listed}
    created = [r["created"] for r in listed]
    assert created == sorted(created, reverse=True)  # newest first
    gpt = row_of(client, ids["gpt"])
    assert (gpt["family"], gpt["modality"], gpt["dataset"]) == ("gpt", "text", ids["corpus"])
    assert (gpt["step"], gpt["total_steps"], gpt["status"]) == (3, 3, "finished")
    assert gpt["has_weights"] and not gpt["evaluated"] and gpt["headline"] is None
    assert gpt["report"] == {"exists": False, "stale": False, "built": None, "url": f"/v1/runs/{ids['gpt']}/report"}

    # an evaluation is the existing job kind; afterwards the row has its headline metric beside its floor
    job = client.post("/v1/jobs", json={"kind": "evaluate", "params": {"run_id": ids["gpt"], "n": 10}}).json()
    drain(settings)
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    gpt = row_of(client, ids["gpt"])
    written = json.loads((runs / ids["gpt"] / "eval" / "metrics.json").read_text())
    h = gpt["headline"]
    assert gpt["evaluated"] and h["key"] == "distinct_1"  # the first text metric of the catalogue with a floor
    assert (h["value"], h["floor"]) == (written["distinct_1"], written["distinct_1_floor"])
    assert h["better"] == "closer to real" and h["text"] == f"{written['distinct_1']:.3f}"

    d = client.get(f"/v1/runs/{ids['gpt']}").json()
    assert d["info"]["id"] == ids["gpt"] and d["config"]["model"]["name"] == "gpt" and d["busy"] is None
    metrics = {m["key"]: m for m in d["evaluation"]["metrics"]}
    assert metrics["val_loss"]["value"] == written["val_loss"] and metrics["val_loss"]["floor"] is None
    assert metrics["self_bleu"]["floor"] == written["self_bleu_floor"] and "fid" not in metrics

    # an image run: FID beside its floor, and its multiple of it
    fake_eval(runs, ids["a"], {"fid": 30.0, "fid_floor": 3.0, "recall": 0.5, "feature_net": {"id": "ref-8px"}})
    h = row_of(client, ids["a"])["headline"]
    assert (h["key"], h["value"], h["floor"], h["x_floor"], h["better"]) == ("fid", 30.0, 3.0, 10.0, "lower")
    nan = {"fid": float("nan"), "fid_floor": 3.0, "feature_net": {"id": "ref-8px"}}
    fake_eval(runs, ids["b"], nan)  # JSON has no NaN: an evaluation that wrote one is answered with null
    assert row_of(client, ids["b"])["headline"]["value"] is None


def test_unknown_prefix_and_malformed_ids(client: TestClient, store) -> None:
    _, ids = store
    r = client.get("/v1/runs/no-such-run")
    assert r.status_code == 404 and r.json()["detail"] == "no run 'no-such-run': GET /v1/runs lists the runs"
    assert str(store[0]) not in r.json()["detail"]  # never where runs live on the server
    assert client.get(f"/v1/runs/{ids['gpt'][:12]}").status_code == 404  # a prefix names no run here
    assert client.get("/v1/runs/..%2Fetc").status_code in (404, 422)
    assert client.get("/v1/runs/-bad").status_code == 422
    # the curves route moved here and still takes a unique prefix, as before
    assert client.get(f"/v1/runs/{ids['gpt']}/metrics").json()["records"]
    assert client.get(f"/v1/runs/{ids['gpt'][:-2]}/metrics").json()["run_id"] == ids["gpt"]


# --- report --------------------------------------------------------------------------------------------
def test_report_is_404_until_built_then_served_sandboxed(client: TestClient, store) -> None:
    runs, ids = store
    run_id = ids["b"]
    (runs / run_id / "report.html").unlink(missing_ok=True)
    r = client.get(f"/v1/runs/{run_id}/report")
    assert r.status_code == 404 and f"POST /v1/runs/{run_id}/report" in r.json()["detail"]
    built = client.post(f"/v1/runs/{run_id}/report").json()
    assert built["exists"] and not built["stale"] and built["url"] == f"/v1/runs/{run_id}/report"
    r = client.get(built["url"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert run_id in r.text and "<script" not in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp.split("; ") and "script-src" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    # a newer evaluation makes the report stale (the page rebuilds it before showing it)
    time.sleep(0.02)
    fake_eval(runs, run_id, {"fid": 20.0, "fid_floor": 3.0, "feature_net": {"id": "ref-8px"}})
    later = time.time() + 5
    os.utime(runs / run_id / "eval" / "metrics.json", (later, later))
    assert row_of(client, run_id)["report"]["stale"] is True
    assert client.post("/v1/runs/no-such-run/report").status_code == 404


# --- compare -------------------------------------------------------------------------------------------
def test_compare_ranks_one_reference_net_and_refuses_to_rank_two(client: TestClient, store) -> None:
    runs, ids = store
    same = {"fid_floor": 3.0, "recall_floor": 0.9}
    fake_eval(runs, ids["a"], {"fid": 9.0, "recall": 0.8, **same, "feature_net": {"id": "ref-digits-16px"}})
    fake_eval(runs, ids["b"], {"fid": 6.0, "recall": 0.4, **same, "feature_net": {"id": "ref-digits-16px"}})
    r = client.get("/v1/runs/compare", params={"ids": f"{ids['a']},{ids['b']}"}).json()
    assert r["best"] == {"fid": ids["b"], "recall": ids["a"]} and r["unranked"] is None
    keys = [c["key"] for c in r["columns"]]
    assert keys[0] == "run_id" and "fid" in keys and "feature_net" not in keys
    assert [row["run_id"] for row in r["rows"]] == [ids["a"], ids["b"]]  # in the order named
    assert r["rows"][1]["cells"][keys.index("fid")] == "6.000"
    plot = {p["run_id"]: p for p in r["plot"]}
    assert (plot[ids["a"]]["key"], plot[ids["a"]]["value"], plot[ids["a"]]["floor"]) == ("fid", 9.0, 3.0)

    # scored by different reference nets: shown side by side, each with its net, ranked against nothing
    fake_eval(runs, ids["b"], {"fid": 6.0, "recall": 0.4, **same, "feature_net": {"id": "ref-digits-32px"}})
    r = client.get("/v1/runs/compare", params={"ids": f"{ids['a']},{ids['b']}"}).json()
    assert r["best"] == {} and r["feature_nets"] == ["ref-digits-16px", "ref-digits-32px"]
    assert "different reference networks" in r["unranked"] and "feature_net" in [c["key"] for c in r["columns"]]


def test_compare_refuses_bad_lists_and_unevaluated_runs(client: TestClient, store) -> None:
    runs, ids = store
    other = genloop.train("dcgan", "digits", overrides=tiny("dcgan"), steps=1, runs_dir=runs, progress=False)
    try:
        r = client.get("/v1/runs/compare", params={"ids": f"{ids['a']},{other.id}"})
        assert r.status_code == 409 and "not been evaluated" in r.json()["detail"]
    finally:
        RunStore(runs).remove(other.id)
    for bad in (ids["a"], f"{ids['a']},{ids['a']}", f"{ids['a']},-x", ","):
        r = client.get("/v1/runs/compare", params={"ids": bad})
        assert r.status_code == 422 and isinstance(r.json()["detail"], str), bad
    assert client.get("/v1/runs/compare", params={"ids": f"{ids['a']},nope"}).status_code == 404
    assert client.get("/v1/runs/compare").status_code == 422


# --- delete --------------------------------------------------------------------------------------------
def test_delete_refuses_busy_runs_and_removes_the_folder(client: TestClient, settings: Settings, store) -> None:
    runs, ids = store
    run = genloop.train("dcgan", "digits", overrides=tiny("dcgan"), steps=1, runs_dir=runs, progress=False)
    assert run.id in {m["id"] for m in client.get("/v1/models").json()["data"]}

    # a queued job names it: 409 until the job is gone
    job = client.post("/v1/jobs", json={"kind": "evaluate", "params": {"run_id": run.id, "n": 10}}).json()
    r = client.delete(f"/v1/runs/{run.id}")
    assert r.status_code == 409 and job["id"] in r.json()["detail"] and (runs / run.id).is_dir()
    assert client.get(f"/v1/runs/{run.id}").json()["busy"] == r.json()["detail"]
    client.post(f"/v1/jobs/{job['id']}/cancel")

    # a live process trains it: 409 (a run whose process died is recorded as killed, and may go)
    store_ = RunStore(runs)
    store_.update(store_.get(run.id), status="running", pid=os.getpid())
    r = client.delete(f"/v1/runs/{run.id}")
    assert r.status_code == 409 and "running" in r.json()["detail"]
    store_.update(store_.get(run.id), status="finished")

    # a run whose config is gone is still listed and shown (and deletable), with one line instead of its config
    (runs / run.id / "config.json").unlink()
    d = client.get(f"/v1/runs/{run.id}").json()
    assert d["config"] is None and d["config_error"] == "the run's config.json is missing or cannot be read"
    assert d["total_steps"] is None and row_of(client, run.id)["family"] == "dcgan"

    assert client.delete(f"/v1/runs/{run.id[:-1]}").status_code == 404  # never by prefix
    assert (runs / run.id).is_dir()
    r = client.delete(f"/v1/runs/{run.id}")
    assert r.status_code == 200 and r.json() == {"id": run.id, "deleted": True}
    assert not (runs / run.id).exists() and client.get(f"/v1/runs/{run.id}").status_code == 404
    assert run.id not in {x["id"] for x in client.get("/v1/runs").json()["runs"]}
    assert run.id not in {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert client.delete(f"/v1/runs/{run.id}").status_code == 404
    assert client.delete("/v1/runs/no-such-run").status_code == 404


# --- auth ----------------------------------------------------------------------------------------------
def test_runs_routes_need_the_token(store, tmp_path: Path) -> None:
    runs, ids = store
    client = TestClient(create_app(settings_for(runs, tmp_path, TOKEN)))
    paths = [
        ("GET", "/v1/runs"),
        ("GET", f"/v1/runs/{ids['a']}"),
        ("GET", f"/v1/runs/{ids['a']}/report"),
        ("POST", f"/v1/runs/{ids['a']}/report"),
        ("GET", f"/v1/runs/compare?ids={ids['a']},{ids['b']}"),
        ("DELETE", f"/v1/runs/{ids['a']}"),
    ]
    for method, path in paths:
        assert client.request(method, path).status_code == 401, path
        assert client.request(method, path, headers={"Authorization": "Bearer wrong"}).status_code == 403, path
    assert (runs / ids["a"]).is_dir()
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/v1/runs", headers=good).status_code == 200
    client.post(f"/v1/runs/{ids['a']}/report", headers=good)
    # the page's frame has no header: the session cookie lets it load the report
    assert client.post("/v1/session", headers=good).status_code == 204
    assert client.get(f"/v1/runs/{ids['a']}/report").status_code == 200
