"""The green-list text watermark of Kirchenbauer et al. (2023, "A Watermark for Large Language Models").

At each generated position the vocabulary is split, pseudo-randomly, into a green list of ``gamma * V``
tokens and the rest; the split is a keyed function of the secret key and the previous token. ``delta`` is
added to the green tokens' logits before sampling, so a watermarked text holds more green tokens than the
``gamma`` fraction chance gives. The detector needs the key and the tokenizer, not the model: it counts the
green tokens ``G`` among the ``T`` tokens it scores (each with its own previous token) and reports

    z = (G - gamma * T) / sqrt(T * gamma * (1 - gamma)),   p = P(N(0, 1) >= z)  (one-sided)

and "watermarked" when ``z >= z_threshold`` (4 by default: a one-sided false-positive rate of ~3e-5).

The split: ``blake2b(key, prev)`` seeds a CPU :class:`torch.Generator`, whose ``randperm(V)`` first
``round(gamma * V)`` ids are green: fast, deterministic, and the same whatever device the model runs on.

The key: one per run store, ``<store>/.keys/text-watermark.key`` (32 random bytes, mode 0600, written
atomically on first use; :func:`store_key`). Recipes hold only its ``key_id`` (a short hash), never the key.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

KEY_BYTES = 32
KEY_DIR = ".keys"
KEY_FILE = "text-watermark.key"
SCHEME = "kirchenbauer"


@dataclass
class DetectionResult:
    """What :meth:`TextWatermark.detect` finds in one text."""

    z: float
    p_value: float
    tokens_scored: int
    green: int
    watermarked: bool
    gamma: float
    z_threshold: float
    key_id: str

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def key_id(key: bytes) -> str:
    """A short public name of a key (12 hex digits of its sha256): recorded in recipes in place of the key."""
    return hashlib.sha256(b"genloop-text-watermark\0" + key).hexdigest()[:12]


def key_path(store_root: str | os.PathLike) -> Path:
    return Path(store_root) / KEY_DIR / KEY_FILE


def store_key(store_root: str | os.PathLike | None = None) -> bytes:
    """The run store's watermark key, created on first use (``os.urandom``, mode 0600, written atomically).

    Two processes creating it at once: the file appears by an atomic link, so the second keeps the first's.
    """
    from ..paths import runs_dir

    path = key_path(runs_dir(store_root))
    if path.is_file():
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.parent / f".{KEY_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic and never replaces: a key another process made first wins
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ConfigError(f"the watermark key {path} is damaged ({len(key)} bytes, expected {KEY_BYTES})")
    return key


class TextWatermark:
    """A logits processor that marks text, and the detector that finds the mark.

    ``wm(logits, prev)``: ``logits`` (B, V), ``prev`` (B,) the previous token of each row -> logits with
    ``delta`` added to each row's green list. ``wm.detect_ids(ids)`` / ``wm.detect(text, encode)`` score a text.
    """

    def __init__(
        self,
        key: bytes,
        gamma: float = 0.25,
        delta: float = 2.0,
        z_threshold: float = 4.0,
        ignore_repeated: bool = True,
        vocab_size: int | None = None,
    ) -> None:
        """``vocab_size``: the tokenizer's; the green lists are drawn over it (a model whose logits are padded
        past it, as many are, then gets no bias on the padding, and the detector, which knows only the
        tokenizer, draws the same lists). None: the width of the logits."""
        check_settings(gamma, delta, z_threshold)
        if not isinstance(key, bytes) or len(key) < 16:
            raise ConfigError("the watermark key must be at least 16 bytes")
        self.key, self.gamma, self.delta = key, float(gamma), float(delta)
        self.z_threshold, self.ignore_repeated = float(z_threshold), bool(ignore_repeated)
        self.vocab_size = vocab_size
        self.key_id = key_id(key)
        self._masks: dict[tuple[int, int], torch.Tensor] = {}

    def recipe(self) -> dict[str, Any]:
        """What a recipe records: the scheme and settings, and the key's id (never the key)."""
        return {"scheme": SCHEME, "gamma": self.gamma, "delta": self.delta, "key_id": self.key_id}

    def _seed(self, prev: int) -> int:
        digest = hashlib.blake2b(int(prev).to_bytes(8, "little", signed=True), key=self.key, digest_size=8).digest()
        return int.from_bytes(digest, "little") & ((1 << 63) - 1)

    def green_size(self, vocab_size: int) -> int:
        return max(1, min(vocab_size - 1, round(self.gamma * vocab_size)))

    def green_list(self, prev: int, vocab_size: int) -> torch.Tensor:
        """The green token ids (sorted) after token ``prev``."""
        return self.green_mask(prev, vocab_size).nonzero()[:, 0]

    def green_mask(self, prev: int, vocab_size: int) -> torch.Tensor:
        """A (V,) bool CPU tensor, True on the green tokens after ``prev`` (cached per ``(prev, V)``)."""
        cache_key = (int(prev), int(vocab_size))
        mask = self._masks.get(cache_key)
        if mask is None:
            g = torch.Generator().manual_seed(self._seed(prev))
            perm = torch.randperm(vocab_size, generator=g)
            mask = torch.zeros(vocab_size, dtype=torch.bool)
            mask[perm[: self.green_size(vocab_size)]] = True
            if len(self._masks) > 65_536:
                self._masks.clear()
            self._masks[cache_key] = mask
        return mask

    def __call__(self, logits: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        if self.delta == 0:
            return logits
        width = logits.shape[-1]
        vocab = min(width, self.vocab_size or width)
        masks = torch.zeros(len(prev), width, dtype=logits.dtype)
        masks[:, :vocab] = torch.stack([self.green_mask(int(p), vocab) for p in prev.tolist()]).to(logits.dtype)
        return logits + masks.to(logits.device) * self.delta

    def detect_ids(self, ids: Sequence[int], vocab_size: int) -> DetectionResult:
        """Score token ids: each token after the first, with the token before it; with ``ignore_repeated``
        a ``(prev, token)`` pair is scored once (a repeated phrase then cannot inflate or deflate ``z``)."""
        ids = [int(i) for i in ids]
        seen: set[tuple[int, int]] = set()
        scored = green = 0
        for prev, tok in zip(ids, ids[1:]):
            if self.ignore_repeated:
                if (prev, tok) in seen:
                    continue
                seen.add((prev, tok))
            if not 0 <= tok < vocab_size:
                raise ConfigError(f"token id {tok} is outside the vocabulary (0..{vocab_size - 1})")
            scored += 1
            green += bool(self.green_mask(prev, vocab_size)[tok])
        return self._result(green, scored)

    def detect(self, text: str, encode: Any, vocab_size: int) -> DetectionResult:
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("nothing to check: the text is empty")
        ids = list(encode(text))
        if len(ids) < 2:
            raise ConfigError(f"the text has {len(ids)} token; the watermark detector needs at least 2")
        return self.detect_ids(ids, vocab_size)

    def _result(self, green: int, scored: int) -> DetectionResult:
        from scipy.stats import norm

        gamma = self.gamma
        z = (green - gamma * scored) / math.sqrt(scored * gamma * (1 - gamma)) if scored else 0.0
        p = float(norm.sf(z))
        return DetectionResult(
            z=float(z),
            p_value=p,
            tokens_scored=scored,
            green=green,
            watermarked=bool(scored) and z >= self.z_threshold,
            gamma=gamma,
            z_threshold=self.z_threshold,
            key_id=self.key_id,
        )


def check_settings(gamma: Any, delta: Any, z_threshold: Any = 4.0) -> None:
    """One :class:`ConfigError` line per bad setting."""
    problems = []
    if not (isinstance(gamma, (int, float)) and 0 < gamma < 1):
        problems.append(f"watermark gamma must be in (0, 1), got {gamma!r}")
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta >= 0):
        problems.append(f"watermark delta must be a finite number >= 0, got {delta!r}")
    if not (isinstance(z_threshold, (int, float)) and math.isfinite(z_threshold)):
        problems.append(f"watermark z_threshold must be a finite number, got {z_threshold!r}")
    if problems:
        raise ConfigError("\n".join(problems))


