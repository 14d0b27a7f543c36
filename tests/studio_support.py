"""Shared by the studio tests: the database backends (SQLite always; PostgreSQL when a server is
reachable through ``GENLOOP_TEST_PG_URL``, which ``.ci/run`` sets after starting one), tiny trained
runs, and a worker running in a thread."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import conftest
import pytest
from conftest import tiny

import genloop
from genloop.server.settings import Settings
from genloop.server.worker import Worker

PG_URL = os.environ.get("GENLOOP_TEST_PG_URL", "")
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            not PG_URL, reason="no PostgreSQL server: set GENLOOP_TEST_PG_URL (.ci/run starts one)"
        ),
    ),
]

TINY_GPT = [*conftest.TINY_GPT, "train.warmup_steps=2", "train.lr=3e-3"]
TEXT = "The quick brown fox jumps over the lazy dog. A stitch in time saves nine. " * 8


def train_tiny_runs(runs: Path) -> dict[str, str]:
    """A tiny VAE (images), a tiny conditional DDPM (diffusion) and a tiny GPT (text) in ``runs``."""
    corpus = runs.parent / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    vae = genloop.train("vae", "digits", overrides=tiny("vae"), steps=10, runs_dir=runs, progress=False)
    ddpm = genloop.train(
        "ddpm", "digits", overrides=tiny("ddpm", "model.class_conditional=true"), steps=5, runs_dir=runs, progress=False
    )
    gpt = genloop.train("gpt", str(corpus), overrides=TINY_GPT, steps=20, runs_dir=runs, progress=False)
    return {"vae": vae.id, "ddpm": ddpm.id, "gpt": gpt.id}


def database_url(backend: str, where: Path) -> Iterator[str]:
    """A fresh, empty database for one test on ``backend``; dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{where / 'studio.sqlite'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    from genloop.database import _ENGINES

    base = make_url(PG_URL)
    name = f"genloop_test_{uuid.uuid4().hex[:10]}"
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        engine = _ENGINES.pop(url, None)
        if engine is not None:
            engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SCREENSHOTS = os.environ.get("GENLOOP_SCREENSHOTS", "")


def screenshot(page: object, name: str, full_page: bool = False) -> Path:
    """Save the page as ``<name>.png``: into ``$GENLOOP_SCREENSHOTS`` when set (``make screenshots`` points it at
    docs/screenshots, the README's pictures: made by the browser tests, never by hand), else /tmp/studio_<name>.png.
    README copies are reduced to a 256-colour palette so a picture of a page stays a few tens of KB."""
    if not SCREENSHOTS:
        path = Path(f"/tmp/studio_{name}.png")
        page.screenshot(path=str(path), full_page=full_page)  # type: ignore[attr-defined]
        return path
    from PIL import Image

    folder = Path(SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    raw = folder / f".{name}.raw.png"
    page.screenshot(path=str(raw), full_page=full_page)  # type: ignore[attr-defined]
    with Image.open(raw) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    raw.unlink()
    return path


def events_of(client: Any, job_id: str) -> list[tuple[str | None, dict]]:
    """Every server-sent event of a job through a FastAPI ``TestClient``, as (event name, data) pairs, read until
    the stream ends (the job finished)."""
    out: list[tuple[str | None, dict]] = []
    kind = None
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


def drain(settings: Settings) -> int:
    """Run every queued job to the end in this thread; returns how many ran."""
    return Worker(settings, name="test-worker:0").run_forever(idle_exit=0)


class WorkerThread:
    """A worker in a background thread for tests whose requests wait on jobs (completions, cancel)."""

    def __init__(self, settings: Settings) -> None:
        self.worker = Worker(settings, name="test-thread-worker:0")
        self.thread = threading.Thread(target=self.worker.run_forever, daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.worker.shutdown.set()
        self.thread.join(timeout=60)
