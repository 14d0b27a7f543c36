"""OpenAI-compatible text completions (``POST /v1/completions``) for any text run; ``model`` is a run id.

Requests go through the same job queue as everything else (so limits, 429s and the worker's cached
pipelines apply). The logic — parameters to jobs, results to OpenAI's answer or stream — lives in
:mod:`..services.completions`; errors take OpenAI's envelope (:mod:`..services.openai_compat`).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from ..deps import Context, ctx, require_token
from ..schemas import COMPLETION_RESPONSES, CompletionRequest
from ..services import completions as service

router = APIRouter(tags=["completions"], dependencies=[Depends(require_token)])


@router.post("/v1/completions", response_model=None, responses=COMPLETION_RESPONSES)
async def completions(body: CompletionRequest, request: Request, c: Context = Depends(ctx)) -> Any:
    """OpenAI's legacy completions: ``n``, ``best_of``, ``logprobs``, ``echo``, penalties, ``logit_bias``, a list
    of prompts, ``stream`` (one chunk per piece of text) with ``stream_options.include_usage``, and ``seed``."""
    plan = await run_in_threadpool(service.plan, c, body)
    rows = await run_in_threadpool(service.queue, c, plan, body.user)
    created = int(time.time())
    if plan.stream:
        return StreamingResponse(
            service.stream(c, request, plan, rows, created),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    jobs = await service.wait(c, request, rows)
    return JSONResponse(await run_in_threadpool(service.answer, c, plan, jobs, created))
