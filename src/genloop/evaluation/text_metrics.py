"""Text metrics with stated protocols: held-out loss, diversity and memorisation, each with its floor.

A text model is judged on three questions, and every number here comes with the protocol that produced it:

* **How well does it predict held-out text?** :func:`sliding_window_loss` gives the mean next-token
  cross-entropy over a token stream, every token scored exactly once, with a stated amount of context
  (Hugging Face's strided-perplexity protocol). :func:`bits_per_unit` turns it into bits per character or
  per byte, which — unlike a per-token loss — compares models with different tokenizers.
* **Are its samples diverse?** :func:`distinct_n` (Li et al. 2016) and :func:`self_bleu` (Texygen,
  Zhu et al. 2018).
* **Does it copy its training text?** :func:`longest_verbatim_span` / :func:`memorization`: the longest
  substring of each sample found verbatim in the training text, through a :class:`CorpusIndex` (a suffix
  array) built once per corpus.

None of these means much alone. Real text repeats itself too: a held-out paragraph of Shakespeare shares
a 20-character span with the rest of the plays, and two real paragraphs share n-grams. So each diversity
and memorisation statistic is reported beside the same statistic on held-out real text of the same
length (:func:`text_floor`): a model sampling fresh text from the data distribution should sit near that
floor, not near zero.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError

# ------------------------------------------------------------------------------------- held-out loss


def _as_token_array(tokens: Any) -> np.ndarray:
    """A 1-D stream of token ids (numpy, memmap, torch or a sequence) as int64 numpy, checked."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise DataError(f"tokens must be a 1-D stream of token ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"tokens must be integer token ids, got dtype {arr.dtype}")
    return arr


