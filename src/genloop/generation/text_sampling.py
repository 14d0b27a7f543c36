"""The sampler for every causal language model in GenLoop: one loop, every control, any model.

It drives any object ``lm`` with ``block_size``, ``new_cache(batch_size)`` (an opaque KV cache, or None)
and ``lm(idx, cache=None) -> logits (B, T, V)``; GenLoop's GPT and the Hugging Face adapter both do.

    params = SamplingParams(max_tokens=100, temperature=0.8, top_p=0.95, stop=["\\n\\n"])
    texts = generate_text(lm, tok.encode, tok.decode, "def ", params, seed=0, n=3)

Guarantees the tests hold it to:

- **Seeds per row.** Row ``i`` of a batch draws from its own generator seeded ``seeds[i]``, so any sample
  can be regenerated alone (``n=1, seed=seed+i``), as images are.
- **The cache changes nothing.** Cache and no-cache modes show the model the same window of context at
  every step (the rule is in :func:`window_start`), so they give the same tokens, also past ``block_size``.
- **Streamed text is the final text.** :class:`TextStream` emits only text that can no longer change: it
  holds back half a UTF-8 character (byte-level BPE splits them across tokens) and anything that may
  still become a stop string, so the streamed pieces concatenate to exactly the non-streamed completion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError

MAX_BEAMS = 16
REPLACEMENT_CHAR = "\ufffd"  # what a byte-level decode with errors="replace" shows for half a character


@dataclass
class SamplingParams:
    max_tokens: int = 200
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    repetition_penalty: float = 1.0  # 1.0: off; > 1 discourages tokens already seen (prompt + generated)
    stop: list[str] = field(default_factory=list)  # the text ends before the first of these (excluded)
    num_beams: int = 1  # > 1: beam search (deterministic; temperature, top-k and top-p are ignored)
    length_penalty: float = 1.0  # beam score = sum of log-probabilities / length ** length_penalty
    stop_at_eot: bool = True  # stop at the tokenizer's end-of-text token (excluded from the text)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    def validate(self, max_allowed_tokens: int = 100_000) -> None:
        """Raise one :class:`ConfigError` listing every bad setting, one line each, named as the CLI flags."""
        problems = []
        if not (isinstance(self.max_tokens, int) and 1 <= self.max_tokens <= max_allowed_tokens):
            problems.append(f"--max-tokens must be between 1 and {max_allowed_tokens}, got {self.max_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            problems.append(f"--temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            problems.append(f"--top-k must be an integer >= 0 (0 is off), got {self.top_k}")
        if not 0 < self.top_p <= 1:  # also rejects NaN
            problems.append(f"--top-p must be in (0, 1], got {self.top_p}")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            problems.append(f"--repetition-penalty must be > 0 (1 is off), got {self.repetition_penalty}")
        if not (isinstance(self.num_beams, int) and 1 <= self.num_beams <= MAX_BEAMS):
            problems.append(f"--beams must be between 1 and {MAX_BEAMS}, got {self.num_beams}")
        if not math.isfinite(self.length_penalty):
            problems.append(f"length_penalty must be a finite number, got {self.length_penalty}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            problems.append(f"--stop must be a list of non-empty strings, got {self.stop!r}")
        if problems:
            raise ConfigError("\n".join(problems))


# --- one step: logits -> next token ---------------------------------------------------------------
def process_logits(logits: torch.Tensor, seen: torch.Tensor | None, params: SamplingParams) -> torch.Tensor:
    """(B, V) logits -> float32 logits with every control applied; filtered-out tokens get -inf.

    Order: repetition penalty, temperature, top-k, top-p. The penalty comes first because it is a change of
    the model's scores, not of the sampling; top-p last, so the nucleus is taken from the final distribution.
    Settings that are off do nothing at all (the output equals the input).
    """
    x = logits.float()
    if seen is not None and seen.numel() and params.repetition_penalty != 1.0:
        x = _penalize(x, seen, params.repetition_penalty)
    if params.temperature > 0 and params.temperature != 1.0:
        x = x / params.temperature
    if 0 < params.top_k < x.shape[-1]:
        kth = torch.topk(x, params.top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        x = _nucleus(x, params.top_p)
    return x


def _penalize(x: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty, as Hugging Face applies it: seen tokens' logits shrink toward less likely.

    Dividing a positive logit and multiplying a negative one both lower it (for penalty > 1), which a plain
    division would not do for negative logits.
    """
    seen = seen.to(x.device)
    g = x.gather(1, seen)
    return x.scatter(1, seen, torch.where(g > 0, g / penalty, g * penalty))


