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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

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
    presence_penalty: float = 0.0  # 0: off; OpenAI's: subtracted once from every token generated so far
    frequency_penalty: float = 0.0  # 0: off; OpenAI's: subtracted per time a token was generated so far
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit (-100 bans it)
    stop: list[str] = field(default_factory=list)  # the text ends before the first of these (excluded)
    num_beams: int = 1  # > 1: beam search (deterministic; temperature, top-k and top-p are ignored)
    length_penalty: float = 1.0  # beam score = sum of log-probabilities / length ** length_penalty
    stop_at_eot: bool = True  # stop at the tokenizer's end-of-text token (excluded from the text)
    # None: off. A logits processor ``wm(logits (B, V), prev (B,)) -> logits`` that sees each row's previous
    # token, e.g. :class:`genloop.safety.text_watermark.TextWatermark` (the green-list watermark)
    watermark: Any = None
    # None: off. A constraint ``c(logits (B, V), generated (B, G)) -> logits`` that sets to -inf every token
    # leaving an allowed language, e.g. a bound :class:`genloop.generation.constraints.RegexConstraint`
    constraint: Any = None

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
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and -2 <= value <= 2):  # OpenAI's range; also rejects NaN
                problems.append(f"--{name.replace('_', '-')} must be between -2 and 2 (0 is off), got {value}")
        bad_bias = {
            k: v
            for k, v in self.logit_bias.items()
            if not (isinstance(k, int) and k >= 0 and isinstance(v, (int, float)) and -100 <= v <= 100)
        }
        if bad_bias:
            problems.append(f"logit_bias maps token ids >= 0 to numbers in [-100, 100], got {bad_bias}")
        if not (isinstance(self.num_beams, int) and 1 <= self.num_beams <= MAX_BEAMS):
            problems.append(f"--beams must be between 1 and {MAX_BEAMS}, got {self.num_beams}")
        if not math.isfinite(self.length_penalty):
            problems.append(f"length_penalty must be a finite number, got {self.length_penalty}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            problems.append(f"--stop must be a list of non-empty strings, got {self.stop!r}")
        if self.watermark is not None and not callable(self.watermark):
            problems.append(f"watermark must be a logits processor (logits, prev) -> logits, got {self.watermark!r}")
        if self.constraint is not None and not callable(self.constraint):
            problems.append(f"constraint must be a processor (logits, generated) -> logits, got {self.constraint!r}")
        if problems:
            raise ConfigError("\n".join(problems))


# --- one step: logits -> next token ---------------------------------------------------------------
def process_logits(
    logits: torch.Tensor,
    seen: torch.Tensor | None,
    params: SamplingParams,
    generated: torch.Tensor | None = None,
    prev: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, V) logits -> float32 logits with every control applied; filtered-out tokens get -inf.

    ``seen`` (B, S) is every token so far (prompt + generated), for the repetition penalty; ``generated``
    (B, G) only the generated ones, for the presence and frequency penalties, which OpenAI defines over the
    completion only, also for the constraint; ``prev`` (B,) each row's last token, for the watermark. Order:
    logit bias, repetition penalty, presence/frequency penalties, watermark, constraint, temperature, top-k,
    top-p. Bias, penalties and the watermark come first because they change the model's scores, not the
    sampling; the constraint's mask next, so top-k and top-p choose among allowed tokens only (after them it
    could leave no token at all); top-p last, so the nucleus is taken from the final distribution. Settings
    that are off do nothing at all (the output equals the input).
    """
    x = logits.float()
    if params.logit_bias:
        x = _bias(x, params.logit_bias)
    if seen is not None and seen.numel() and params.repetition_penalty != 1.0:
        x = _penalize(x, seen, params.repetition_penalty)
    if generated is not None and generated.numel() and (params.presence_penalty or params.frequency_penalty):
        x = _penalize_counts(x, generated, params.presence_penalty, params.frequency_penalty)
    if params.watermark is not None:
        if prev is None:
            raise ValueError("the watermark needs each row's previous token (prev)")
        x = params.watermark(x, prev)
    if params.constraint is not None:
        x = params.constraint(x, generated)
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


def _bias(x: torch.Tensor, logit_bias: dict[int, float]) -> torch.Tensor:
    """Add each token's bias to its logit (OpenAI's ``logit_bias``); an id outside the vocabulary is an error."""
    ids = torch.as_tensor(list(logit_bias), dtype=torch.long, device=x.device)
    if int(ids.max()) >= x.shape[-1]:
        raise ConfigError(f"logit_bias names token {int(ids.max())} but the vocabulary has {x.shape[-1]} tokens")
    bias = torch.as_tensor(list(logit_bias.values()), dtype=x.dtype, device=x.device)
    return x.index_add(1, ids, bias.expand(x.shape[0], -1))


def _penalize_counts(x: torch.Tensor, generated: torch.Tensor, presence: float, frequency: float) -> torch.Tensor:
    """OpenAI's penalties: ``logit[j] -= count[j] * frequency + (count[j] > 0) * presence``, where ``count[j]``
    is how often token ``j`` was generated so far in this row (the prompt does not count)."""
    generated = generated.to(x.device)
    counts = torch.zeros_like(x).scatter_add_(1, generated, torch.ones_like(generated, dtype=x.dtype))
    return x - counts * frequency - (counts > 0).to(x.dtype) * presence


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
        out = self.lm(ids[:, self.fed : n], cache=self.cache)[:, -1]
        self.fed = n
        return out


def _check_prompt(prompt_ids: Sequence[int]) -> None:
    if len(prompt_ids) == 0:
        raise ConfigError("the prompt has no tokens; to start a new document, pass the end-of-text token as the prompt")


@torch.inference_mode()
def generate_ids(
    lm: Any,
    prompt_ids: Sequence[int],
    params: SamplingParams,
    seeds: Sequence[int],
    eot_id: int | None = None,
    use_cache: bool = True,
    on_step: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> Iterator[torch.Tensor]:
    """Continue one prompt in ``len(seeds)`` rows at once; yield each step's next token of every row (B,).

    A row that has produced the end-of-text token (when ``params.stop_at_eot``) is finished: it yields
    ``eot_id`` from then on, and the loop ends once every row is finished or after ``max_tokens`` steps.
    ``on_step(raw_logits, tokens)`` sees each step's model logits (before any control) and the tokens drawn,
    before they are yielded: that is where log-probabilities are scored, without a second forward pass.
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
    count = bool(params.presence_penalty or params.frequency_penalty) or params.constraint is not None
    for n in range(p, p + params.max_tokens):
        raw = context.logits(ids, n)
        logits = process_logits(
            raw, ids[:, :n] if penalize else None, params, ids[:, p:n] if count else None, ids[:, n - 1]
        )
        tokens = sample_next(logits, generators, params).cpu()
        if eot is not None:
            tokens = tokens.masked_fill(done, eot)
            done |= tokens == eot
        if on_step is not None:
            on_step(raw, tokens)
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
    Temperature, top-k and top-p are ignored (they change sampling, not likelihood); the logit bias and the
    repetition, presence and frequency penalties apply, and so does a constraint. Each step recomputes the
    window: beams are for small models and short outputs.
    """
    _check_prompt(prompt_ids)
    device, p, width = model_device(lm), len(prompt_ids), params.num_beams
    eot = eot_id if params.stop_at_eot else None
    plain = replace(params, temperature=1.0, top_k=0, top_p=1.0)
    penalize = params.repetition_penalty != 1.0
    count = bool(params.presence_penalty or params.frequency_penalty) or params.constraint is not None
    beams = torch.as_tensor([list(prompt_ids)], dtype=torch.long, device=device)
    sums = torch.zeros(1, device=device)  # sum of log-probabilities of each running beam
    finished: list[tuple[float, list[int]]] = []
    start = 0

    def score(total: float, length: int) -> float:
        return total / length**params.length_penalty

    for length in range(1, params.max_tokens + 1):
        start = window_start(beams.shape[1], start, int(lm.block_size))
        logits = process_logits(
            lm(beams[:, start:])[:, -1],
            beams if penalize else None,
            plain,
            beams[:, p:] if count else None,
            beams[:, -1],
        )
        vocab = logits.shape[-1]
        totals = (sums[:, None] + logits.log_softmax(-1)).view(-1)
        best = totals.topk(min(2 * width, totals.numel()))
        keep_rows, keep_tokens, keep_sums = [], [], []
        for rank, (total, flat) in enumerate(zip(best.values.tolist(), best.indices.tolist())):
            if total == float("-inf"):  # masked (a constraint): no more extensions worth keeping
                break
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
        tail = text[end - k : end]
        if any(s.startswith(tail) for s in stops):
            return end - k
    return end


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the first stop string."""
    cut = _find_stop(text, [s for s in stops if s], 0)
    return text if cut is None else text[:cut]


