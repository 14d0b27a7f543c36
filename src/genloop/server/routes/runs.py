"""Runs: list them with their headline metric beside its floor, look one up, read its report, compare evaluated
runs, delete one. Evaluating a run is a job (``POST /v1/jobs`` with ``kind: evaluate``); the logic is in
:mod:`..services.runs`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response

from ..deps import Context, ctx, require_token
from ..schemas import AUTHED, RUN_ID, errors
from ..services import runs as svc

router = APIRouter(tags=["runs"], dependencies=[Depends(require_token)], responses=AUTHED)
RUN = PathParam(pattern=RUN_ID.pattern, description="a run id, whole (GET /v1/runs lists them)")

# The report is self-contained (its pictures and sounds are data: URLs) and has no script: it may load nothing,
# run nothing, and is shown only in a frame of this site, sandboxed (an origin of its own, no scripts or forms).
REPORT_CSP = (
    "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)


@router.get("/v1/runs")
def list_runs(c: Context = Depends(ctx)) -> dict[str, Any]:
    """Every run, newest first: ``family``, ``modality``, ``dataset``, ``status``, ``step`` of ``total_steps`` (or
    its ``time_budget``), ``created``, ``evaluated``, its ``headline`` metric beside its real-data ``floor`` (the
    first catalogued metric of its modality that the evaluation has with a floor: FID for images), the
    ``feature_net`` that scored it, and its ``report`` (``exists``, ``stale``, ``url``)."""
    return svc.plain({"runs": svc.list_runs(c)})


@router.get("/v1/runs/compare", responses=errors(409))
def compare_runs(
    ids: str = Query(..., max_length=4000, description="2 to 20 run ids, comma-separated"),
    c: Context = Depends(ctx),
) -> dict[str, Any]:
    """``genloop compare`` as data: ``columns`` and ``rows`` (formatted ``cells`` and raw ``values``), ``best``
    (the run each metric ranks first), and ``plot`` (each run's headline metric beside its floor). Runs scored by
    different reference networks are not ranked against each other: ``best`` is empty and ``unranked`` says why.
    A run not evaluated yet is a ``409``."""
    return svc.plain(svc.compare(c, svc.parse_ids(ids)))


@router.get("/v1/runs/{run_id}")
def get_run(run_id: str = RUN, c: Context = Depends(ctx)) -> dict[str, Any]:
    """The list's row plus the run record (``info``), its ``config``, its ``evaluation`` (each catalogued metric
    beside its floor) and ``busy`` (why it cannot be deleted now, or null)."""
    return svc.plain(svc.detail(c, svc.get_run(c, run_id)))


@router.get(
    "/v1/runs/{run_id}/report",
    response_class=Response,  # no media type of its own: the errors stay JSON in the document, as they are
    responses={200: {"content": {"text/html": {}}, "description": "the run's self-contained HTML report"}},
)
def get_report(run_id: str = RUN, c: Context = Depends(ctx)) -> Response:
    """The run's ``report.html`` (``genloop report``), to show in a sandboxed frame: a strict
    Content-Security-Policy lets it load and run nothing. ``404`` until it is built (``POST`` here builds it)."""
    run = svc.get_run(c, run_id)
    if not run.files.report.is_file():
        raise svc.no_report(run.id)
    return HTMLResponse(
        run.files.report.read_text(encoding="utf-8"),
        headers={
            "Content-Security-Policy": REPORT_CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
        },
    )


@router.post("/v1/runs/{run_id}/report")
def build_report(run_id: str = RUN, c: Context = Depends(ctx)) -> dict[str, Any]:
    """(Re)build the run's report from what the run holds now (its record, curves, samples, evaluation); returns
    the report's state (``exists``, ``stale``, ``built``, ``url``). It takes seconds, so it is not a job."""
    return svc.build_report(svc.get_run(c, run_id))


@router.delete("/v1/runs/{run_id}", responses=errors(409))
def delete_run(run_id: str = RUN, c: Context = Depends(ctx)) -> dict[str, Any]:
    """Delete the run's folder. ``409`` while it is being trained or a queued or running job names it."""
    return svc.delete(c, run_id)


@router.get("/v1/runs/{run_id}/metrics")
def run_metrics(run_id: str = RUN, c: Context = Depends(ctx)) -> dict[str, Any]:
    """The run's ``metrics.jsonl`` (training losses, quick evaluations) for plotting."""
    from ...training.logger import read_metrics

    run = svc.get_run(c, run_id, exact=False)
    records = read_metrics(run.files.metrics)  # a line being written right now is left out
    return {"run_id": run.id, "records": records}
