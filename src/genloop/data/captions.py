"""Captions of a folder of images, in the two conventions people already use.

* **Hugging Face ImageFolder**: a ``metadata.jsonl`` with one JSON object per line, ``{"file_name": "a.png",
  "text": "a red car"}``; ``file_name`` is relative to the folder holding that ``metadata.jsonl`` (one may sit in
  the root and others in sub-folders, as ImageFolder allows).
* **A caption file beside each image**: ``a.png`` and ``a.txt`` (the kohya/dreambooth convention); the whole file,
  stripped, is the caption.

A folder with neither is not captioned (:func:`folder_captions` returns None) and loads as before. Once a folder
has captions, every image needs exactly one, and every caption an image: a caption for a file that is not there,
an image without one, an empty caption, or both conventions in one folder is a one-line DataError naming the file
— a text-to-image model would otherwise learn from pairs nobody meant.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError

METADATA = "metadata.jsonl"
TEXT_KEY = "text"


def caption_files(root: Path, images: list[Path]) -> list[Path]:
    """The caption files of a folder (its ``metadata.jsonl`` files and the ``.txt`` beside an image), sorted: part
    of the data's fingerprint, so editing a caption re-prepares the data."""
    metadata = sorted(p for p in root.rglob(METADATA) if not _hidden(root, p))
    txt = [p.with_suffix(".txt") for p in images if p.with_suffix(".txt").is_file()]
    return sorted(set(metadata + txt))


def _hidden(root: Path, path: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _read_metadata(root: Path, images: set[Path]) -> dict[Path, tuple[str, str]]:
    """image path -> (caption, where it came from) from every ``metadata.jsonl`` under ``root``."""
    out: dict[Path, tuple[str, str]] = {}
    for meta in sorted(p for p in root.rglob(METADATA) if not _hidden(root, p)):
        rel = meta.relative_to(root).as_posix()
        try:
            lines = meta.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataError(f"{meta}: is not UTF-8 text; {METADATA} must be JSON lines") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{rel} line {n}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{root / rel}: line {n} is not JSON ({e.msg})") from None
            if not isinstance(entry, dict) or "file_name" not in entry or TEXT_KEY not in entry:
                keys = ", ".join(entry) if isinstance(entry, dict) else type(entry).__name__
                raise DataError(f"{root / rel}: line {n} needs 'file_name' and '{TEXT_KEY}' (has: {keys or 'nothing'})")
            image = (meta.parent / str(entry["file_name"])).resolve()
            if image not in images:
                raise DataError(f"{root / rel}: line {n} captions '{entry['file_name']}', which is not an image here")
            if image in out:
                raise DataError(f"{root / rel}: line {n} captions '{entry['file_name']}' again ({out[image][1]})")
            text = entry[TEXT_KEY]
            if not isinstance(text, str):
                raise DataError(f"{root / rel}: line {n} has a '{TEXT_KEY}' that is not a string")
            out[image] = (text.strip(), where)
    return out


def folder_captions(root: Path, images: list[Path]) -> list[str] | None:
    """The caption of each of ``images`` (in order), or None when the folder holds no captions at all."""
    by_path = {p.resolve(): p for p in images}
    from_meta = _read_metadata(root, set(by_path))
    from_txt: dict[Path, tuple[str, str]] = {}
    for p in images:
        txt = p.with_suffix(".txt")
        if txt.is_file():
            try:
                from_txt[p.resolve()] = (txt.read_text(encoding="utf-8").strip(), txt.relative_to(root).as_posix())
            except UnicodeDecodeError:
                raise DataError(f"{txt}: caption file is not UTF-8 text") from None
    if not from_meta and not from_txt:
        return None
    if from_meta and from_txt:
        a = next(iter(from_txt.values()))[1]
        raise DataError(f"{root}: has captions both in {METADATA} and in .txt files ({a}, ...); keep one convention")
    found = from_meta or from_txt
    missing = [p for p in images if p.resolve() not in found]
    if missing:
        where = METADATA if from_meta else "a .txt file beside it"
        raise DataError(
            f"{root}: {len(missing)} of {len(images)} images have no caption (first: "
            f"{missing[0].relative_to(root).as_posix()}); give each one in {where}"
        )
    captions = []
    for p in images:
        text, where = found[p.resolve()]
        if not text:
            raise DataError(f"{root}: the caption of {p.relative_to(root).as_posix()} is empty ({where})")
        captions.append(text)
    return captions