@dataclass
class Completion:
    """One sampled completion with what an API reports besides its text (OpenAI's ``logprobs``, ``finish_reason``).

    Log-probabilities are the model's own (log-softmax of its logits before bias, penalties, temperature,
    top-k or top-p), so they measure how likely the model finds the text, whatever the sampling settings.
    """

    text: str
    token_ids: list[int]  # generated tokens, end-of-text excluded; the last may reach into a stop string
    logprobs: list[float]  # the model's log-probability of each token in ``token_ids``
    top_logprobs: list[list[tuple[int, float]]]  # per token: the likeliest (id, log-probability), if asked
    finish_reason: str  # "stop": end-of-text or a stop string ended it; "length": max_tokens did

    @property
    def total_logprob(self) -> float:
        return sum(self.logprobs)

    @property
    def mean_logprob(self) -> float:
        """OpenAI's ``best_of`` ranking: log-probability per token (an empty completion ranks last)."""
        return self.total_logprob / len(self.logprobs) if self.logprobs else float("-inf")


def _prompt_ids(encode: Callable[[str], list[int]], prompt: str, eot_id: int | None) -> list[int]:
    """The prompt's tokens; an empty prompt starts a new document from the end-of-text token."""
    prompt_ids = list(encode(prompt)) if prompt else []
    if not prompt_ids:
        if eot_id is None:
            raise ConfigError("the prompt is empty and the tokenizer has no end-of-text token to start from")
        prompt_ids = [eot_id]
    return prompt_ids


