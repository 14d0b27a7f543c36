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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError, GenLoopError
from ...paths import cache_dir
from ...serialization import atomic_write, write_json
from .sources import (
    TextDataConfig,
    _decode,
    _read_bytes,
    _resolve,
    _Source,
    _source_documents,
    scrub_if_asked,
    split_documents,
)
from .tokenizers import Tokenizer, _tokenizer_for, load_tokenizer, train_tokenizer

TEXT_PREP_VERSION = 1  # bump when reading, splitting or tokenising changes, so old caches are not reused

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
    chat: Any = None  # a chat data set's conversations and template (.chat.ChatData); None for plain text

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
    if cfg.scrub_pii:  # only when on, so that the caches of every corpus prepared before stay valid
        from ...safety.pii import PII_VERSION

        blob["scrub_pii"] = PII_VERSION
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def load_text_dataset(cfg: TextDataConfig, tokenizer: str | None = None) -> TextDataset:
    """Read, split, tokenise (or reuse the cache) and return ``cfg``'s corpus.

    ``tokenizer`` overrides ``cfg.tokenizer`` (a model that brings its own tokenizer passes its path).
    A char or BPE tokenizer is trained on the train documents only, and cached with the tokens.
    """
    spec = tokenizer or cfg.tokenizer
    source = _resolve(cfg.name)
    tok_key, given = _tokenizer_for(spec, cfg.vocab_size)
    if data_format(cfg, source) == "chat":
        return _prepare_chat(source, cfg, spec, given)
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


def data_format(cfg: TextDataConfig, source: _Source) -> str:
    """``"chat"`` or ``"text"``: ``data.format``, or for ``auto`` what the first record of a .jsonl file holds."""
    from .chat import detect_format

    if cfg.format == "chat" and source.kind != "jsonl":
        raise ConfigError(f"data.format=chat needs a .jsonl file of conversations; {source.describe()} is not one")
    if cfg.format == "auto":
        return detect_format(source.path) if source.kind == "jsonl" else "text"
    return cfg.format


def _prepare_chat(source: _Source, cfg: TextDataConfig, spec: str, given: Tokenizer | None) -> TextDataset:
    """A chat data set, prepared in memory (chat sets are small; the char/BPE tokenizer is retrained
    deterministically on each load): conversations split by conversation, the tokenizer trained on the
    rendered training conversations, and each split stored as a token stream like a corpus's."""
    from .chat import ChatData, ChatTemplate, flat, read_conversations, split_conversations

    where = str(source.path)
    convs = read_conversations(_decode(_read_bytes(source.path, where), where), where)
    scrubbed = None
    if cfg.scrub_pii:
        contents, scrubbed = scrub_if_asked([m["content"] for c in convs for m in c], cfg)
        it = iter(contents)
        convs = [[{**m, "content": next(it)} for m in c] for c in convs]
    train_c, val_c = split_conversations(convs, cfg.val_fraction, cfg.seed)
    plain = ChatTemplate(given)  # renders the text a char/BPE tokenizer is trained on
    tok = given if given is not None else train_tokenizer(spec, [plain.render(c) for c in train_c], cfg.vocab_size)
    chat = ChatData(ChatTemplate(tok), train_c, val_c)
    enc = {s: [chat.template.encode(c) for c in getattr(chat, s)] for s in ("train", "val")}
    dtype = token_dtype(tok.vocab_size)
    (train, train_mask), (val, val_mask) = (flat(enc[s], tok.eot_id) for s in ("train", "val"))
    val_texts = [chat.template.render(c) for c in val_c]
    meta = {
        "key": "chat",
        "prep_version": TEXT_PREP_VERSION,
        "name": cfg.name,
        "source": f"{source.describe()} ({len(convs)} conversations)",
        "format": "chat",
        "split": "conversations",
        "documents": {"train": len(train_c), "val": len(val_c)},
        "tokens": {"train": len(train), "val": len(val)},
        "chat": {
            "template": chat.template.kind,
            "assistant_tokens": {"train": int(train_mask.sum()), "val": int(val_mask.sum())},
        },
        "val_chars": sum(len(t) for t in val_texts),
        "val_bytes": sum(len(t.encode("utf-8")) for t in val_texts),
        "vocab_size": tok.vocab_size,
        "tokenizer": tok.kind,
        "dtype": dtype.name,
        "cached": False,
        "cache_dir": None,
    }
    if scrubbed is not None:
        meta["pii_scrubbed"] = scrubbed
    return TextDataset(
        cfg.name,
        tok,
        train.astype(dtype),
        val.astype(dtype),
        _public_info(meta),
        meta["val_chars"],
        meta["val_bytes"],
        _train_text="\n".join(chat.template.render(c) for c in train_c),
        chat=chat,
    )


def _prepare(
    source: _Source, cfg: TextDataConfig, spec: str, given: Tokenizer | None, key: str, root: Path | None
) -> TextDataset:
    """The slow path: read, split, train the tokenizer, tokenise, and write the cache folder atomically."""
    docs, scrubbed = scrub_if_asked(_source_documents(source, cfg), cfg)
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
    if scrubbed is not None:
        meta["pii_scrubbed"] = scrubbed
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
        "pii_scrubbed",
        "format",
        "chat",
    )
    out = {k: meta[k] for k in keys if k in meta}
    out["cache_key"] = meta["key"]
    return out
