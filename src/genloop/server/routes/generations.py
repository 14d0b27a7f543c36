"""Generations (each image or completion with its recipe), their ratings, replay, and A/B preferences."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from ...errors import GenLoopError
from ...feedback.store import generation_dict, preference_dict, rating_dict
from ...modalities import modalities
from ..deps import Context, ctx, require_token
from ..schemas import (
    AUTHED,
    GEN_ID,
    INT_MAX,
    RUN_ID,
    WITH_BODY,
    ArchiveRequest,
    GenerateParams,
    PreferenceRequest,
    RatingRequest,
    errors,
    unprocessable,
)
from ..services.jobs import submit, validate
from ..services.verify import badge, signed_file
from .jobs import created

router = APIRouter(tags=["generations"], dependencies=[Depends(require_token)], responses=AUTHED)
GID = Path(pattern=GEN_ID.pattern, description="a generation id (16 hex digits)")


def _gen(c: Context, gid: str) -> Any:
    try:
        return c.feedback.get(gid)
    except GenLoopError as e:
        raise HTTPException(404, str(e)) from None


def _out(c: Context, row: Any, feedback: dict[str, Any] | None = None) -> dict[str, Any]:
    d = generation_dict(row)
    d["image_url"] = f"/v1/generations/{row.id}/image" if row.media else None
    for kind in _MEDIA:  # the other files of a generation (music: its audio and MIDI beside the piano roll)
        d[f"{kind}_url"] = f"/v1/generations/{row.id}/{kind}" if row.media and _media(c, row, kind).is_file() else None
    d["feedback"] = feedback if feedback is not None else c.feedback.summary(row.id)
    d["verified"] = badge(c, row)  # the stored signed file, verified (cached by its size and mtime)
    d["download_url"] = f"/v1/generations/{row.id}/download" if signed_file(c, row) is not None else None
    d["settings"] = generation_settings(row)
    return d


@router.post("/v1/generations", status_code=202, responses={**WITH_BODY, **errors(429)})
def create_generation(
    body: GenerateParams, user: str | None = Query(None, max_length=64), c: Context = Depends(ctx)
) -> JSONResponse:
    """Queue a generation job (the same as ``POST /v1/jobs`` with ``kind: generate``)."""
    return created(submit(c, "generate", validate(c, "generate", body.model_dump(exclude_none=True)), user))


@router.get("/v1/generations")
def list_generations(
    run_id: str | None = Query(None, pattern=RUN_ID.pattern),
    job_id: str | None = Query(None, pattern=GEN_ID.pattern),
    modality: str | None = Query(None, pattern=f"^({'|'.join(modalities.names())})$"),
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=INT_MAX),
    c: Context = Depends(ctx),
) -> dict[str, Any]:
    rows = c.feedback.list(run_id=run_id, job_id=job_id, modality=modality, limit=limit, offset=offset)
    feedback = c.feedback.summaries([r.id for r in rows])
    return {
        "generations": [_out(c, r, feedback[r.id]) for r in rows],
        "total": c.feedback.count(run_id, job_id, modality),
    }


ARCHIVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {}}, "description": "a zip of the signed files and recipes.jsonl"},
}


@router.post("/v1/generations/archive", responses={**WITH_BODY, **ARCHIVE_RESPONSES}, response_class=StreamingResponse)
def archive(body: ArchiveRequest, c: Context = Depends(ctx)) -> StreamingResponse:
    """A zip of the named generations, streamed: each one's signed file (what ``GET .../download`` gives, under the
    same name) and ``recipes.jsonl``, one line per generation in the order asked (its id, run, checkpoint and
    sha256, recipe, and ``file``: its name in the zip, null when it has no stored file). 422 for an empty list, a
    repeated or malformed id or more than ``max_archive`` ids; 404 naming the first unknown one."""
    return _archive(c, body.ids)


@router.get("/v1/generations/archive", responses=ARCHIVE_RESPONSES, response_class=StreamingResponse)
def archive_link(
    ids: str = Query(max_length=20_000, description="generation ids, comma-separated"), c: Context = Depends(ctx)
) -> StreamingResponse:
    """The same zip as ``POST /v1/generations/archive``, for a plain link (``?ids=a,b,c``)."""
    return _archive(c, [i.strip() for i in ids.split(",")] if ids.strip() else [])


def _archive(c: Context, ids: list[str]) -> StreamingResponse:
    limit = c.settings.limits.max_archive
    if not ids:
        raise unprocessable("ids is empty: name the generations to put in the archive")
    if len(ids) > limit:
        raise unprocessable(f"an archive holds at most {limit} generations, got {len(ids)}")
    bad = next((i for i in ids if not GEN_ID.match(i)), None)
    if bad is not None:
        raise unprocessable(f"'{bad[:40]}' is not a generation id (16 hex digits)")
    repeated = next((i for n, i in enumerate(ids) if i in ids[:n]), None)
    if repeated is not None:
        raise unprocessable(f"generation {repeated} is named twice")
    rows = c.feedback.get_many(ids)  # NotFoundError (404) naming the first unknown id
    files = [signed_file(c, row) for row in rows]
    name = f"genloop-{len(rows)}-generations.zip"
    return StreamingResponse(
        zip_stream(rows, files),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/v1/generations/{gid}")
def get_generation(gid: str = GID, c: Context = Depends(ctx)) -> dict[str, Any]:
    return _out(c, _gen(c, gid))


@router.get("/v1/generations/{gid}/image")
def generation_image(gid: str = GID, c: Context = Depends(ctx)) -> FileResponse:
    row = _gen(c, gid)
    try:
        path = c.feedback.image_path(row)
    except GenLoopError as e:
        raise HTTPException(404, str(e)) from None
    if not path.is_file():
        raise HTTPException(404, f"the image of generation {gid} is missing from the media folder")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=31536000, immutable"})


_MEDIA = {"audio": (".wav", "audio/wav"), "midi": (".mid", "audio/midi")}


def _media(c: Context, row: Any, kind: str) -> Any:
    """The ``kind`` file stored beside a generation's media (its piano roll), by the store's own name."""
    return c.feedback.image_path(row).with_suffix(_MEDIA[kind][0])


def _media_response(c: Context, gid: str, kind: str) -> FileResponse:
    row = _gen(c, gid)
    try:
        path = _media(c, row, kind)
    except GenLoopError:
        path = None
    if path is None or not path.is_file():
        raise HTTPException(404, f"generation {gid} has no {kind}")
    return FileResponse(
        path, media_type=_MEDIA[kind][1], headers={"Cache-Control": "private, max-age=31536000, immutable"}
    )


@router.get(
    "/v1/generations/{gid}/audio",
    responses={**errors(404), 200: {"content": {"audio/wav": {}}, "description": "the piece as WAV audio"}},
    response_class=FileResponse,
)
def generation_audio(gid: str = GID, c: Context = Depends(ctx)) -> FileResponse:
    """A music generation's audio (WAV, rendered when it was made)."""
    return _media_response(c, gid, "audio")


