"""Jobs: submit (202 + id at once), look up, list, cancel, and follow by server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from ...errors import GenLoopError, NotFoundError
from ..deps import Context, ctx, require_token
from ..jobs import FINAL, QueueFull, job_dict
from ..schemas import (AUTHED, GEN_ID, INT_MAX, WITH_BODY, EvaluateParams, GenerateParams, JobKind, JobRequest, JobStatus,
                       TrainParams, check_generate, check_run_id, check_train, errors, unprocessable)
from .system import datasets

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_token)], responses=AUTHED)
JOB_ID = Path(pattern=GEN_ID.pattern, description="a job id (16 hex digits)")


def _run_modality(c: Context, run_id: str) -> str:
    """What the run generates; the id is looked up in the run store only (never as a path)."""
    from ...runs import RunStore
    from ...systems import models

    check_run_id(run_id)
    try:
        run = RunStore(c.settings.runs).get(run_id, paths=False)
    except NotFoundError as e:
        raise HTTPException(404, str(e)) from None
    return str(models[run.config["model"]["name"]].modality)


def validate(c: Context, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Parse and check a job's params for ``kind``; returns them normalised (defaults dropped)."""
    try:
        if kind == "generate":
            p: Any = GenerateParams(**params)
            check_generate(p, c.settings.limits)
            modality = _run_modality(c, p.run_id)
            text_keys = ("prompt", "max_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "stop")
            image_keys = ("class_label", "sampler", "steps", "guidance", "eta")
            wrong = [k for k in (image_keys if modality == "text" else text_keys) if getattr(p, k) is not None]
            if wrong:
                raise unprocessable(f"run {p.run_id} is a {modality} model; {', '.join(wrong)} do not apply to it")
            if modality == "text" and p.n > c.settings.limits.max_completions:
                raise unprocessable(f"n must be at most {c.settings.limits.max_completions} for text, got {p.n}")
        elif kind == "train":
            p = TrainParams(**params)
            check_train(p, c.settings.limits, datasets())
            from ...systems import models

            if p.model not in models or p.model == "hf-causal-lm":
                raise unprocessable(f"unknown model '{p.model}'; valid: {', '.join(m for m in models.names() if m != 'hf-causal-lm')}")
        elif kind == "evaluate":
            p = EvaluateParams(**params)
            _run_modality(c, p.run_id)
            if p.n > c.settings.limits.max_eval_samples:
                raise unprocessable(f"n must be at most {c.settings.limits.max_eval_samples}, got {p.n}")
        else:
            raise unprocessable(f"unknown job kind '{kind}'")
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise unprocessable(f"params.{where}: {first.get('msg')}") from None
    return p.model_dump(exclude_none=True)


def submit(c: Context, kind: str, params: dict[str, Any], user: str | None) -> JSONResponse:
    try:
        row = c.jobs.enqueue(kind, params, user or "anonymous")
    except QueueFull as e:
        return JSONResponse({"detail": str(e)}, status_code=429, headers={"Retry-After": str(e.retry_after)})
    return JSONResponse(job_dict(row), status_code=202, headers={"Location": f"/v1/jobs/{row.id}"})


@router.post("/v1/jobs", status_code=202, responses={**WITH_BODY, **errors(429)})
def create_job(body: JobRequest, c: Context = Depends(ctx)) -> JSONResponse:
    return submit(c, body.kind, validate(c, body.kind, body.params.model_dump(exclude_none=True)), body.user)


@router.get("/v1/jobs")
def list_jobs(status: JobStatus | None = None, kind: JobKind | None = None, limit: int = Query(50, ge=1, le=500),
              offset: int = Query(0, ge=0, le=INT_MAX), c: Context = Depends(ctx)) -> dict[str, Any]:
    return {"jobs": [job_dict(r) for r in c.jobs.list(status, kind, limit, offset)]}


def _get(c: Context, job_id: str) -> Any:
    try:
        return c.jobs.get(job_id)
    except GenLoopError as e:
        raise HTTPException(404, str(e)) from None


@router.get("/v1/jobs/{job_id}")
def get_job(job_id: str = JOB_ID, c: Context = Depends(ctx)) -> dict[str, Any]:
    return job_dict(_get(c, job_id))


@router.post("/v1/jobs/{job_id}/cancel")
def cancel_job(job_id: str = JOB_ID, c: Context = Depends(ctx)) -> dict[str, Any]:
    _get(c, job_id)
    return job_dict(c.jobs.cancel(job_id))


async def follow(c: Context, request: Request, job_id: str, after: int = 0,
                 keepalive: float | None = None) -> AsyncIterator[Any]:
    """A job's events after ``after``, as they are written, until its final status event or the client
    leaves. With ``keepalive``, yields ``None`` after that many quiet seconds (for a comment line)."""
    poll, idle = c.settings.poll_interval, 0.0
    while True:
        events = await run_in_threadpool(c.jobs.events, job_id, after)
        for e in events:
            after = e.seq
            yield e
            if e.type == "status" and e.data.get("status") in FINAL:
                return
        if events:
            idle = 0.0
            continue
        if await request.is_disconnected():
            return
        idle += poll
        if keepalive is not None and idle >= keepalive:
            idle = 0.0
            yield None
        await asyncio.sleep(poll)


async def event_stream(c: Context, request: Request, job_id: str, after: int) -> AsyncIterator[str]:
    """The events as SSE; a comment line every 15 quiet seconds keeps proxies from closing the stream."""
    async for e in follow(c, request, job_id, after, keepalive=15):
        yield ": keep-alive\n\n" if e is None else f"id: {e.seq}\nevent: {e.type}\ndata: {json.dumps(e.data, default=str)}\n\n"


@router.get("/v1/jobs/{job_id}/events")
def job_events(request: Request, job_id: str = JOB_ID, after: int = Query(0, ge=0, le=INT_MAX),
               c: Context = Depends(ctx)) -> StreamingResponse:
    _get(c, job_id)
    last = request.headers.get("last-event-id")
    if last and last.isdigit():
        after = max(after, int(last))  # a reconnecting EventSource continues where it was
    return StreamingResponse(event_stream(c, request, job_id, after), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
