"""Text corpora: a built-in, a text file, a folder of text files or a JSONL file, read as documents, and the
train/val split of those documents. ``TextDataConfig`` says which corpus and how to tokenise it."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError, NotFoundError
from ...serialization import sha256_file
from .tokenizers import BPE_MAX_VOCAB, BPE_MIN_VOCAB, EOT

# A folder contributes the files with these suffixes (case-insensitive), one document each: prose,
# markup, data-as-text and common source code. Files without any suffix (README, LICENSE, Makefile) are
# taken too when their first 8 KiB hold no NUL byte. ``.jsonl`` files in a folder contribute one document
# per record, as a ``.jsonl`` path does. Everything else (images, archives, model weights) is skipped and
# counted; a file that *is* selected must be UTF-8 text, or loading fails naming it — silently dropping
# a chapter of someone's corpus would be worse than stopping.
TEXT_SUFFIXES = frozenset(
    ".txt .text .md .markdown .rst .adoc .org .tex .csv .tsv .json .html .htm .xml .yaml .yml .toml .ini .cfg "
    ".srt .py .pyi .c .h .cc .cpp .hpp .java .js .ts .go .rs .rb .sh .sql".split()
)
_SNIFF_BYTES = 8192
_BOM = b"\xef\xbb\xbf"

# ------------------------------------------------------------------------------------------- config


@dataclass
class TextDataConfig:
    """Which text to train a language model on, and how to tokenise it."""

    name: str = "pydoc"  # a built-in corpus, or a path: a text file (one document), a folder, or a .jsonl file
    jsonl_field: str = "text"  # the field holding each document in JSONL
    tokenizer: str = "char"  # "char", "bpe", or a path to a local HF tokenizer folder / tokenizer.json
    vocab_size: int = 2048  # BPE only: target vocabulary size, <|endoftext|> included
    val_fraction: float = 0.1  # share of documents (or, for one document, of characters) held out
    seed: int = 0  # decides which documents are held out
    # replace e-mails, phone numbers, Chinese ID and bank-card numbers and IP addresses by placeholders as the
    # corpus is read (genloop.safety.pii); what was removed is counted in the data info and the run's run.json
    scrub_pii: bool = False
    # "text": documents to continue; "chat": conversations (.jsonl of {"messages": [...]} or {"prompt", "response"})
    # trained with the loss on the assistant's tokens only (see .chat); "auto": chat when a .jsonl's first
    # record is a conversation, else text
    format: str = "auto"

    def __post_init__(self) -> None:
        for key in ("name", "jsonl_field", "tokenizer"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"data.{key} must be a non-empty string, got {value!r}")
        if self.format not in ("auto", "text", "chat"):
            raise ConfigError(f"data.format must be auto, text or chat, got {self.format!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if not isinstance(self.scrub_pii, bool):
            raise ConfigError(f"data.scrub_pii must be true or false, got {self.scrub_pii!r}")
        if self.tokenizer == "bpe" and not BPE_MIN_VOCAB <= self.vocab_size <= BPE_MAX_VOCAB:
            raise ConfigError(
                f"data.vocab_size must be between {BPE_MIN_VOCAB} and {BPE_MAX_VOCAB} for the bpe tokenizer "
                f"(256 byte tokens + {EOT} + merges), got {self.vocab_size}"
            )


# ------------------------------------------------------------------------------------------ sources


def builtin_corpora() -> list[str]:
    """The built-in corpus names (a path to a text file, folder or .jsonl file works too)."""
    return sorted(_BUILTINS)


def _pydoc_documents() -> list[str]:
    """CPython's own help text (``pydoc_data.topics``): ~80 topics, ~0.5 MB of English. Ships with Python."""
    from pydoc_data.topics import topics  # lazy: only the corpus that is asked for is imported

    return [topics[k] for k in sorted(topics)]


_BUILTINS = {"pydoc": _pydoc_documents}
_BUILTIN_ABOUT = {"pydoc": "CPython's own help text, English (ships with Python)"}


def builtin_description(name: str) -> str:
    """One line about a built-in corpus: what it is and its size, counted from the documents themselves."""
    docs = _BUILTINS[name]()
    chars = sum(len(d) for d in docs)
    return f"{len(docs):,} documents, {chars / 1e6:.1f} M characters: {_BUILTIN_ABOUT[name]}"


