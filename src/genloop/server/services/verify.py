"""Provenance for the studio: ``POST /v1/verify`` on an uploaded file, and the verified badge of each generation.

Both use the library's checks (:func:`genloop.safety.provenance.check_file`, the same as ``genloop verify``)
and add what a page needs as data rather than a sentence: the tampered fields, the watermark's score beside its
threshold, and the generation's recipe when this server knows the generation (its database) or the signed
manifest carries it. A badge is the result of verifying the generation's stored signed file (the PNG, the MIDI
file, the text's JSONL record), cached by that file's size and mtime, so a gallery page costs a ``stat`` per
item once each file has been checked.
"""

from __future__ import annotations

import collections
import json
import re
import threading
from pathlib import Path
from typing import Any

from ...errors import ConfigError, DataError, GenLoopError, NotFoundError
from ...modalities import modalities
from ...safety import provenance
from ..deps import Context

# ------------------------------------------------------------------------------------------------ badges

_BADGES: collections.OrderedDict[tuple, dict[str, Any]] = collections.OrderedDict()
_BADGE_LOCK = threading.Lock()
MAX_BADGES = 4096
_checks = 0  # how many badges were computed rather than read from the cache (tests watch it)


def badge_checks() -> int:
    return _checks


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def signed_file(c: Context, row: Any) -> Path | None:
    """The stored file of a generation that carries its signed manifest (None when it has none)."""
    try:
        path = modalities[row.modality].signed_file(c.feedback, row)
    except GenLoopError:
        return None
    return path if path is not None and path.is_file() else None


def badge(c: Context, row: Any) -> dict[str, Any]:
    """``{"status", "detail"}`` of verifying generation ``row``'s stored signed file (``unsigned`` without one)."""
    global _checks
    path = signed_file(c, row)
    if path is None:
        return {"status": provenance.UNSIGNED, "detail": "no signed file is stored for this generation"}
    key = (str(path), _stamp(path), _stamp(provenance.sidecar(path)))
    with _BADGE_LOCK:
        hit = _BADGES.get(key)
        if hit is not None:
            _BADGES.move_to_end(key)
            return dict(hit)
    result = provenance.check_file(path, c.settings.runs)
    out = {"status": result.status, "detail": result.detail}
    if result.ok and result.generation_id != row.id:  # a valid manifest of another generation
        out = {"status": provenance.TAMPERED, "detail": f"field generation_id names {result.generation_id}"}
    with _BADGE_LOCK:
        _checks += 1
        _BADGES[key] = out
        while len(_BADGES) > MAX_BADGES:
            _BADGES.popitem(last=False)
    return dict(out)


# ----------------------------------------------------------------------------------------------- uploads


def _fields(status: str, detail: str) -> list[str]:
    """The manifest fields a ``tampered`` detail names (``signature does not match field recipe, created``)."""
    if status != provenance.TAMPERED:
        return []
    m = re.search(r"\bfield ([\w]+(?:, [\w]+)*)", detail)
    return m.group(1).split(", ") if m else []


def _envelope_only(path: Path, name: str) -> dict[str, Any]:
    """A sidecar manifest uploaded without the file it signs: its signature is checked, its content cannot be."""
    try:
        envelope = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{name}: not a manifest (not UTF-8 JSON)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{name}: the manifest is not valid JSON (truncated?): {e.msg} at character {e.pos}") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("manifest"), dict):
        raise DataError(f"{name}: not a GenLoop manifest (a JSON object with 'manifest' and 'signature')")
    status, detail = provenance.verify_envelope(envelope, None)
    if status == provenance.ERROR:
        raise DataError(f"{name}: {detail}")
    manifest = envelope["manifest"]
    good = status in (provenance.VALID, provenance.UNKNOWN_KEY)
    return {
        "status": status,
        "detail": detail or "the signature was checked; upload the signed file too to check its content",
        "content_checked": False,
        "generation_id": manifest.get("generation_id") if good else None,
        "model_sha256": manifest.get("model_sha256") if good else None,
        "created": manifest.get("created") if good else None,
        "key_id": manifest.get("key_id"),
        "manifest": manifest if good else None,
    }


