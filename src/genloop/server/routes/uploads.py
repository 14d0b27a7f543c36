"""Uploading a data set to train on: one text/JSONL file, one image, several images (one data set), or a zip of
images; or one MIDI file (a music data set of one piece, or the prompt a music generation continues:
``prompt_midi: "upload:<id>"``). ``GET /v1/uploads`` lists what is stored, so a page shows them again after a
reload.

The file is streamed to disk with a size cap (413 beyond it), its type is checked by content (UTF-8
text, JSON lines, images Pillow can decode, zips whose members are plain relative names, regular files
(never symlinks, which would otherwise be written out as a file holding the link's target) and images by
their content, not their extension), and it is stored under a fresh id — the client's file name is
reduced to a safe basename and never used as a path.

The answer says what was stored (kind, files, bytes, image sizes or text lines, zip members skipped) and which
model families can train on it (:mod:`..services.uploads` asks the modalities), as the listing does.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Query, UploadFile
from fastapi.concurrency import run_in_threadpool

from ...database import new_id
from ..deps import Context, ctx, require_token
from ..schemas import AUTHED, WITH_BODY
from ..services.uploads import KINDS, META, claimed_by, families_for, list_uploads

router = APIRouter(tags=["uploads"], dependencies=[Depends(require_token)], responses={**AUTHED, **WITH_BODY})
MAX_SIZES = 4  # distinct image sizes an answer lists
PURPOSE = (
    "data: a data set to train on (listed in the studio's Jobs tab); "
    "input: the input of one job (an image to edit, a mask, a MIDI prompt)"
)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MAX_ZIP_MEMBERS = 100_000


def _safe_name(name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "upload").name).lstrip(".")
    return base[:100] or "upload"


def _check_image(path: Path, name: str = "the file") -> str:
    """``WxH`` of an image Pillow can read (422 otherwise)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = f"{im.width}x{im.height}"
            im.verify()
    except Exception:  # noqa: BLE001
        raise HTTPException(422, f"{name} is not an image Pillow can read") from None
    return size


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


def _check_text(path: Path, jsonl: bool) -> int:
    """The number of lines of a UTF-8 text (or JSON-lines) file with something in it (422 otherwise)."""
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
    return len(text.splitlines())


def _extract_zip(path: Path, dest: Path, max_bytes: int, sizes: set[str]) -> tuple[int, int]:
    """Unpack the images of a zip into ``dest`` (their sizes into ``sizes``): (images, other files skipped)."""
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
        images = skipped = 0
        for m in members:
            name = Path(m.filename)
            if name.is_absolute() or ".." in name.parts or m.filename.startswith(("/", "\\")):
                raise HTTPException(422, f"the zip member '{m.filename}' has an unsafe path")
            if _is_link(m):
                raise HTTPException(422, f"the zip member '{m.filename}' is a link; only regular files are accepted")
            if any(p.startswith(".") or p == "__MACOSX" for p in name.parts):
                continue  # a file system's own bookkeeping, never data
            if name.suffix.lower() not in IMAGE_EXTS:
                skipped += 1
                continue
            target = dest.joinpath(*[_safe_name(p) for p in name.parts])
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            sizes.add(_check_image(target, f"the zip member '{m.filename}'"))
            images += 1
    if not images:
        raise HTTPException(422, "the zip holds no images (.png, .jpg, ...)")
    return images, skipped


def _kind_of(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in KINDS:
        raise HTTPException(
            422, f"unsupported file type '{suffix or name}'; upload .txt, .jsonl, .png, .jpg, .zip or .mid"
        )
    return KINDS[suffix]


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``<i>-name`` when an earlier file of the same upload already has it."""
    out, i = name, 1
    while out in taken:
        out, i = f"{i}-{name}", i + 1
    taken.add(out)
    return out


@router.post("/v1/uploads", status_code=201)
async def upload(
    file: list[UploadFile],
    purpose: Literal["data", "input"] = Form("data", description=PURPOSE),
    c: Context = Depends(ctx),
) -> dict[str, Any]:
    """One file, or several images sent as repeated ``file`` fields (one data set of images)."""
    limit = c.settings.limits.max_upload_bytes
    names = [_safe_name(f.filename or "") for f in file]
    kinds = [_kind_of(n) for n in names]
    if len(file) > 1 and set(kinds) != {"image"}:
        raise HTTPException(
            422, "several files make one data set only when each is an image (.png, .jpg); send a zip of the folder"
        )
    if len(file) > MAX_ZIP_MEMBERS:
        raise HTTPException(422, f"an upload holds at most {MAX_ZIP_MEMBERS} files")
    root = Path(c.settings.uploads)
    root.mkdir(parents=True, exist_ok=True)
    upload_id = new_id()
    staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=root))
    try:
        size, raws, taken = 0, [], set()
        for f, name in zip(file, names):
            raw = staging / _unique(name, taken)
            with open(raw, "wb") as out:
                while chunk := await f.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise HTTPException(413, f"the upload exceeds the {limit // (1 << 20)} MiB limit")
                    out.write(chunk)
            raws.append(raw)
        kind = "images" if len(file) > 1 else kinds[0]
        about = await run_in_threadpool(_store, raws, kind, staging, limit)
        about = {
            "filename": names[0] if len(file) == 1 else f"{len(file)} images",
            "kind": kind,
            "purpose": purpose,
            "bytes": size,
            **about,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        data = next(e for e in sorted(staging.iterdir()) if not e.name.startswith("."))
        about["modalities"] = claimed_by(data)
        (staging / META).write_text(json.dumps(about), encoding="utf-8")
        staging.rename(root / upload_id)  # appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "upload_id": upload_id,
        "data": f"upload:{upload_id}",
        **about,
        "families": families_for(about["modalities"]),
    }


def _store(raws: list[Path], kind: str, staging: Path, limit: int) -> dict[str, Any]:
    """Check the received files and leave the data in ``staging`` (images under ``images/``): what it holds."""
    if kind in ("text", "jsonl"):
        return {"files": 1, "lines": _check_text(raws[0], kind == "jsonl")}
    if kind == "midi":
        _check_midi(raws[0])
        return {"files": 1}
    sizes: set[str] = set()
    if kind == "zip":
        count, skipped = _extract_zip(raws[0], staging / "images", limit, sizes)
        raws[0].unlink()
        return {"files": count, "skipped": skipped, "sizes": sorted(sizes)[:MAX_SIZES]}
    (staging / "images").mkdir()
    for raw in raws:
        sizes.add(_check_image(raw, "the file" if len(raws) == 1 else f"'{raw.name}'"))
        raw.rename(staging / "images" / raw.name)
    return {"files": len(raws), "sizes": sorted(sizes)[:MAX_SIZES]}


@router.get("/v1/uploads")
def uploads(
    limit: int = Query(100, ge=1, le=1000),
    purpose: Literal["data", "input"] | None = Query(None, description="only the uploads of this purpose"),
    c: Context = Depends(ctx),
) -> dict[str, Any]:
    """The stored uploads, newest first, each as its upload answered (and the families that can train on it)."""
    return {"uploads": list_uploads(Path(c.settings.uploads), limit, purpose)}
