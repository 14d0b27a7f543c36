"""Signed provenance: a manifest per generated file saying what made it, signed with this installation's key.

A manifest (``format`` ``genloop-manifest/1``) holds the generation id, the time (UTC), the assertion
"AI-generated", the GenLoop version, the model's sha256, the recipe stored with the output and the sha256 of
the *content* — a PNG's decoded pixels (so a re-save with other metadata keeps it valid, a changed pixel does
not), a text's UTF-8 bytes, a MIDI file's notes. It is serialised as canonical JSON (sorted keys, no spaces)
and signed with ed25519; what is stored is the *envelope* ``{"manifest", "signature", "public_key"}`` (both
base64) plus ``field_sha256``, an unsigned hint of each field's hash that lets :func:`verify_envelope` name
the field a tamperer changed.

The key pair is made on first use in the user's configuration folder (:func:`genloop.paths.config_dir`,
``keys/``): one key per installation. The private key is written atomically with mode 0600; the public key
beside it is what ``genloop keys export`` prints. Trusted keys are this key plus every PEM in ``keys/trusted/``.

Writers sign when :func:`enabled` (the default; ``genloop generate --no-sign`` and the API's ``sign=False``
turn it off for one call through :func:`signing`). :func:`verify_file` reads a PNG, a MIDI file, a texts
JSONL or a ``.manifest.json`` sidecar and says ``valid``, ``tampered``, ``unsigned``, ``unknown key`` or
``error`` (the file could not be read as any of these).
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import datetime as _dt
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GenLoopError

FORMAT = "genloop-manifest/1"
ASSERTION = "AI-generated"
MANIFEST_KEY = "genloop-manifest"  # the PNG iTXt chunk's keyword, and the MIDI text event's prefix
SIDECAR_SUFFIX = ".manifest.json"
PRIVATE_KEY = "signing_key.pem"
PUBLIC_KEY = "signing_key.pub.pem"
TRUSTED = "trusted"

VALID, TAMPERED, UNSIGNED, UNKNOWN_KEY, ERROR = "valid", "tampered", "unsigned", "unknown key", "error"

_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar("genloop_sign", default=True)


# ----------------------------------------------------------------------------------------------- switch


def enabled() -> bool:
    """Whether outputs written now are signed (True unless inside ``signing(False)``)."""
    return _enabled.get()


@contextlib.contextmanager
def signing(on: bool = True) -> Iterator[None]:
    """Sign (or not) every output written inside the block."""
    token = _enabled.set(bool(on))
    try:
        yield
    finally:
        _enabled.reset(token)


# ------------------------------------------------------------------------------------------------- keys


def key_dir() -> Path:
    """Where this installation's key pair lives: ``<config dir>/keys``."""
    from ..paths import config_dir

    return config_dir("keys")


def trusted_dir() -> Path:
    return key_dir() / TRUSTED


