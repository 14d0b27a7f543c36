"""Schema conformance: Schemathesis fuzzes a live studio server against its own OpenAPI document.

Every response must be one the document declares (status codes, bodies, the ``Allow`` header of a 405),
and no request may crash the server. The run is bounded and reproducible: a fixed number of examples per
operation, deterministic generation, one client worker, a per-request timeout and a hard time limit
(about 15 s on two cores). The server runs with no worker and a queue of one, so job-creating requests
are validated and queued (then 429) but nothing trains.

Two things are left out on purpose: ``POST /v1/completions`` speaks OpenAI's error format (its own
contract, not this document's), and the ``positive_data_acceptance`` check, because some schema-valid
requests are still refused by rules the schema cannot state: limits configured at run time, a run's
modality, the content of an uploaded file, the free-form ``params`` of ``POST /v1/jobs`` (typed by kind).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import cli_env

SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli", "run", "--max-examples", "25", "--generation-deterministic",
                "--workers", "1", "--no-shrink", "--request-timeout", "5", "--phases", "coverage,fuzzing,stateful",
                "--exclude-path", "/v1/completions", "--exclude-checks", "positive_data_acceptance"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_server_conforms_to_its_openapi_document(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = cli_env(tmp_path)
    server = subprocess.Popen([sys.executable, "-m", "genloop", "serve", "--port", str(port), "--workers", "0",
                               "--max-queued", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not _up(base):
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        run = subprocess.run([*SCHEMATHESIS, f"{base}/openapi.json"], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0 and " passed" in run.stdout and "failure" not in run.stdout, report
