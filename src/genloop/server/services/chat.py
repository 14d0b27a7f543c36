"""OpenAI-compatible chat completions: from a ``/v1/chat/completions`` body to generate jobs, and from their
results to OpenAI's ``chat.completion`` answer or ``chat.completion.chunk`` stream. The route
(:mod:`..routes.chat`) only wires this up.

The conversation is rendered here, with the run's own tokenizer, into the prompt its chat template gives
(:func:`genloop.modalities.text.chat.chat_prompt`: the HF tokenizer's chat template, or GenLoop's markers),
the oldest turns left out when it is longer than the run's context; the job is then an ordinary text generate
job (same queue, limits and worker) whose stop strings include the template's end of turn. As for
``/v1/completions``: without ``stream`` one job gives the ``n`` choices (choice ``j`` uses seed ``seed + j``);
with ``stream`` one job per choice relays each piece of text as a chunk; without ``seed`` one is drawn and
returned in ``genloop.seed``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ...errors import ConfigError, GenLoopError, NotFoundError
from ..deps import Context
from ..jobs import FINAL, JobRow
from ..schemas import INT_MAX, StreamOptions
from .completions import (  # queue: all or nothing, as for completions; _or: OpenAI's nulls as defaults
    _or,
    check_text_run,
    job_error,
    queue,
    sampling_settings,
    timed_out,
    wait,
)
from .jobs import UnknownRun, follow, validate
from .openai_compat import OpenAIError, envelope

MAX_MESSAGES = 1000


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, refusal, audio, ...: ignored

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's ``/v1/chat/completions`` body. Honoured: ``messages`` (roles system, developer — taken as
    system —, user, assistant), ``max_tokens`` / ``max_completion_tokens``, ``temperature``, ``top_p``, ``n``,
    ``stop``, ``seed``, ``stream`` (+ ``stream_options.include_usage``), the penalties, ``logit_bias`` and
    ``user``; GenLoop's ``top_k``, ``repetition_penalty`` and ``watermark``. Tools, function calls, logprobs,
    audio and non-text response formats are refused with a 400; unknown fields too."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[ChatMessage] = Field(max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=INT_MAX)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT_MAX)
    temperature: float | None = Field(1.0, ge=0, le=2)
    top_p: float | None = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=INT_MAX)
    n: int | None = Field(1, ge=1, le=INT_MAX)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=INT_MAX)
    presence_penalty: float | None = Field(0.0, ge=-2, le=2)
    frequency_penalty: float | None = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, max_length=300)
    repetition_penalty: float = Field(1.0, gt=0, le=10)
    watermark: bool | None = False
    user: str | None = Field(None, max_length=64)
    # accepted so that clients which always send them work; refused when they ask for what GenLoop lacks
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    modalities: list[Literal["text"]] | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None


@dataclass
class ChatPlan:
    model: str
    prompt: str
    n: int
    seed: int
    stream: bool
    include_usage: bool
    turns_removed: int
    jobs: list[dict[str, Any]]


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    for name in ("tools", "functions"):
        if getattr(body, name):
            raise OpenAIError(400, f"{name} are not supported: GenLoop's chat models reply with text only", name)
    for name in ("tool_choice", "function_call"):
        if getattr(body, name) not in (None, "none", "auto"):
            raise OpenAIError(400, f"{name} is not supported: GenLoop's chat models reply with text only", name)
    if body.logprobs or body.top_logprobs:
        raise OpenAIError(400, "logprobs are not offered on chat completions (use /v1/completions)", "logprobs")
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise OpenAIError(400, "response_format: only {'type': 'text'} is supported", "response_format")
    if body.stream_options is not None and not body.stream:
        raise OpenAIError(400, "stream_options is only allowed with stream=true", "stream_options")


def _messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    out = []
    for k, m in enumerate(body.messages, 1):
        role = "system" if m.role == "developer" else m.role
        if role not in ("system", "user", "assistant"):
            raise OpenAIError(
                400,
                f"messages[{k - 1}]: role '{m.role}' is not supported (system, developer, user, assistant)",
                "messages",
            )
        out.append({"role": role, "content": m.content})
    return out


@lru_cache(maxsize=32)
def _template(tokenizer_dir: str, mtime: int) -> Any:
    from ...modalities.text.chat import ChatTemplate
    from ...modalities.text.tokenizers import load_tokenizer

    return ChatTemplate(load_tokenizer(tokenizer_dir))


def _run_template(c: Context, run_id: str) -> tuple[Any, int | None]:
    """The run's chat template (from its saved tokenizer) and its context length when its config gives one."""
    from ...runs import RunStore

    try:
        run = RunStore(c.settings.runs).get(run_id, paths=False)
    except NotFoundError:
        raise UnknownRun(run_id) from None
    folder = Path(run.files.tokenizer)
    if not folder.is_dir():
        raise OpenAIError(400, f"the model '{run_id}' has no tokenizer saved yet (still starting?)", "model")
    stamp = max((p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()), default=0)
    block = (run.config.get("model") or {}).get("block_size")
    return _template(str(folder), stamp), (int(block) if isinstance(block, int) and block > 0 else None)


def _kept(messages: list[dict[str, str]], removed: int) -> list[dict[str, str]]:
    """The turns the prompt renders: the system message, then all but the ``removed`` oldest turns after it.
    They go into each reply's recipe, so that a preference between two replies exports as a conversation."""
    head = messages[:1] if messages[0]["role"] == "system" else []
    return head + messages[len(head) + removed :]


