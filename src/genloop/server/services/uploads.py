"""The stored uploads: where an ``upload:<id>`` lives, what it holds, and what can train on it.

One upload is one folder ``<uploads>/<id>/`` holding the data (``images/`` for images, else the one file) and
``.upload.json``, the description the upload route wrote (file name, kind, purpose, bytes, files, when). Its
purpose is ``data`` (a data set to train on) or ``input`` (the input of one job: an image to edit, a mask, a MIDI
prompt), so a list of data sets leaves the inputs out. The dot keeps
it out of the data: a training job is handed the folder's one visible entry. Uploads stored before that file
existed are described from what the folder holds.

Which families can train on an upload is asked of the modalities (:meth:`Modality.data_claim`: how many of
its files a modality would read), never decided here from the kind of file.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from ...errors import NotFoundError
from ...modalities import modalities

KINDS = {  # a file's suffix -> the kind of upload it makes (the upload route checks its content is that kind)
    ".txt": "text",
    ".jsonl": "jsonl",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".zip": "zip",
    ".mid": "midi",
    ".midi": "midi",
}
META = ".upload.json"
UPLOAD_REF = re.compile(r"^upload:([0-9a-f]{16})$")
UPLOAD_ID = re.compile(r"^[0-9a-f]{16}$")


def data_path(root: Path, ref: str) -> Path:
    """The data of ``upload:<id>``: its ``images/`` folder or its one file (NotFoundError when it is gone)."""
    m = UPLOAD_REF.match(ref)
    if m is None:
        raise NotFoundError(f"'{ref}' is not an upload (upload:<id> from POST /v1/uploads)")
    folder = Path(root) / m.group(1)
    entries = sorted(e for e in folder.iterdir() if not e.name.startswith(".")) if folder.is_dir() else []
    if not entries:
        raise NotFoundError(f"upload {ref} is gone")
    return entries[0]


def claimed_by(path: Path) -> list[str]:
    """The modalities that would read ``path`` as training data (in registry order)."""
    return [name for name in modalities if modalities[name].data_claim(str(path)) > 0]


def families_for(names: list[str]) -> list[str]:
    """The model families (those a training job may name) whose modality is one of ``names``."""
    from ...systems import models

    return [f for f in trainable_families() if str(models[f].modality) in names]


def trainable_families() -> list[str]:
    """Every family a studio training job may name (a pretrained Hugging Face model needs a local path)."""
    from ...systems import models

    return [f for f in models.names() if f != "hf-causal-lm"]


def describe(root: Path, upload_id: str) -> dict[str, Any]:
    """What GET /v1/uploads says of one upload: its stored description, and the families that can train on it."""
    folder = Path(root) / upload_id
    meta: dict[str, Any] = {}
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = _from_folder(folder)  # stored before descriptions were written
    meta.setdefault("purpose", "data")  # stored before uploads said what they were for
    if "modalities" not in meta:
        meta["modalities"] = claimed_by(data_path(root, f"upload:{upload_id}"))
    return {
        **meta,
        "upload_id": upload_id,
        "data": f"upload:{upload_id}",
        "families": families_for(list(meta["modalities"])),
    }


def _from_folder(folder: Path) -> dict[str, Any]:
    images = folder / "images"
    if images.is_dir():
        files = [f for f in images.rglob("*") if f.is_file()]
        kind, name = ("image", files[0].name) if len(files) == 1 else ("zip", folder.name)
    else:
        files = [e for e in folder.iterdir() if e.is_file() and not e.name.startswith(".")]
        name = files[0].name if files else folder.name
        kind = KINDS.get(Path(name).suffix.lower(), "text")
    created = dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "filename": name,
        "kind": kind,
        "bytes": sum(f.stat().st_size for f in files),
        "files": len(files),
        "created": created,
    }


def list_uploads(root: Path, limit: int = 100, purpose: str | None = None) -> list[dict[str, Any]]:
    """The stored uploads, newest first (at most ``limit``; only those of ``purpose`` when given); folders being
    written (``.upload-*``) are skipped."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = [f for f in root.iterdir() if f.is_dir() and UPLOAD_ID.match(f.name)]
    folders.sort(key=lambda f: f.stat().st_mtime, reverse=True)
    out: list[dict[str, Any]] = []
    for folder in folders:
        if len(out) >= limit:
            break
        try:
            about = describe(root, folder.name)
        except (NotFoundError, OSError):
            continue  # emptied or removed while listing
        if purpose is None or about["purpose"] == purpose:
            out.append(about)
    return out
