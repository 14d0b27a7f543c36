"""Tokenizers for language models: characters, byte-level BPE (trained on the train split), and a local
Hugging Face tokenizer folder; saved beside a checkpoint and loaded back by ``load_tokenizer``."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError, GenLoopError, NotFoundError
from ...serialization import atomic_write, sha256_file, write_json

EOT = "<|endoftext|>"
UNK = "<unk>"
BPE_MIN_VOCAB = 260  # 256 byte tokens + <|endoftext|> + a few merges
BPE_MAX_VOCAB = 1_000_000
GENLOOP_TOKENIZER_FILE = "genloop_tokenizer.json"  # marks a tokenizer folder written by Tokenizer.save

# Files in an HF tokenizer folder that are never tokenizer state (weights): skipped when hashing one.
_WEIGHT_SUFFIXES = frozenset(".safetensors .bin .pt .pth .ckpt .h5 .msgpack .gguf .onnx .ot".split())

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

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of ``text`` this tokenizer cannot represent (each would become an unknown
        token), in order of first appearance. Byte-level tokenizers represent everything: an empty list."""
        return []

    def token_bytes(self) -> list[bytes | None]:
        """Each token's UTF-8 bytes (None for special tokens), for constrained decoding to check token by token.

        This default decodes tokens one at a time, which is exact for tokenizers whose pieces concatenate;
        byte-level tokenizers override it with the token's exact bytes (which may be half a character)."""
        specials = {self.eot_id, getattr(self, "unk_id", None)}
        return [None if i in specials else self.decode([i]).encode("utf-8") or None for i in range(self.vocab_size)]

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

    def unknown_chars(self, text: str) -> list[str]:
        known = set(self.chars)
        return list(dict.fromkeys(c for c in text if c not in known))

    def decode(self, ids: list[int]) -> str:
        pieces = self._pieces
        try:
            return "".join(pieces[i] for i in ids)
        except (IndexError, TypeError):
            bad = next(i for i in ids if not (isinstance(i, (int, np.integer)) and 0 <= i < self.vocab_size))
            raise DataError(
                f"token id {bad!r} is outside this char tokenizer's vocabulary (0..{self.vocab_size - 1})"
            ) from None

    def token_bytes(self) -> list[bytes | None]:
        return [c.encode("utf-8") for c in self.chars] + [None, None]  # <|endoftext|> and <unk> are not text

    def save(self, directory: Path) -> None:
        _write_marker(
            Path(directory),
            {"kind": "char", "chars": self.chars, "special_tokens": {EOT: self.eot_id, UNK: self.unk_id}},
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(["char", self.chars]).encode()).hexdigest()


def _byte_level_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map (what byte-level BPE vocabularies are spelled in)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return out


class _TokenizersBackend(Tokenizer):
    """Shared by tokenizers built on the HF ``tokenizers`` library (GenLoop's BPE, and fast HF tokenizers)."""

    _backend: Any

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self._backend.encode(_valid_text(text), add_special_tokens=False).ids, dtype=np.int64)

    def encode(self, text: str) -> list[int]:
        return list(self._backend.encode(_valid_text(text), add_special_tokens=False).ids)

    def token_bytes(self) -> list[bytes | None]:
        """Byte-level vocabularies (GPT-2's scheme) map each byte to one printable character: inverted here,
        each token gives its exact bytes. Added (special) tokens are None. Other vocabularies fall back to
        decoding each token alone."""
        backend = self._backend
        if backend is None:
            return super().token_bytes()
        inverse = {c: b for b, c in _byte_level_alphabet().items()}
        added = set(backend.get_added_tokens_decoder()) | {self.eot_id}
        out: list[bytes | None] = []
        for i in range(self.vocab_size):
            piece = backend.id_to_token(i)
            if i in added or piece is None:
                out.append(None)
            elif all(c in inverse for c in piece):
                out.append(bytes(inverse[c] for c in piece))
            else:
                return super().token_bytes()
        return out

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