def _logits_of(out: Any) -> torch.Tensor:
    """The logits tensor of a model's output: a tensor, a ``(logits, cache)`` tuple or an object with ``.logits``."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"logits_fn must return a (B, T, V) tensor of logits, got {type(out).__name__}")
    return out


@torch.inference_mode()
def sliding_window_loss(
    logits_fn: Callable[[torch.Tensor], Any],
    tokens: Any,
    block_size: int,
    stride: int | None = None,
    batch_size: int = 16,
    max_tokens: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Mean next-token cross-entropy (nats per token) over a token stream, each token scored exactly once.

    Why a protocol: a per-token loss depends on how much context each token was predicted from. Cutting
    the stream into non-overlapping blocks predicts the first token of every block from nothing, which
    inflates the loss of a model with a long context; scoring every token with a full window costs one
    forward pass per token. The strided protocol sits between the two and states its cost and context.

    Protocol (Hugging Face's "perplexity of fixed-length models", in nanoGPT's input/target layout):
    the targets are ``tokens[1:]`` (the first token has nothing to be predicted from). Window ``k`` feeds
    the model ``tokens[k*stride : k*stride + block_size]`` and predicts the next token at each of those
    positions; windows start every ``stride`` tokens (default ``block_size // 2``), and stop at the first
    window that reaches the last target (so only that one may be shorter than ``block_size``). In each
    window only the targets no earlier window scored are counted — the last ``stride`` of a full window,
    all of window 0 — so every target is scored exactly once, and each has at least
    ``block_size - stride + 1`` tokens of context except the first ``block_size`` targets of the stream.
    ``stride == block_size`` gives non-overlapping blocks (nanoGPT's ``estimate_loss`` layout, cheapest);
    ``stride == 1`` gives every target a full window (most expensive). ``max_tokens`` scores only the
    first ``max_tokens`` targets, i.e. the stream ``tokens[:max_tokens + 1]``; ``tokens_scored`` says how
    many were scored.

    ``logits_fn`` maps a ``(B, T)`` long tensor on ``device`` to ``(B, T, V)`` next-token logits (a
    ``(logits, ...)`` tuple or an object with ``.logits`` also works); it must be causal — the usual
    language model, already in eval mode. It runs under ``torch.inference_mode()`` on up to
    ``batch_size`` windows per call; the cross-entropy is taken in float32 and summed in float64.

    Returns ``{"loss", "perplexity" (= exp(loss)), "tokens_scored", "block_size", "stride", "windows"}``.
    """
    toks = _as_token_array(tokens)
    if not (isinstance(block_size, (int, np.integer)) and block_size >= 1):
        raise ConfigError(f"block_size must be a positive integer, got {block_size!r}")
    block_size = int(block_size)
    stride = max(1, block_size // 2) if stride is None else stride
    if not (isinstance(stride, (int, np.integer)) and 1 <= stride <= block_size):
        raise ConfigError(f"stride must be an integer in [1, block_size={block_size}], got {stride!r}")
    stride = int(stride)
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_tokens is not None and not (isinstance(max_tokens, (int, np.integer)) and max_tokens >= 1):
        raise ConfigError(f"max_tokens must be a positive integer or None, got {max_tokens!r}")
    if toks.size < 2:
        raise DataError(f"a next-token loss needs at least 2 tokens, got {toks.size}")
    m = toks.size - 1 if max_tokens is None else min(toks.size - 1, int(max_tokens))  # targets 1..m
    stream = np.ascontiguousarray(toks[: m + 1], dtype=np.int64)
    if stream.min() < 0:
        raise DataError("tokens contain negative ids")

    # Window k starts at k*stride; the last one is the first that reaches target m.
    n_windows = 1 + max(0, -(-(m - block_size) // stride))
    starts = np.arange(n_windows, dtype=np.int64) * stride
    full = starts[starts + block_size <= m]
    last_short = starts[-1] + block_size > m
    offsets = np.arange(block_size, dtype=np.int64)
    skip_full = block_size - stride  # targets of a later window already scored by the one before

    total, count, vocab = 0.0, 0, None

    def run(batch_starts: np.ndarray, length: int) -> None:
        nonlocal total, count, vocab
        idx = batch_starts[:, None] + offsets[None, :length]
        x = torch.from_numpy(stream[idx]).to(device)
        y = torch.from_numpy(stream[idx + 1]).to(device)
        logits = _logits_of(logits_fn(x))
        if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(x.shape):
            raise ValueError(
                f"logits_fn returned shape {tuple(logits.shape)} for input {tuple(x.shape)}; expected (B, T, V)"
            )
        if vocab is None:
            vocab = int(logits.shape[-1])
            if int(stream.max()) >= vocab:
                raise DataError(f"token id {int(stream.max())} is outside the model's vocabulary of {vocab}")
        lo = np.where(batch_starts == 0, 0, skip_full)
        first = int(lo.min())  # positions before it are scored by no window of this batch: skip them
        logits, y = logits[:, first:], y[:, first:]
        nll = F.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1), reduction="none").view(y.shape)
        pos = torch.arange(first, length, device=nll.device)[None, :]
        keep = pos >= torch.from_numpy(lo).to(nll.device)[:, None]
        total += float(nll.double()[keep].sum())
        count += int(keep.sum())

    for i in range(0, full.size, batch_size):
        run(full[i : i + batch_size], block_size)
    if last_short:
        run(starts[-1:], int(m - starts[-1]))
    assert count == m, (count, m)  # every target scored exactly once

    loss = total / count
    return {
        "loss": loss,
        "perplexity": math.inf if loss > 700 else math.exp(loss),  # NaN stays NaN
        "tokens_scored": count,
        "block_size": block_size,
        "stride": stride,
        "windows": int(n_windows),
    }


def bits_per_unit(loss_nats_per_token: float, tokens: int, units: int) -> float:
    """Convert a mean per-token loss in nats to bits per character or per byte of the same text.

    ``loss * tokens / (units * ln 2)``: the total code length of the scored text in bits, divided by its
    length in ``units``. Per-token losses of models with different tokenizers are not comparable (a BPE
    token carries several characters); bits per character (``units`` = characters) or per byte
    (``units`` = UTF-8 bytes) are. ``tokens`` and ``units`` must describe the *same* text — the tokens
    that were scored and the characters/bytes they decode to — or the number is meaningless.
    """
    if not (isinstance(tokens, (int, np.integer)) and tokens >= 0):
        raise DataError(f"tokens must be a non-negative integer, got {tokens!r}")
    if not (isinstance(units, (int, np.integer)) and units >= 1):
        raise DataError(f"units (characters or bytes of the scored text) must be a positive integer, got {units!r}")
    return float(loss_nats_per_token) * int(tokens) / (int(units) * math.log(2))


# ------------------------------------------------------------------------------------------ diversity


def _check_texts(texts: Any, what: str = "texts") -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise DataError(f"{what} must be a list of strings, got {type(texts).__name__}")
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise DataError(f"{what} must be a list of strings, found a {type(bad).__name__}")
    return list(texts)


def distinct_n(texts: list[str], n: int, unit: str = "word") -> float:
    """Distinct-n (Li et al. 2016): distinct n-grams / total n-grams, pooled over all samples.

    Pooled, not averaged per sample, so it measures diversity *across* samples too: 100 copies of one
    fluent paragraph score low. ``unit="word"`` splits on whitespace (``str.split()``); ``unit="char"``
    takes every character, spaces and newlines included. A sample shorter than ``n`` units adds no
    n-grams; 0.0 when there are none at all. Higher is more diverse; compare only at equal sample lengths
    (the ratio falls as text gets longer), which is why the floor uses excerpts of the samples' length.
    """
    texts = _check_texts(texts)
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    if unit not in ("word", "char"):
        raise ConfigError(f"unit must be 'word' or 'char', got {unit!r}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for t in texts:
        units = t.split() if unit == "word" else list(t)
        grams = list(zip(*(units[i:] for i in range(n))))
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def _ngram_counts(words: list[str], max_n: int) -> list[Counter]:
    return [Counter(zip(*(words[i:] for i in range(k)))) for k in range(1, max_n + 1)]


def self_bleu(texts: list[str], max_n: int = 4, max_samples: int | None = 200, seed: int = 0) -> float:
    """Self-BLEU (Texygen, Zhu et al. 2018): how much each sample resembles the others. Higher = less diverse.

    Protocol: each sample in turn is the hypothesis and *all other* samples its references; the score is
    NLTK's ``sentence_bleu`` with uniform weights over n-gram orders 1..``max_n`` and
    ``SmoothingFunction().method1`` (epsilon 0.1 added to zero n-gram matches), on whitespace-split words;
    the result is the mean over samples. Identical samples give 1.0, samples with disjoint vocabularies 0.0.
    With more than ``max_samples`` texts (cost is quadratic), a seeded random subset of that size is used
    for both hypotheses and references, as Texygen's fast variant does; ``None`` uses all.

    Implementation: the value is NLTK's to floating-point rounding (the tests check it against
    ``nltk.translate.bleu_score.sentence_bleu``), but computed in one pass instead of re-counting every
    reference's n-grams for every hypothesis: for each n-gram we keep its largest and second-largest
    count over the samples, so "the most often any *other* sample has it" — BLEU's clipping count — is
    a lookup. It needs no NLTK at run time.
    """
    texts = _check_texts(texts)
    if not (isinstance(max_n, (int, np.integer)) and max_n >= 1):
        raise ConfigError(f"max_n must be a positive integer, got {max_n!r}")
    if max_samples is not None and not (isinstance(max_samples, (int, np.integer)) and max_samples >= 2):
        raise ConfigError(f"max_samples must be an integer >= 2 or None, got {max_samples!r}")
    if len(texts) < 2:
        raise ConfigError(f"self-BLEU needs at least 2 texts (each is scored against the others), got {len(texts)}")
    if max_samples is not None and len(texts) > max_samples:
        pick = np.random.default_rng(seed).choice(len(texts), size=int(max_samples), replace=False)
        texts = [texts[i] for i in sorted(pick.tolist())]

    words = [t.split() for t in texts]
    counts = [_ngram_counts(w, max_n) for w in words]
    lengths = [len(w) for w in words]
    # per order: n-gram -> (best count, index of a sample with it, second-best count over the other samples)
    top: list[dict[tuple[str, ...], list[int]]] = [{} for _ in range(max_n)]
    for i, per_order in enumerate(counts):
        for k, cnt in enumerate(per_order):
            tk = top[k]
            for g, c in cnt.items():
                e = tk.get(g)
                if e is None:
                    tk[g] = [c, i, 0]
                elif c > e[0]:
                    e[2], e[0], e[1] = e[0], c, i
                elif c > e[2]:
                    e[2] = c

    scores = []
    for i, per_order in enumerate(counts):
        hyp_len = lengths[i]
        ref_lens = lengths[:i] + lengths[i + 1 :]
        closest = min(ref_lens, key=lambda r: (abs(r - hyp_len), r))  # NLTK's closest_ref_length
        nums, dens = [], []
        for k, cnt in enumerate(per_order):
            tk, num = top[k], 0
            for g, c in cnt.items():
                best, who, second = tk[g]
                num += min(c, second if who == i else best)
            nums.append(num)
            dens.append(max(1, sum(cnt.values())))
        if nums[0] == 0:  # NLTK returns 0 when no unigram matches (this also covers an empty hypothesis)
            scores.append(0.0)
            continue
        bp = 1.0 if hyp_len > closest else math.exp(1 - closest / hyp_len)
        w = 1.0 / max_n
        log_p = math.fsum(w * math.log((num if num else 0.1) / den) for num, den in zip(nums, dens))
        scores.append(bp * math.exp(log_p))
    return float(np.mean(scores))


# ------------------------------------------------------------------------------------- memorisation


def _code_points(text: str) -> np.ndarray:
    """The code points of ``text`` (the units Python's str indexes by) as uint32."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _suffix_array(codes: np.ndarray) -> np.ndarray:
    """Suffix array by prefix doubling in numpy: O(n log n) per round, log2(longest repeat) rounds.

    Ranks start at 1 so that 0 can stand for "past the end": a suffix that is a prefix of another sorts
    first, exactly as Python compares strings, which the binary searches rely on.
    """
    n = codes.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, rank = np.unique(codes, return_inverse=True)
    rank = rank.astype(np.int64).reshape(-1) + 1
    k = 1
    while True:
        second = np.zeros(n, dtype=np.int64)
        if k < n:
            second[: n - k] = rank[k:]
        key = rank * (n + 1) + second
        sa = np.argsort(key, kind="quicksort")
        sorted_key = key[sa]
        new_rank = np.empty(n, dtype=np.int64)
        new_rank[sa] = np.cumsum(np.concatenate(([1], sorted_key[1:] != sorted_key[:-1])))
        rank = new_rank
        if rank[sa[-1]] == n or k >= n:  # all ranks distinct: the order is final
            return sa
        k *= 2


class CorpusIndex:
    """A training text indexed once for fast "is this substring in the corpus?" queries.

    Method: a suffix array (the start offsets of all suffixes of the text in sorted order), built in numpy
    by prefix doubling — under a second for a 1 MB text; the array takes 8 bytes per character. A substring
    occurs in the text iff it is a prefix of some suffix, which a binary search over the array finds in
    about log2(len(text)) slice comparisons (:meth:`find`). The index works on Unicode code points,
    i.e. on Python ``str`` offsets, so any script works and offsets agree with slicing.

    :meth:`longest_span` finds the longest substring of a sample present in the text by growing a
    candidate window one character at a time (matching statistics): each step either confirms a window one
    longer than the best so far or moves the window start on by one, so a sample of length L costs O(L)
    lookups; while the current match keeps matching the text at the same place, growing it is a single
    character comparison. 100 samples of 500 characters against 1 MB take well under a second.
    """

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise DataError(f"the corpus must be a str, got {type(text).__name__}")
        self.text = text
        self._sa = _suffix_array(_code_points(text))

    def __len__(self) -> int:
        return len(self.text)

    def find(self, needle: str) -> int:
        """An offset in the text where ``needle`` occurs (not necessarily the first), or -1."""
        if not needle:
            return 0
        text, sa, n = self.text, self._sa, len(needle)
        lo, hi = 0, sa.size
        while lo < hi:  # first suffix whose n-character prefix is >= needle
            mid = (lo + hi) // 2
            p = int(sa[mid])
            if text[p : p + n] < needle:
                lo = mid + 1
            else:
                hi = mid
        if lo < sa.size and text.startswith(needle, int(sa[lo])):
            return int(sa[lo])
        return -1

    def __contains__(self, needle: str) -> bool:
        return self.find(needle) >= 0

    def longest_span(self, sample: str) -> tuple[int, int]:
        """``(length, start)`` of the longest substring of ``sample`` that occurs verbatim in the text.

        Ties go to the earliest start; ``(0, 0)`` when no character of the sample occurs in the text.
        """
        text, n_text, n = self.text, len(self.text), len(sample)
        best, best_start, i = 0, 0, 0
        while i + best < n:
            pos = self.find(sample[i : i + best + 1])  # can the best be beaten by a window starting at i?
            if pos < 0:
                i += 1
                continue
            j = i + best + 1  # sample[i:j] occurs at pos; grow it as far as it goes
            while j < n:
                q = pos + (j - i)
                if q < n_text and text[q] == sample[j]:
                    j += 1
                    continue
                p2 = self.find(sample[i : j + 1])
                if p2 < 0:
                    break
                pos, j = p2, j + 1
            best, best_start = j - i, i
            i += 1
        return best, best_start


def _index(corpus: str | CorpusIndex) -> CorpusIndex:
    if isinstance(corpus, CorpusIndex):
        return corpus
    if isinstance(corpus, str):
        return CorpusIndex(corpus)
    raise DataError(f"corpus must be a str or a CorpusIndex, got {type(corpus).__name__}")


def longest_verbatim_span(sample: str, corpus: str | CorpusIndex) -> tuple[int, int]:
    """``(length in characters, start offset in sample)`` of the longest substring of ``sample`` that
    occurs verbatim in ``corpus``; ties go to the earliest start, ``(0, 0)`` when nothing matches.

    Exact (no normalisation of case or whitespace), in Unicode code points. Pass a :class:`CorpusIndex`
    when scoring several samples: a ``str`` corpus is indexed anew on every call.
    """
    if not isinstance(sample, str):
        raise DataError(f"sample must be a str, got {type(sample).__name__}")
    return _index(corpus).longest_span(sample)


def memorization(samples: list[str], corpus: str | CorpusIndex, threshold: int = 50) -> dict[str, Any]:
    """Longest verbatim span of each sample in the training text, summarised.

    Returns ``longest_span_max``, ``longest_span_mean`` and ``longest_span_median`` (characters),
    ``copy_rate`` — the share of samples whose longest span is at least ``threshold`` characters — with
    ``threshold`` itself, ``n`` samples, and ``worst``: the 5 samples with the longest spans (longest first,
    ties by index) as ``{"sample", "length", "start", "text"}``, the span's text cut to 200 characters.

    Real text shares spans with its own training split (names, stock phrases, repeated lines), so report
    these beside the same statistics for held-out real text of the samples' length
    (:func:`text_floor`): only a rate well above that floor points to memorisation. The 50-character
    default is about ten words — longer than the stock phrases a language shares, short of a sentence.
    """
    samples = _check_texts(samples, "samples")
    if not samples:
        raise DataError("memorization needs at least one sample")
    if not (isinstance(threshold, (int, np.integer)) and threshold >= 1):
        raise ConfigError(f"threshold must be a positive integer (characters), got {threshold!r}")
    index = _index(corpus)
    spans = [index.longest_span(s) for s in samples]
    lengths = np.array([length for length, _ in spans], dtype=np.int64)
    order = sorted(range(len(samples)), key=lambda i: (-lengths[i], i))[:5]
    worst = [
        {
            "sample": i,
            "length": int(lengths[i]),
            "start": spans[i][1],
            "text": samples[i][spans[i][1] : spans[i][1] + min(int(lengths[i]), 200)],
        }
        for i in order
    ]
    return {
        "longest_span_max": int(lengths.max()),
        "longest_span_mean": float(lengths.mean()),
        "longest_span_median": float(np.median(lengths)),
        "copy_rate": float((lengths >= threshold).mean()),
        "threshold": int(threshold),
        "n": len(samples),
        "worst": worst,
    }


def text_floor(val_text: str, corpus: str | CorpusIndex | None, sample_chars: int, n: int, seed: int = 0) -> list[str]:
    """``n`` seeded excerpts of held-out real text, about ``sample_chars`` characters each, to score with
    the same diversity and memorisation metrics as the samples (the floor).

    Protocol: the held-out text is cut into ``n`` equal segments and one excerpt drawn at a seeded random
    offset inside each, so excerpts never overlap and cover the whole text (when the text is shorter than
    ``n * sample_chars`` they are drawn anywhere instead and may overlap; a warning says so). Each excerpt
    starts at the beginning of a word and, when it would end mid-word, is cut back to the last whitespace,
    so it is at most ``sample_chars`` long and usually within a word or two of it.

    ``corpus`` (the training text, or its index, or None) is used only for a leak check: if most excerpts
    occur verbatim *as a whole* in the training text, the held-out text overlaps the training text and
    the floor would be meaningless, so a warning is issued.
    """
    if not isinstance(val_text, str):
        raise DataError(f"held-out text must be a str, got {type(val_text).__name__}")
    if not (isinstance(sample_chars, (int, np.integer)) and sample_chars >= 1):
        raise ConfigError(f"sample_chars must be a positive integer, got {sample_chars!r}")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    sample_chars, n = int(sample_chars), int(n)
    total = len(val_text)
    if len(val_text.strip()) < sample_chars:
        raise DataError(f"held-out text has {len(val_text.strip())} characters, fewer than sample_chars={sample_chars}")
    rng = np.random.default_rng(seed)
    if n * sample_chars <= total:
        seg = total // n
        bounds = [(k * seg, (k + 1) * seg if k < n - 1 else total) for k in range(n)]
    else:
        warnings.warn(
            f"held-out text ({total} characters) is shorter than {n} x {sample_chars}: floor excerpts overlap",
            stacklevel=2,
        )
        bounds = [(0, total)] * n

    out = []
    for lo, hi in bounds:
        start = lo + int(rng.integers(0, hi - lo - sample_chars + 1))
        s = start
        if s > 0 and not val_text[s - 1].isspace():  # starts mid-word: skip to the end of that word
            while s < hi and not val_text[s].isspace():
                s += 1
        while s < hi and val_text[s].isspace():  # and past the whitespace after it
            s += 1
        if s >= hi:  # a segment that is one long word: keep the raw offset
            s = start
        e = min(s + sample_chars, hi)
        excerpt = val_text[s:e]
        if e < total and not val_text[e].isspace():  # ends mid-word: cut back to the last whitespace
            cut = max((k for k, ch in enumerate(excerpt) if ch.isspace()), default=-1)
            if cut > 0:
                excerpt = excerpt[:cut]
        out.append(excerpt.rstrip())

    if corpus is not None:
        contains = (lambda x: x in corpus) if isinstance(corpus, (str, CorpusIndex)) else None
        if contains is None:
            raise DataError(f"corpus must be a str, a CorpusIndex or None, got {type(corpus).__name__}")
        leaked = sum(bool(x) and contains(x) for x in out)
        if leaked > len(out) / 2:
            warnings.warn(
                f"{leaked} of {len(out)} held-out excerpts occur verbatim in the training text: "
                "the held-out split overlaps the training split, so the floor is meaningless",
                stacklevel=2,
            )
    return out


__all__ = [
    "sliding_window_loss",
    "bits_per_unit",
    "distinct_n",
    "self_bleu",
    "CorpusIndex",
    "longest_verbatim_span",
    "memorization",
    "text_floor",
]
