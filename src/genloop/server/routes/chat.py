"""OpenAI-compatible chat completions (``POST /v1/chat/completions``) for any text run; ``model`` is a run id.

Like ``/v1/completions``, requests go through the job queue; the logic lives in :mod:`..services.chat` and
errors take OpenAI's envelope (:mod:`..services.openai_compat`), so the official ``openai`` client's
``client.chat.completions.create(...)`` works unchanged, streamed or not.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from ..deps import Context, ctx, require_token
from ..schemas import openai_errors
from ..services import chat as service

router = APIRouter(tags=["chat"], dependencies=[Depends(require_token)])

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a chat.completion; with stream=true, server-sent events: chat.completion.chunk objects, "
        "then data: [DONE] (an error after the 200 comes as an OpenAI error event)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **openai_errors(400, 401, 404, 409, 413, 429, 500, 504),
}


@router.post("/v1/chat/completions", response_model=None, responses=RESPONSES)
async def chat_completions(body: service.ChatCompletionRequest, request: Request, c: Context = Depends(ctx)) -> Any:
    """OpenAI's chat completions: ``messages`` (system/developer, user, assistant), ``n``, ``stop``, ``seed``,
    ``max_tokens``, ``temperature``, ``top_p``, penalties, ``logit_bias`` and ``stream`` (one
    ``chat.completion.chunk`` per piece of text, ``stream_options.include_usage``)."""
    plan = await run_in_threadpool(service.plan, c, body)
    rows = await run_in_threadpool(service.queue, c, plan, body.user)
    created = int(time.time())
    if plan.stream:
        return StreamingResponse(
            service.stream(c, request, plan, rows, created),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return JSONResponse(await service.answer(c, request, plan, rows, created))