def for_store(store_root: str | os.PathLike | None = None, **settings: Any) -> TextWatermark:
    """The watermark of a run store (its key, created on first use) with ``settings`` (gamma, delta,
    z_threshold, ignore_repeated, vocab_size)."""
    check_settings(settings.get("gamma", 0.25), settings.get("delta", 2.0), settings.get("z_threshold", 4.0))
    return TextWatermark(store_key(store_root), **settings)


def detect_text(text: str, run_or_pipeline: Any, runs_dir: str | os.PathLike | None = None, **settings: Any):
    """Is ``text`` watermarked by this run store's key? ``run_or_pipeline``: a run id or a loaded
    :class:`~genloop.generation.text_pipeline.TextPipeline`; ``settings``: gamma, z_threshold,
    ignore_repeated (as generated; the defaults are the defaults of generation).

    Returns a :class:`DetectionResult` (z, p_value, tokens_scored, green, watermarked). Only the run's
    tokenizer is loaded for a run id, not its weights.
    """
    tokenizer, store = _tokenizer_and_store(run_or_pipeline, runs_dir)
    settings.setdefault("delta", 2.0)
    wm = for_store(store, **settings)
    return wm.detect(text, tokenizer.encode, tokenizer.vocab_size)


def detect_in_store(
    text: str, runs_dir: str | os.PathLike | None = None, **settings: Any
) -> tuple[str | None, DetectionResult | None]:
    """For a text of unknown origin (``genloop verify --text FILE``): score it with the tokenizer of every
    text run in the store (each distinct tokenizer once) and return ``(run_id, result)`` of the highest z
    — a run whose tokenizer reads it as watermarked if any does; ``(None, None)`` for a store without text
    runs. The key is the store's, shared by all its runs, so which run made the text is known only as far
    as tokenizers differ; a recipe's ``key_id`` names the key that marked it."""
    from ..modalities.text.tokenizers import load_tokenizer
    from ..paths import runs_dir as default_runs
    from ..runs import RunStore
    from ..serialization import sha256_file

    store = RunStore(runs_dir)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("nothing to check: the text is empty")
    settings.setdefault("delta", 2.0)
    wm: TextWatermark | None = None
    best: tuple[str | None, DetectionResult | None] = (None, None)
    seen: set[tuple[str, ...]] = set()
    for row in store.list():
        folder = store.root / row.id / "tokenizer"
        if not folder.is_dir():
            continue
        fingerprint = tuple(sorted(f"{p.name}:{sha256_file(p)}" for p in folder.iterdir() if p.is_file()))
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        try:
            tok = load_tokenizer(folder)
        except (ConfigError, OSError, ValueError):
            continue
        wm = wm or for_store(default_runs(runs_dir), **settings)
        try:
            result = wm.detect(text, tok.encode, tok.vocab_size)
        except ConfigError:  # too short for this tokenizer
            continue
        if best[1] is None or result.z > best[1].z:
            best = (row.id, result)
    return best


def _tokenizer_and_store(run_or_pipeline: Any, runs_dir: str | os.PathLike | None) -> tuple[Any, Path]:
    if hasattr(run_or_pipeline, "tokenizer"):
        run_dir = getattr(run_or_pipeline, "run_dir", None)
        if run_dir is not None:
            return run_or_pipeline.tokenizer, Path(run_dir).parent
        from ..paths import runs_dir as default_runs

        return run_or_pipeline.tokenizer, default_runs(runs_dir)
    from ..modalities.text.tokenizers import load_tokenizer
    from ..runs import RunStore

    run = RunStore(runs_dir).get(str(run_or_pipeline))
    if not run.files.tokenizer.exists():
        raise ConfigError(f"run {run.id} has no tokenizer: the text watermark applies to text runs")
    return load_tokenizer(run.files.tokenizer), run.dir.parent


__all__ = [
    "TextWatermark",
    "DetectionResult",
    "detect_text",
    "detect_in_store",
    "store_key",
    "for_store",
    "key_id",
    "check_settings",
]