@dataclass
class _Source:
    """A resolved corpus: a built-in, or the files (with how to read each) of a path."""

    name: str
    kind: str  # "builtin", "file", "folder" or "jsonl"
    path: Path | None = None
    files: list[tuple[str, Path]] = field(default_factory=list)  # (relative path, file), in document order
    skipped: int = 0  # folder files that are not text (by suffix or content)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the content: the built-in's text hash, a file's sha256, or a folder's relative
        paths with the sha256 of each (so a moved or renamed corpus keeps its cache; an edited one does not)."""
        if self.kind == "builtin":
            docs = _BUILTINS[self.name]()
            return {"builtin": self.name, "sha256": hashlib.sha256(json.dumps(docs).encode()).hexdigest()}
        if self.kind != "folder":  # one file: its name is no part of its content
            return {"kind": self.kind, "sha256": sha256_file(self.path)}
        return {"kind": self.kind, "files": [[rel, sha256_file(p)] for rel, p in self.files]}

    def describe(self, n_docs: int | None = None) -> str:
        if self.kind == "builtin":
            return f"builtin:{self.name}" + (f" ({n_docs} documents)" if n_docs is not None else "")
        where = str(self.path.resolve())
        if self.kind == "folder":
            skipped = f", {self.skipped} non-text files skipped" if self.skipped else ""
            return f"folder {where} ({len(self.files)} text files{skipped})"
        return f"{self.kind} {where}"


def _resolve(name: str) -> _Source:
    """A built-in name wins; otherwise ``name`` must be an existing file or folder."""
    if name in _BUILTINS:
        return _Source(name, "builtin")
    path = Path(name).expanduser()
    if not path.exists():
        if _is_image_dataset(name):  # a config mistake (an image set for a language model), not a missing file
            raise ConfigError(
                f"'{name}' is an image dataset; a language model needs text: a built-in corpus "
                f"({', '.join(builtin_corpora())}), a text file, a folder or a .jsonl file"
            )
        raise NotFoundError(
            f"unknown text corpus '{name}': not a built-in ({', '.join(builtin_corpora())}) and no such file or folder"
        )
    if path.is_dir():
        files, skipped = _folder_files(path)
        if not files:
            raise DataError(
                f"{path}: no text files in this folder (looked for {', '.join(sorted(TEXT_SUFFIXES)[:8])}, ... "
                f".jsonl and files without a suffix; hidden files are skipped)"
            )
        return _Source(name, "folder", path, files, skipped)
    kind = "jsonl" if path.suffix.lower() == ".jsonl" else "file"
    return _Source(name, kind, path, [(path.name, path)])


def _is_image_dataset(name: str) -> bool:
    try:
        from ...data.builtin import datasets

        return name in datasets.names()
    except Exception:  # the image registry is optional here: without it, the name is simply not found
        return False


def _folder_files(root: Path) -> tuple[list[tuple[str, Path]], int]:
    """The text files under ``root`` sorted by relative path (hidden files and folders skipped), and how
    many visible files were skipped as not text."""
    found: list[tuple[str, Path]] = []
    skipped = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fname in filenames:
            if fname.startswith("."):
                continue
            p = Path(dirpath) / fname
            if not p.is_file():
                continue
            suffix = p.suffix.lower()
            if suffix in TEXT_SUFFIXES or suffix == ".jsonl" or (suffix == "" and _looks_like_text(p)):
                found.append((p.relative_to(root).as_posix(), p))
            else:
                skipped += 1
    found.sort(key=lambda item: item[0])
    return found, skipped


def _looks_like_text(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return b"\x00" not in f.read(_SNIFF_BYTES)
    except OSError:
        return False


def _decode(data: bytes, where: str) -> str:
    """Strict UTF-8 (BOM stripped, \\r\\n -> \\n), with a message that points at the first bad byte."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{where}: UTF-16 text; only UTF-8 is supported (re-save the file as UTF-8)")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{where}: has a NUL byte at offset {nul}; it looks like a binary file, not UTF-8 text")
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start + (len(data) - len(body))
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(
            f"{where}: not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} (line {line}); re-save it as UTF-8"
        ) from None
    return text.replace("\r\n", "\n")


