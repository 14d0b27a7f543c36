"""Schema conformance: Schemathesis fuzzes a live studio server against its own OpenAPI document.

Every response must be one the document declares (status codes, bodies, the ``Allow`` header of a 405),
and no request may crash the server. The run is bounded and reproducible: a fixed number of examples per
operation, deterministic generation, one client worker, a per-request timeout and a hard time limit
(about 30 s on two cores). The server runs with no worker and a queue of one, so job-creating requests
are validated and queued (then 429) but nothing trains. Its run store holds one tiny text run, which the
stateful phase finds through the document's link from ``GET /v1/models`` to ``POST /v1/completions``; a
completion that gets queued would wait for a worker that never comes, so the server's
``completion_timeout`` is half a second: such a request is answered with the declared 504 (streamed: ends
with its error event) instead of hanging.

The OpenAI-compatible routes are fuzzed too: the document declares their bodies (OpenAI's error envelope
for every status they answer, the ``text_completion`` object, the event stream). One check is left out on
purpose, ``positive_data_acceptance``, because some schema-valid requests are still refused by rules the
schema cannot state: limits configured at run time, a run's modality, the content of an uploaded file, the
free-form ``params`` of ``POST /v1/jobs`` (typed by kind).
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import cli_env
from studio_support import TEXT, TINY_GPT

import genloop

SCHEMATHESIS = [
    sys.executable,
    "-m",
    "schemathesis.cli",
    "run",
    "--max-examples",
    "25",
    "--generation-deterministic",
    "--workers",
    "1",
    "--no-shrink",
    "--request-timeout",
    "5",
    "--phases",
    "coverage,fuzzing,stateful",
    "--exclude-checks",
    "positive_data_acceptance",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], Path]]:
    """``genloop serve`` on a free loopback port, no worker, a queue of one: (base URL, env, folder)."""
    tmp_path = tmp_path_factory.mktemp("live")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**cli_env(tmp_path), "GENLOOP_COMPLETION_TIMEOUT": "0.5"}
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")  # a text run, so completions that name it reach the queue
    genloop.train("gpt", str(corpus), overrides=TINY_GPT, steps=2, runs_dir=tmp_path / "runs", progress=False)
    server = subprocess.Popen(
        [sys.executable, "-m", "genloop", "serve", "--port", str(port), "--workers", "0", "--max-queued", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not _up(base):
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield base, env, tmp_path
    finally:
        server.terminate()
        server.wait(timeout=30)


# The fuzz server runs no worker, so a completion that is admitted (the stateful phase names the text run,
# following the document's link from GET /v1/models) can only end in its declared 504: expected here, on
# that one operation. Every other 5xx, there or anywhere, is still a failure.
CONFIG = """
[[operations]]
include-path = "/v1/completions"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "504"]
"""


def test_the_server_conforms_to_its_openapi_document(live: tuple[str, dict[str, str], Path]) -> None:
    base, env, tmp_path = live
    (tmp_path / "schemathesis.toml").write_text(CONFIG, encoding="utf-8")  # read from the working directory
    run = subprocess.run(
        [*SCHEMATHESIS, f"{base}/openapi.json"],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0 and " passed" in run.stdout and "failure" not in run.stdout, report


def test_a_chunked_body_is_refused_while_it_arrives(live: tuple[str, dict[str, str], Path]) -> None:
    """20 MiB of chunked JSON to a 1 MiB cap: the 413 comes back while the client is still sending."""
    host, port = live[0].removeprefix("http://").split(":")
    chunk, total, sent = b"x" * (1 << 16), 20 << 20, 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        while sent < total and not select.select([sock], [], [], 0)[0]:  # until the server answers
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # it answered and closed the connection
                break
            sent += len(chunk)
        if sent >= total:
            sock.sendall(b"0\r\n\r\n")  # the whole body went in: let the server answer whatever it will
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < total  # refused before the body was all sent, not after parsing it