@router.get(
    "/v1/generations/{gid}/midi",
    responses={**errors(404), 200: {"content": {"audio/midi": {}}, "description": "the piece as MIDI"}},
    response_class=FileResponse,
)
def generation_midi(gid: str = GID, c: Context = Depends(ctx)) -> FileResponse:
    """A music generation's MIDI file (its recipe in a text meta event)."""
    return _media_response(c, gid, "midi")


@router.get(
    "/v1/generations/{gid}/download",
    responses={**errors(404), 200: {"content": {"application/octet-stream": {}}, "description": "the signed file"}},
    response_class=FileResponse,
)
def generation_download(gid: str = GID, c: Context = Depends(ctx)) -> FileResponse:
    """The generation's signed file, as an attachment: the PNG (manifest and recipe inside), the MIDI file, or
    the text as a one-record texts JSONL with its manifest; what ``genloop verify`` and ``POST /v1/verify`` read."""
    row = _gen(c, gid)
    path = signed_file(c, row)
    if path is None:
        raise HTTPException(404, f"generation {gid} has no stored file to download")
    types = {".png": "image/png", ".mid": "audio/midi", ".jsonl": "application/jsonl"}
    return FileResponse(
        path, media_type=types.get(path.suffix, "application/octet-stream"), filename=f"genloop-{gid}{path.suffix}"
    )


def zip_stream(rows: list[Any], files: list[Any]) -> Iterator[bytes]:
    """The zip's bytes as each member is written (zipfile writes to an unseekable stream with data descriptors),
    so a large archive is never held in memory whole. PNGs and MIDI are stored (already compressed), text
    deflated."""
    out = _Chunks()
    lines = []
    with zipfile.ZipFile(out, "w") as z:
        for row, path in zip(rows, files):
            member = f"genloop-{row.id}{path.suffix}" if path is not None else None
            if path is not None:
                info = zipfile.ZipInfo.from_file(path, member)
                info.compress_type = zipfile.ZIP_DEFLATED if path.suffix == ".jsonl" else zipfile.ZIP_STORED
                with path.open("rb") as src, z.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 16)
                yield out.take()
            lines.append(
                json.dumps(
                    {
                        "generation_id": row.id,
                        "run_id": row.run_id,
                        "model": row.model,
                        "modality": row.modality,
                        "checkpoint": row.checkpoint,
                        "checkpoint_sha256": row.checkpoint_sha256,
                        "recipe": row.recipe,
                        "file": member,
                    },
                    ensure_ascii=False,
                )
            )
        z.writestr("recipes.jsonl", "".join(f"{line}\n" for line in lines), compress_type=zipfile.ZIP_DEFLATED)
    yield out.take()


