"""OpenAI-compatible text completions (``POST /v1/completions``) for any text run.

``model`` is a run id. Requests go through the same job queue as everything else (so limits, 429s and
the worker's cached pipelines apply); the route waits for the job, or with ``stream: true`` relays its
text events as OpenAI ``text_completion`` chunks ending in ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from ..deps import Context, ctx, require_token
from ..jobs import FINAL
from ..schemas import CompletionRequest, unprocessable
from .jobs import _run_modality, follow, submit, validate

router = APIRouter(tags=["completions"], dependencies=[Depends(require_token)])
WAIT_SECONDS = 600


def _params(body: CompletionRequest) -> dict[str, Any]:
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise unprocessable("prompt must be one string (batches of prompts are not supported)")
        prompt = prompt[0]
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    return {"run_id": body.model, "prompt": prompt, "n": body.n, "seed": body.seed if body.seed is not None else 0,
            "max_tokens": body.max_tokens, "temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k,
            "repetition_penalty": body.repetition_penalty, "stop": stop}


def _chunk(job_id: str, created: int, model: str, text: str, finish: str | None) -> str:
    body = {"id": f"cmpl-{job_id}", "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, c: Context = Depends(ctx)) -> Any:
    if _run_modality(c, body.model) != "text":
        raise unprocessable(f"model {body.model} is an image run; completions need a text run (GET /v1/models)")
    if body.stream and body.n != 1:
        raise unprocessable("stream=true gives one completion: use n=1")
    params = validate(c, "generate", _params(body))
    response = submit(c, "generate", params, body.user)
    if response.status_code != 202:
        return response
    job_id, created = json.loads(response.body)["id"], int(time.time())
    if body.stream:
        return StreamingResponse(_stream(c, request, job_id, created, body.model), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    job = await _wait(c, request, job_id)
    if job.status != "succeeded":
        raise HTTPException(500 if job.status == "failed" else 409, f"completion job {job_id} {job.status}: {job.error or ''}".strip())
    rows = [c.feedback.get(g) for g in job.result["generation_ids"]]
    usage = job.result.get("usage", {})
    choices = [{"text": r.text, "index": i, "logprobs": None, "finish_reason": f}
               for i, (r, f) in enumerate(zip(rows, job.result.get("finish_reasons", ["stop"] * len(rows))))]
    return JSONResponse({"id": f"cmpl-{job_id}", "object": "text_completion", "created": created, "model": body.model,
                         "choices": choices, "usage": usage, "genloop": {"job_id": job_id,
                                                                          "generation_ids": job.result["generation_ids"]}})


async def _wait(c: Context, request: Request, job_id: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        job = await run_in_threadpool(c.jobs.get, job_id)
        if job.status in FINAL:
            return job
        if await request.is_disconnected():
            await run_in_threadpool(c.jobs.cancel, job_id)
            raise HTTPException(499, "client closed the request")
        await asyncio.sleep(c.settings.poll_interval)
    raise HTTPException(504, f"completion job {job_id} did not finish in {WAIT_SECONDS} s; follow it at /v1/jobs/{job_id}")


async def _stream(c: Context, request: Request, job_id: str, created: int, model: str) -> AsyncIterator[str]:
    async for e in follow(c, request, job_id):
        if e.type == "text":
            yield _chunk(job_id, created, model, e.data["text"], None)
        elif e.type == "status" and e.data["status"] in FINAL:
            if e.data["status"] == "succeeded":
                job = await run_in_threadpool(c.jobs.get, job_id)
                yield _chunk(job_id, created, model, "", (job.result.get("finish_reasons") or ["stop"])[0])
            else:
                err = {"message": e.data.get("error") or f"job {e.data['status']}", "type": "server_error"}
                yield f"data: {json.dumps({'error': err})}\n\n"
            yield "data: [DONE]\n\n"
