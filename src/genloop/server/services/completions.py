"""OpenAI-compatible text completions: from a request body to generate jobs, and from their results to
OpenAI's ``text_completion`` answer or stream. The route (:mod:`..routes.completions`) only wires this up;
the worker calls :func:`text_report` so what a job stores is already what the answer needs.

How OpenAI's parameters map onto jobs:

- Each prompt of a list is one job of ``best_of`` rows (row ``i`` uses seed ``seed + i``); the ``n`` rows
  with the highest mean log-probability per token are returned, in that order. Choice ``j`` of prompt ``p``
  has index ``p * n + j``, as OpenAI numbers them.
- A stream runs one job per choice (``n = 1``, seed ``seed + j``), which gives exactly the text that row
  ``j`` of the batch gives, and relays each piece of text as its own chunk as the worker samples it.
- Without ``seed`` a fresh one is drawn, and it is in the job's params and every generation's recipe (and
  in the answer's ``genloop.seed``), so any sample can be replayed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from ...generation.text_sampling import REPLACEMENT_CHAR, Completion
from ...modalities import modalities
from ..deps import Context
from ..jobs import FINAL, JobRow
from ..schemas import CompletionRequest
from .jobs import follow, run_modality, submit, validate
from .openai_compat import OpenAIError, envelope


@dataclass
class Plan:
    """A checked request: the prompts, how many choices each, and the params of every job to queue."""

    model: str
    prompts: list[str]
    n: int
    best_of: int
    seed: int
    stream: bool
    echo: bool
    include_usage: bool
    jobs: list[dict[str, Any]]  # one per prompt (best_of rows), or one per choice when streaming


def _or(value: Any, default: Any) -> Any:
    """OpenAI clients send ``null`` for a parameter they leave at its default."""
    return default if value is None else value


def plan(c: Context, body: CompletionRequest) -> Plan:
    """Check everything OpenAI would refuse (400s naming the parameter) and lay out the jobs."""
    if body.suffix:
        raise OpenAIError(
            400,
            "suffix is not supported: GenLoop's language models only continue text left to "
            "right (inserting before a suffix needs a fill-in-the-middle model)",
            "suffix",
        )
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts:
        raise OpenAIError(400, "prompt must be a string or a non-empty list of strings", "prompt")
    n, stream = _or(body.n, 1), bool(body.stream)
    best_of = _or(body.best_of, n)
    if best_of < n:
        raise OpenAIError(400, f"best_of must be at least n ({n}), got {best_of}", "best_of")
    if stream and best_of > n:
        raise OpenAIError(400, "best_of cannot be streamed: it ranks whole completions (use best_of = n)", "best_of")
    if stream and body.logprobs is not None:
        raise OpenAIError(400, "logprobs are not streamed by GenLoop: ask without stream=true", "logprobs")
    if body.stream_options is not None and not stream:
        raise OpenAIError(400, "stream_options is only allowed with stream=true", "stream_options")
    limit = c.settings.limits.max_completions
    if len(prompts) * best_of > limit:
        raise OpenAIError(
            400, f"at most {limit} completions per request (prompts × best_of), got {len(prompts)} × {best_of}", "n"
        )
    check_text_run(c, body.model, body.logit_bias, "completions need")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31 - limit)
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    sampling = {
        **sampling_settings(body, _or(body.max_tokens, 16), stop or None),
        "logprobs": body.logprobs,
        "echo": bool(body.echo) if body.logprobs is not None else None,
    }  # echo's text needs no job
    if stream:
        jobs = [{**sampling, "prompt": p, "n": 1, "seed": seed + j} for p in prompts for j in range(n)]
    else:
        jobs = [{**sampling, "prompt": p, "n": best_of, "seed": seed} for p in prompts]
    checked = [validate(c, "generate", {k: v for k, v in job.items() if v is not None}) for job in jobs]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return Plan(body.model, prompts, n, best_of, seed, stream, bool(body.echo), include_usage, checked)


def sampling_settings(body: Any, max_tokens: int, stop: list[str] | None) -> dict[str, Any]:
    """The generate job's sampling settings from an OpenAI request body (completions and chat completions share
    these fields; OpenAI's nulls become its documented defaults)."""
    return {
        "run_id": body.model,
        "max_tokens": max_tokens,
        "temperature": _or(body.temperature, 1.0),
        "top_p": _or(body.top_p, 1.0),
        "top_k": body.top_k,
        "repetition_penalty": body.repetition_penalty,
        "presence_penalty": _or(body.presence_penalty, 0.0),
        "frequency_penalty": _or(body.frequency_penalty, 0.0),
        "logit_bias": body.logit_bias or None,
        "stop": stop,
        "watermark": True if body.watermark else None,
    }


