"""Text corpora for language models: documents in, a cached stream of token ids out.

A corpus is a built-in (``pydoc``), one text file, a folder of text files, or a JSONL file. It becomes a
list of *documents*; the documents are split into train and val (by document, or by position for a
single-document source), a tokenizer is trained on the train documents only (so validation text stays
unseen), and each split is tokenised into one flat array with the end-of-text token after every
document — nanoGPT's ``train.bin`` / ``val.bin``, read back with ``np.memmap`` so even a large corpus
costs no RAM.

Tokenising is the slow step, so its result is cached under a key that hashes the source's *content* and
every setting that changes the tokens (JSONL field, tokenizer and its vocabulary, split, seed, and
:data:`TEXT_PREP_VERSION`): edit one file and the key changes; move the folder and it does not. The cache
folder is written under a temporary name and renamed into place, so a killed prepare never leaves a
half cache that a later run would trust.

    ds = load_text_dataset(TextDataConfig(name="shakespeare.txt", tokenizer="char"))
    batches = TokenBatches(ds.train, batch_size=12, block_size=64, seed=0)
    x, y = next(batches)  # (12, 64) int64 each, y is x shifted by one token
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError, GenLoopError, NotFoundError
from ..paths import cache_dir
from ..serialization import atomic_write, sha256_file, write_json

TEXT_PREP_VERSION = 1  # bump when reading, splitting or tokenising changes, so old caches are not reused

EOT = "<|endoftext|>"
UNK = "<unk>"
BPE_MIN_VOCAB = 260  # 256 byte tokens + <|endoftext|> + a few merges
BPE_MAX_VOCAB = 1_000_000
GENLOOP_TOKENIZER_FILE = "genloop_tokenizer.json"  # marks a tokenizer folder written by Tokenizer.save

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

# Files in an HF tokenizer folder that are never tokenizer state (weights): skipped when hashing one.
_WEIGHT_SUFFIXES = frozenset(".safetensors .bin .pt .pth .ckpt .h5 .msgpack .gguf .onnx .ot".split())


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

    def __post_init__(self) -> None:
        for key in ("name", "jsonl_field", "tokenizer"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"data.{key} must be a non-empty string, got {value!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
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
        from .builtin import datasets

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

    Text must be UTF-8 (a BOM is stripped); ``\\r\\n`` becomes ``\\n``. Blank documents are dropped. A
    missing path raises NotFoundError; undecodable, binary or empty input raises a DataError naming the
    file (and the offset/line of the problem).
    """
    source = _resolve(cfg.name)
    docs = _source_documents(source, cfg)
    return docs, source.describe(len(docs))


# ---------------------------------------------------------------------------------------- tokenizers


