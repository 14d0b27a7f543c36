"""Jobs: submit (202 + id at once), look up, list, cancel, and follow by server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ...errors import GenLoopError
from ..deps import Context, ctx, require_token
from ..jobs import JobRow, job_dict
from ..schemas import AUTHED, GEN_ID, INT_MAX, WITH_BODY, JobKind, JobRequest, JobStatus, errors
from ..services.jobs import follow, submit, validate

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_token)], responses=AUTHED)
JOB_ID = Path(pattern=GEN_ID.pattern, description="a job id (16 hex digits)")


def created(row: JobRow) -> JSONResponse:
    """The 202 answer to a queued job: the job, and where to follow it."""
    return JSONResponse(job_dict(row), status_code=202, headers={"Location": f"/v1/jobs/{row.id}"})


@router.post("/v1/jobs", status_code=202, responses={**WITH_BODY, **errors(429)})
def create_job(body: JobRequest, c: Context = Depends(ctx)) -> JSONResponse:
    return created(submit(c, body.kind, validate(c, body.kind, body.params.model_dump(exclude_none=True)), body.user))


@router.get("/v1/jobs")
def list_jobs(
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=INT_MAX),
    c: Context = Depends(ctx),
) -> dict[str, Any]:
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


async def event_stream(c: Context, request: Request, job_id: str, after: int) -> AsyncIterator[str]:
    """The events as SSE; a comment line every 15 quiet seconds keeps proxies from closing the stream."""
    async for e in follow(c, request, job_id, after, keepalive=15):
        yield (
            ": keep-alive\n\n"
            if e is None
            else f"id: {e.seq}\nevent: {e.type}\ndata: {json.dumps(e.data, default=str)}\n\n"
        )


@router.get("/v1/jobs/{job_id}/events")
def job_events(
    request: Request, job_id: str = JOB_ID, after: int = Query(0, ge=0, le=INT_MAX), c: Context = Depends(ctx)
) -> StreamingResponse:
    _get(c, job_id)
    last = request.headers.get("last-event-id")
    if last and last.isdigit():
        after = max(after, int(last))  # a reconnecting EventSource continues where it was
    return StreamingResponse(
        event_stream(c, request, job_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