def _looks_like_manifest(name: str, path: Path) -> bool:
    """A sidecar by its name, or a ``.json`` file holding a JSON object with a signature (a renamed sidecar)."""
    if name.endswith(provenance.SIDECAR_SUFFIX):
        return True
    if not name.lower().endswith(".json"):
        return False
    data = path.read_bytes()
    return data.lstrip().startswith(b"{") and b'"signature"' in data


def _signed_beside(path: Path, name: str) -> bool:
    """Whether the file a sidecar signs was uploaded with it (then that file is what gets verified)."""
    suffix = provenance.SIDECAR_SUFFIX
    return name.endswith(suffix) and path.with_name(name[: -len(suffix)]).is_file()


def verify_upload(c: Context, path: Path, name: str) -> dict[str, Any]:
    """The verification of an uploaded file (its sidecar, if uploaded too, beside it). Raises
    :class:`~genloop.errors.DataError` (a 422) for a file that cannot be read as anything signable."""
    runs = c.settings.runs
    if _looks_like_manifest(name, path) and not _signed_beside(path, name):
        out = _envelope_only(path, name)
        out["items"] = 1
        kind = None
    else:
        r = provenance.check_file(path, runs)
        if r.status == provenance.ERROR:
            raise DataError(f"{name}: {r.detail}")
        manifest = r.manifests[0] if r.manifests and r.status in (provenance.VALID, provenance.UNKNOWN_KEY) else None
        out = {
            "status": r.status,
            "detail": r.detail,
            "content_checked": r.status != provenance.UNSIGNED,
            "generation_id": r.generation_id,
            "model_sha256": r.model_sha256,
            "created": r.created,
            "key_id": r.key_id,
            "items": r.items,
            "manifest": manifest,
        }
        kind = _kind(path)
    out["fields"] = _fields(out["status"], out["detail"])
    out["ok"] = out["status"] == provenance.VALID and out["content_checked"]  # a manifest alone proves no file
    out["filename"] = name
    out["watermark"] = watermark(path, kind, runs, out.get("generation_id"), (out.get("manifest") or {}).get("recipe"))
    gid = out["generation_id"] or (out["watermark"] or {}).get("generation_id")
    out.update(_known(c, gid, out.get("manifest")))
    return out


def _kind(path: Path) -> str:
    """image, music or text: what a file that :func:`~genloop.safety.provenance.check_file` could read holds."""
    from PIL import Image

    if path.read_bytes()[:4] == b"MThd":
        return "music"
    try:
        with Image.open(path):
            return "image"
    except Exception:  # noqa: BLE001 - not an image Pillow knows: then it was read as text
        return "text"