class _Chunks:
    """A write-only byte sink that hands over what was written since the last :meth:`take`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, b: bytes) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


_RECIPE_KEY = {"steps": "sampling_steps"}  # the job's `steps` is recorded as the recipe's `sampling_steps`


def generation_settings(row: Any) -> dict[str, Any] | None:
    """The generate-job params that make ``row`` again (run, checkpoint, its own seed and the modality's keys its
    recipe holds; no ``n``): what a replay submits and what the page's "Use these settings" fills the form with.
    None for an edit, which no generate form makes."""
    from ...data.image_io import upgrade_recipe

    r = upgrade_recipe(row.recipe)  # a generation stored before the recipe keys were split reads the same
    if r.get("kind") == "edit" or r.get("seed") is None:
        return None
    keys = modalities[row.modality].generate_keys
    params = {
        "run_id": row.run_id,
        "checkpoint": row.checkpoint,
        "seed": int(r["seed"]),
        **{k: r[_RECIPE_KEY.get(k, k)] for k in keys if r.get(_RECIPE_KEY.get(k, k)) is not None},
    }
    if params.get("sampler") not in (None, "ddpm", "ddim", "dpmpp-2m"):  # one-step models: "latent-gaussian"
        params.pop("sampler")
    return params


@router.post("/v1/generations/{gid}/replay", status_code=202, responses=errors(409, 429))
def replay(gid: str = GID, user: str | None = Query(None, max_length=64), c: Context = Depends(ctx)) -> JSONResponse:
    """Make a generation again from its stored recipe; the job's result says whether it came out identical."""
    from ...data.image_io import upgrade_recipe

    row = _gen(c, gid)
    r = upgrade_recipe(row.recipe)  # a generation stored before the recipe keys were split reads the same
    if r.get("kind") == "edit":  # an edit replays as the same edit of the same uploads
        kind, params = "edit", _edit_params(r, row)
    else:
        settings = generation_settings(row)
        if settings is None:
            raise HTTPException(409, f"the recipe of generation {gid} has no seed, so it cannot be made again")
        kind, params = "generate", {**settings, "n": 1}
    params = validate(c, kind, params)
    from ...runs import RunStore
    from ...serialization import sha256_file

    weights = RunStore(c.settings.runs).get(row.run_id, paths=False).files.weights_for(row.checkpoint)
    if not weights.is_file() or sha256_file(weights) != row.checkpoint_sha256:
        raise HTTPException(
            409,
            f"the {row.checkpoint} checkpoint of run {row.run_id} changed since generation {gid} "
            "was made (its sha256 differs), so it cannot be replayed exactly",
        )
    return created(submit(c, kind, {**params, "replay_of": row.id}, user))


def _edit_params(r: dict[str, Any], row: Any) -> dict[str, Any]:
    """The edit job that made an edit's generation (its recipe names the uploads, the task and its options)."""
    from ...generation.editing.tasks import EDIT_TASKS

    task = EDIT_TASKS.get(r.get("task", ""))
    if task is None or "input" not in r or r.get("index", 0) != 0:
        raise HTTPException(
            409,
            f"generation {row.id} is an edit that cannot be replayed here (an unknown task, no uploaded input, "
            "or not the first image of its upload)",
        )
    params = {
        "run_id": row.run_id,
        "checkpoint": row.checkpoint,
        "task": task.name,
        "input": r["input"],
        "mask": r.get("mask"),
        "seed": int(r["seed"]),
        "steps": r.get("sampling_steps"),
        "sampler": r.get("sampler"),
        "class_label": r.get("class_label"),
        "guidance": r.get("guidance"),
        "options": {k: r[k] for k in task.options if r.get(k) is not None},
    }
    return {k: v for k, v in params.items() if v is not None}


@router.post("/v1/generations/{gid}/ratings", status_code=201, responses=WITH_BODY)
def rate(body: RatingRequest, gid: str = GID, c: Context = Depends(ctx)) -> dict[str, Any]:
    _gen(c, gid)
    if body.thumbs is None and body.stars is None:
        raise unprocessable("a rating needs thumbs (1 or -1) or stars (1-5)")
    return {
        **rating_dict(c.feedback.rate(gid, body.thumbs, body.stars, body.user)),
        "feedback": c.feedback.summary(gid),
    }


@router.get("/v1/generations/{gid}/ratings")
def ratings(gid: str = GID, c: Context = Depends(ctx)) -> dict[str, Any]:
    _gen(c, gid)
    return {"ratings": [rating_dict(r) for r in c.feedback.ratings(gid)]}


@router.post("/v1/preferences", status_code=201, tags=["feedback"], responses=WITH_BODY)
def prefer(body: PreferenceRequest, c: Context = Depends(ctx)) -> dict[str, Any]:
    _gen(c, body.chosen_id), _gen(c, body.rejected_id)
    try:
        return preference_dict(c.feedback.prefer(body.chosen_id, body.rejected_id, body.user))
    except GenLoopError as e:
        raise unprocessable(str(e)) from None


@router.get("/v1/preferences", tags=["feedback"])
def preferences(run_id: str | None = Query(None, pattern=RUN_ID.pattern), c: Context = Depends(ctx)) -> dict[str, Any]:
    return {"preferences": [preference_dict(p) for p in c.feedback.preferences(run_id)]}
