"""The run store as the studio's Runs tab sees it: a list with each run's headline metric beside its floor, a
run's detail, its report, a comparison of evaluated runs, and deletion that refuses a run something is using.

Nothing here computes a metric or ranks a run by its own rules: the numbers come from the run store
(:mod:`genloop.runs`) and the run's ``eval/metrics.json``, read through :func:`genloop.evaluation.compare.
comparison_row` (the same row ``genloop compare`` shows); ranking is :func:`~genloop.evaluation.compare.best_runs`,
which ranks nothing across runs scored by different reference networks; the headline is
:func:`~genloop.evaluation.compare.headline`. A run id names one run exactly here (the CLI's unique-prefix
lookup would let a short id, typed or fuzzed, name a run nobody meant: a delete must never guess).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from ...errors import GenLoopError
from ...evaluation import catalog
from ...evaluation.compare import (
    best_runs,
    columns,
    comparison_row,
    feature_nets,
    format_cell,
    headline,
    metric_entry,
    mixed_features_note,
)
from ...runs import ACTIVE, Run, RunStore
from ...serialization import read_json
from ..deps import Context
from ..jobs import JobRow

MAX_COMPARE = 20  # runs in one comparison: a table and a plot a person can still read


def plain(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float as None: JSON has no such numbers (an evaluation can write them)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def store(c: Context) -> RunStore:
    return RunStore(c.settings.runs)


def get_run(c: Context, run_id: str, exact: bool = True) -> Run:
    """The run whose id is exactly ``run_id`` (404 otherwise); ``exact=False`` also takes a unique prefix (the
    curves of ``GET /v1/runs/{id}/metrics``, as before this router)."""
    try:
        run = store(c).get(run_id, paths=False)
    except GenLoopError:
        raise unknown(run_id) from None  # the store's message names its folder on the server
    if exact and run.id != run_id:
        raise unknown(run_id)
    return run


def unknown(run_id: str) -> HTTPException:
    return HTTPException(404, f"no run '{run_id}': GET /v1/runs lists the runs")


def modality_of(family: str | None) -> str | None:
    """The modality name of a model family, or None for a family this version does not know."""
    from ...systems import models

    return str(models[family].modality) if family and family in models else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")


def report_state(run: Run) -> dict[str, Any]:
    """Whether the run has a report, and whether it is older than what it shows (the run record or its evaluation
    changed since it was written): ``{"exists", "stale", "built", "url"}``."""
    built = _mtime(run.files.report)
    sources = (_mtime(run.files.run_info), _mtime(run.files.eval_metrics()))
    newest = max((t for t in sources if t is not None), default=0.0)
    return {
        "exists": built is not None,
        "stale": built is not None and built < newest,
        "built": _iso(built),
        "url": f"/v1/runs/{run.id}/report",
    }


def evaluation_row(run: Run) -> dict[str, Any] | None:
    """The run's comparison row (``genloop compare``'s), or None when the run has not been evaluated."""
    if not run.files.eval_metrics().is_file():
        return None
    try:
        return comparison_row(run)
    except GenLoopError:
        return None  # a broken metrics file: the list shows the run as not evaluated (the report says why)


def _steps(run: Run) -> tuple[int | None, float | None]:
    """The steps the run is configured for, and its time budget (either may end training)."""
    try:
        train = run.config.get("train") or {}
    except GenLoopError:
        return None, None
    steps, budget = train.get("steps"), train.get("time_budget")
    return (int(steps) if isinstance(steps, int) else None), (float(budget) if budget is not None else None)


def summary(run: Run) -> dict[str, Any]:
    """One row of ``GET /v1/runs``."""
    info = run.info
    family = info.get("model")
    modality = modality_of(family)
    row = evaluation_row(run)
    total, budget = _steps(run)
    return {
        "id": run.id,
        "family": family,
        "modality": modality,
        "dataset": info.get("dataset"),
        "status": info.get("status"),
        "step": int(info.get("step", 0)),
        "total_steps": total,
        "time_budget": budget,
        "created": info.get("created"),
        "updated": info.get("updated"),
        "has_weights": run.files.weights.is_file(),
        "evaluated": row is not None,
        "headline": headline(row, modality) if row is not None and modality else None,
        "feature_net": row.get("feature_net") if row else None,
        "report": report_state(run),
    }


def list_runs(c: Context) -> list[dict[str, Any]]:
    """Every run in the store, newest first (the store's own order and its check of runs whose process died)."""
    s = store(c)
    out = []
    for r in s.list():
        try:
            run = s.get(r.id, paths=False)
        except GenLoopError:
            continue  # removed between the listing and now
        out.append(summary(run))
    return out


def metrics_table(row: dict[str, Any], modality: str | None) -> list[dict[str, Any]]:
    """The catalogued metrics of an evaluation row, each beside its floor, in the catalogue's order."""
    metrics = catalog.for_modality(modality) if modality else catalog.CATALOG.values()
    return [metric_entry(m, row) for m in metrics if row.get(m.key) is not None]


def detail(c: Context, run: Run) -> dict[str, Any]:
    """``GET /v1/runs/{id}``: the list row plus the run record, its config and its evaluation's metrics."""
    out = summary(run)
    try:
        config = run.config
    except GenLoopError:  # its message names the file on the server
        config, out["config_error"] = None, "the run's config.json is missing or cannot be read"
    row = evaluation_row(run)
    evaluation = None
    if row is not None:
        ev = read_json(run.files.eval_metrics())
        evaluation = {
            "step": ev.get("step"),
            "checkpoint": ev.get("checkpoint"),
            "n": ev.get("n_generated", ev.get("n")),
            "seconds": ev.get("seconds"),
            "feature_net": row.get("feature_net"),
            "metrics": metrics_table(row, out["modality"]),
        }
    blockers = [f"{j.kind} job {j.id}" for j in active_jobs(c, run.id)]
    return {
        **out,
        "info": run.info,
        "config": config,
        "evaluation": evaluation,
        "busy": busy_reason(run, blockers),
    }


def build_report(run: Run) -> dict[str, Any]:
    """Write the run's ``report.html`` (``genloop report``) and say where it is."""
    from ...evaluation.report import write_report

    write_report(run.dir)
    return report_state(run)


def no_report(run_id: str) -> HTTPException:
    return HTTPException(404, f"run {run_id} has no report yet: POST /v1/runs/{run_id}/report builds it")


def parse_ids(ids: str) -> list[str]:
    """``a,b,c`` → the ids, each checked, none twice, 2 to :data:`MAX_COMPARE` of them (422 otherwise)."""
    from ..schemas import RUN_ID, unprocessable

    names = [x.strip() for x in ids.split(",") if x.strip()]
    bad = [x for x in names if not RUN_ID.match(x)]
    if bad:
        raise unprocessable(f"'{bad[0][:40]}' is not a run id")
    if len(set(names)) != len(names):
        raise unprocessable("a run is named twice in ids")
    if not 2 <= len(names) <= MAX_COMPARE:
        raise unprocessable(f"name 2 to {MAX_COMPARE} runs to compare (ids=a,b), got {len(names)}")
    return names


def compare(c: Context, ids: list[str]) -> dict[str, Any]:
    """``genloop compare``'s table as data, plus each run's headline metric beside its floor for a plot.

    Runs scored by different reference networks are shown, each with its net, but ranked against no other
    (``best`` is then empty and ``unranked`` says why), exactly as ``genloop compare`` refuses to."""
    runs = [get_run(c, i) for i in ids]
    rows = []
    for run in runs:
        row = evaluation_row(run)
        if row is None:
            raise HTTPException(409, f"run {run.id} has not been evaluated yet: evaluate it first")
        rows.append(row)
    cols = columns(rows)
    best = best_runs(rows)
    plot = []
    for run, row in zip(runs, rows, strict=True):
        modality = modality_of(run.info.get("model"))
        plot.append({"run_id": run.id, "family": run.info.get("model"), **(headline(row, modality or "") or {})})
    return {
        "columns": [{"key": col.key, "title": col.title} for col in cols],
        "rows": [{"run_id": r["run_id"], "cells": [format_cell(r, col) for col in cols], "values": r} for r in rows],
        "best": best,
        "feature_nets": feature_nets(rows),
        "unranked": mixed_features_note(rows),
        "plot": plot,
    }


def active_jobs(c: Context, run_id: str) -> list[JobRow]:
    """Queued or running jobs that name the run (a training job resuming it, an evaluation, a generation...)."""
    found = []
    for status in ("queued", "running"):
        for j in c.jobs.list(status=status, limit=500):
            if j.run_id == run_id or (j.params or {}).get("run_id") == run_id:
                found.append(j)
    return found


def busy_reason(run: Run, blockers: list[str]) -> str | None:
    """Why the run cannot be deleted now (a live process trains it, a job uses it), or None. A run read through
    the store whose process died is already recorded as killed, so an active status here means a live one."""
    if run.info.get("status") in ACTIVE:
        return f"run {run.id} is {run.info.get('status')}: stop its training first"
    if blockers:
        return f"run {run.id} is used by {', '.join(blockers)}: wait for it or cancel it first"
    return None


def delete(c: Context, run_id: str) -> dict[str, Any]:
    """Remove the run's folder (409 while it is trained or a job uses it)."""
    run = get_run(c, run_id)
    reason = busy_reason(run, [f"{j.kind} job {j.id}" for j in active_jobs(c, run.id)])
    if reason:
        raise HTTPException(409, reason)
    return {"id": store(c).remove(run.id), "deleted": True}