def _check_logit_bias(c: Context, run_id: str, logit_bias: dict[str, float]) -> None:
    """OpenAI's rules for ``logit_bias`` (token ids of the model's tokenizer, biases in [-100, 100]), checked here
    so a bad one is the client's 400 now, not a failed job later. The vocabulary size is in the run's config."""
    from ...runs import RunStore

    vocab = (RunStore(c.settings.runs).get(run_id, paths=False).config.get("data_spec") or {}).get("vocab_size")
    bad = [k for k in logit_bias if not (k.isdigit() and (not vocab or int(k) < int(vocab)))]
    if bad:
        ids = f"0..{int(vocab) - 1}" if vocab else "integers >= 0"
        raise OpenAIError(
            400, f"logit_bias keys must be token ids of this model ({ids}), got {', '.join(bad[:5])}", "logit_bias"
        )
    if any(not -100 <= v <= 100 for v in logit_bias.values()):
        raise OpenAIError(400, "logit_bias values must be between -100 and 100", "logit_bias")


def check_text_run(c: Context, model: str, logit_bias: dict[str, float] | None, needs: str) -> None:
    """The checks every OpenAI text route makes of its ``model``: a text run, and token ids in its vocabulary."""
    kind = run_modality(c, model)
    if not modalities[kind].prompted:
        raise OpenAIError(400, f"the model '{model}' is an {kind} run; {needs} a text run (GET /v1/models)", "model")
    if logit_bias:
        _check_logit_bias(c, model, logit_bias)


def queue(c: Context, p: Any, user: str | None) -> list[JobRow]:
    """Queue the plan's jobs (``p.jobs``: a completion's or a chat completion's plan); if the queue fills part
    way, the ones queued are cancelled (all or nothing)."""
    rows: list[JobRow] = []
    try:
        for params in p.jobs:
            rows.append(submit(c, "generate", params, user))
    except Exception:
        for row in rows:
            c.jobs.cancel(row.id)
        raise
    return rows


# --- answers -----------------------------------------------------------------------------------------
def timed_out(c: Context, job_id: str) -> OpenAIError:
    """The 504 of a completion that did not finish in ``completion_timeout``. Its job goes on (its result will be
    at ``/v1/jobs/{id}``), so an OpenAI client must not retry: that would queue it a second time."""
    seconds = c.settings.completion_timeout
    return OpenAIError(
        504,
        f"the completion did not finish in {seconds:g} s; follow job {job_id} at /v1/jobs/{job_id}",
        code="timeout",
        headers={"x-should-retry": "false"},
    )


async def wait(c: Context, request: Request, rows: list[JobRow]) -> list[JobRow]:
    """Every job finished (or a 5xx/499 error); a client that leaves cancels them."""
    deadline, out = time.monotonic() + c.settings.completion_timeout, []
    for row in rows:
        while True:
            job = await run_in_threadpool(c.jobs.get, row.id)
            if job.status in FINAL:
                break
            if await request.is_disconnected():
                for r in rows:
                    await run_in_threadpool(c.jobs.cancel, r.id)
                raise OpenAIError(499, "the client closed the request")
            if time.monotonic() > deadline:
                raise timed_out(c, row.id)
            await asyncio.sleep(c.settings.poll_interval)
        if job.status != "succeeded":
            raise job_error(job.id, job.status, job.error, job.result)
        out.append(job)
    return out


