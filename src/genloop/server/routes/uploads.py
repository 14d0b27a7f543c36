"""Uploading a data set to train on: one text/JSONL file, one image, or a zip of images; or one MIDI file
(a music data set of one piece, or the prompt a music generation continues: ``prompt_midi: "upload:<id>"``).

The file is streamed to disk with a size cap (413 beyond it), its type is checked by content (UTF-8
text, JSON lines, images Pillow can decode, zips whose members are plain relative names, regular files
(never symlinks, which would otherwise be written out as a file holding the link's target) and images by
their content, not their extension), and it is stored under a fresh id — the client's file name is
reduced to a safe basename and never used as a path.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, UploadFile

from ...database import new_id
from ..deps import Context, ctx, require_token
from ..schemas import AUTHED, WITH_BODY

router = APIRouter(tags=["uploads"], dependencies=[Depends(require_token)], responses={**AUTHED, **WITH_BODY})
KINDS = {
    ".txt": "text",
    ".jsonl": "jsonl",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".zip": "zip",
    ".mid": "midi",
    ".midi": "midi",
}
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MAX_ZIP_MEMBERS = 100_000


def _safe_name(name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "upload").name).lstrip(".")
    return base[:100] or "upload"


def _check_image(path: Path, name: str = "the file") -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception:  # noqa: BLE001
        raise HTTPException(422, f"{name} is not an image Pillow can read") from None


def _check_midi(path: Path) -> None:
    """A MIDI file symusic reads, of type 0 or 1, with notes (the music reader's own one-line reasons)."""
    from ...errors import GenLoopError
    from ...modalities.music.sources import read_midi_bytes

    try:
        read_midi_bytes(path.read_bytes(), "the file")
    except GenLoopError as e:
        raise HTTPException(422, str(e)) from None


def _is_link(member: zipfile.ZipInfo) -> bool:
    """A Unix symlink stored in the zip (its mode sits in the high 16 bits of ``external_attr``)."""
    return stat.S_ISLNK(member.external_attr >> 16)


def _check_text(path: Path, jsonl: bool) -> None:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HTTPException(422, f"the file is not UTF-8 text (bad byte at position {e.start})") from None
    if not text.strip():
        raise HTTPException(422, "the file is empty")
    if jsonl:
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    json.loads(line)
                except ValueError:
                    raise HTTPException(422, f"line {i} of the JSONL file is not JSON") from None


def _extract_zip(path: Path, dest: Path, max_bytes: int) -> int:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise HTTPException(422, "the file is not a valid zip archive") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > MAX_ZIP_MEMBERS:
            raise HTTPException(422, f"the zip holds more than {MAX_ZIP_MEMBERS} files")
        if sum(m.file_size for m in members) > 4 * max_bytes:
            raise HTTPException(413, "the zip expands to more than the upload limit allows")
        images = 0
        for m in members:
            name = Path(m.filename)
            if name.is_absolute() or ".." in name.parts or m.filename.startswith(("/", "\\")):
                raise HTTPException(422, f"the zip member '{m.filename}' has an unsafe path")
            if _is_link(m):
                raise HTTPException(422, f"the zip member '{m.filename}' is a link; only regular files are accepted")
            if name.suffix.lower() not in IMAGE_EXTS or any(p.startswith(".") or p == "__MACOSX" for p in name.parts):
                continue
            target = dest.joinpath(*[_safe_name(p) for p in name.parts])
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            _check_image(target, f"the zip member '{m.filename}'")
            images += 1
    if not images:
        raise HTTPException(422, "the zip holds no images (.png, .jpg, ...)")
    return images


@router.post("/v1/uploads", status_code=201)
async def upload(file: UploadFile, c: Context = Depends(ctx)) -> dict[str, Any]:
    limit = c.settings.limits.max_upload_bytes
    name = _safe_name(file.filename or "")
    suffix = Path(name).suffix.lower()
    if suffix not in KINDS:
        raise HTTPException(
            422, f"unsupported file type '{suffix or name}'; upload .txt, .jsonl, .png, .jpg, .zip or .mid"
        )
    root = Path(c.settings.uploads)
    root.mkdir(parents=True, exist_ok=True)
    upload_id = new_id()
    staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=root))
    try:
        raw, size = staging / name, 0
        with open(raw, "wb") as out:
            while chunk := await file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"the upload exceeds the {limit // (1 << 20)} MiB limit")
                out.write(chunk)
        kind = KINDS[suffix]
        count = 1
        if kind in ("text", "jsonl"):
            _check_text(raw, kind == "jsonl")
        elif kind == "midi":
            _check_midi(raw)
        elif kind == "image":
            _check_image(raw)
            (staging / "images").mkdir()
            raw.rename(staging / "images" / name)
        else:
            count = _extract_zip(raw, staging / "images", limit)
            raw.unlink()
        staging.rename(root / upload_id)  # appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "upload_id": upload_id,
        "data": f"upload:{upload_id}",
        "filename": name,
        "kind": kind,
        "bytes": size,
        "files": count,
    }