class Tokenizer:
    """What a language model needs from a tokenizer: ids <-> text, an end-of-text id, and persistence.

    Subclasses: :class:`CharTokenizer` (``kind`` "char"), :class:`BPETokenizer` ("bpe") and
    :class:`HFTokenizer` ("hf", a local Hugging Face tokenizer). ``decode`` renders special tokens as
    their text (``<|endoftext|>``), so nothing a model produced is hidden.
    """

    kind: str = ""
    vocab_size: int = 0
    eot_id: int = 0

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        """Write the tokenizer's files into ``directory`` (each atomically); :func:`load_tokenizer` reads them."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hash of everything that decides the ids (part of a dataset's cache key)."""
        raise NotImplementedError

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` as an int64 array (overridden where a vectorised path is faster)."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode_array(t) for t in texts]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size}, eot_id={self.eot_id})"


def _write_marker(directory: Path, meta: dict[str, Any]) -> None:
    write_json(Path(directory) / GENLOOP_TOKENIZER_FILE, {"format": "genloop-tokenizer", "version": 1, **meta})


def _valid_text(text: str) -> str:
    """``text`` with unpaired surrogates (e.g. from undecodable command-line bytes) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


class CharTokenizer(Tokenizer):
    """One id per character seen in training (sorted), then ``<|endoftext|>``, then ``<unk>``.

    Characters never seen in training encode to ``<unk>``, which decodes to U+FFFD. Encoding is
    vectorised over code points, so a megabyte of text takes milliseconds.
    """

    kind = "char"

    def __init__(self, chars: list[str]) -> None:
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise DataError("a char tokenizer's vocabulary must be distinct single characters")
        self.chars = sorted(chars)
        self.eot_id = len(self.chars)
        self.unk_id = self.eot_id + 1
        self.vocab_size = self.unk_id + 1
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self._pieces = [*self.chars, EOT, "\ufffd"]

    @classmethod
    def train(cls, documents: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for d in documents:
            seen.update(d)
        return cls(sorted(seen))

    def encode_array(self, text: str) -> np.ndarray:
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        if not len(self._codes):
            return np.full(len(cps), self.unk_id, dtype=np.int64)
        idx = np.searchsorted(self._codes, cps)
        hit = self._codes[np.minimum(idx, len(self._codes) - 1)] == cps
        return np.where(hit, idx, self.unk_id).astype(np.int64)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: list[int]) -> str:
        pieces = self._pieces
        try:
            return "".join(pieces[i] for i in ids)
        except (IndexError, TypeError):
            bad = next(i for i in ids if not (isinstance(i, (int, np.integer)) and 0 <= i < self.vocab_size))
            raise DataError(
                f"token id {bad!r} is outside this char tokenizer's vocabulary (0..{self.vocab_size - 1})"
            ) from None

    def save(self, directory: Path) -> None:
        _write_marker(
            Path(directory),
            {"kind": "char", "chars": self.chars, "special_tokens": {EOT: self.eot_id, UNK: self.unk_id}},
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(["char", self.chars]).encode()).hexdigest()


class _TokenizersBackend(Tokenizer):
    """Shared by tokenizers built on the HF ``tokenizers`` library (GenLoop's BPE, and fast HF tokenizers)."""

    _backend: Any

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self._backend.encode(_valid_text(text), add_special_tokens=False).ids, dtype=np.int64)

    def encode(self, text: str) -> list[int]:
        return list(self._backend.encode(_valid_text(text), add_special_tokens=False).ids)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        encs = self._backend.encode_batch([_valid_text(t) for t in texts], add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encs]


class BPETokenizer(_TokenizersBackend):
    """Byte-level BPE (GPT-2's scheme) trained on the corpus with HF ``tokenizers``.

    Every string is bytes first, so any text round-trips exactly — Chinese, emoji, newlines, leading
    spaces — and nothing is ever unknown. A literal ``<|endoftext|>`` inside a document is encoded as
    ordinary text (``encode_special_tokens``), so only the separators GenLoop inserts end a document.
    Saved as a standard ``tokenizer.json`` that ``tokenizers`` and ``transformers`` load directly.
    """

    kind = "bpe"

    def __init__(self, backend: Any) -> None:
        eot = backend.token_to_id(EOT)
        if eot is None:
            raise DataError(f"a bpe tokenizer needs the special token {EOT}")
        backend.encode_special_tokens = True
        self._backend, self.eot_id, self.vocab_size = backend, int(eot), int(backend.get_vocab_size())

    @classmethod
    def train(cls, documents: list[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTok
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTok(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(documents, trainer, length=len(documents))
        return cls(tok)

    def decode(self, ids: list[int]) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        with atomic_write(directory / "tokenizer.json", "w") as f:
            f.write(self._backend.to_str(pretty=True))
        _write_marker(directory, {"kind": "bpe", "file": "tokenizer.json", "eot_token": EOT})

    def fingerprint(self) -> str:
        return hashlib.sha256(("bpe\n" + self._backend.to_str()).encode()).hexdigest()


# Tokens taken as end-of-text in an HF tokenizer that declares no eos token, first match wins.
_EOT_CANDIDATES = (EOT, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "<|im_end|>")


class HFTokenizer(_TokenizersBackend):
    """A local Hugging Face tokenizer (e.g. the one of a pretrained model), loaded with ``transformers``.

    Documents are encoded without the tokenizer's own added specials (no BOS) and joined with its eos
    token. If it declares no eos, the first of :data:`_EOT_CANDIDATES` in its vocabulary is used; failing
    that, ``<|endoftext|>`` is added as its eos token (the vocabulary grows by one, which a model that
    brings this tokenizer must resize its embeddings for). ``vocab_size`` is ``len(tokenizer)``, added
    tokens included.
    """

    kind = "hf"

    def __init__(self, tok: Any, source: Path | None = None, eot_token: str | None = None) -> None:
        self._tok, self.source = tok, source
        self._backend = getattr(tok, "backend_tokenizer", None) if getattr(tok, "is_fast", False) else None
        if eot_token is not None and tok.convert_tokens_to_ids(eot_token) not in (None, tok.unk_token_id):
            eot = tok.convert_tokens_to_ids(eot_token)
        elif tok.eos_token_id is not None:
            eot = tok.eos_token_id
        else:
            vocab = tok.get_vocab()
            name = next((c for c in _EOT_CANDIDATES if c in vocab), None)
            if name is None:
                tok.add_special_tokens({"eos_token": EOT})
                name = EOT
            eot = tok.convert_tokens_to_ids(name)
        self.eot_id = int(eot)
        self.eot_token = tok.convert_ids_to_tokens(self.eot_id)
        self.vocab_size = int(len(tok))

    @property
    def hf_tokenizer(self) -> Any:
        """The wrapped ``transformers`` tokenizer."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        if self._backend is not None:
            return super().encode(text)
        return list(self._tok.encode(_valid_text(text), add_special_tokens=False, verbose=False))

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        if self._backend is not None:
            return super().encode_batch(texts)
        return [self.encode_array(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".hf-tokenizer.", dir=directory) as tmp:
            self._tok.save_pretrained(tmp)
            for p in sorted(Path(tmp).iterdir()):
                if p.is_file():
                    os.replace(p, directory / p.name)  # same filesystem: each file appears whole or not at all
        _write_marker(directory, {"kind": "hf", "eot_token": self.eot_token})

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"hf\n{self.eot_id}\n{self.vocab_size}\n".encode())
        if self._backend is not None:
            h.update(self._backend.to_str().encode())
        elif self.source is not None:
            folder = self.source if self.source.is_dir() else self.source.parent
            for p in sorted(folder.iterdir()):
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in _WEIGHT_SUFFIXES:
                    h.update(f"{p.name}\n{sha256_file(p)}\n".encode())
        return h.hexdigest()


def train_tokenizer(kind: str, documents: list[str], vocab_size: int = 2048) -> Tokenizer:
    """A ``"char"`` or ``"bpe"`` tokenizer trained on ``documents`` (``vocab_size`` is used by BPE only)."""
    if kind not in ("char", "bpe"):
        raise ConfigError(f"unknown tokenizer kind '{kind}' to train; valid: char, bpe (or a path to load one)")
    if not any(d.strip() for d in documents):
        raise DataError("cannot train a tokenizer on no text")
    if kind == "char":
        return CharTokenizer.train(documents)
    if not BPE_MIN_VOCAB <= vocab_size <= BPE_MAX_VOCAB:
        raise ConfigError(
            f"data.vocab_size must be between {BPE_MIN_VOCAB} and {BPE_MAX_VOCAB} for bpe, got {vocab_size}"
        )
    return BPETokenizer.train(documents, vocab_size)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from disk, never from the network.

    ``path`` is a folder written by :meth:`Tokenizer.save` (it holds ``genloop_tokenizer.json``), a local
    Hugging Face tokenizer folder (``tokenizer.json`` and/or ``tokenizer_config.json``, as
    ``save_pretrained`` writes), or a single HF ``tokenizer.json`` file.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise NotFoundError(f"tokenizer {path}: no such file or folder")
    if path.is_file():
        if path.name == GENLOOP_TOKENIZER_FILE:
            return load_tokenizer(path.parent)
        if path.name == "tokenizer.json" and (path.parent / GENLOOP_TOKENIZER_FILE).is_file():
            return load_tokenizer(path.parent)
        return _load_hf(path)
    marker = path / GENLOOP_TOKENIZER_FILE
    if marker.is_file():
        return _load_genloop(path, marker)
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        return _load_hf(path)
    raise DataError(
        f"{path}: no tokenizer here (expected {GENLOOP_TOKENIZER_FILE}, tokenizer.json or tokenizer_config.json)"
    )


def _load_genloop(folder: Path, marker: Path) -> Tokenizer:
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
        kind = meta["kind"]
        if kind == "char":
            return CharTokenizer(list(meta["chars"]))
        if kind == "bpe":
            from tokenizers import Tokenizer as HFTok

            return BPETokenizer(HFTok.from_file(str(folder / meta.get("file", "tokenizer.json"))))
        if kind == "hf":
            tok = _load_hf(folder, eot_token=meta.get("eot_token"))
            return tok
    except GenLoopError:
        raise
    except Exception as e:  # json, key, tokenizers' own errors: all mean a damaged tokenizer folder
        raise DataError(f"{folder}: damaged tokenizer files ({type(e).__name__}: {e})".replace("\n", " ")) from None
    raise DataError(f"{marker}: unknown tokenizer kind {kind!r}; valid: char, bpe, hf")


def _load_hf(path: Path, eot_token: str | None = None) -> HFTokenizer:
    try:
        import transformers

        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # no chatter about model_max_length and the like
        try:
            if path.is_dir():
                tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            else:
                tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
        finally:
            transformers.logging.set_verbosity(verbosity)
    except Exception as e:
        raise DataError(
            f"{path}: not a loadable Hugging Face tokenizer ({type(e).__name__}: {e})".replace("\n", " ")
        ) from None
    return HFTokenizer(tok, source=path, eot_token=eot_token)


def _tokenizer_for(spec: str, vocab_size: int) -> tuple[dict[str, Any], Tokenizer | None]:
    """The cache-key part for a tokenizer setting, and the tokenizer itself when it comes from a path."""
    if spec == "char":
        return {"kind": "char"}, None
    if spec == "bpe":
        if not BPE_MIN_VOCAB <= vocab_size <= BPE_MAX_VOCAB:
            raise ConfigError(
                f"data.vocab_size must be between {BPE_MIN_VOCAB} and {BPE_MAX_VOCAB} for bpe, got {vocab_size}"
            )
        return {"kind": "bpe", "vocab_size": vocab_size}, None
    if not Path(spec).expanduser().exists():
        raise NotFoundError(
            f"tokenizer '{spec}': not char, bpe or an existing path (nothing is downloaded: save a hub tokenizer "
            f"locally with save_pretrained and pass that folder)"
        )
    tok = load_tokenizer(spec)
    return {"kind": tok.kind, "fingerprint": tok.fingerprint()}, tok


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


# -------------------------------------------------------------------------------------------- dataset


@dataclass
class TextDataset:
    """A tokenised corpus: train and val token streams (``eot_id`` after each document) and its tokenizer."""

    name: str
    tokenizer: Tokenizer
    train: np.ndarray  # 1-D token ids (a read-only np.memmap when cached)
    val: np.ndarray
    info_: dict[str, Any]
    val_chars: int  # characters of the val documents, for bits per character
    val_bytes: int  # UTF-8 bytes of the val documents, for bits per byte
    _train_text_path: Path | None = field(default=None, repr=False)
    _train_text: str | None = field(default=None, repr=False)

    @property
    def train_text(self) -> str:
        """The training documents joined by ``\\n`` (for memorisation checks); read from the cache on first use."""
        if self._train_text is None:
            if self._train_text_path is None:
                raise DataError("this dataset has no training text on record")
            self._train_text = self._train_text_path.read_text(encoding="utf-8")
        return self._train_text

    def info(self) -> dict[str, Any]:
        """What `genloop data info` prints."""
        return dict(self.info_)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size < 65536 else np.uint32)


def cache_key(fingerprint: dict[str, Any], cfg: TextDataConfig, tokenizer_key: dict[str, Any]) -> str:
    blob = {
        "prep": TEXT_PREP_VERSION,
        "source": fingerprint,
        "jsonl_field": cfg.jsonl_field,
        "tokenizer": tokenizer_key,
        "val_fraction": cfg.val_fraction,
        "seed": cfg.seed,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def load_text_dataset(cfg: TextDataConfig, tokenizer: str | None = None) -> TextDataset:
    """Read, split, tokenise (or reuse the cache) and return ``cfg``'s corpus.

    ``tokenizer`` overrides ``cfg.tokenizer`` (a model that brings its own tokenizer passes its path).
    A char or BPE tokenizer is trained on the train documents only, and cached with the tokens.
    """
    spec = tokenizer or cfg.tokenizer
    source = _resolve(cfg.name)
    tok_key, given = _tokenizer_for(spec, cfg.vocab_size)
    key = cache_key(source.fingerprint(), cfg, tok_key)
    try:
        root: Path | None = cache_dir("text")
    except OSError as e:  # no writable cache at all: prepare in memory (slower next time, still correct)
        warnings.warn(f"no cache for tokenised text ({e}); preparing in memory", stacklevel=2)
        root = None
    cached = _read_cache(root / key, key, given, cfg.name, source) if root is not None else None
    if cached is not None:
        return cached
    return _prepare(source, cfg, spec, given, key, root)


def _prepare(
    source: _Source, cfg: TextDataConfig, spec: str, given: Tokenizer | None, key: str, root: Path | None
) -> TextDataset:
    """The slow path: read, split, train the tokenizer, tokenise, and write the cache folder atomically."""
    docs = _source_documents(source, cfg)
    train_docs, val_docs, how = split_documents(docs, cfg.val_fraction, cfg.seed)
    tok = given if given is not None else train_tokenizer(spec, train_docs, cfg.vocab_size)
    dtype = token_dtype(tok.vocab_size)
    meta = {
        "key": key,
        "prep_version": TEXT_PREP_VERSION,
        "name": cfg.name,
        "source": source.describe(len(docs)),
        "split": how,
        "documents": {"train": len(train_docs), "val": len(val_docs)},
        "val_chars": sum(len(d) for d in val_docs),
        "val_bytes": sum(len(d.encode("utf-8")) for d in val_docs),
        "vocab_size": tok.vocab_size,
        "tokenizer": tok.kind,
        "tokenizer_saved": given is None,
        "dtype": dtype.name,
    }
    if root is None:
        return _in_memory(cfg.name, tok, train_docs, val_docs, meta, dtype)
    folder, tmp = root / key, None
    try:
        _clean_stale(root, key)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=root))
        meta["tokens"] = {
            "train": _write_tokens(tmp / "train.bin", train_docs, tok, dtype),
            "val": _write_tokens(tmp / "val.bin", val_docs, tok, dtype),
        }
        with atomic_write(tmp / "train.txt", "w") as f:
            f.write("\n".join(train_docs))
        if given is None:
            tok.save(tmp / "tokenizer")
        write_json(tmp / "meta.json", meta)  # last: a folder with meta.json is complete
        _publish(tmp, folder)
    except OSError as e:  # a read-only or full disk: the data is still good, only the next load is slower
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        warnings.warn(f"could not cache the tokenised corpus at {folder}: {e}", stacklevel=3)
        return _in_memory(cfg.name, tok, train_docs, val_docs, meta, dtype)
    ds = _read_cache(folder, key, given, cfg.name, source, tokenizer=tok, from_cache=False)
    if ds is None:  # someone else's broken folder won the rename race: serve from memory
        return _in_memory(cfg.name, tok, train_docs, val_docs, meta, dtype)
    return ds


def _write_tokens(path: Path, docs: list[str], tok: Tokenizer, dtype: np.dtype, chunk_chars: int = 1 << 22) -> int:
    """Tokenise ``docs`` a few MB at a time into a raw array file, ``eot_id`` after each; return the count."""
    n = 0
    eot = np.array([tok.eot_id], dtype=np.int64)
    with open(path, "wb") as f:
        batch: list[str] = []
        size = 0
        for i, d in enumerate(docs):
            batch.append(d)
            size += len(d)
            if size >= chunk_chars or i == len(docs) - 1:
                parts = []
                for ids in tok.encode_batch(batch):
                    parts += [ids, eot]
                arr = np.concatenate(parts).astype(dtype)
                f.write(arr.tobytes())
                n += len(arr)
                batch, size = [], 0
        f.flush()
        os.fsync(f.fileno())
    return n


def _in_memory(
    name: str, tok: Tokenizer, train_docs: list[str], val_docs: list[str], meta: dict, dtype: np.dtype
) -> TextDataset:
    def tokens(docs: list[str]) -> np.ndarray:
        eot = np.array([tok.eot_id], dtype=np.int64)
        return np.concatenate([p for ids in tok.encode_batch(docs) for p in (ids, eot)]).astype(dtype)

    train, val = tokens(train_docs), tokens(val_docs)
    info = {**meta, "tokens": {"train": len(train), "val": len(val)}, "cached": False, "cache_dir": None}
    return TextDataset(
        name,
        tok,
        train,
        val,
        _public_info(info),
        meta["val_chars"],
        meta["val_bytes"],
        _train_text="\n".join(train_docs),
    )


def _publish(tmp: Path, folder: Path) -> None:
    """Rename the finished temp folder into place; a stale or broken one there is moved aside first."""
    if folder.exists():
        aside = folder.with_name(f".{folder.name}.old-{os.getpid()}-{time.time_ns()}.tmp")
        with contextlib.suppress(OSError):
            os.replace(folder, aside)
            shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "meta.json").is_file():  # not a lost race with an equally good folder
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _clean_stale(root: Path, key: str, max_age_s: float = 3600) -> None:
    """Remove this key's temp folders left by killed prepares (old enough not to be in progress)."""
    now = time.time()
    for p in root.glob(f".{key}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)


def _read_cache(
    folder: Path,
    key: str,
    given: Tokenizer | None,
    name: str,
    source: _Source,
    tokenizer: Tokenizer | None = None,
    from_cache: bool = True,
) -> TextDataset | None:
    """The cached dataset, or None if missing, damaged or not what this key promises (then re-prepare).

    The name and source description are today's: the same content under another path shares the cache.
    """
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta["key"] != key or meta["prep_version"] != TEXT_PREP_VERSION:
            return None
        tok = tokenizer or given or load_tokenizer(folder / "tokenizer")
        dtype = np.dtype(meta["dtype"])
        if tok.vocab_size != meta["vocab_size"] or dtype != token_dtype(tok.vocab_size):
            return None
        arrays = []
        for split in ("train", "val"):
            n = int(meta["tokens"][split])
            path = folder / f"{split}.bin"
            if n < 1 or path.stat().st_size != n * dtype.itemsize:
                return None
            arrays.append(np.memmap(path, dtype=dtype, mode="r", shape=(n,)))
        if not (folder / "train.txt").is_file():
            return None
    except (GenLoopError, KeyError, TypeError, ValueError, OSError):  # a cache must never be why a run fails
        return None
    docs = meta["documents"]["train"] + meta["documents"]["val"] - (meta["split"] == "position")
    info = {**meta, "name": name, "source": source.describe(docs), "cached": from_cache, "cache_dir": str(folder)}
    return TextDataset(
        name,
        tok,
        arrays[0],
        arrays[1],
        _public_info(info),
        int(meta["val_chars"]),
        int(meta["val_bytes"]),
        _train_text_path=folder / "train.txt",
    )


def _public_info(meta: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "name",
        "source",
        "split",
        "documents",
        "tokens",
        "val_chars",
        "val_bytes",
        "vocab_size",
        "tokenizer",
        "dtype",
        "cached",
        "cache_dir",
        "prep_version",
    )
    out = {k: meta[k] for k in keys if k in meta}
    out["cache_key"] = meta["key"]
    return out


# -------------------------------------------------------------------------------------------- batches


class TokenBatches:
    """Endless seeded random windows, nanoGPT's get_batch: ``x = data[i:i+T]``, ``y = data[i+1:i+T+1]``.

    The offsets of batch ``n`` come from a generator seeded with ``(seed, n)``, so a batch depends on
    nothing but its number: ``state_dict()`` is ``{"step": n}`` and a resumed stream continues exactly.
    """

    def __init__(
        self, data: np.ndarray, batch_size: int, block_size: int, seed: int = 0, device: torch.device | str = "cpu"
    ) -> None:
        if batch_size < 1 or block_size < 1:
            raise ConfigError(f"batch_size and block_size must be at least 1, got {batch_size} and {block_size}")
        data = np.asarray(data) if not isinstance(data, np.ndarray) else data
        if data.ndim != 1:
            raise DataError(f"token data must be 1-D, got shape {tuple(data.shape)}")
        if len(data) < block_size + 1:
            raise DataError(
                f"the training text has {len(data)} tokens; it needs more than block_size={block_size} "
                f"(use a larger corpus or a smaller model.block_size)"
            )
        self.data, self.batch_size, self.block_size, self.seed = data, int(batch_size), int(block_size), int(seed)
        self.device = device
        self.step = 0
        self._window = np.arange(self.block_size + 1, dtype=np.int64)

    @property
    def device(self) -> torch.device:
        return self._device

    @device.setter
    def device(self, value: torch.device | str) -> None:
        self._device = torch.device(value)

    def offsets(self, step: int) -> np.ndarray:
        """The window starts of batch ``step``: uniform over every full window, as nanoGPT draws them."""
        rng = np.random.default_rng([self.seed & 0xFFFFFFFFFFFFFFFF, step])
        return rng.integers(0, len(self.data) - self.block_size, size=self.batch_size)

    def __iter__(self) -> TokenBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        windows = np.asarray(self.data[self.offsets(self.step)[:, None] + self._window], dtype=np.int64)
        self.step += 1
        xy = torch.from_numpy(windows)
        x, y = xy[:, :-1], xy[:, 1:]
        if self._device.type == "cuda":
            return x.pin_memory().to(self._device, non_blocking=True), y.pin_memory().to(
                self._device, non_blocking=True
            )
        if self._device.type != "cpu":
            return x.to(self._device), y.to(self._device)
        return x.contiguous(), y.contiguous()

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


__all__ = [
    "EOT",
    "TEXT_PREP_VERSION",
    "TEXT_SUFFIXES",
    "BPETokenizer",
    "CharTokenizer",
    "HFTokenizer",
    "TextDataConfig",
    "TextDataset",
    "TokenBatches",
    "Tokenizer",
    "builtin_corpora",
    "load_text_dataset",
    "load_tokenizer",
    "read_documents",
    "split_documents",
    "train_tokenizer",
]
