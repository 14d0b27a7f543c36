"""Health, the models (runs) the studio can sample from, and a run's training curve."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam

from ... import __version__
from ..deps import Context, ctx, require_token
from ..schemas import AUTHED, RUN_ID

router = APIRouter(tags=["system"])


@router.get("/v1/health")
def health(c: Context = Depends(ctx)) -> dict[str, Any]:
    """``status`` is ``ok`` while at least one worker is alive and ``degraded`` when none is (queued jobs
    would wait forever). Always 200: the HTTP server itself is up; monitors read ``status``."""
    counts = c.jobs.counts()
    workers = c.workers.workers(c.settings.stale_after)
    return {"status": "ok" if any(w["alive"] for w in workers) else "degraded", "version": __version__,
            "auth": bool(c.settings.token), "workers": workers,
            "queue": {"queued": counts.get("queued", 0), "running": counts.get("running", 0),
                      "limit": c.settings.max_queued}}


@lru_cache(maxsize=1024)
def _describe(config_path: str, mtime: int) -> dict[str, Any]:
    from ...systems import models

    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    name = config["model"]["name"]
    cls = models[name]
    spec = config.get("data_spec") or {}
    conditional = bool(getattr(cls, "conditional", False) is True or config["model"].get("class_conditional"))
    d = {"model": name, "modality": cls.modality, "conditional": conditional,
         "num_classes": spec.get("num_classes") if conditional else None, "diffusion": bool(getattr(cls, "iterative", False))}
    if d["diffusion"]:
        d["samplers"] = ["ddpm", "ddim", "dpmpp-2m"]
        d["default_sampler"], d["default_steps"] = config["model"].get("sampler"), config["model"].get("sampling_steps")
    return d


def datasets() -> list[str]:
    from ...data.builtin import datasets as image_sets
    from ...data.text import builtin_corpora

    return sorted({*image_sets.names(), *builtin_corpora()})


@router.get("/v1/models", dependencies=[Depends(require_token)])
def list_models(c: Context = Depends(ctx)) -> dict[str, Any]:
    """Runs with trained weights, newest first, with the controls their family takes."""
    from ...runs import RunStore
    from ...systems import models

    out = []
    store = RunStore(c.settings.runs)
    for row in store.list():
        run_dir = store.root / row.id
        config = run_dir / "config.json"
        if not (run_dir / "model.safetensors").is_file() or not config.is_file():
            continue
        try:
            d = _describe(str(config), config.stat().st_mtime_ns)
        except Exception:  # noqa: BLE001 - a run of a family this version does not know: not offered
            continue
        out.append({"run_id": row.id, "dataset": row.dataset, "status": row.status, "step": row.step,
                    "created": row.created, "has_best": (run_dir / "best.safetensors").is_file(), **d})
    return {"models": out, "families": models.names(), "datasets": datasets()}


@router.get("/v1/runs/{run_id}/metrics", dependencies=[Depends(require_token)], responses=AUTHED)
def run_metrics(run_id: str = PathParam(pattern=RUN_ID.pattern), c: Context = Depends(ctx)) -> dict[str, Any]:
    """The run's ``metrics.jsonl`` (training losses, quick evaluations) for plotting."""
    from ...errors import GenLoopError
    from ...runs import RunStore

    try:
        run = RunStore(c.settings.runs).get(run_id, paths=False)
    except GenLoopError as e:
        raise HTTPException(404, str(e)) from None
    path = run.dir / "metrics.jsonl"
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                pass  # a line being written right now
    return {"run_id": run.id, "records": records}