def job_error(job_id: str, status: str, error: str | None, result: dict[str, Any] | None) -> OpenAIError:
    """The answer to a completion job that ended without succeeding. None may be retried by an OpenAI client
    (it would queue the same job again): a failure the request caused (the worker's ``failure: request``, a
    library error about the run or its inputs) is a 400; a server fault (a bug, a storage error, a worker
    that kept dying) a 500 with ``x-should-retry: false``; a job cancelled through ``/v1/jobs`` a 409, also
    with ``x-should-retry: false``."""
    message = f"completion job {job_id} {status}: {error or ''}".strip().rstrip(":")
    no_retry = {"x-should-retry": "false"}
    if status == "cancelled":
        return OpenAIError(409, message, code="job_cancelled", headers=no_retry)
    if (result or {}).get("failure") == "request":
        return OpenAIError(400, message, code="job_failed")
    return OpenAIError(500, message, code="job_failed", headers=no_retry)


def answer(c: Context, p: Plan, jobs: list[JobRow], created: int) -> dict[str, Any]:
    """OpenAI's ``text_completion`` object for finished jobs (one per prompt), plus GenLoop's ``genloop`` key."""
    choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for i, (prompt, job) in enumerate(zip(p.prompts, jobs)):
        r = job.result or {}
        gids = r["generation_ids"]
        texts = [c.feedback.get(g).text or "" for g in gids]
        means = r.get("mean_logprobs") or [None] * len(gids)
        # likeliest first; a completion with no tokens has no mean and ranks last
        order = sorted(range(len(gids)), key=lambda k: -means[k] if means[k] is not None else float("inf"))
        chosen = order[: p.n] if p.best_of > p.n else list(range(p.n))
        for j, k in enumerate(chosen):
            report = r.get("logprobs")
            choices.append(
                {
                    "text": (prompt if p.echo else "") + texts[k],
                    "index": i * p.n + j,
                    "logprobs": report[k] if report else None,
                    "finish_reason": (r.get("finish_reasons") or ["stop"] * len(gids))[k],
                }
            )
        for key in usage:
            usage[key] += (r.get("usage") or {}).get(key, 0)
    return {
        "id": f"cmpl-{jobs[0].id}",
        "object": "text_completion",
        "created": created,
        "model": p.model,
        "choices": choices,
        "usage": usage,
        "genloop": {
            "seed": p.seed,
            "job_ids": [j.id for j in jobs],
            "generation_ids": [g for j in jobs for g in (j.result or {}).get("generation_ids", [])],
        },
    }


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def stream(c: Context, request: Request, p: Plan, rows: list[JobRow], created: int) -> AsyncIterator[str]:
    """The choices as OpenAI ``text_completion`` chunks, one per piece of text as the worker samples it, then
    each choice's ``finish_reason``, the usage chunk if asked, and ``data: [DONE]``. Choices are relayed one
    after another (the jobs run in queue order); an error ends the stream with OpenAI's error object, as does
    ``completion_timeout`` seconds without news of the job (still queued behind others, or stuck)."""
    base = {"id": f"cmpl-{rows[0].id}", "object": "text_completion", "created": created, "model": p.model}

    def chunk(index: int, text: str, finish: str | None) -> str:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return _sse({**base, "choices": [choice], **({"usage": None} if p.include_usage else {})})

    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    deadline = time.monotonic() + c.settings.completion_timeout
    for index, row in enumerate(rows):
        if p.echo and p.jobs[index].get("prompt"):
            yield chunk(index, p.jobs[index]["prompt"], None)
        async for e in follow(c, request, row.id, keepalive=c.settings.poll_interval):
            if e is None:  # quiet for a moment: has it been quiet for completion_timeout?
                if time.monotonic() > deadline:
                    late = timed_out(c, row.id)
                    yield _sse(envelope(late.status_code, str(late.detail), code=late.code))
                    yield "data: [DONE]\n\n"
                    return
                continue
            deadline = time.monotonic() + c.settings.completion_timeout  # news: the job is moving
            if e.type == "text":
                for piece in e.data.get("pieces") or [e.data["text"]]:
                    yield chunk(index, piece, None)
            elif e.type == "status" and e.data["status"] in FINAL:
                if e.data["status"] != "succeeded":
                    for r in rows[index + 1 :]:
                        await run_in_threadpool(c.jobs.cancel, r.id)
                    job = await run_in_threadpool(c.jobs.get, row.id)
                    failure = job_error(job.id, job.status, job.error, job.result)
                    yield _sse(envelope(failure.status_code, str(failure.detail), code=failure.code))
                    yield "data: [DONE]\n\n"
                    return
                job = await run_in_threadpool(c.jobs.get, row.id)
                result = job.result or {}
                yield chunk(index, "", (result.get("finish_reasons") or ["stop"])[0])
                for key in usage:
                    usage[key] += (result.get("usage") or {}).get(key, 0)
        if await request.is_disconnected():
            for r in rows[index:]:
                await run_in_threadpool(c.jobs.cancel, r.id)
            return
    if p.include_usage:
        per_prompt = len(rows) // len(p.prompts)  # each prompt's tokens were counted once per choice
        usage["prompt_tokens"] //= per_prompt
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        yield _sse({**base, "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


# --- what the worker stores --------------------------------------------------------------------------
def text_report(
    decode: Callable[[list[int]], str],
    encode: Callable[[str], list[int]],
    prompt: str,
    done: list[Completion],
    params: dict[str, Any],
    score_prompt: Callable[[str, int], tuple[list[int], list[Any], list[Any]]],
) -> dict[str, Any]:
    """What a text generate job's result carries besides its generation ids: each row's ``finish_reason``,
    mean log-probability per token (for ``best_of``), token ``usage`` and, when ``logprobs`` was asked,
    OpenAI's legacy ``logprobs`` object per row (``echo``: the prompt's tokens first)."""
    prompt_tokens = len(encode(prompt)) if prompt else 0
    completion_tokens = sum(len(d.token_ids) for d in done)
    report: dict[str, Any] = {
        "finish_reasons": [d.finish_reason for d in done],
        "mean_logprobs": [d.mean_logprob if d.logprobs else None for d in done],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    top = params.get("logprobs")
    if top is None:
        return report
    head: tuple[list[str], list[Any], list[Any]] = ([], [], [])
    if params.get("echo") and prompt:
        ids, lps, tops = score_prompt(prompt, top)
        head = (token_pieces(decode, ids), lps, [_named(decode, t) for t in tops])
    report["logprobs"] = [_logprobs(decode, d, head, top) for d in done]
    return report


def token_pieces(decode: Callable[[list[int]], str], ids: list[int]) -> list[str]:
    """Each token's share of the decoded text, so the pieces join to ``decode(ids)``. A token that ends half a
    UTF-8 character gets '' and the next one the whole character (byte-level tokenizers split them)."""
    pieces, before = [], ""
    for k in range(len(ids)):
        text = decode(ids[: k + 1])
        if k < len(ids) - 1:
            text = text.rstrip(REPLACEMENT_CHAR)
        pieces.append(text[len(before) :] if len(text) > len(before) else "")
        before = text if len(text) > len(before) else before
    return pieces


def _named(decode: Callable[[list[int]], str], top: list[tuple[int, float]] | None) -> dict[str, float] | None:
    return None if top is None else {decode([t]): lp for t, lp in top}


def _logprobs(
    decode: Callable[[list[int]], str], d: Completion, head: tuple[list[str], list[Any], list[Any]], top: int
) -> dict[str, Any]:
    """OpenAI's legacy completions ``logprobs``: ``tokens``, ``token_logprobs``, ``top_logprobs`` (the ``top``
    likeliest tokens at each position; ``null`` when ``top`` is 0) and ``text_offset`` (where each token
    starts in the choice's text). Tokens sampled past a stop string are not part of the text and not listed."""
    tokens, lps = list(head[0]), list(head[1])
    tops: list[dict[str, float] | None] = list(head[2]) if top else [None] * len(head[0])
    offsets, at = [], 0
    for piece in head[0]:
        offsets.append(at)
        at += len(piece)
    end = at + len(d.text)
    alternatives_at: list[Any] = d.top_logprobs or [None] * len(d.logprobs)
    for piece, lp, alternatives in zip(token_pieces(decode, d.token_ids), d.logprobs, alternatives_at):
        if at >= end:
            break
        tokens.append(piece)
        lps.append(lp)
        offsets.append(at)
        tops.append(_named(decode, alternatives) if top else None)
        at += len(piece)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


__all__ = ["Plan", "plan", "queue", "wait", "job_error", "answer", "stream", "text_report", "token_pieces"]
