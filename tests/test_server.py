"""The studio API end to end: every route, bad input (422), auth (401/403), the queue limit (429),
event streams, replay, completions and uploads — on SQLite and, where available, PostgreSQL."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from studio_support import BACKENDS, WorkerThread, database_url, drain, train_tiny_runs

from genloop.errors import ConfigError
from genloop.server.app import create_app
from genloop.server.settings import Settings

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("studio")
    return root / "runs", train_tiny_runs(root / "runs")


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, runs: tuple[Path, dict[str, str]], tmp_path: Path):
    gen = database_url(request.param, tmp_path)
    url = next(gen)
    yield Settings(
        runs=runs[0],
        db_url=url,
        media_dir=tmp_path / "media",
        uploads_dir=tmp_path / "uploads",
        max_queued=4,
        poll_interval=0.01,
    )
    gen.close()


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


def ids(runs: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return runs[1]


def finished(client: TestClient, settings: Settings, job: dict) -> dict:
    drain(settings)
    return client.get(f"/v1/jobs/{job['id']}").json()


# --- reading -------------------------------------------------------------------------------------------
def test_health_models_docs(client: TestClient, runs) -> None:
    h = client.get("/v1/health").json()
    lanes = {lane: {"queued": 0, "running": 0, "workers": 0} for lane in ("interactive", "batch")}
    assert h["queue"] == {"queued": 0, "running": 0, "limit": 4, "lanes": lanes} and h["auth"] is False
    assert h["status"] == "degraded" and h["workers"] == []  # no worker runs in this test
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and all(m["object"] == "model" and m["id"] == m["run_id"] for m in body["data"])
    by_id = {m["id"]: m for m in body["data"]}
    vae, ddpm, gpt = (by_id[ids(runs)[k]] for k in ("vae", "ddpm", "gpt"))
    assert (vae["modality"], vae["conditional"], vae["diffusion"]) == ("image", False, False)
    assert ddpm["diffusion"] and ddpm["conditional"] and ddpm["num_classes"] == 10 and "dpmpp-2m" in ddpm["samplers"]
    assert gpt["modality"] == "text"
    assert {"ddpm", "gpt", "cgan"} <= set(body["families"]) and "digits" in body["datasets"]
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/generations/{gid}/replay", "/v1/completions", "/v1/preferences"} <= set(paths)


# --- generate, rate, prefer, replay ---------------------------------------------------------------------
def test_generate_rate_prefer_replay_images(client: TestClient, settings: Settings, runs) -> None:
    run_id = ids(runs)["ddpm"]
    r = client.post(
        "/v1/generations", json={"run_id": run_id, "n": 3, "seed": 7, "class_label": 3, "steps": 3, "sampler": "ddim"}
    )
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = finished(client, settings, r.json())
    assert job["status"] == "succeeded", job["error"]
    gids = job["result"]["generation_ids"]
    assert len(gids) == 3
    g = client.get(f"/v1/generations/{gids[1]}").json()
    assert g["recipe"]["seed"] == 8 and g["recipe"]["class_label"] == 3 and g["recipe"]["sampler"] == "ddim"
    assert g["checkpoint_sha256"] and g["prompt"] == "class 3" and g["job_id"] == job["id"]
    png = client.get(g["image_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"

    assert (
        client.post(f"/v1/generations/{gids[0]}/ratings", json={"thumbs": 1, "stars": 4, "user": "ada"}).status_code
        == 201
    )
    r = client.post(f"/v1/generations/{gids[0]}/ratings", json={"stars": 2})
    assert r.json()["feedback"] == {"up": 1, "down": 0, "stars": 3.0, "ratings": 2}
    assert [x["user"] for x in client.get(f"/v1/generations/{gids[0]}/ratings").json()["ratings"]] == [
        "ada",
        "anonymous",
    ]
    p = client.post("/v1/preferences", json={"chosen_id": gids[0], "rejected_id": gids[2], "user": "ada"})
    assert p.status_code == 201 and client.get("/v1/preferences").json()["preferences"][0]["chosen_id"] == gids[0]

    listed = client.get("/v1/generations", params={"run_id": run_id}).json()["generations"]
    assert {x["id"] for x in listed} == set(gids)

    replay = finished(client, settings, client.post(f"/v1/generations/{gids[1]}/replay").json())
    assert replay["status"] == "succeeded" and replay["result"]["identical"] is True
    again = client.get(f"/v1/generations/{replay['result']['generation_ids'][0]}").json()
    assert again["replay_of"] == gids[1] and again["recipe"]["seed"] == 8


def test_text_generation_streams_and_replays(client: TestClient, settings: Settings, runs) -> None:
    job = client.post(
        "/v1/jobs",
        json={
            "kind": "generate",
            "params": {
                "run_id": ids(runs)["gpt"],
                "prompt": "The quick",
                "max_tokens": 12,
                "temperature": 0.8,
                "seed": 3,
            },
        },
    ).json()
    job = finished(client, settings, job)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["usage"]["completion_tokens"] > 0 and job["result"]["finish_reasons"] in (["length"], ["stop"])
    text = client.get(f"/v1/generations/{job['result']['generation_ids'][0]}").json()["text"]
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        body = r.read().decode()
    pieces = [
        json.loads(line[6:])["text"] for line in body.splitlines() if line.startswith("data:") and '"text"' in line
    ]
    assert "".join(pieces) == text and "event: status" in body and '"succeeded"' in body
    replay = finished(
        client, settings, client.post(f"/v1/generations/{job['result']['generation_ids'][0]}/replay").json()
    )
    assert replay["result"]["identical"] is True


# --- training jobs and their events ----------------------------------------------------------------------
def test_train_job_streams_metrics_and_cancel(client: TestClient, settings: Settings) -> None:
    from conftest import tiny

    job = client.post(
        "/v1/jobs",
        json={"kind": "train", "params": {"model": "vae", "data": "digits", "steps": 6, "overrides": tiny("vae")}},
    ).json()
    assert job["status"] == "queued"
    queued = client.post(
        "/v1/jobs",
        json={"kind": "train", "params": {"model": "vae", "data": "digits", "steps": 6, "overrides": tiny("vae")}},
    ).json()
    assert client.post(f"/v1/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"
    job = finished(client, settings, job)
    assert job["status"] == "succeeded" and job["result"]["step"] == 6 and job["run_id"] == job["result"]["run_id"]
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", params={"after": 0}) as r:
        events = [line for line in r.iter_lines() if line.startswith("event:")]
    assert events[0] == "event: status" and events.count("event: metrics") >= 6
    metrics = client.get(f"/v1/runs/{job['run_id']}/metrics").json()["records"]
    assert [m["step"] for m in metrics if "loss" in m][:3] == [1, 2, 3]
    assert client.get("/v1/jobs", params={"status": "cancelled"}).json()["jobs"][0]["id"] == queued["id"]


def test_cancel_a_running_training_job(client: TestClient, settings: Settings) -> None:
    from conftest import tiny

    job = client.post(
        "/v1/jobs",
        json={
            "kind": "train",
            "params": {"model": "vae", "data": "digits", "steps": 100_000, "overrides": tiny("vae")},
        },
    ).json()
    with WorkerThread(settings):
        for _ in range(600):
            j = client.get(f"/v1/jobs/{job['id']}").json()
            if j["status"] == "running" and (j["progress"].get("step") or 0) > 2:
                break
            time.sleep(0.05)
        assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["cancel_requested"] is True
        for _ in range(600):
            j = client.get(f"/v1/jobs/{job['id']}").json()
            if j["status"] != "running":
                break
            time.sleep(0.05)
    assert j["status"] == "cancelled" and 2 < j["result"]["step"] < 100_000
    assert j["result"]["status"] == "interrupted"  # the run kept its checkpoint and can be resumed


# --- OpenAI-compatible completions -----------------------------------------------------------------------
def test_completions(client: TestClient, settings: Settings, runs) -> None:
    gpt = ids(runs)["gpt"]
    with WorkerThread(settings):
        r = client.post("/v1/completions", json={"model": gpt, "prompt": "The", "max_tokens": 8, "seed": 1, "n": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "text_completion" and len(body["choices"]) == 2
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        same = client.post(
            "/v1/completions", json={"model": gpt, "prompt": "The", "max_tokens": 8, "seed": 1, "n": 2}
        ).json()
        assert [c["text"] for c in same["choices"]] == [c["text"] for c in body["choices"]]
        with client.stream(
            "POST", "/v1/completions", json={"model": gpt, "prompt": "The", "max_tokens": 8, "seed": 1, "stream": True}
        ) as s:
            lines = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == body["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    bad = client.post("/v1/completions", json={"model": ids(runs)["vae"], "prompt": "x"})
    assert bad.status_code == 400 and "image run" in bad.json()["error"]["message"]  # OpenAI's envelope
    assert bad.json()["error"]["param"] == "model"
    unknown = client.post("/v1/completions", json={"model": "a-typo", "bogus": 1})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "bogus"
    assert client.get("/v1/jobs/0123456789abcdef").json() == {
        "detail": "no job '0123456789abcdef'"
    }  # other routes keep theirs


# --- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"run_id": "RUN", "n": 1000}, 422, "at most 64"),
        ({"run_id": "RUN", "steps": 5000}, 422, "at most 1000"),
        ({"run_id": "RUN", "n": 0}, 422, "greater than or equal"),
        ({"run_id": "RUN", "colour": "red"}, 422, "xtra"),
        ({"run_id": "RUN", "prompt": "hi"}, 422, "do not apply"),
        ({"run_id": "RUN", "sampler": "euler"}, 422, "ddim"),
        ({"run_id": "RUN", "messages": [{"role": "user", "content": "hi"}]}, 422, "do not apply"),
        ({"run_id": "RUN", "messages": [{"role": "tool", "content": "hi"}]}, 422, "'system', 'user' or 'assistant'"),
        ({"run_id": "../../etc", "n": 1}, 422, "should match pattern"),
        ({"run_id": "20990101-000000-vae-0000", "n": 1}, 404, "does not exist"),
    ],
)
def test_generation_requests_are_checked(client: TestClient, runs, body: dict, status: int, words: str) -> None:
    body = {**body, "run_id": ids(runs)["vae"] if body["run_id"] == "RUN" else body["run_id"]}
    r = client.post("/v1/generations", json=body)
    assert r.status_code == status and words in r.text, r.text
    assert str(runs[0]) not in r.text  # never the server's paths


@pytest.mark.parametrize(
    "params, words",
    [
        ({"model": "vae", "data": "/etc", "steps": 5}, "paths on the server are not accepted"),
        ({"model": "vae", "data": "digits"}, "steps or time_budget"),
        ({"model": "nope", "data": "digits", "steps": 5}, "unknown model"),
        ({"model": "vae", "data": "digits", "steps": 10**9}, "at most"),
        ({"model": "vae", "data": "digits", "steps": 5, "overrides": ["data.name=/etc"]}, "not allowed"),
        ({"model": "gpt", "data": "pydoc", "steps": 5, "overrides": ["data.tokenizer=../tok"]}, "not allowed"),
        ({"model": "vae", "data": "digits", "steps": 5, "overrides": ["import os"]}, "not allowed"),
    ],
)
def test_train_requests_are_checked(client: TestClient, params: dict, words: str) -> None:
    r = client.post("/v1/jobs", json={"kind": "train", "params": params})
    assert r.status_code == 422 and words in r.json()["detail"], r.text


def test_feedback_bad_input(client: TestClient, settings: Settings, runs) -> None:
    job = finished(client, settings, client.post("/v1/generations", json={"run_id": ids(runs)["vae"], "n": 2}).json())
    a, b = job["result"]["generation_ids"]
    assert client.post(f"/v1/generations/{a}/ratings", json={"stars": 7}).status_code == 422
    assert client.post(f"/v1/generations/{a}/ratings", json={"thumbs": 0}).status_code == 422
    assert client.post(f"/v1/generations/{a}/ratings", json={}).status_code == 422
    assert client.post("/v1/generations/0123456789abcdef/ratings", json={"stars": 3}).status_code == 404
    assert client.get("/v1/generations/..%2F..%2Fetc%2Fpasswd/image").status_code == 404
    assert client.post("/v1/preferences", json={"chosen_id": a, "rejected_id": a}).status_code == 422
    assert client.post("/v1/preferences", json={"chosen_id": a, "rejected_id": "0123456789abcdef"}).status_code == 404
    assert client.get("/v1/jobs/nope").status_code == 422
    assert client.get("/v1/jobs/0123456789abcdef").status_code == 404
    assert client.post("/v1/jobs", json={"kind": "mine", "params": {}}).status_code == 422
    assert (
        client.post("/v1/jobs", content=b"x" * (2 << 20), headers={"content-type": "application/json"}).status_code
        == 413
    )


def test_queue_limit_answers_429(client: TestClient, runs) -> None:
    body = {"run_id": ids(runs)["vae"], "n": 1}
    assert [client.post("/v1/generations", json=body).status_code for _ in range(4)] == [202] * 4
    r = client.post("/v1/generations", json=body)
    assert r.status_code == 429 and r.headers["retry-after"] == "5" and "queue is full" in r.json()["detail"]
    assert client.get("/v1/health").json()["queue"]["queued"] == 4


# --- auth ----------------------------------------------------------------------------------------------------
def test_token_auth(settings: Settings) -> None:
    settings.token = TOKEN
    client = TestClient(create_app(settings))
    assert client.get("/v1/health").status_code == 200  # open, for load balancers
    assert client.get("/").status_code in (200, 404)  # the page itself carries no data
    r = client.get("/v1/models")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer wrong-token-xxxxxxxx"}
    assert client.get("/v1/jobs", headers=wrong).status_code == 403
    r = client.get("/v1/models", headers=wrong)  # an OpenAI route answers as OpenAI does: 401, its envelope
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/v1/jobs", params={"token": TOKEN}).status_code == 200
    assert client.post("/v1/preferences", json={"chosen_id": "a", "rejected_id": "b"}).status_code == 401


def test_non_loopback_bind_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="without an API token"):
        Settings(host="0.0.0.0").check()
    with pytest.raises(ConfigError, match="at least 16"):
        Settings(host="0.0.0.0", token="short").check()
    Settings(host="0.0.0.0", token=TOKEN).check()
    Settings(host="127.0.0.1").check()
    Settings(host="::1").check()


# --- uploads ----------------------------------------------------------------------------------------------------
def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, "PNG")
    return buf.getvalue()


def test_uploads_are_checked_and_train(client: TestClient, settings: Settings) -> None:
    from conftest import tiny

    up = lambda name, data: client.post("/v1/uploads", files={"file": (name, data)})  # noqa: E731
    r = up("notes.txt", b"hello world\n" * 20)
    assert r.status_code == 201 and r.json()["kind"] == "text" and r.json()["data"].startswith("upload:")
    assert "UTF-8" in up("bad.txt", b"ok \xff\xfe").json()["detail"]
    assert up("empty.txt", b"  ").status_code == 422
    assert up("tool.exe", b"MZ").status_code == 422
    assert up("fake.png", b"not a png").status_code == 422
    assert up("rows.jsonl", b'{"text": 1}\nnot json\n').status_code == 422
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escape.png", _png())
    assert "unsafe path" in up("evil.zip", evil.getvalue()).json()["detail"]
    assert not (settings.runs.parent / "escape.png").exists()
    settings.limits.max_upload_bytes = 1000
    assert up("big.txt", b"a" * 5000).status_code == 413
    settings.limits.max_upload_bytes = 64 << 20
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as z:
        for i in range(12):
            z.writestr(f"digits/{i}.png", _png())
        z.writestr("__MACOSX/._0.png", b"junk")
    r = up("my set.zip", good.getvalue())
    assert r.status_code == 201 and r.json()["files"] == 12
    job = client.post(
        "/v1/jobs",
        json={
            "kind": "train",
            "params": {"model": "vae", "data": r.json()["data"], "steps": 2, "overrides": tiny("vae")},
        },
    ).json()
    job = finished(client, settings, job)
    assert job["status"] == "succeeded", job["error"]


def test_evaluate_job(client: TestClient, settings: Settings, runs) -> None:
    r = client.post("/v1/jobs", json={"kind": "evaluate", "params": {"run_id": ids(runs)["gpt"], "n": 10, "seed": 0}})
    assert r.status_code == 202
    job = finished(client, settings, r.json())
    assert job["status"] == "succeeded", job["error"]
    metrics = job["result"]["metrics"]
    assert metrics["val_loss"] > 0 and "distinct_2" in metrics
    assert (
        client.post(
            "/v1/jobs", json={"kind": "evaluate", "params": {"run_id": ids(runs)["gpt"], "n": 10**6}}
        ).status_code
        == 422
    )


def test_a_completion_waits_at_most_completion_timeout(settings: Settings, runs) -> None:
    """No worker: the answer is the declared 504 (the job goes on, so no retry), not a hang; a stream ends with
    that error object after ``completion_timeout`` seconds without news of its job."""
    settings.completion_timeout = 0.3
    client = TestClient(create_app(settings))
    body = {"model": ids(runs)["gpt"], "prompt": "The", "max_tokens": 4}
    started = time.monotonic()
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 504 and r.headers["x-should-retry"] == "false", r.text
    assert r.json()["error"]["code"] == "timeout" and "/v1/jobs/" in r.json()["error"]["message"]
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
        lines = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert s.status_code == 200 and lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["error"]["type"] == "server_error"
    assert time.monotonic() - started < 30
    with pytest.raises(ConfigError, match="completion_timeout"):
        Settings(runs=settings.runs, completion_timeout=0).check()