def plan(c: Context, body: ChatCompletionRequest) -> ChatPlan:
    """Check what OpenAI would refuse (400s naming the parameter), render the prompt and lay out the jobs."""
    from ...modalities.text.chat import chat_prompt, check_messages

    _refuse_unsupported(body)
    n, stream = _or(body.n, 1), bool(body.stream)
    limit = c.settings.limits.max_completions
    if n > limit:
        raise OpenAIError(400, f"n must be at most {limit}, got {n}", "n")
    check_text_run(c, body.model, body.logit_bias, "chat needs")
    max_tokens = _or(body.max_completion_tokens, _or(body.max_tokens, min(256, c.settings.limits.max_tokens)))
    template, block = _run_template(c, body.model)
    try:
        given_messages = check_messages(_messages(body), "messages", need_reply=False)
        prompt, stops, removed = chat_prompt(template, given_messages, block, max_tokens)
    except ConfigError as e:
        raise OpenAIError(400, str(e), "messages") from None
    except GenLoopError as e:
        raise OpenAIError(400, str(e), "model") from None
    given = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(given) > 4:
        raise OpenAIError(400, f"stop takes at most 4 sequences, got {len(given)}", "stop")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31 - limit)
    sampling = {
        **sampling_settings(body, max_tokens, [s for s in given if s] + stops),
        "prompt": prompt,
        "messages": _kept(given_messages, removed),
    }
    if stream:
        jobs = [{**sampling, "n": 1, "seed": seed + j} for j in range(n)]
    else:
        jobs = [{**sampling, "n": n, "seed": seed}]
    checked = [validate(c, "generate", {k: v for k, v in job.items() if v is not None}) for job in jobs]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return ChatPlan(body.model, prompt, n, seed, stream, include_usage, removed, checked)


def _genloop(p: ChatPlan, jobs: list[Any]) -> dict[str, Any]:
    return {
        "seed": p.seed,
        "turns_removed": p.turns_removed,
        "job_ids": [j.id for j in jobs],
        "generation_ids": [g for j in jobs for g in (j.result or {}).get("generation_ids", [])],
    }


async def answer(c: Context, request: Request, p: ChatPlan, rows: list[JobRow], created: int) -> dict[str, Any]:
    """OpenAI's ``chat.completion`` object once the job has finished, plus GenLoop's ``genloop`` key."""
    [job] = await wait(c, request, rows)
    r = job.result or {}
    gids = r.get("generation_ids") or []
    reasons = r.get("finish_reasons") or ["stop"] * len(gids)
    texts = await run_in_threadpool(lambda: [c.feedback.get(g).text or "" for g in gids])
    choices = [
        {
            "index": j,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": reasons[j],
        }
        for j, text in enumerate(texts)
    ]
    usage = dict(r.get("usage") or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
    return {
        "id": f"chatcmpl-{job.id}",
        "object": "chat.completion",
        "created": created,
        "model": p.model,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": None,
        "genloop": _genloop(p, [job]),
    }


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def stream(c: Context, request: Request, p: ChatPlan, rows: list[JobRow], created: int) -> AsyncIterator[str]:
    """The choices as ``chat.completion.chunk`` events: for each choice a first chunk with the assistant's role,
    one chunk per piece of text as the worker samples it, and a last one with the ``finish_reason``; then the
    usage chunk if asked and ``data: [DONE]``. An error ends the stream with OpenAI's error object."""
    base = {
        "id": f"chatcmpl-{rows[0].id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": p.model,
        "system_fingerprint": None,
    }

    def chunk(index: int, delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**base, "choices": [choice], **({"usage": None} if p.include_usage else {}), **extra})

    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    deadline = time.monotonic() + c.settings.completion_timeout
    for index, row in enumerate(rows):
        yield chunk(index, {"role": "assistant", "content": ""}, None)
        async for e in follow(c, request, row.id, keepalive=c.settings.poll_interval):
            if e is None:
                if time.monotonic() > deadline:
                    late = timed_out(c, row.id)
                    yield _sse(envelope(late.status_code, str(late.detail), code=late.code))
                    yield "data: [DONE]\n\n"
                    return
                continue
            deadline = time.monotonic() + c.settings.completion_timeout
            if e.type == "text":
                for piece in e.data.get("pieces") or [e.data["text"]]:
                    yield chunk(index, {"content": piece}, None)
            elif e.type == "status" and e.data["status"] in FINAL:
                job = await run_in_threadpool(c.jobs.get, row.id)
                if e.data["status"] != "succeeded":
                    for r in rows[index + 1 :]:
                        await run_in_threadpool(c.jobs.cancel, r.id)
                    err = job_error(job.id, job.status, job.error, job.result)
                    yield _sse(envelope(err.status_code, str(err.detail), code=err.code))
                    yield "data: [DONE]\n\n"
                    return
                result = job.result or {}
                # GenLoop's extension on a choice's last chunk: its stored generation, to rate it or prefer it
                ids = {"job_id": job.id, "generation_ids": result.get("generation_ids") or []}
                yield chunk(index, {}, (result.get("finish_reasons") or ["stop"])[0], genloop=ids)
                for key in usage:
                    usage[key] += (result.get("usage") or {}).get(key, 0)
        if await request.is_disconnected():
            for r in rows[index:]:
                await run_in_threadpool(c.jobs.cancel, r.id)
            return
    if p.include_usage:
        usage["prompt_tokens"] //= max(len(rows), 1)  # the prompt was counted once per choice
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        yield _sse({**base, "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


__all__ = ["ChatCompletionRequest", "ChatPlan", "answer", "plan", "queue", "stream"]
