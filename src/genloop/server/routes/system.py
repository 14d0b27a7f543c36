"""Health, the models (runs) the studio can sample from, and a run's training curve."""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam

from ... import __version__
from ..deps import Context, ctx, require_token
from ..schemas import AUTHED, RUN_ID, ModelList, openai_errors
from ..services.jobs import UnknownRun, datasets

router = APIRouter(tags=["system"])


@router.get("/v1/health")
def health(c: Context = Depends(ctx)) -> dict[str, Any]:
    """``status`` is ``ok`` while at least one worker is alive and ``degraded`` when none is (queued jobs
    would wait forever). Always 200: the HTTP server itself is up; monitors read ``status``. Each worker, on
    this machine or another sharing the database, has its ``host``, ``pid``, ``device``, ``last_heartbeat``
    (and ``heartbeat_age`` in seconds), ``alive`` and the ``job`` it is running (``{"id", "kind"}`` or null)."""
    counts = c.jobs.counts()
    workers = c.workers.workers(c.settings.stale_after, c.jobs.running_jobs())
    return {
        "status": "ok" if any(w["alive"] for w in workers) else "degraded",
        "version": __version__,
        "auth": bool(c.settings.token),
        "workers": workers,
        "queue": {
            "queued": counts.get("queued", 0),
            "running": counts.get("running", 0),
            "limit": c.settings.max_queued,
        },
    }


@lru_cache(maxsize=1024)
def _describe(config_path: str, mtime: int) -> dict[str, Any]:
    from ...modalities import modalities
    from ...systems import models

    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    name = config["model"]["name"]
    cls = models[name]
    return {"model": name, "modality": cls.modality, **modalities[cls.modality].describe(config, cls)}


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
    with the controls its family takes; ``families`` and ``datasets`` are what a training job may name."""
    from ...run_layout import RunLayout
    from ...runs import RunStore
    from ...systems import models

    out = []
    store = RunStore(c.settings.runs)
    for row in store.list():
        files = RunLayout(store.root / row.id)
        config = files.config
        if not files.weights.is_file() or not config.is_file():
            continue
        try:
            d = _describe(str(config), config.stat().st_mtime_ns)
        except Exception:  # noqa: BLE001 - a run of a family this version does not know: not offered
            continue
        out.append(
            {
                "id": row.id,
                "object": "model",
                "created": _epoch(row.created),
                "owned_by": "genloop",
                "run_id": row.id,
                "dataset": row.dataset,
                "status": row.status,
                "step": row.step,
                "created_at": row.created,
                "has_best": files.best_weights.is_file(),
                **d,
            }
        )
    return {"object": "list", "data": out, "families": models.names(), "datasets": datasets()}


def _epoch(iso: str) -> int:
    """OpenAI's ``created`` is Unix seconds; a run records an ISO time (0 if it has none)."""
    try:
        return int(dt.datetime.fromisoformat(iso).timestamp())
    except (TypeError, ValueError):
        return 0


@router.get("/v1/runs/{run_id}/metrics", dependencies=[Depends(require_token)], responses=AUTHED)
def run_metrics(run_id: str = PathParam(pattern=RUN_ID.pattern), c: Context = Depends(ctx)) -> dict[str, Any]:
    """The run's ``metrics.jsonl`` (training losses, quick evaluations) for plotting."""
    from ...errors import GenLoopError
    from ...runs import RunStore
    from ...training.logger import read_metrics

    try:
        run = RunStore(c.settings.runs).get(run_id, paths=False)
    except GenLoopError:
        raise UnknownRun(run_id) from None  # the store's message names its folder on the server
    records = read_metrics(run.files.metrics)  # a line being written right now is left out
    return {"run_id": run.id, "records": records}