def _write_new_private(path: Path, pem: bytes) -> None:
    """Create ``path`` with mode 0600 holding ``pem``, atomically; if another process got there first, keep its."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # never replaces a key that is already there
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def private_key() -> Any:
    """This installation's ed25519 private key, made (0600) on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    folder = key_dir()
    path = folder / PRIVATE_KEY
    if not path.is_file():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_new_private(path, pem)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise GenLoopError(f"{path}: not a readable ed25519 private key ({e})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise GenLoopError(f"{path}: not an ed25519 private key")
    pub = folder / PUBLIC_KEY
    pem = public_pem(key.public_key())
    if not pub.is_file() or pub.read_bytes() != pem:
        from ..serialization import atomic_write

        with atomic_write(pub) as f:
            f.write(pem)
    return key


def public_pem(public_key: Any | None = None) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo): what ``genloop keys export`` prints."""
    from cryptography.hazmat.primitives import serialization

    public_key = public_key or private_key().public_key()
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _raw(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Any | bytes | None = None) -> str:
    """A key's id: the first 16 hex digits of the sha256 of its 32 raw bytes (this installation's by default)."""
    if public_key is None:
        public_key = private_key().public_key()
    raw = public_key if isinstance(public_key, bytes) else _raw(public_key)
    return hashlib.sha256(raw).hexdigest()[:16]


def trusted_keys() -> dict[str, Path | None]:
    """{key id: its PEM file (None for this installation's own key)} of every trusted key. A PEM in
    ``trusted/`` that is not an ed25519 public key is skipped."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    keys: dict[str, Path | None] = {key_id(): None}
    folder = trusted_dir()
    if folder.is_dir():
        for pem in sorted(folder.glob("*.pem")):
            try:
                key = serialization.load_pem_public_key(pem.read_bytes())
            except (ValueError, TypeError, OSError):
                continue
            if isinstance(key, ed25519.Ed25519PublicKey):
                keys.setdefault(key_id(key), pem)
    return keys


# ------------------------------------------------------------------------------------------ manifests


def canonical(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def image_sha256(image: Any) -> str:
    """The sha256 of a PIL image's decoded pixels (mode and size included), not of its file bytes."""
    h = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def midi_sha256(data: bytes) -> str:
    """The sha256 of a MIDI file's notes (resolution, and per track: program, drum flag and every note's onset,
    duration, pitch and velocity in ticks) — the music itself, not the meta events that carry recipes."""
    from symusic import Score

    score = Score.from_midi(data)
    notes = [
        [t.program, bool(t.is_drum), sorted((n.time, n.duration, n.pitch, n.velocity) for n in t.notes)]
        for t in score.tracks
    ]
    return hashlib.sha256(canonical({"tpq": score.ticks_per_quarter, "tracks": notes})).hexdigest()


def _field_hashes(manifest: dict[str, Any]) -> dict[str, str]:
    return {k: hashlib.sha256(canonical(v)).hexdigest()[:16] for k, v in manifest.items()}


def sign(recipe: dict[str, Any], content_sha256: str, generation_id: str | None = None) -> dict[str, Any]:
    """The signed envelope of one output: ``recipe`` as stored with it and the sha256 of its content."""
    from .. import __version__

    key = private_key()
    manifest = {
        "format": FORMAT,
        "generation_id": generation_id or uuid.uuid4().hex,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "assertion": ASSERTION,
        "generator": f"GenLoop {__version__}",
        "model_sha256": str(recipe.get("checkpoint_sha256") or ""),
        "recipe": json.loads(canonical(recipe)),  # as it reads back from JSON
        "content_sha256": content_sha256,
        "key_id": key_id(key.public_key()),
    }
    return {
        "manifest": manifest,
        "signature": base64.b64encode(key.sign(canonical(manifest))).decode("ascii"),
        "public_key": base64.b64encode(_raw(key.public_key())).decode("ascii"),
        "field_sha256": _field_hashes(manifest),
    }


def dumps(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope, ensure_ascii=False, sort_keys=True)


def sidecar(path: str | os.PathLike) -> Path:
    """``<file>.manifest.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sidecar(path: str | os.PathLike, envelope: dict[str, Any]) -> Path:
    from ..serialization import atomic_write

    out = sidecar(path)
    with atomic_write(out, "w") as f:
        f.write(dumps(envelope) + "\n")
    return out


# -------------------------------------------------------------------------------------------- verifying


@dataclass
class VerifyResult:
    """What :func:`verify_file` found. ``status``: valid, tampered, unsigned, unknown key or error; ``detail``
    says why (for tampered: which field); ``run_id`` is set when the run store holds the generating run."""

    path: Path
    status: str
    detail: str = ""
    generation_id: str | None = None
    model_sha256: str | None = None
    created: str | None = None
    key_id: str | None = None
    run_id: str | None = None
    items: int = 1
    manifests: list[dict[str, Any]] = field(default_factory=list, repr=False)
    watermark: str | None = None  # images and MIDI: what the invisible watermark says (see watermark_note)
    c2pa: str | None = None  # a PNG with a C2PA manifest: what it says (see c2pa_export.describe)

    @property
    def ok(self) -> bool:
        return self.status == VALID

    def __bool__(self) -> bool:
        return self.ok

    def line(self) -> str:
        """One line for people: ``<path>: <status> (...)``."""
        parts = []
        if self.status in (VALID, UNKNOWN_KEY) and self.generation_id:
            parts.append(f"generation {self.generation_id}")
            if self.items > 1:
                parts[-1] = f"{self.items} generations, first {self.generation_id}"
            parts.append(f"model sha256 {(self.model_sha256 or '?')[:12]}")
            parts.append(f"created {self.created}")
            if self.run_id:
                parts.append(f"run {self.run_id}")
        if self.status == UNKNOWN_KEY:
            parts.insert(0, f"key {self.key_id} is not trusted")
        if self.detail:
            parts.append(self.detail)
        if self.watermark:
            parts.append(self.watermark)
        if self.c2pa:
            parts.append(self.c2pa)
        return f"{self.path}: {self.status}" + (f" ({'; '.join(parts)})" if parts else "")


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return base64.b64decode(value.encode("ascii"), validate=True)


def verify_envelope(envelope: Any, content_sha256: str | None) -> tuple[str, str]:
    """(status, detail) of one envelope against the content's sha256 (None: the content is not checked)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if not isinstance(envelope, dict) or not isinstance(envelope.get("manifest"), dict):
        return TAMPERED, "the manifest is not a JSON object with a 'manifest'"
    manifest = envelope["manifest"]
    hints = envelope.get("field_sha256") if isinstance(envelope.get("field_sha256"), dict) else {}
    try:
        raw = _b64(envelope.get("public_key"))
        public = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError):
        return TAMPERED, "field public_key is not an ed25519 public key"
    try:
        signature = _b64(envelope.get("signature"))
        public.verify(signature, canonical(manifest))
    except (ValueError, TypeError, InvalidSignature):
        changed = [
            k for k in sorted(set(manifest) | set(hints)) if _field_hashes({k: manifest.get(k)})[k] != hints.get(k)
        ]
        if changed:
            return TAMPERED, f"signature does not match field {', '.join(changed)}"
        return TAMPERED, "field signature (or public_key) does not match the manifest"
    if manifest.get("format") != FORMAT:
        return ERROR, f"unknown manifest format {manifest.get('format')!r}"
    if manifest.get("key_id") != key_id(raw):
        return TAMPERED, "field key_id does not name the signing key"
    if content_sha256 is not None and manifest.get("content_sha256") != content_sha256:
        return TAMPERED, "content does not match field content_sha256"
    if manifest.get("key_id") not in trusted_keys():
        return UNKNOWN_KEY, ""
    return VALID, ""


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _Unreadable(f"{what} is not valid JSON (truncated?): {e.msg} at character {e.pos}") from None


class _Unreadable(Exception):
    pass


def _content_of(path: Path) -> tuple[str, list[Any]]:
    """(content sha256, embedded envelopes) of a PNG, another raster image (none embedded: a JPEG re-encode of
    a generated PNG), a MIDI file, a texts JSONL or plain text."""
    head = path.read_bytes()[:12]
    if path.suffix.lower() == ".png" and not head.startswith(b"\x89PNG"):
        raise _Unreadable("not a PNG image (its first bytes are not a PNG signature)")
    if path.suffix.lower() in (".mid", ".midi") and not head.startswith(b"MThd"):
        raise _Unreadable("not a MIDI file (it does not start with MThd)")
    if head.startswith(b"\x89PNG"):
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
                text = dict(getattr(im, "text", {}) or {})
                digest = image_sha256(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise _Unreadable(f"not a readable PNG ({' '.join(str(e).split())[:120]})") from None
        blob = text.get(MANIFEST_KEY)
        return digest, [] if blob is None else [_load_json(str(blob), f"the '{MANIFEST_KEY}' chunk")]
    if _raster(head):  # JPEG, WebP, GIF, BMP, TIFF: no manifest inside; the watermark may still be there
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
                digest = image_sha256(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise _Unreadable(f"not a readable image ({' '.join(str(e).split())[:120]})") from None
        return digest, []
    if head.startswith(b"MThd"):
        data = path.read_bytes()
        try:
            digest = midi_sha256(data)
            from symusic import Score

            score = Score.from_midi(data)
        except Exception as e:  # symusic raises plain RuntimeErrors
            raise _Unreadable(f"not a readable MIDI file ({' '.join(str(e).split())[:120]})") from None
        prefix = MANIFEST_KEY + ":"
        metas = list(score.markers) + [m for t in score.tracks for m in t.lyrics]
        found = [
            _load_json(m.text[len(prefix) :], "the MIDI manifest event") for m in metas if m.text.startswith(prefix)
        ]
        return digest, found[:1]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _Unreadable("not a PNG, a MIDI file or UTF-8 text") from None
    return text_sha256(text), []


def _raster(head: bytes) -> bool:
    """Whether a file's first bytes are those of a JPEG, WebP, GIF, BMP or TIFF image."""
    return head.startswith((b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")) or (
        head.startswith(b"RIFF") and head[8:12] == b"WEBP"
    )


def _verify_texts(path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """Each record of a texts JSONL (``{"text", "recipe", "manifest"}``) checked: [(status, detail, manifest)]."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rec = _load_json(line, f"line {n}")
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise _Unreadable(f"line {n} is not a text record")
        env = rec.get("manifest")
        if env is None:
            out.append((UNSIGNED, f"line {n} has no manifest", {}))
            continue
        status, detail = verify_envelope(env, text_sha256(rec["text"]))
        out.append(
            (status, f"line {n}: {detail}" if detail else "", env.get("manifest", {}) if isinstance(env, dict) else {})
        )
    if not out:
        raise _Unreadable("no text records")
    return out


_RANK = {ERROR: 0, TAMPERED: 1, UNKNOWN_KEY: 2, UNSIGNED: 3, VALID: 4}


def _lookup_run(manifest: dict[str, Any], runs_dir: str | os.PathLike | None) -> str | None:
    run_id = (manifest.get("recipe") or {}).get("run_id") if isinstance(manifest.get("recipe"), dict) else None
    if not run_id:
        return None
    try:
        from ..runs import RunStore

        return RunStore(runs_dir).get(str(run_id)).id
    except Exception:  # not in this store (or no store here): nothing to point at
        return None


def verify_file(path: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> VerifyResult:
    """:func:`check_file`, plus (for a PNG or a MIDI file, signed or not) what its invisible watermark says:
    ``watermark: generation <id> (run <run>)`` by the run store's watermark index, or ``no watermark``; and for
    a PNG with a C2PA manifest (``genloop c2pa``), whether that is intact (it does not change the status)."""
    result = check_file(path, runs_dir)
    if result.status != ERROR:
        result.watermark = watermark_note(Path(path), runs_dir, result.generation_id)
    from .c2pa_export import describe  # imports c2pa-python only for a PNG that holds a C2PA manifest

    result.c2pa = describe(path)
    return result


def watermark_note(path: Path, runs_dir: Any, expected_id: str | None = None) -> str | None:
    """The watermark phrase of a PNG (:mod:`.image_watermark`) or MIDI file (:mod:`.music_watermark`), else None."""
    try:
        head = path.read_bytes()[:12]
    except OSError:
        return None
    if head.startswith(b"\x89PNG") or _raster(head):
        from . import image_watermark

        return image_watermark.describe(path, runs_dir, expected_id)
    if head.startswith(b"MThd"):
        from . import music_watermark

        return music_watermark.describe(path, runs_dir, expected_id)
    return None


def check_file(path: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> VerifyResult:
    """Check the provenance of one file: a PNG or MIDI file (embedded manifest, else its sidecar), a texts JSONL
    (every record), a ``.manifest.json`` sidecar (checked against the file it sits beside) or any other file
    with a sidecar. Never raises for a bad file: its trouble is the result's ``error`` status."""
    path = Path(path)
    try:
        if not path.is_file():
            return VerifyResult(path, ERROR, "no such file")
        if path.name.endswith(SIDECAR_SUFFIX):
            envelopes = [_load_json(path.read_text(encoding="utf-8", errors="replace"), "the manifest")]
            target = path.with_name(path.name[: -len(SIDECAR_SUFFIX)])
            if not target.is_file():
                return VerifyResult(path, ERROR, f"{target.name}, the file it signs, is missing")
            digest, _ = _content_of(target)
        elif path.suffix == ".jsonl":
            checks = _verify_texts(path)
            worst = min(checks, key=lambda c: _RANK[c[0]])
            first = checks[0][2] if isinstance(checks[0][2], dict) else {}
            detail = worst[1] if worst[0] != VALID else ""
            return _result(path, worst[0], detail, first, runs_dir, items=len(checks))
        else:
            digest, envelopes = _content_of(path)
            if not envelopes and sidecar(path).is_file():
                envelopes = [
                    _load_json(sidecar(path).read_text(encoding="utf-8", errors="replace"), "the sidecar manifest")
                ]
            if not envelopes:
                return VerifyResult(path, UNSIGNED, "no manifest")
        status, detail = verify_envelope(envelopes[0], digest)
        env = envelopes[0] if isinstance(envelopes[0], dict) else {}
        manifest = env.get("manifest") if isinstance(env.get("manifest"), dict) else {}
        return _result(path, status, detail, manifest, runs_dir)
    except _Unreadable as e:
        return VerifyResult(path, ERROR, str(e))
    except (OSError, UnicodeDecodeError) as e:
        return VerifyResult(path, ERROR, f"could not read it ({e.__class__.__name__}: {e})")


def _result(
    path: Path, status: str, detail: str, manifest: dict[str, Any], runs_dir: Any, items: int = 1
) -> VerifyResult:
    good = status in (VALID, UNKNOWN_KEY)
    return VerifyResult(
        path,
        status,
        detail,
        generation_id=manifest.get("generation_id") if good else None,
        model_sha256=manifest.get("model_sha256") if good else None,
        created=manifest.get("created") if good else None,
        key_id=manifest.get("key_id"),
        run_id=_lookup_run(manifest, runs_dir) if good else None,
        items=items,
        manifests=[manifest] if manifest else [],
    )
