"""Validating and queueing jobs, for every router that makes them (jobs, generations, completions).

These raise :class:`~fastapi.HTTPException` (404 unknown run, 422 bad params, 429 full queue), so each
route's error format — GenLoop's ``{"detail"}`` or OpenAI's envelope — is decided by the app's handlers,
not here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from ...errors import NotFoundError
from ...modalities import modalities
from ..deps import Context
from ..jobs import FINAL, JobRow, QueueFull
from ..schemas import (
    EditParams,
    EvaluateParams,
    GenerateParams,
    TrainParams,
    check_generate,
    check_run_id,
    check_train,
    unprocessable,
)
from .openai_compat import OpenAIError


class UnknownRun(HTTPException):
    """A 404 for a run id that names no run. Its message never shows where runs live on the server."""

    def __init__(self, run_id: str) -> None:
        super().__init__(404, f"the model '{run_id}' does not exist: GET /v1/models lists the runs you can use")


def datasets() -> list[str]:
    """The built-in data sets a training job may name (besides uploads)."""
    from ...data.builtin import datasets as image_sets
    from ...modalities.text import builtin_corpora

    return sorted({*image_sets.names(), *builtin_corpora()})


def run_family(c: Context, run_id: str) -> Any:
    """The system class (the family) of a run in the store (404 :class:`UnknownRun` if there is no such run)."""
    from ...runs import RunStore
    from ...systems import models

    check_run_id(run_id)
    try:  # in the run store only: never a folder relative to where the server was started
        run = RunStore(c.settings.runs).get(run_id, paths=False)
    except NotFoundError:
        raise UnknownRun(run_id) from None
    return models[run.config["model"]["name"]]


def run_modality(c: Context, run_id: str) -> str:
    """The name of the run's modality (``genloop.modalities``): what it generates (404 :class:`UnknownRun` if
    there is no such run)."""
    return str(run_family(c, run_id).modality)


def run_generate_keys(c: Context, run_id: str) -> tuple[str, tuple[str, ...]]:
    """The run's modality and the generate-job params its family takes (an image run takes a prompt only when its
    family is text-conditioned, and then no class)."""
    family = run_family(c, run_id)
    name = str(family.modality)
    return name, modalities[name].generate_keys_of(family)


def foreign_keys(name: str, own_keys: tuple[str, ...] | None = None) -> list[str]:
    """The generate-job params a job for a ``name`` run may not set: the other modalities' and, given
    ``own_keys`` (the family's), those of its own modality that the family does not take."""
    own = {*(modalities[name].generate_keys if own_keys is None else own_keys), *modalities[name].report_keys}
    keys: list[str] = []
    for other in modalities:
        for k in (*modalities[other].generate_keys, *modalities[other].report_keys):
            if k not in own and k not in keys:
                keys.append(k)
    return keys


def validate(c: Context, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Parse and check a job's params for ``kind``; returns them normalised (defaults dropped)."""
    try:
        if kind == "generate":
            p: Any = GenerateParams(**params)
            check_generate(p, c.settings.limits)
            name, own_keys = run_generate_keys(c, p.run_id)
            wrong = [k for k in foreign_keys(name, own_keys) if getattr(p, k) is not None]
            if wrong:
                raise unprocessable(f"run {p.run_id} is a {name} model; {', '.join(wrong)} do not apply to it")
            refused = modalities[name].generate_limit(p.n, c.settings.limits)
            if refused:
                raise unprocessable(refused)
            if getattr(p, "prompt", None):
                moderate_prompt(c, p.prompt)
        elif kind == "train":
            p = TrainParams(**params)
            check_train(p, c.settings.limits, datasets())
            from ...systems import models

            if p.model not in models or p.model == "hf-causal-lm":
                raise unprocessable(
                    f"unknown model '{p.model}'; valid: {', '.join(m for m in models.names() if m != 'hf-causal-lm')}"
                )
            if p.data is not None and p.data.startswith("upload:"):
                check_upload_data(c, p.model, p.data)
        elif kind == "evaluate":
            p = EvaluateParams(**params)
            run_modality(c, p.run_id)
            if p.n > c.settings.limits.max_eval_samples:
                raise unprocessable(f"n must be at most {c.settings.limits.max_eval_samples}, got {p.n}")
        elif kind == "edit":
            p = EditParams(**params)
            check_edit(c, p)
        else:
            raise unprocessable(f"unknown job kind '{kind}'")
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise unprocessable(f"params.{where}: {first.get('msg')}") from None
    return p.model_dump(exclude_none=True)


def check_upload_data(c: Context, family: str, ref: str) -> None:
    """A training job's ``upload:<id>`` is stored and holds data the family's modality reads (422 otherwise,
    naming the families that can train on it)."""
    from ...systems import models
    from .uploads import data_path, describe

    try:
        path = data_path(c.settings.uploads, ref)
    except NotFoundError:
        raise unprocessable(f"upload {ref} does not exist: GET /v1/uploads lists the stored uploads") from None
    modality = modalities[models[family].modality]
    if modality.data_claim(str(path)) > 0:
        return
    about = describe(c.settings.uploads, ref.split(":", 1)[1])
    fits = ", ".join(about["families"]) or "none of the families"
    raise unprocessable(
        f"{family} trains on {modality.noun} data and {ref} ({about.get('filename')}, kind {about.get('kind')}) "
        f"holds none; {fits} can train on it"
    )


def check_edit(c: Context, p: Any) -> None:
    """An edit job's run is a diffusion run, its task known, its options the task's, its mask there if needed (422)."""
    from ...errors import GenLoopError
    from ...generation.editing.editor import refusal
    from ...generation.editing.tasks import check_channels, check_options, get_task
    from ...runs import RunStore
    from ...systems import models

    run_modality(c, p.run_id)  # 404 for no such run
    run = RunStore(c.settings.runs).get(p.run_id, paths=False)
    family = run.config["model"]["name"]
    try:
        task = get_task(p.task)
        if not getattr(models[family], "diffusion", False):
            raise refusal(p.task, {"run_id": p.run_id, "model": family})
        check_options(task, p.options)
        check_channels(task, (run.config.get("data_spec") or {}).get("channels"), p.run_id)
        if task.mask and p.mask is None:
            raise GenLoopError(f"task {p.task} needs a mask (white = fill, black = keep)")
        if not task.mask and p.mask is not None:
            raise GenLoopError(f"task {p.task} takes no mask")
    except GenLoopError as e:
        raise unprocessable(str(e)) from None


def moderate_prompt(c: Context, prompt: str) -> None:
    """Refuse a prompt moderation blocks before any job is queued: a 400 whose message is the reason, with code
    ``content_filter`` (OpenAI's envelope on the OpenAI routes, ``{"detail"}`` elsewhere). Only a block is logged
    here; the worker logs the decision of every prompt it runs, under the job's id."""
    from ...safety import moderation

    d = c.settings.moderator().check(prompt, "prompt", moderation.new_request_id(), c.settings.runs, "unless-allowed")
    if d.action == "block":
        raise OpenAIError(400, d.reason, param="prompt", code="content_filter")


def submit(c: Context, kind: str, params: dict[str, Any], user: str | None) -> JobRow:
    """Queue a validated job; a full queue is a 429 with ``Retry-After``."""
    try:
        return c.jobs.enqueue(kind, params, user or "anonymous")
    except QueueFull as e:
        raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after)}) from None


async def follow(
    c: Context, request: Request, job_id: str, after: int = 0, keepalive: float | None = None
) -> AsyncIterator[Any]:
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
