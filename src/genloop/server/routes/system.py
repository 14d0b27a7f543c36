"""Health and the models (runs) the studio can sample from. (A run's curves and the rest of the runs: ``runs.py``.)"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from ... import __version__
from ..deps import Context, ctx, require_token
from ..schemas import ModelList, openai_errors
from ..services.jobs import datasets

router = APIRouter(tags=["system"])


@router.get("/v1/health")
def health(c: Context = Depends(ctx)) -> dict[str, Any]:
    """``status`` is ``ok`` while at least one worker is alive and ``degraded`` when none is (queued jobs
    would wait forever). Always 200: the HTTP server itself is up; monitors read ``status``. Each worker, on
    this machine or another sharing the database, has its ``host``, ``pid``, ``device``, ``last_heartbeat``
    (and ``heartbeat_age`` in seconds), ``alive``, its ``lane`` and the ``job`` it is running (``{"id", "kind"}``
    or null). ``queue.lanes`` has each lane's queued and running jobs and its live workers (a worker of lane
    ``all`` counts in both)."""
    counts = c.jobs.counts()
    workers = c.workers.workers(c.settings.stale_after, c.jobs.running_jobs())
    lanes: dict[str, Any] = c.jobs.lane_counts()
    for lane, row in lanes.items():
        row["workers"] = sum(1 for w in workers if w["alive"] and w["lane"] in (lane, "all"))
    return {
        "status": "ok" if any(w["alive"] for w in workers) else "degraded",
        "version": __version__,
        "auth": bool(c.settings.token),
        "workers": workers,
        "queue": {
            "queued": counts.get("queued", 0),
            "running": counts.get("running", 0),
            "limit": c.settings.max_queued,
            "lanes": lanes,
        },
    }


@router.get(
    "/v1/models",
    dependencies=[Depends(require_token)],
    response_model=None,
    responses={
        200: {
            "model": ModelList,
            "description": "OpenAI's model list",
            "links": {  # a listed model is what a completion names (the fuzz's stateful phase follows this)
                "Complete": {
                    "operationId": "completions_v1_completions_post",
                    "requestBody": {"model": "$response.body#/data/0/id", "prompt": "The", "max_tokens": 2},
                }
            },
        },
        **openai_errors(401, 413, 500),
    },
)
def list_models(c: Context = Depends(ctx)) -> dict[str, Any]:
    """Runs with trained weights, newest first, in OpenAI's model list (so OpenAI clients can list them), each
    with the controls its family takes; ``families`` and ``datasets`` are what a training job may name. Read
    from an index that notices new, changed and removed runs (:mod:`..services.models`), not a scan per call."""
    from ...systems import models

    return {"object": "list", "data": c.models.models(), "families": models.names(), "datasets": datasets()}