def _known(c: Context, gid: str | None, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The generation (this server's database) and run (the run store) a result names, and the recipe: the
    stored generation's, else the signed manifest's."""
    from ...runs import RunStore

    out: dict[str, Any] = {"generation": None, "run": None, "recipe": None, "recipe_source": None}
    row = None
    if gid:
        try:
            row = c.feedback.get(gid)
        except NotFoundError:
            row = None
    if row is not None:
        url = f"/v1/generations/{row.id}"
        out["generation"] = {"id": row.id, "run_id": row.run_id, "modality": row.modality, "url": url}
        out["recipe"], out["recipe_source"] = row.recipe, "studio database"
    elif manifest and isinstance(manifest.get("recipe"), dict):
        out["recipe"], out["recipe_source"] = manifest["recipe"], "signed manifest"
    run_id = row.run_id if row is not None else (out["recipe"] or {}).get("run_id")
    if run_id:
        try:
            run = RunStore(c.settings.runs).get(str(run_id), paths=False)
            out["run"] = {k: run.info.get(k) for k in ("id", "model", "dataset", "status", "step")}
        except GenLoopError:
            pass
    return out


# --------------------------------------------------------------------------------------------- watermarks


def watermark(
    path: Path, kind: str | None, runs: Any, expected_id: str | None, recipe: dict[str, Any] | None
) -> dict[str, Any] | None:
    """What the file's invisible watermark says, with its score beside the threshold it is judged by."""
    try:
        if kind == "image":
            return _image_mark(path, runs, expected_id)
        if kind == "music":
            return _music_mark(path, runs, expected_id)
        if kind == "text":
            return _text_mark(path, runs, recipe)
    except GenLoopError as e:
        return {"kind": kind, "detected": False, "detail": str(e)}
    return None


def _image_mark(path: Path, runs: Any, expected_id: str | None) -> dict[str, Any]:
    from PIL import Image

    from ...safety import image_watermark as iw

    with Image.open(path) as im:
        im.load()
        image = im.copy()
    d = iw.decode_full(image)
    found = [r for r in iw.lookup(d.hash, runs) if iw.detect(image, str(r.get("mark")))]
    if not found and expected_id:
        found = [r for r in iw.by_generation(expected_id, runs) if iw.detect(image, str(r.get("mark")))]
    coded = d.payload * d.repeat
    if found:
        rec = found[0]
        score = iw.score(image, str(rec.get("mark")))
        return {
            "kind": "image",
            "detected": True,
            "generation_id": rec.get("generation_id"),
            "run_id": rec.get("run_id"),
            "score": round(score, 4),
            "threshold": iw.DETECT_SCORE[coded],
            "score_name": "correlation with the generation's mark",
            "hash": d.hash,
        }
    return {
        "kind": "image",
        "detected": bool(d.watermarked),
        "generation_id": None,
        "run_id": None,
        "score": round(d.confidence, 4),
        "threshold": iw.BLIND_CONFIDENCE[coded],
        "score_name": "blind decoding confidence",
        "hash": d.hash,
        "detail": "a mark not in this run store's index" if d.watermarked else "no watermark",
    }


def _music_mark(path: Path, runs: Any, expected_id: str | None) -> dict[str, Any]:
    from ...safety import music_watermark as mw

    d = mw.decode_full(path)
    candidates = mw.lookup(d.hash, runs) + (mw.by_generation(expected_id, runs) if expected_id else [])
    scored = [(mw.score(path, str(r["mark"])), r) for r in candidates if r.get("kind") == "music" and r.get("mark")]
    best = max(scored, key=lambda t: t[0], default=None)
    if best is not None and best[0] >= mw.Z_THRESHOLD:
        z, rec = best
        return {
            "kind": "music",
            "detected": True,
            "generation_id": rec.get("generation_id"),
            "run_id": rec.get("run_id"),
            "score": round(z, 3),
            "threshold": mw.Z_THRESHOLD,
            "score_name": "z-score of the velocity parities",
            "hash": d.hash,
            "notes": d.notes,
        }
    return {
        "kind": "music",
        "detected": bool(d.watermarked),
        "generation_id": None,
        "run_id": None,
        "score": round(d.z, 3),
        "threshold": mw.Z_THRESHOLD + 2,
        "score_name": "z-score of the blind decoding",
        "hash": d.hash,
        "notes": d.notes,
        "detail": "a mark not in this run store's index" if d.watermarked else "no watermark",
    }


def _text_mark(path: Path, runs: Any, recipe: dict[str, Any] | None) -> dict[str, Any] | None:
    """The green-list test of a text (a JSONL's first record): with the recipe's run's tokenizer when the run
    store has it, else with every text run's (the highest z)."""
    from ...safety.text_watermark import detect_in_store, detect_text

    raw = path.read_text(encoding="utf-8")
    text = raw
    if path.suffix == ".jsonl":
        first = next((line for line in raw.splitlines() if line.strip()), "")
        text = str(json.loads(first).get("text", "")) if first else ""
    if not text.strip():
        return None
    run_id = (recipe or {}).get("run_id")
    found = None
    if run_id:
        try:
            found = detect_text(text, str(run_id), runs)
        except (NotFoundError, ConfigError):
            found = None
    if found is None:
        run_id, found = detect_in_store(text, runs)
    if found is None:
        return {"kind": "text", "detected": False, "detail": "no text run in this run store to read it with"}
    return {
        "kind": "text",
        "detected": bool(found.watermarked),
        "run_id": run_id,
        "score": round(found.z, 3),
        "threshold": found.z_threshold,
        "score_name": "z-score of green tokens",
        "p_value": found.p_value,
        "tokens_scored": found.tokens_scored,
    }