def _nucleus(x: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of likeliest tokens whose probability reaches ``top_p`` (never fewer than one)."""
    sorted_x, order = torch.sort(x, dim=-1, descending=True)
    probs = sorted_x.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # what the likelier tokens already cover
    drop_sorted = mass_before >= top_p  # the first token has mass_before 0 < top_p, so it always stays
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return x.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, generators: Sequence[torch.Generator], params: SamplingParams) -> torch.Tensor:
    """The next token of each row of processed ``logits`` (B, V): argmax when greedy, else one draw per row.

    Every row draws from its own CPU generator, so a row's tokens depend only on its seed and its own
    history, never on the other rows of the batch, and are the same on any device.
    """
    if params.greedy:
        return logits.argmax(-1)
    if len(generators) != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows of logits but {len(generators)} generators")
    probs = logits.float().softmax(-1).cpu()
    tokens = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)]
    return torch.cat(tokens).to(logits.device)


# --- the context window and the loop --------------------------------------------------------------
def window_start(length: int, start: int, block_size: int) -> int:
    """Where the model's view of a ``length``-token sequence begins, given where it began last step.

    The view keeps growing until it would exceed ``block_size``; then it slides to the last
    ``block_size - block_size // 4`` tokens. Sliding by a quarter at a time (not one token each step) is
    what lets a KV cache be used past the context: the cache is re-filled once per quarter block, not
    every token. Both modes use this one rule, so they show the model the same context.
    """
    if length - start > block_size:
        return length - max(1, block_size - block_size // 4)
    return start


def model_device(lm: Any) -> torch.device:
    """The device of the model's weights (cpu for a model without parameters)."""
    try:
        return next(lm.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


class _Context:
    """Feeds a growing (B, N) id buffer to the model through the window, returning last-position logits.

    With a cache only the tokens the cache has not seen are fed; a slide of the window starts a fresh
    cache from the new window, so no cache ever holds more than ``block_size`` tokens.
    """

    def __init__(self, lm: Any, batch_size: int, use_cache: bool) -> None:
        self.lm, self.batch_size = lm, batch_size
        self.use_cache = use_cache and callable(getattr(lm, "new_cache", None))
        self.block_size = int(lm.block_size)
        self.start, self.fed, self.cache = 0, 0, None

    def logits(self, ids: torch.Tensor, n: int) -> torch.Tensor:
        start = window_start(n, self.start, self.block_size)
        if self.use_cache and (self.cache is None or start != self.start):
            self.cache, self.fed = self.lm.new_cache(self.batch_size), start
            self.use_cache = self.cache is not None  # a model without a cache recomputes
        self.start = start
        if not self.use_cache:
            return self.lm(ids[:, start:n])[:, -1]
        out = self.lm(ids[:, self.fed:n], cache=self.cache)[:, -1]
        self.fed = n
        return out


def _check_prompt(prompt_ids: Sequence[int]) -> None:
    if len(prompt_ids) == 0:
        raise ConfigError("the prompt has no tokens; to start a new document, pass the end-of-text token as the prompt")


@torch.inference_mode()
def generate_ids(lm: Any, prompt_ids: Sequence[int], params: SamplingParams, seeds: Sequence[int],
                 eot_id: int | None = None, use_cache: bool = True) -> Iterator[torch.Tensor]:
    """Continue one prompt in ``len(seeds)`` rows at once; yield each step's next token of every row (B,).

    A row that has produced the end-of-text token (when ``params.stop_at_eot``) is finished: it yields
    ``eot_id`` from then on, and the loop ends once every row is finished or after ``max_tokens`` steps.
    """
    _check_prompt(prompt_ids)
    if len(seeds) == 0:
        raise ConfigError("generate at least one sequence (got no seeds)")
    device, p, batch = model_device(lm), len(prompt_ids), len(seeds)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    eot = eot_id if params.stop_at_eot else None
    ids = torch.empty(batch, p + params.max_tokens, dtype=torch.long, device=device)
    ids[:, :p] = torch.as_tensor(list(prompt_ids), dtype=torch.long, device=device)
    context = _Context(lm, batch, use_cache)
    done = torch.zeros(batch, dtype=torch.bool)
    penalize = params.repetition_penalty != 1.0
    for n in range(p, p + params.max_tokens):
        logits = process_logits(context.logits(ids, n), ids[:, :n] if penalize else None, params)
        tokens = sample_next(logits, generators, params).cpu()
        if eot is not None:
            tokens = tokens.masked_fill(done, eot)
            done |= tokens == eot
        ids[:, n] = tokens.to(device)
        yield tokens
        if eot is not None and bool(done.all()):
            return


@torch.inference_mode()
def beam_search(lm: Any, prompt_ids: Sequence[int], params: SamplingParams, eot_id: int | None = None) -> list[int]:
    """The likeliest continuation that beam search finds, ending with ``eot_id`` if it reached it.

    Hugging Face's algorithm: each step the ``2 * num_beams`` best extensions are ranked; one that ends at
    end-of-text becomes a finished hypothesis if it ranks within the best ``num_beams``, and the others
    carry on. Search ends when ``num_beams`` hypotheses are finished and no running beam scores better
    than the worst of them (score = sum of log-probabilities / generated length ** length_penalty).
    Temperature, top-k and top-p are ignored (they change sampling, not likelihood); the repetition
    penalty applies. Each step recomputes the window: beams are for small models and short outputs.
    """
    _check_prompt(prompt_ids)
    device, p, width = model_device(lm), len(prompt_ids), params.num_beams
    eot = eot_id if params.stop_at_eot else None
    plain = replace(params, temperature=1.0, top_k=0, top_p=1.0)
    penalize = params.repetition_penalty != 1.0
    beams = torch.as_tensor([list(prompt_ids)], dtype=torch.long, device=device)
    sums = torch.zeros(1, device=device)  # sum of log-probabilities of each running beam
    finished: list[tuple[float, list[int]]] = []
    start = 0

    def score(total: float, length: int) -> float:
        return total / length ** params.length_penalty

    for length in range(1, params.max_tokens + 1):
        start = window_start(beams.shape[1], start, int(lm.block_size))
        logits = process_logits(lm(beams[:, start:])[:, -1], beams if penalize else None, plain)
        vocab = logits.shape[-1]
        totals = (sums[:, None] + logits.log_softmax(-1)).view(-1)
        best = totals.topk(min(2 * width, totals.numel()))
        keep_rows, keep_tokens, keep_sums = [], [], []
        for rank, (total, flat) in enumerate(zip(best.values.tolist(), best.indices.tolist())):
            row, token = divmod(flat, vocab)
            if token == eot:
                if rank < width:
                    finished.append((score(total, length), beams[row, p:].tolist() + [token]))
            else:
                keep_rows.append(row), keep_tokens.append(token), keep_sums.append(total)
            if len(keep_rows) == width:
                break
        finished = sorted(finished, key=lambda h: h[0], reverse=True)[:width]
        if not keep_rows:
            break
        new = torch.as_tensor(keep_tokens, dtype=torch.long, device=device)[:, None]
        beams = torch.cat([beams[keep_rows], new], dim=1)
        sums = torch.as_tensor(keep_sums, device=device)
        if len(finished) == width and score(max(keep_sums), length) <= finished[-1][0]:
            break
    running = [(score(t, beams.shape[1] - p), beams[i, p:].tolist()) for i, t in enumerate(sums.tolist())]
    return max(finished + running, key=lambda h: h[0])[1]


# --- text -----------------------------------------------------------------------------------------
class TextStream:
    """Turns a stream of token ids into text pieces that are safe to print and will never change.

    Each push decodes the whole id list (so any tokenizer's merging rules apply) and emits only the new
    suffix, holding back (a) trailing U+FFFD, which may be half of a multi-byte UTF-8 character split
    across byte-level BPE tokens, and (b) trailing text that may yet become a stop string. When a stop
    string appears it emits the text before it and sets ``stopped``; later pushes are ignored.
    The decode of a longer id list is assumed to extend the decode of a shorter one (true of char and
    byte-level tokenizers once a character is complete).
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self.decode = decode
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""  # everything emitted so far
        self.stopped = False
        self._decoded = ""

    def push(self, token_id: int) -> str:
        """Add one token; return the text that became safe to print ('' if none)."""
        if self.stopped:
            return ""
        self.ids.append(int(token_id))
        self._decoded = self.decode(self.ids)
        return self._emit(final=False)

    def add(self, token_id: int) -> None:
        """Add one token without decoding, for text wanted only at the end: :meth:`finish` decodes once.

        Decoding the whole list every token costs time quadratic in the length, which only a printed
        stream or a stop string to watch for is worth.
        """
        if not self.stopped:
            self.ids.append(int(token_id))

    def finish(self) -> str:
        """Flush what was held back (nothing if a stop string ended the text)."""
        if self.stopped:
            return ""
        self._decoded = self.decode(self.ids)
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        full, done = self._decoded, len(self.text)
        cut = _find_stop(full, self.stop, done)
        if cut is not None:
            self.stopped, end = True, cut
        else:
            end = len(full) if final else _safe_end(full, self.stop)
        piece = full[done:end] if end > done else ""
        self.text += piece
        return piece


def _find_stop(text: str, stops: Sequence[str], since: int) -> int | None:
    """Where the earliest stop string starts at or after ``since`` (text before that is already out)."""
    hits = [i for i in (text.find(s, since) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _safe_end(text: str, stops: Sequence[str]) -> int:
    """The end of the part of ``text`` that cannot change with more tokens nor turn into a stop string."""
    end = len(text.rstrip(REPLACEMENT_CHAR))
    longest = max((len(s) for s in stops), default=1)
    for k in range(min(longest - 1, end), 0, -1):  # the longest tail that begins some stop string
        tail = text[end - k:end]
        if any(s.startswith(tail) for s in stops):
            return end - k
    return end


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the first stop string."""
    cut = _find_stop(text, [s for s in stops if s], 0)
    return text if cut is None else text[:cut]


def generate_text(lm: Any, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str], prompt: str,
                  params: SamplingParams, seed: int = 0, n: int = 1, eot_id: int | None = None,
                  use_cache: bool = True, stream: bool = False,
                  batch_size: int = 64) -> list[str] | Iterator[tuple[int, str]]:
    """``n`` completions of ``prompt`` (sample ``i`` uses seed ``seed + i``), without prompt, stop string or eot.

    An empty prompt starts a new document from the end-of-text token. With ``stream=True`` it returns an
    iterator of ``(row, piece)`` as tokens arrive; the pieces of a row join to its non-streamed text.
    Rows are generated ``batch_size`` at a time, which changes no row (each has its own generator).
    Beam search (``params.num_beams > 1``) gives one completion, cut at the first stop string afterwards.
    """
    # the caller enforces its own token limit; this catches settings no sampler could honour
    params.validate(max_allowed_tokens=max(100_000, params.max_tokens if isinstance(params.max_tokens, int) else 0))
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if params.num_beams > 1 and n != 1:
        raise ConfigError(f"beam search gives one completion: use n=1 with --beams {params.num_beams}, got n={n}")
    prompt_ids = list(encode(prompt)) if prompt else []
    if not prompt_ids:
        if eot_id is None:
            raise ConfigError("the prompt is empty and the tokenizer has no end-of-text token to start from")
        prompt_ids = [eot_id]
    pieces = _stream(lm, decode, prompt_ids, params, seed, n, eot_id, use_cache, batch_size, live=stream)
    if stream:
        return pieces
    texts = [""] * n
    for row, piece in pieces:
        texts[row] += piece
    return texts


def _stream(lm: Any, decode: Callable[[list[int]], str], prompt_ids: list[int], params: SamplingParams, seed: int,
            n: int, eot_id: int | None, use_cache: bool, batch_size: int, live: bool) -> Iterator[tuple[int, str]]:
    if params.num_beams > 1:
        ids = beam_search(lm, prompt_ids, params, eot_id)
        if params.stop_at_eot and eot_id is not None and ids and ids[-1] == eot_id:
            ids = ids[:-1]
        text = cut_at_stop(decode(ids), params.stop)
        if text:
            yield 0, text
        return
    for first in range(0, n, batch_size):
        seeds = [seed + r for r in range(first, min(first + batch_size, n))]
        for i, piece in _stream_batch(lm, decode, prompt_ids, params, seeds, eot_id, use_cache, live):
            yield first + i, piece


def _stream_batch(lm: Any, decode: Callable[[list[int]], str], prompt_ids: list[int], params: SamplingParams,
                  seeds: list[int], eot_id: int | None, use_cache: bool, live: bool) -> Iterator[tuple[int, str]]:
    """One batch of rows: feed each row's tokens to its :class:`TextStream` until every row has ended.

    Text is decoded as it comes only when it is printed live or a stop string must be watched for.
    """
    streams = [TextStream(decode, params.stop) for _ in seeds]
    eot = eot_id if params.stop_at_eot else None
    incremental = live or bool(params.stop)
    running = set(range(len(seeds)))
    for tokens in generate_ids(lm, prompt_ids, params, seeds, eot_id, use_cache):
        for i, token in enumerate(tokens.tolist()):
            if i not in running:
                continue
            if token == eot:
                running.discard(i)
            elif not incremental:
                streams[i].add(token)
            else:
                piece = streams[i].push(token)
                if piece:
                    yield i, piece
                if streams[i].stopped:
                    running.discard(i)
        if not running:
            break
    for i, s in enumerate(streams):
        piece = s.finish()
        if piece:
            yield i, piece


__all__ = ["SamplingParams", "process_logits", "sample_next", "window_start", "generate_ids", "beam_search",
           "TextStream", "cut_at_stop", "generate_text"]