def _read_bytes(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{where}: cannot read it ({e.strerror or e})") from None


def _jsonl_documents(path: Path, where: str, field_name: str) -> list[str]:
    """One document per non-blank line, from ``field_name``; errors name the file and line."""
    text = _decode(_read_bytes(path, where), where)
    docs = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{where}:{lineno}: a JSON {type(record).__name__}, expected an object with a '{field_name}' string"
            )
        if field_name not in record:
            present = ", ".join(map(str, record)) or "none"
            raise DataError(
                f"{where}:{lineno}: no field '{field_name}' (fields present: {present}); set data.jsonl_field"
            )
        value = record[field_name]
        if not isinstance(value, str):
            raise DataError(f"{where}:{lineno}: field '{field_name}' is a {type(value).__name__}, not a string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # JSON can spell a lone surrogate ("\ud800"), which is not text
            raise DataError(
                f"{where}:{lineno}: field '{field_name}' holds an unpaired surrogate (not valid Unicode)"
            ) from None
        docs.append(value.replace("\r\n", "\n"))
    return docs


def _source_documents(source: _Source, cfg: TextDataConfig) -> list[str]:
    """Every non-blank document of ``source``, in order (see :func:`read_documents`)."""
    if source.kind == "builtin":
        docs = [d.replace("\r\n", "\n") for d in _BUILTINS[source.name]()]
    elif source.kind == "file":
        where = str(source.path)
        data = _read_bytes(source.path, where)
        if not data.strip():
            raise DataError(f"{where}: file is empty ({len(data)} bytes, no text)")
        docs = [_decode(data, where)]
    else:
        docs = []
        for rel, p in source.files:
            where = str(p) if source.kind == "jsonl" else f"{source.path}/{rel}"
            if p.suffix.lower() == ".jsonl":
                docs.extend(_jsonl_documents(p, where, cfg.jsonl_field))
            else:
                docs.append(_decode(_read_bytes(p, where), where))
    docs = [d for d in docs if d.strip()]  # a blank document would only add an end-of-text token
    if not docs:
        raise DataError(f"{source.describe()}: no text (every document is empty or whitespace)")
    return docs


def read_documents(cfg: TextDataConfig) -> tuple[list[str], str]:
    """The documents of ``cfg.name`` and a one-line description of where they came from.

    - a built-in (:func:`builtin_corpora`): ``pydoc`` is one document per help topic, sorted by topic;
    - a text file (any suffix but ``.jsonl``): ONE document, its whole text;
    - a folder: one document per text file (see :data:`TEXT_SUFFIXES`), recursively, sorted by relative
      path; hidden files and folders are skipped, and so are files that are not text by suffix (or, for
      files without a suffix, by content); a ``.jsonl`` file in it adds one document per record;
    - a ``.jsonl`` file: one document per non-blank line, from ``cfg.jsonl_field``.

    With ``cfg.scrub_pii`` personal data in them is replaced by placeholders (:func:`scrub_if_asked`).

    Text must be UTF-8 (a BOM is stripped); ``\\r\\n`` becomes ``\\n``. Blank documents are dropped. A
    missing path raises NotFoundError; undecodable, binary or empty input raises a DataError naming the
    file (and the offset/line of the problem).
    """
    source = _resolve(cfg.name)
    docs, _ = scrub_if_asked(_source_documents(source, cfg), cfg)
    return docs, source.describe(len(docs))


def scrub_if_asked(docs: list[str], cfg: TextDataConfig) -> tuple[list[str], dict[str, int] | None]:
    """With ``cfg.scrub_pii``: the documents with personal data replaced by placeholders, and how many of
    each kind were replaced (:func:`genloop.safety.pii.scrub_documents`); else the documents and None."""
    if not cfg.scrub_pii:
        return docs, None
    from ...safety.pii import scrub_documents

    return scrub_documents(docs)


# -------------------------------------------------------------------------------------------- split


def split_documents(docs: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str], str]:
    """``(train, val, how)``: by document when there are several, by position for one.

    Several documents: a seeded permutation puts ``round(n * val_fraction)`` of them (at least one, and
    at least one left to train on) into val; both splits keep the corpus order. No document is in both.
    One document (a single text file such as tiny Shakespeare): nanoGPT's protocol, the first
    ``1 - val_fraction`` of its characters train and the rest is val — cut just after a newline if one
    lies within 1% of the text of that point, so neither split starts mid-line.
    """
    n = len(docs)
    if n >= 2:
        n_val = min(max(round(n * val_fraction), 1), n - 1)
        perm = np.random.default_rng(seed & 0xFFFFFFFFFFFFFFFF).permutation(n)
        val_set = set(perm[:n_val].tolist())
        train = [d for i, d in enumerate(docs) if i not in val_set]
        val = [d for i, d in enumerate(docs) if i in val_set]
        return train, val, "documents"
    text = docs[0]
    length = len(text)
    if length < 2:
        raise DataError(
            f"the corpus is one document of {length} character(s); it needs at least 2 to split into train and val"
        )
    cut = min(max(int(length * (1 - val_fraction)), 1), length - 1)
    window = max(1, length // 100)
    candidates = []
    left = text.rfind("\n", max(0, cut - window), cut)
    if left >= 0:
        candidates.append(left + 1)
    right = text.find("\n", cut, min(length, cut + window))
    if right >= 0:
        candidates.append(right + 1)
    candidates = [c for c in candidates if 1 <= c <= length - 1]
    if candidates:
        cut = min(candidates, key=lambda c: (abs(c - cut), c))
    return [text[:cut]], [text[cut:]], "position"
