"""The studio server under faults and hostile input: numbers past 64 bits, chunked bodies past the cap, zip
links and non-images, run ids that name folders outside the store, dead workers (health, the supervisor's
back-off), the session cookie, and the settings and database plumbing under them. No trained model needed."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from genloop.server.app import create_app
from genloop.server.settings import Settings

HUGE = 9223372036854775808  # 2**63: one past SQLite's largest integer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        runs=tmp_path / "runs",
        db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}",
        media_dir=tmp_path / "media",
        uploads_dir=tmp_path / "uploads",
        max_queued=2,
    )


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


@pytest.mark.parametrize(
    "url", [f"/v1/jobs?offset={HUGE}", f"/v1/generations?offset={HUGE}", f"/v1/jobs?limit={HUGE}", "/v1/jobs?offset=-1"]
)
def test_out_of_range_integers_are_422_not_500(client: TestClient, url: str) -> None:
    assert client.get(url).status_code == 422


def test_event_cursor_past_64_bits_is_422(client: TestClient, settings: Settings) -> None:
    job = client.post("/v1/jobs", json={"kind": "train", "params": {"model": "vae", "data": "digits", "steps": 1}})
    assert job.status_code == 202
    assert client.get(f"/v1/jobs/{job.json()['id']}/events?after={HUGE}").status_code == 422


def test_run_ids_resolve_in_the_store_only(client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run folder in the server's working directory is not a run the server serves."""
    outside = tmp_path / "cwd" / "outside"
    outside.mkdir(parents=True)
    (outside / "run.json").write_text(json.dumps({"id": "outside", "status": "finished"}), encoding="utf-8")
    (outside / "config.json").write_text(json.dumps({"model": {"name": "vae"}}), encoding="utf-8")
    (outside / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n', encoding="utf-8")
    monkeypatch.chdir(outside.parent)
    assert client.get("/v1/runs/outside/metrics").status_code == 404
    r = client.post("/v1/jobs", json={"kind": "evaluate", "params": {"run_id": "outside", "n": 10}})
    assert r.status_code == 404 and "the model 'outside' does not exist" in r.json()["detail"]


def _chunks(total: int, size: int = 1 << 16) -> Iterator[bytes]:
    yield b'{"kind": "train", "params": {"model": "vae", "pad": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}}'


def test_a_chunked_body_past_the_cap_is_413(client: TestClient, settings: Settings) -> None:
    """No Content-Length to trust: the bytes are counted as they arrive."""
    r = client.post("/v1/jobs", content=_chunks(20 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413 and str(settings.limits.max_body_bytes) in r.json()["detail"]
    small = client.post("/v1/jobs", content=_chunks(1 << 16), headers={"content-type": "application/json"})
    assert small.status_code == 422  # under the cap: parsed and validated as usual


def _zip(*members: tuple[zipfile.ZipInfo | str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in members:
            zf.writestr(info, data)
    return buf.getvalue()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="PNG")
    return buf.getvalue()


def test_zip_links_are_refused(client: TestClient, settings: Settings) -> None:
    link = zipfile.ZipInfo("secret.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    body = _zip(("ok.png", _png()), (link, b"/etc/passwd"))
    r = client.post("/v1/uploads", files={"file": ("set.zip", body, "application/zip")})
    assert r.status_code == 422 and "'secret.png' is a link" in r.json()["detail"]
    assert not any(settings.uploads.glob("*/images/*"))  # nothing kept


def test_zip_members_are_checked_by_content(client: TestClient) -> None:
    body = _zip(("ok.png", _png()), ("fake.png", b"#!/bin/sh\necho not an image\n"))
    r = client.post("/v1/uploads", files={"file": ("set.zip", body, "application/zip")})
    assert r.status_code == 422 and "'fake.png' is not an image" in r.json()["detail"]
    good = client.post("/v1/uploads", files={"file": ("set.zip", _zip(("ok.png", _png())), "application/zip")})
    assert good.status_code == 201 and good.json()["files"] == 1


def test_health_degrades_without_a_live_worker(client: TestClient, settings: Settings) -> None:
    from genloop.server.liveness import WorkerRegistry
    from genloop.server.worker import Worker

    h = client.get("/v1/health")
    assert h.status_code == 200 and h.json()["status"] == "degraded" and h.json()["workers"] == []
    dead = f"{socket.gethostname()}:999999999"  # a pid that cannot exist: a SIGKILLed worker's row
    WorkerRegistry(client.app.state.ctx.jobs.engine).register(dead)
    assert client.get("/v1/health").json()["workers"][0]["alive"] is False
    assert client.get("/v1/health").json()["status"] == "degraded"
    worker = Worker(settings, name=f"{socket.gethostname()}:{os.getpid()}")
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        h = _wait_for(lambda: (b := client.get("/v1/health").json())["status"] == "ok" and b)
        (w,) = h["workers"]  # registering pruned the dead one
        assert (w["pid"], w["alive"]) == (os.getpid(), True) and w["last_heartbeat"]
    finally:
        worker.shutdown.set()
        thread.join(timeout=30)
    assert client.get("/v1/health").json()["workers"] == []  # a clean stop leaves no row


def _wait_for(cond, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := cond():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_settings_read_genloop_env_and_fail_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from genloop.errors import ConfigError

    monkeypatch.setenv("GENLOOP_STALE_AFTER", "5")  # every field has its GENLOOP_ variable now
    monkeypatch.setenv("GENLOOP_API_TOKEN", "t" * 16)
    s = Settings.from_env(port=9000, workers=None)
    assert (s.stale_after, s.token, s.port, s.workers) == (5.0, "t" * 16, 9000, 1)
    monkeypatch.setenv("GENLOOP_WORKERS", "two")
    with pytest.raises(ConfigError, match=r"^GENLOOP_WORKERS must be an integer, got 'two'$"):
        Settings.from_env()


def test_a_database_error_hides_the_password_and_keeps_the_host() -> None:
    from genloop.database import connect
    from genloop.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        connect("postgresql+psycopg://bob:hunter2@127.0.0.1:1/db?application_name=a@b")
    assert "hunter2" not in str(e.value) and "bob:***@127.0.0.1:1/db" in str(e.value)


def test_the_database_module_creates_no_table_each_store_its_own(tmp_path: Path) -> None:
    from sqlalchemy import inspect

    from genloop.database import connect
    from genloop.feedback.store import FeedbackStore
    from genloop.server.jobs import JobStore

    engine = connect(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    assert inspect(engine).get_table_names() == []
    FeedbackStore(engine=engine, media_dir=tmp_path / "media")
    assert set(inspect(engine).get_table_names()) == {"generations", "ratings", "preferences"}
    JobStore(engine)
    assert {"jobs", "job_events"} <= set(inspect(engine).get_table_names())


def test_a_session_cookie_replaces_the_token_in_urls(settings: Settings) -> None:
    token = "s3cret-token-for-tests"
    settings.token = token
    app = create_app(settings)
    client = TestClient(app)
    assert client.post("/v1/session").status_code == 401
    assert client.post("/v1/session", headers={"Authorization": "Bearer wrong-token-xxxxxxx"}).status_code == 403
    r = client.post("/v1/session", headers={"Authorization": f"Bearer {token}"})
    cookie = r.headers["set-cookie"]
    assert r.status_code == 204 and "HttpOnly" in cookie and "SameSite=strict" in cookie and token not in cookie
    assert client.get("/v1/jobs").status_code == 200  # the cookie alone: what <img> and new tabs send
    assert TestClient(app, cookies={"genloop_session": "forged"}).get("/v1/jobs").status_code == 401
    assert client.delete("/v1/session").status_code == 204
    assert client.get("/v1/jobs").status_code == 401


class _FakeProc:
    """Stands in for a worker process: exits when told to."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.returncode = -sig

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


def test_the_supervisor_restarts_with_a_doubling_back_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genloop.server import serve

    now = [100.0]
    monkeypatch.setattr(serve.time, "monotonic", lambda: now[0])
    spawned: list[_FakeProc] = []

    def spawn(_: Settings) -> _FakeProc:
        spawned.append(_FakeProc(len(spawned) + 1))
        return spawned[-1]

    sup = serve.Supervisor(Settings(runs=tmp_path / "runs", workers=1), spawn=spawn)  # type: ignore[arg-type]
    sup.CHECK_SECONDS = 3600  # this test drives check() itself
    sup.start()

    def die_then_wait(wait: float) -> None:
        spawned[-1].returncode = -9
        sup.check()  # reaped; not restarted before its back-off
        count = len(spawned)
        now[0] += wait - 0.01
        sup.check()
        assert len(spawned) == count
        now[0] += 0.01
        sup.check()
        assert len(spawned) == count + 1

    die_then_wait(1.0)
    die_then_wait(2.0)  # died again at once: twice the wait
    die_then_wait(4.0)
    now[0] += sup.STEADY_SECONDS  # a worker that lived a while starts the back-off over
    die_then_wait(1.0)
    assert sup.restarts == 4
    sup.stop()
    assert spawned[-1].returncode == -15  # SIGTERM on the way out


def test_the_openai_routes_answer_413_in_openais_envelope(client: TestClient, settings: Settings) -> None:
    """The body cap speaks each path's error format: a declared oversize body and a chunked one alike."""
    big = b'{"model": "' + b"x" * (settings.limits.max_body_bytes + 1) + b'"}'
    chunked = client.post("/v1/completions", content=iter([big]), headers={"Content-Type": "application/json"})
    declared = client.post("/v1/completions", content=big, headers={"Content-Type": "application/json"})
    for r in (declared, chunked):
        assert r.status_code == 413 and set(r.json()) == {"error"}, r.text
        assert r.json()["error"]["type"] == "invalid_request_error" and "too large" in r.json()["error"]["message"]
    assert "detail" in client.post("/v1/jobs", content=big, headers={"Content-Type": "application/json"}).json()


def test_a_bug_on_an_openai_route_is_a_500_in_openais_envelope(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genloop.server.services import completions

    def broken(*args: object) -> None:
        raise RuntimeError(f"a bug near {settings.runs}")

    monkeypatch.setattr(completions, "plan", broken)
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    r = client.post("/v1/completions", json={"model": "some-run", "prompt": "x"})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error", r.text
    assert str(settings.runs) not in r.text  # the exception's text (which may name paths) stays in the log


def test_the_document_declares_the_openai_routes_as_they_answer(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    completions, models = doc["paths"]["/v1/completions"]["post"], doc["paths"]["/v1/models"]["get"]
    assert "422" not in completions["responses"]  # a request that breaks the schema is OpenAI's 400 there
    assert set(completions["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    for op, codes in ((completions, ("400", "401", "404", "413", "429", "500", "504")), (models, ("401", "500"))):
        for code in codes:
            ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/OpenAIErrorBody"), (code, ref)
