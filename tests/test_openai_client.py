"""The official ``openai`` client against a live studio server (uvicorn on a free loopback port, a worker in a
thread, a tiny GPT trained here): model listing, every completions parameter, streaming, seeds, and errors
surfacing as the client's typed exceptions. What a real OpenAI integration would see, end to end."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from studio_support import TEXT, TINY_GPT, WorkerThread

import genloop
from genloop.errors import ConfigError
from genloop.server.app import create_app
from genloop.server.settings import Settings
from genloop.server.worker import Worker

TOKEN = "openai-client-token-for-tests"


class Live:
    """A running server: its base URL, app and run id, and a tokenizer to name tokens with."""

    def __init__(self, base: str, app: Any, run_id: str, tokenizer: Any) -> None:
        self.base, self.app, self.run_id, self.tokenizer = base, app, run_id, tokenizer

    def client(self, api_key: str = TOKEN, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=api_key, max_retries=0, timeout=60, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    import uvicorn

    root = tmp_path_factory.mktemp("openai")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    run = genloop.train(
        "gpt", str(root / "corpus.txt"), overrides=TINY_GPT, steps=20, runs_dir=root / "runs", progress=False
    )
    settings = Settings(
        runs=root / "runs",
        db_url=f"sqlite:///{root / 'studio.sqlite'}",
        media_dir=root / "media",
        uploads_dir=root / "uploads",
        token=TOKEN,
        poll_interval=0.01,
    )
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    with WorkerThread(settings):
        yield Live(f"http://127.0.0.1:{port}", app, run.id, genloop.load(run.id, runs_dir=root / "runs").tokenizer)
    server.should_exit = True
    thread.join(timeout=30)


def test_models_list(live: Live) -> None:
    models = live.client().models.list()
    [m] = [m for m in models.data if m.id == live.run_id]
    assert m.object == "model" and m.owned_by == "genloop" and m.created > 1_600_000_000
    assert m.model_extra["modality"] == "text" and m.model_extra["model"] == "gpt"  # GenLoop's descriptor too
    raw = httpx.get(f"{live.base}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert "gpt" in raw["families"] and raw["datasets"]  # what the studio page's training form offers


def test_every_parameter_at_once(live: Live) -> None:
    banned = live.tokenizer.encode("e")[0]
    c = live.client().completions.create(
        model=live.run_id,
        prompt="The quick",
        max_tokens=12,
        temperature=0.9,
        top_p=0.95,
        n=2,
        best_of=3,
        presence_penalty=0.5,
        frequency_penalty=0.3,
        logit_bias={str(banned): -100},
        logprobs=2,
        echo=True,
        stop=["\n\n"],
        seed=7,
        user="ada",
        extra_body={"top_k": 20},
    )
    assert c.object == "text_completion" and [ch.index for ch in c.choices] == [0, 1]
    for ch in c.choices:
        assert ch.text.startswith("The quick") and "e" not in ch.text[len("The quick") :]  # echo; the bias bans 'e'
        lp = ch.logprobs
        assert "".join(lp.tokens) == ch.text  # the prompt's tokens, then the completion's
        assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
        assert lp.text_offset == [sum(len(t) for t in lp.tokens[:k]) for k in range(len(lp.tokens))]
        assert all(len(t) <= 2 for t in lp.top_logprobs[1:]) and lp.top_logprobs[0] is None
        assert ch.finish_reason in ("stop", "length")
    assert c.usage.prompt_tokens == len("The quick") and c.usage.completion_tokens <= 3 * 12
    assert c.model_extra["genloop"]["seed"] == 7


def test_best_of_returns_the_likeliest_per_token(live: Live) -> None:
    client, kw = live.client(), dict(model=live.run_id, prompt="A", max_tokens=10, seed=11, logprobs=0)
    every = client.completions.create(n=4, **kw).choices
    mean = {ch.text: sum(ch.logprobs.token_logprobs) / len(ch.logprobs.token_logprobs) for ch in every}
    best = client.completions.create(n=2, best_of=4, **kw).choices
    assert [ch.text for ch in best] == sorted(mean, key=mean.get, reverse=True)[:2]
    assert [ch.index for ch in best] == [0, 1]


def test_streaming_sends_a_chunk_per_piece(live: Live) -> None:
    client, kw = live.client(), dict(model=live.run_id, prompt="The", max_tokens=40, seed=3, temperature=1.0)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    texts = [ch.choices[0].text for ch in chunks if ch.choices and ch.choices[0].text]
    assert "".join(texts) == whole.choices[0].text
    assert len(texts) == whole.usage.completion_tokens  # a char model: one chunk per token, none coalesced
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    # n > 1 streams each choice under its index, with the texts a batch of n gives
    batch = client.completions.create(n=2, **{**kw, "max_tokens": 8})
    streamed = ["", ""]
    for ch in client.completions.create(n=2, stream=True, **{**kw, "max_tokens": 8}):
        for choice in ch.choices:
            streamed[choice.index] += choice.text
    assert streamed == [ch.text for ch in batch.choices]
    echoed = client.completions.create(stream=True, echo=True, **{**kw, "max_tokens": 8})
    assert "".join(ch.choices[0].text for ch in echoed if ch.choices) == "The" + batch.choices[0].text


def test_list_prompt_and_echo(live: Live) -> None:
    client = live.client()
    c = client.completions.create(model=live.run_id, prompt=["The", "A stitch"], n=2, max_tokens=6, seed=5, echo=True)
    assert [ch.index for ch in c.choices] == [0, 1, 2, 3]
    assert [ch.text[:3] for ch in c.choices[:2]] == ["The", "The"] and c.choices[2].text.startswith("A stitch")
    alone = client.completions.create(model=live.run_id, prompt="A stitch", n=2, max_tokens=6, seed=5)
    assert [ch.text[len("A stitch") :] for ch in c.choices[2:]] == [ch.text for ch in alone.choices]


def test_seed_repeats_and_no_seed_varies(live: Live) -> None:
    client, kw = live.client(), dict(model=live.run_id, prompt="The", max_tokens=16, temperature=1.0)
    first, again = (client.completions.create(seed=42, **kw).choices[0].text for _ in range(2))
    assert first == again
    fresh = [client.completions.create(**kw) for _ in range(4)]
    assert len({c.choices[0].text for c in fresh}) > 1  # fresh samples, as OpenAI clients expect
    seeds = [c.model_extra["genloop"]["seed"] for c in fresh]
    replayed = client.completions.create(seed=seeds[0], **kw).choices[0].text
    assert replayed == fresh[0].choices[0].text  # the drawn seed reproduces the sample
    gid = fresh[0].model_extra["genloop"]["generation_ids"][0]
    recipe = httpx.get(f"{live.base}/v1/generations/{gid}", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert recipe["recipe"]["seed"] == seeds[0]


@pytest.mark.parametrize(
    "kw, error, words",
    [
        ({"model": "no-such-run"}, openai.NotFoundError, "does not exist"),
        ({"suffix": "end"}, openai.BadRequestError, "suffix is not supported"),
        ({"n": 3, "best_of": 2}, openai.BadRequestError, "best_of must be at least n"),
        ({"best_of": 2, "stream": True}, openai.BadRequestError, "best_of cannot be streamed"),
        ({"logprobs": 6}, openai.BadRequestError, "logprobs"),
        ({"extra_body": {"colour": "red"}}, openai.BadRequestError, "colour: this parameter is not supported"),
        ({"prompt": []}, openai.BadRequestError, "non-empty list"),
        ({"logit_bias": {"99999": 1}}, openai.BadRequestError, r"token ids of this model \(0\.\.\d+\)"),
        ({"logit_bias": {"1": 500}}, openai.BadRequestError, "between -100 and 100"),
    ],
)
def test_errors_are_the_clients_typed_exceptions(live: Live, kw: dict, error: type, words: str) -> None:
    args = {"model": live.run_id, "prompt": "x", "max_tokens": 2, **kw}
    with pytest.raises(error, match=words) as e:
        result = live.client().completions.create(**args)
        if args.get("stream"):
            list(result)
    body = e.value.body
    assert set(body) == {"message", "type", "param", "code"} and body["type"] == "invalid_request_error"
    settings = live.app.state.ctx.settings
    assert str(settings.runs.parent) not in body["message"]  # never the server's paths


def test_auth_and_queue_errors(live: Live) -> None:
    with pytest.raises(openai.AuthenticationError, match="not valid"):
        live.client(api_key="wrong-key").models.list()
    r = httpx.get(f"{live.base}/v1/models")  # no key at all
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    jobs = live.app.state.ctx.jobs
    jobs.max_queued, limit = 0, jobs.max_queued
    try:
        with pytest.raises(openai.RateLimitError, match="queue is full") as e:
            live.client().completions.create(model=live.run_id, prompt="x", max_tokens=2)
        assert e.value.response.headers["retry-after"] == "5"
    finally:
        jobs.max_queued = limit
    r = httpx.get(f"{live.base}/v1/jobs/0123456789abcdef", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404 and "detail" in r.json()  # GenLoop's own routes keep their format


@pytest.mark.parametrize(
    "failure, error, status, kind",
    [
        (ConfigError("the run's weights do not load"), openai.BadRequestError, 400, "invalid_request_error"),
        (RuntimeError("a bug in the sampler"), openai.InternalServerError, 500, "server_error"),
    ],
)
def test_a_failed_completion_job_is_not_retried(
    live: Live, monkeypatch: pytest.MonkeyPatch, failure: Exception, error: type, status: int, kind: str
) -> None:
    """The client's default retries (two, on 5xx, 408, 409 and 429) must not queue the failed job again: a
    failure the request caused is a 400, a server fault a 500 that says ``x-should-retry: false``."""

    def broken(*args: Any, **kw: Any) -> Any:
        raise failure

    monkeypatch.setattr(Worker, "pipeline", broken)  # the worker thread's next job fails
    jobs = live.app.state.ctx.jobs
    before = len(jobs.list(kind="generate", limit=10_000))
    client = openai.OpenAI(base_url=f"{live.base}/v1", api_key=TOKEN, max_retries=2, timeout=60)
    with pytest.raises(error, match=str(failure)) as e:
        client.completions.create(model=live.run_id, prompt="x", max_tokens=2, seed=1)
    assert e.value.status_code == status and e.value.body["type"] == kind and e.value.body["code"] == "job_failed"
    assert len(jobs.list(kind="generate", limit=10_000)) == before + 1  # asked once, queued once
    stream = client.completions.create(model=live.run_id, prompt="x", max_tokens=2, seed=1, stream=True)
    with pytest.raises(openai.APIError, match=str(failure)) as s:
        list(stream)
    assert s.value.body["type"] == kind
    assert len(jobs.list(kind="generate", limit=10_000)) == before + 2


def test_answers_are_what_the_document_declares(live: Live) -> None:
    """The 200 bodies of the OpenAI routes validate against the models the OpenAPI document declares."""
    from genloop.server.schemas import CompletionResponse, ModelList

    auth = {"Authorization": f"Bearer {TOKEN}"}
    listed = ModelList.model_validate(httpx.get(f"{live.base}/v1/models", headers=auth).json())
    assert live.run_id in [m.id for m in listed.data]
    body = {"model": live.run_id, "prompt": ["a", "b"], "max_tokens": 3, "n": 2, "logprobs": 1, "echo": True}
    r = httpx.post(f"{live.base}/v1/completions", headers=auth, json=body, timeout=60)
    answer = CompletionResponse.model_validate(r.json())
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