def _check_call(params: SamplingParams, n: int) -> None:
    # the caller enforces its own token limit; this catches settings no sampler could honour
    params.validate(max_allowed_tokens=max(100_000, params.max_tokens if isinstance(params.max_tokens, int) else 0))
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if params.num_beams > 1 and n != 1:
        raise ConfigError(f"beam search gives one completion: use n=1 with --beams {params.num_beams}, got n={n}")


def generate_text(
    lm: Any,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    prompt: str,
    params: SamplingParams,
    seed: int = 0,
    n: int = 1,
    eot_id: int | None = None,
    use_cache: bool = True,
    stream: bool = False,
    batch_size: int = 64,
) -> list[str] | Iterator[tuple[int, str]]:
    """``n`` completions of ``prompt`` (sample ``i`` uses seed ``seed + i``), without prompt, stop string or eot.

    An empty prompt starts a new document from the end-of-text token. With ``stream=True`` it returns an
    iterator of ``(row, piece)`` as tokens arrive; the pieces of a row join to its non-streamed text.
    Rows are generated ``batch_size`` at a time, which changes no row (each has its own generator).
    Beam search (``params.num_beams > 1``) gives one completion, cut at the first stop string afterwards.
    """
    _check_call(params, n)
    prompt_ids = _prompt_ids(encode, prompt, eot_id)
    pieces = _stream(lm, decode, prompt_ids, params, seed, n, eot_id, use_cache, batch_size, live=stream)
    if stream:
        return pieces
    texts = [""] * n
    for row, piece in pieces:
        texts[row] += piece
    return texts


def complete(
    lm: Any,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    prompt: str,
    params: SamplingParams,
    seed: int = 0,
    n: int = 1,
    eot_id: int | None = None,
    use_cache: bool = True,
    top_logprobs: int = 0,
    on_piece: Callable[[int, str], None] | None = None,
    batch_size: int = 64,
) -> list[Completion]:
    """Like :func:`generate_text` (same seeds, same texts), but each completion comes with its tokens, their
    log-probabilities (and the ``top_logprobs`` likeliest alternatives at each step) and why it ended.

    ``on_piece(row, piece)`` receives the text as it is generated, as ``stream=True`` would yield it.
    Beam search is not offered here: its hypotheses are not samples, and their scores are not per-token.
    """
    _check_call(params, n)
    if params.num_beams > 1:
        raise ConfigError("beam search gives no per-token log-probabilities; use generate_text for beams")
    if not (isinstance(top_logprobs, int) and top_logprobs >= 0):
        raise ConfigError(f"top_logprobs must be an integer >= 0, got {top_logprobs}")
    prompt_ids = _prompt_ids(encode, prompt, eot_id)
    out: list[Completion] = []
    for first in range(0, n, batch_size):
        seeds = [seed + r for r in range(first, min(first + batch_size, n))]
        record: list[Completion] = []
        for i, piece in _stream_batch(
            lm,
            decode,
            prompt_ids,
            params,
            seeds,
            eot_id,
            use_cache,
            live=on_piece is not None,
            record=record,
            top=top_logprobs,
        ):
            if on_piece is not None:
                on_piece(first + i, piece)
        out.extend(record)
    return out


