"""Atomic, pickle-free persistence.

Every file GenLoop writes goes through :func:`atomic_write`: the bytes land in a temporary file in the
same folder, are flushed to disk, and only then renamed over the target. A process killed at any
moment leaves either the old file or the new one, never half of one. Tensors are stored with
``safetensors`` (no pickle, so loading a file cannot run code); small structured state rides along as
JSON in the safetensors metadata.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from .errors import DataError, NotFoundError, StorageError

_STATE_KEY = "genloop_state"


TMP_SUFFIX = ".tmp"  # atomic_write's temporaries are ``.<name>.<random>.tmp`` beside their target
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}  # what a write to a file can fail with
_WARNED_FOREIGN: set[str] = set()


def warn_foreign_weights(path: str | os.PathLike) -> None:
    """Warn (once per file and process) that ``path`` is a pickle-based weights file (.pt/.pth/.bin/.ckpt), not
    safetensors. GenLoop writes safetensors only; a foreign file is read with ``torch.load(weights_only=True)``
    (tensors and plain containers only, never code), and converting it removes the warning."""
    key = str(Path(path).expanduser().resolve())
    if key in _WARNED_FOREIGN:
        return
    _WARNED_FOREIGN.add(key)
    warnings.warn(
        f"{path} is not a safetensors file: loaded with torch.load(weights_only=True), which reads tensors "
        "only; convert it to .safetensors to avoid pickle files altogether",
        UserWarning,
        stacklevel=3,
    )


def warn_if_pickle_folder(folder: str | os.PathLike) -> None:
    """For a Hugging Face model folder: warn once when its weights are pickle files only (no ``*.safetensors``);
    transformers then reads them with ``torch.load(weights_only=True)``."""
    folder = Path(folder)
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickles:
        warn_foreign_weights(pickles[0])


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` only on success.

    An ``OSError`` of the writing (disk full, no permission, read-only disk) becomes a :class:`StorageError`
    naming ``path``, after the temporary file is removed: the previous ``path`` is untouched and nothing is
    left behind. Inside the ``with`` block only a full or read-only disk is converted: the caller's body may
    do other I/O (a download) whose errors are its own.
    """
    path = Path(path)
    tmp: str | None = None
    in_body = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give them the mode a plain open() would
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            in_body = True
            yield f
            in_body = False
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, StorageError) and (not in_body or e.errno in _DISK_FULL):
            raise StorageError(f"could not write {path}: {e.strerror or e}", e.errno) from e
        raise


def remove_strays(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of writes whose process was killed mid-way (``.NAME.*.tmp``); return them.

    Only for a folder no live process is writing into (a run this process has claimed): a live writer's
    temporary looks just the same.
    """
    folder = Path(folder)
    strays = [p for p in folder.glob(f".*{TMP_SUFFIX}") if p.is_file()] if folder.is_dir() else []
    for p in strays:
        p.unlink(missing_ok=True)
    return strays


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], state: Any = None) -> str:
    """Write ``tensors`` (and JSON-able ``state``) to a safetensors file atomically; return its sha256."""
    metadata = {_STATE_KEY: json.dumps(state)} if state is not None else None
    clean: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, v in tensors.items():
        v = v.detach().contiguous().cpu()
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        # safetensors refuses tensors that share memory (a language model's tied embedding and output
        # weights); a shared tensor is written once per name, as a copy. Loading restores the tie.
        clean[k] = v.clone() if key in seen and v.numel() else v
        seen.add(key)
    data = save(clean, metadata=metadata)
    with atomic_write(path) as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Any]:
    """Read a file written by :func:`save_tensors`: ``(tensors, state)``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise DataError(f"{path}: not a readable safetensors file ({e})") from None
    state = json.loads(meta[_STATE_KEY]) if _STATE_KEY in meta else None
    return tensors, state


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
