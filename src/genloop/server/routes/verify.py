"""Verifying a file's provenance: ``POST /v1/verify`` (multipart), what ``genloop verify FILE`` says, as JSON.

The upload (a PNG or JPEG, a MIDI file, a text or texts JSONL, a ``.manifest.json`` sidecar; optionally the
sidecar of the file as a second part, ``manifest``) is written to a private temporary folder under a safe name
(the client's name reduced to a basename, never used as a path), checked, and removed. A file that cannot be
read as any of these, an empty upload or a truncated manifest is a 422 with one line; beyond the size limit, 413.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool

from ...errors import GenLoopError
from ...safety.provenance import SIDECAR_SUFFIX
from ..deps import Context, ctx, require_token
from ..schemas import AUTHED, WITH_BODY
from ..services import verify as service
from .uploads import _safe_name

router = APIRouter(tags=["provenance"], dependencies=[Depends(require_token)], responses={**AUTHED, **WITH_BODY})


async def _save(upload: UploadFile, target: Path, limit: int, what: str) -> int:
    size = 0
    with open(target, "wb") as out:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit:
                cap = f"{limit // (1 << 20)} MiB" if limit >= 1 << 20 else f"{limit}-byte"
                raise HTTPException(413, f"the {what} exceeds the {cap} limit")
            out.write(chunk)
    if size == 0:
        raise HTTPException(422, f"the {what} is empty")
    return size


@router.post("/v1/verify")
async def verify(
    file: UploadFile = File(description="the file to check: PNG/JPEG, MIDI, text, texts JSONL or a manifest"),
    manifest: UploadFile | None = File(None, description="the file's .manifest.json sidecar, if it has one"),
    c: Context = Depends(ctx),
) -> dict[str, Any]:
    """``status``: ``valid`` (signature good, content unchanged, key trusted), ``tampered`` (``fields`` names the
    changed manifest fields), ``unsigned``, ``unknown key``; with the ``generation_id``, the ``watermark``
    (``detected``, ``score`` beside its ``threshold``, the generation it names), and the ``recipe`` when this
    server's database (``generation``) or the signed manifest has it, and the ``run`` when the run store does."""
    limit = c.settings.limits.max_verify_bytes
    name = _safe_name(file.filename or "upload")
    folder = Path(tempfile.mkdtemp(prefix="genloop-verify-"))
    try:
        path = folder / name
        await _save(file, path, limit, "upload")
        if manifest is not None and manifest.filename:
            await _save(manifest, folder / (name + SIDECAR_SUFFIX), limit, "manifest")
        try:
            return await run_in_threadpool(service.verify_upload, c, path, name)
        except GenLoopError as e:
            raise HTTPException(422, str(e)) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