@torch.inference_mode()
def score_prompt(
    lm: Any, prompt_ids: Sequence[int], top: int = 0
) -> tuple[list[float | None], list[list[tuple[int, float]] | None]]:
    """The model's log-probability of each prompt token given the ones before it (and the ``top`` likeliest
    tokens there), in one forward pass over the last ``block_size`` tokens.

    The first token has no context, and tokens before the model's window are not seen with theirs: both get
    ``None``, as OpenAI gives ``null`` for the first token of an echoed prompt.
    """
    _check_prompt(prompt_ids)
    device, block = model_device(lm), int(lm.block_size)
    start = max(0, len(prompt_ids) - block)
    ids = torch.as_tensor(list(prompt_ids[start:]), dtype=torch.long, device=device)[None]
    lp = lm(ids)[0, :-1].float().log_softmax(-1)  # row t predicts token start + t + 1
    chosen = lp.gather(1, ids[0, 1:, None])[:, 0].tolist()
    none: list[Any] = [None] * (start + 1)
    if not top:
        return none + chosen, none + [None] * len(chosen)
    best = lp.topk(min(top, lp.shape[-1]), -1)
    tops = [list(zip(i, v)) for i, v in zip(best.indices.tolist(), best.values.tolist())]
    return none + chosen, none + tops


def _stream(
    lm: Any,
    decode: Callable[[list[int]], str],
    prompt_ids: list[int],
    params: SamplingParams,
    seed: int,
    n: int,
    eot_id: int | None,
    use_cache: bool,
    batch_size: int,
    live: bool,
) -> Iterator[tuple[int, str]]:
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


def _stream_batch(
    lm: Any,
    decode: Callable[[list[int]], str],
    prompt_ids: list[int],
    params: SamplingParams,
    seeds: list[int],
    eot_id: int | None,
    use_cache: bool,
    live: bool,
    record: list[Completion] | None = None,
    top: int = 0,
) -> Iterator[tuple[int, str]]:
    """One batch of rows: feed each row's tokens to its :class:`TextStream` until every row has ended.

    Text is decoded as it comes only when it is printed live or a stop string must be watched for. With
    ``record``, each row's :class:`Completion` is appended to it once the batch is done (scored as sampled).
    """
    streams = [TextStream(decode, params.stop) for _ in seeds]
    eot = eot_id if params.stop_at_eot else None
    incremental = live or bool(params.stop)
    running = set(range(len(seeds)))
    logprobs: list[list[float]] = [[] for _ in seeds]
    tops: list[list[list[tuple[int, float]]]] = [[] for _ in seeds]
    ended = ["length"] * len(seeds)

    def score(raw: torch.Tensor, tokens: torch.Tensor) -> None:
        """Runs before ``running`` is updated for this step, so exactly the tokens that join a text are scored."""
        lp = raw.float().log_softmax(-1)
        chosen = lp.gather(1, tokens.to(lp.device)[:, None])[:, 0].tolist()
        best = lp.topk(min(top, lp.shape[-1]), -1) if top else None
        for i in running:
            if int(tokens[i]) == eot:
                continue
            logprobs[i].append(chosen[i])
            if best is not None:
                tops[i].append(list(zip(best.indices[i].tolist(), best.values[i].tolist())))

    on_step = score if record is not None else None
    for tokens in generate_ids(lm, prompt_ids, params, seeds, eot_id, use_cache, on_step=on_step):
        for i, token in enumerate(tokens.tolist()):
            if i not in running:
                continue
            if token == eot:
                running.discard(i)
                ended[i] = "stop"
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
    if record is not None:
        record.extend(
            Completion(s.text, list(s.ids), logprobs[i], tops[i], "stop" if s.stopped else ended[i])
            for i, s in enumerate(streams)
        )


__all__ = [
    "SamplingParams",
    "process_logits",
    "sample_next",
    "window_start",
    "generate_ids",
    "beam_search",
    "TextStream",
    "cut_at_stop",
    "generate_text",
    "Completion",
    "complete",
    "score_prompt",
]
