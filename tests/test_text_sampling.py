"""The text sampler against tiny stand-in models: every control, seeds, the KV cache, stop strings, streams, beams.

``TinyLM`` is a real 1-layer causal attention model with learned position embeddings and a KV cache that
enforces the interface's contract (never more than ``block_size`` tokens in one cache), so cache/no-cache
equality means something. ``ScriptLM`` and ``TreeLM`` are hand-made deterministic models.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from genloop.errors import ConfigError
from genloop.generation.text_sampling import (
    SamplingParams,
    TextStream,
    beam_search,
    complete,
    generate_ids,
    generate_text,
    process_logits,
    sample_next,
    score_prompt,
    window_start,
)


# --- stand-in models --------------------------------------------------------------------------------
class TinyCache:
    def __init__(self, batch_size: int, block_size: int) -> None:
        self.batch_size, self.block_size = batch_size, block_size
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[1]


class TinyLM(nn.Module):
    """One attention layer, learned positions, a KV cache; logits depend on the whole visible context."""

    def __init__(self, vocab: int = 11, block_size: int = 8, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.block_size = block_size
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(block_size, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.head = nn.Linear(dim, vocab)
        self.calls: list[int] = []  # tokens fed per call

    def new_cache(self, batch_size: int) -> TinyCache:
        return TinyCache(batch_size, self.block_size)

    def forward(self, idx: torch.Tensor, cache: TinyCache | None = None) -> torch.Tensor:
        b, t = idx.shape
        past = cache.length if cache is not None else 0
        assert past + t <= self.block_size, f"fed {past + t} tokens into a context of {self.block_size}"
        assert cache is None or cache.batch_size == b
        self.calls.append(t)
        x = self.tok(idx) + self.pos(torch.arange(past, past + t))
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if cache is not None:
            if cache.k is not None:
                k, v = torch.cat([cache.k, k], 1), torch.cat([cache.v, v], 1)
            cache.k, cache.v = k, v
        att = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
        qpos = torch.arange(past, past + t)[:, None]
        att = att.masked_fill(torch.arange(k.shape[1])[None, :] > qpos, float("-inf"))
        return 3.0 * self.head(x + att.softmax(-1) @ v)


class ScriptLM:
    """No parameters, no cache: after a context of length L it puts all its mass on ``script[L]``."""

    def __init__(self, script: list[int], vocab: int, block_size: int = 1000) -> None:
        self.script, self.vocab, self.block_size = script, vocab, block_size

    def new_cache(self, batch_size: int) -> None:
        return None

    def __call__(self, idx: torch.Tensor, cache: Any = None) -> torch.Tensor:
        b, t = idx.shape
        out = torch.full((b, t, self.vocab), -20.0)
        for j in range(t):
            out[:, j, self.script[min(j + 1, len(self.script) - 1)]] = 10.0
        return out


class TreeLM:
    """A myopic trap: after the prompt, token 1 (p=.6) leads to a flat distribution over 10 tokens, token 2
    (p=.4) to token 3 with p≈1. Greedy takes 1 (joint .06); the best two-token path is 2, 3 (joint ≈.4)."""

    vocab, block_size = 14, 64

    def new_cache(self, batch_size: int) -> None:
        return None

    def next_logp(self, last: int) -> torch.Tensor:
        p = torch.full((self.vocab,), 1e-9)
        if last == 0:  # the prompt
            p[1], p[2] = 0.6, 0.4
        elif last == 1:
            p[4:14] = 0.1
        else:
            p[3] = 1.0
        return (p / p.sum()).log()

    def __call__(self, idx: torch.Tensor, cache: Any = None) -> torch.Tensor:
        return torch.stack([torch.stack([self.next_logp(int(tok)) for tok in row]) for row in idx])


class ConstLM:
    """The same logits after any context."""

    block_size = 100

    def __init__(self, logits: list[float]) -> None:
        self.logits = torch.tensor(logits)

    def new_cache(self, batch_size: int) -> None:
        return None

    def __call__(self, idx: torch.Tensor, cache: Any = None) -> torch.Tensor:
        return self.logits.expand(idx.shape[0], idx.shape[1], len(self.logits)).clone()


CHARS = "abcxyz. \n"
EOT = len(CHARS)  # the id after the characters


def char_encode(s: str) -> list[int]:
    return [CHARS.index(c) for c in s]


def char_decode(ids: list[int]) -> str:
    return "".join(CHARS[i] if i < len(CHARS) else "<eot>" for i in ids)


def byte_decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def run(lm: Any, prompt: list[int], params: SamplingParams, seeds: list[int], **kw: Any) -> list[list[int]]:
    """All tokens of each row, as lists."""
    steps = list(generate_ids(lm, prompt, params, seeds, **kw))
    return torch.stack(steps, 1).tolist() if steps else [[] for _ in seeds]


@pytest.fixture
def lm() -> TinyLM:
    return TinyLM().eval()


# --- logits -------------------------------------------------------------------------------------------
def test_off_settings_are_exact_noops() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    seen = torch.tensor([[1, 2], [3, 3], [0, 49]])
    out = process_logits(logits, seen, SamplingParams(top_k=0, top_p=1.0, temperature=1.0, repetition_penalty=1.0))
    assert torch.equal(out, logits)
    assert torch.equal(process_logits(logits, None, SamplingParams(top_k=50)), logits)  # k = V keeps all


def test_top_k_keeps_k_and_top_k_one_is_greedy() -> None:
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(1))
    out = process_logits(logits, None, SamplingParams(top_k=5))
    assert (out.isfinite().sum(-1) == 5).all()
    kept = out.isfinite()
    assert torch.equal(kept.nonzero()[:, 1].view(4, 5).sort(-1).values, logits.topk(5).indices.sort(-1).values)
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    for t in (0.3, 1.0, 5.0):
        p = SamplingParams(top_k=1, temperature=t)
        assert torch.equal(sample_next(process_logits(logits, None, p), gens, p), logits.argmax(-1))
    p = SamplingParams(temperature=0.0, top_k=0)
    assert torch.equal(sample_next(process_logits(logits, None, p), gens, p), logits.argmax(-1))


def test_top_p_keeps_the_minimal_nucleus() -> None:
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    logits = probs.log()
    kept = lambda top_p: process_logits(logits, None, SamplingParams(top_p=top_p)).isfinite()[0].tolist()  # noqa: E731
    assert kept(0.5) == [True, False, False, False]  # 0.5 alone reaches 0.5
    assert kept(0.6) == [True, False, True, False]  # 0.5 + 0.3
    assert kept(0.8) == [True, False, True, False]  # exactly reaches 0.8
    assert kept(0.85) == [True, False, True, True]
    assert kept(0.99) == [True, True, True, True]
    assert kept(1e-9) == [True, False, False, False]  # tiny top-p keeps exactly the argmax
    rnd = torch.randn(5, 40, generator=torch.Generator().manual_seed(2))
    tiny = process_logits(rnd, None, SamplingParams(top_p=1e-6))
    assert (tiny.isfinite().sum(-1) == 1).all() and torch.equal(tiny.argmax(-1), rnd.argmax(-1))


def test_temperature_scales_logits() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    assert torch.allclose(process_logits(logits, None, SamplingParams(temperature=0.5)), logits * 2)


def test_repetition_penalty_lowers_seen_tokens_either_sign() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[0, 1, 1]])
    out = process_logits(logits, seen, SamplingParams(repetition_penalty=2.0))
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]  # positive divided, negative multiplied, unseen kept
    out = process_logits(logits, seen, SamplingParams(repetition_penalty=0.5))  # < 1 favours repeats
    assert out.tolist() == [[4.0, -1.0, 1.0, -1.0]]
    assert out.dtype == torch.float32 and logits.tolist() == [[2.0, -2.0, 1.0, -1.0]]  # input untouched


def test_presence_and_frequency_penalties_count_generated_tokens_only() -> None:
    logits = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    generated = torch.tensor([[0, 0, 2]])  # token 0 twice, token 2 once
    out = process_logits(logits, None, SamplingParams(presence_penalty=0.5, frequency_penalty=0.25), generated)
    assert out.tolist() == [[1 - 2 * 0.25 - 0.5, 1.0, 1 - 0.25 - 0.5, 1.0]]
    neg = process_logits(logits, None, SamplingParams(presence_penalty=-1.0), generated)  # < 0 favours repeats
    assert neg.tolist() == [[2.0, 1.0, 2.0, 1.0]]
    # greedy over a model that always prefers 0 over 1 by 0.3: a frequency penalty of 0.5 alternates them,
    # and tokens of the prompt (three 0s) are not counted, so the first token is still 0
    const = ConstLM([1.3, 1.0, -5.0])
    p = SamplingParams(max_tokens=5, temperature=0, frequency_penalty=0.5)
    assert run(const, [0, 0, 0], p, [0]) == [[0, 1, 0, 1, 0]]
    assert run(const, [0, 0, 0], SamplingParams(max_tokens=3, temperature=0), [0]) == [[0, 0, 0]]


def test_logit_bias_adds_to_named_tokens() -> None:
    logits = torch.tensor([[1.0, 3.0, 1.0, 2.0]])
    assert process_logits(logits, None, SamplingParams(logit_bias={1: -100.0, 2: 0.5})).tolist() == [
        [1.0, -97.0, 1.5, 2.0]
    ]
    with pytest.raises(ConfigError, match="vocabulary has 4 tokens"):
        process_logits(logits, None, SamplingParams(logit_bias={4: 1.0}))
    lm = ScriptLM(char_encode("abcabc"), vocab=EOT + 1)  # greedy follows the script unless a bias bans a token
    banned = generate_text(
        lm,
        char_encode,
        char_decode,
        "a",
        SamplingParams(max_tokens=3, temperature=0, logit_bias={CHARS.index("b"): -100.0}),
    )
    assert banned == ["aca"]  # 'b' (10 - 100) falls below the -20 of the others; argmax then takes the first, 'a'


def test_complete_scores_each_token_with_the_models_own_logprobs(lm: TinyLM) -> None:
    p = SamplingParams(max_tokens=6, temperature=1.3, top_k=5, stop=["3"])  # 2 + 6 tokens fit the context
    decode = lambda ids: "".join(str(i) for i in ids)  # noqa: E731
    encode = lambda s: [int(c) for c in s]  # noqa: E731
    done = complete(lm, encode, decode, "12", p, seed=4, n=3, eot_id=0, top_logprobs=2)
    assert [c.text for c in done] == generate_text(lm, encode, decode, "12", p, seed=4, n=3, eot_id=0)
    for c in done:
        # rescore by hand: the model's log-softmax at each step, from the prompt and the tokens before
        ids = [1, 2]
        for token, lp, top in zip(c.token_ids, c.logprobs, c.top_logprobs):
            want = lm(torch.tensor([ids]))[0, -1].detach().log_softmax(-1)
            assert lp == pytest.approx(float(want[token]), abs=1e-5)
            assert [t for t, _ in top] == want.topk(2).indices.tolist()
            ids.append(token)
        assert len(c.logprobs) == len(c.token_ids) == len(c.top_logprobs)
        ended = "3" in decode(c.token_ids) or len(c.token_ids) < p.max_tokens
        assert c.finish_reason == ("stop" if ended else "length")
        assert c.mean_logprob == pytest.approx(sum(c.logprobs) / len(c.logprobs))
    script = ScriptLM(char_encode("abc"), vocab=EOT + 1)
    [short] = complete(script, char_encode, char_decode, "a", SamplingParams(max_tokens=2, temperature=0))
    assert (short.text, short.finish_reason) == ("bc", "length")
    pieces: list[tuple[int, str]] = []
    complete(lm, encode, decode, "12", p, seed=4, n=2, eot_id=0, on_piece=lambda r, t: pieces.append((r, t)))
    assert ["".join(t for r, t in pieces if r == i) for i in range(2)] == [c.text for c in done[:2]]


def test_score_prompt_is_each_tokens_logprob_given_the_ones_before(lm: TinyLM) -> None:
    lps, tops = score_prompt(lm, [1, 2, 3], top=1)
    full = lm(torch.tensor([[1, 2, 3]]))[0].detach().log_softmax(-1)
    assert lps[0] is None and tops[0] is None
    assert lps[1:] == pytest.approx([float(full[0, 2]), float(full[1, 3])], abs=1e-5)
    assert [t[0][0] for t in tops[1:]] == full[:2].argmax(-1).tolist()
    long = list(range(1, 11)) + [1]  # 11 tokens, a context of 8: the first 4 are not scored with their context
    lps, _ = score_prompt(lm, long)
    assert lps[:4] == [None] * 4 and all(isinstance(x, float) for x in lps[4:])


def test_validate_raises_config_errors() -> None:
    SamplingParams().validate()
    bad = [
        dict(top_p=1.5),
        dict(top_p=0.0),
        dict(temperature=-0.1),
        dict(top_k=-1),
        dict(repetition_penalty=0.0),
        dict(num_beams=0),
        dict(num_beams=17),
        dict(max_tokens=0),
        dict(max_tokens=101),
        dict(stop=[""]),
        dict(temperature=float("nan")),
        dict(presence_penalty=2.5),
        dict(frequency_penalty=float("nan")),
        dict(logit_bias={1: 101.0}),
        dict(logit_bias={-1: 1.0}),
    ]
    for kw in bad:
        with pytest.raises(ConfigError):
            SamplingParams(**kw).validate(max_allowed_tokens=100)
    with pytest.raises(ConfigError, match=r"--top-p must be in \(0, 1\], got 1.5") as err:
        SamplingParams(top_p=1.5, top_k=-2).validate()
    assert len(str(err.value).splitlines()) == 2  # one line per problem


def test_window_start_rule() -> None:
    assert window_start(8, 0, 8) == 0
    assert window_start(9, 0, 8) == 3  # keeps 8 - 8 // 4 = 6
    assert window_start(10, 3, 8) == 3
    assert window_start(12, 3, 8) == 6
    assert window_start(30, 0, 8) == 24  # a long prompt: the same rule
    assert window_start(2, 0, 1) == 1


# --- the loop -----------------------------------------------------------------------------------------
def test_seeds_reproduce_and_differ(lm: TinyLM) -> None:
    p = SamplingParams(max_tokens=20, temperature=1.0, stop_at_eot=False)
    a, b = run(lm, [1, 2], p, [5]), run(lm, [1, 2], p, [5])
    assert a == b
    assert run(lm, [1, 2], p, [6]) != a
    assert len(a[0]) == 20  # max_tokens respected


def test_batch_row_equals_single_run(lm: TinyLM) -> None:
    p = SamplingParams(max_tokens=20, temperature=0.9, top_k=6, top_p=0.9, repetition_penalty=1.3, stop_at_eot=False)
    seeds = [3, 4, 5]
    batch = run(lm, [1, 2, 3], p, seeds)
    assert batch == [run(lm, [1, 2, 3], p, [s])[0] for s in seeds]
    assert len({tuple(r) for r in batch}) > 1


@pytest.mark.parametrize("prompt_len", [2, 8, 19])  # short, exactly block_size, longer than block_size
@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_tokens=30, temperature=0, stop_at_eot=False),
        SamplingParams(max_tokens=30, temperature=1.2, top_p=0.95, repetition_penalty=1.1, stop_at_eot=False),
    ],
    ids=["greedy", "sampled"],
)
def test_cache_equals_no_cache_past_block_size(lm: TinyLM, prompt_len: int, params: SamplingParams) -> None:
    prompt = [(3 * i + 1) % 11 for i in range(prompt_len)]
    cached = run(lm, prompt, params, [0, 1])
    feeds = list(lm.calls)
    lm.calls.clear()
    plain = run(lm, prompt, params, [0, 1], use_cache=False)
    assert cached == plain
    assert len(cached[0]) == 30 and prompt_len + 30 > lm.block_size
    assert sum(feeds) < sum(lm.calls)  # the cache fed fewer tokens (it did run), and never overflowed (asserted)
    assert feeds.count(1) > 10


def test_eot_stops_a_row_and_the_loop() -> None:
    script = char_encode("abc") + [EOT] + char_encode("xyz")
    lm = ScriptLM(script, vocab=EOT + 1)
    rows = run(lm, script[:1], SamplingParams(max_tokens=10, temperature=0), [0, 1], eot_id=EOT)
    assert rows == [char_encode("bc") + [EOT]] * 2  # stops once every row is finished
    rows = run(lm, script[:1], SamplingParams(max_tokens=10, temperature=0, stop_at_eot=False), [0], eot_id=EOT)
    assert len(rows[0]) == 10
    out = generate_text(lm, char_encode, char_decode, "a", SamplingParams(max_tokens=10, temperature=0), eot_id=EOT)
    assert out == ["bc"]


def test_finished_rows_wait_for_the_others(lm: TinyLM) -> None:
    p = SamplingParams(max_tokens=40, temperature=1.5)
    seeds = list(range(6))
    batch = run(lm, [1], p, seeds, eot_id=0)
    for row, s in zip(batch, seeds):
        alone = run(lm, [1], p, [s], eot_id=0)[0]
        assert row[: len(alone)] == alone
        if 0 in alone:
            assert set(row[len(alone) :]) <= {0}  # eot repeated after the end


def test_stop_string_across_tokens_ends_generation() -> None:
    script = char_encode("xxyzabcab.")  # 'a' and 'b' are separate tokens
    lm = ScriptLM(script, vocab=EOT + 1)
    p = SamplingParams(max_tokens=30, temperature=0, stop=["ab"])
    assert generate_text(lm, char_encode, char_decode, "x", p) == ["xyz"]
    pieces = list(generate_text(lm, char_encode, char_decode, "x", p, stream=True))
    assert "".join(piece for _, piece in pieces) == "xyz" and all(row == 0 for row, _ in pieces)
    assert generate_text(
        lm, char_encode, char_decode, "x", SamplingParams(max_tokens=5, temperature=0, stop=["b."])
    ) == ["xyzab"]  # the stop never matched within max_tokens: nothing is cut
    assert generate_text(
        lm, char_encode, char_decode, "x", SamplingParams(max_tokens=30, temperature=0, stop=["c", "za"])
    ) == ["xy"]  # earliest


def test_text_stream_holds_back_half_characters_and_stop_prefixes() -> None:
    text = "héllo €😀 end"
    data = list(text.encode())
    s = TextStream(byte_decode)
    pieces = [s.push(b) for b in data]
    assert all("\ufffd" not in piece for piece in pieces)
    assert pieces[1] == "" and pieces[2] == "é"  # 'é' is two bytes: nothing until both arrived
    assert "".join(pieces) + s.finish() == text == s.text

    s = TextStream(byte_decode, stop=["<end>"])
    out = [s.push(b) for b in b"ab<en"]
    assert "".join(out) == "ab"  # '<en' may become the stop string
    assert s.push(ord("x")) == "<enx" and not s.stopped
    out = [s.push(b) for b in b"y<end>zz"]
    assert "".join(out) == "y" and s.stopped and s.text == "ab<enxy" and s.finish() == ""

    s = TextStream(byte_decode, stop=["<end>"])
    assert [s.push(b) for b in b"ab<e"] == ["a", "b", "", ""]
    assert s.finish() == "<e" and s.text == "ab<e"  # flushed at the end


def test_streamed_pieces_join_to_the_text(lm: TinyLM) -> None:
    vocab = "abcdefghij"
    decode = lambda ids: "".join(vocab[i] if i < 10 else "" for i in ids)  # noqa: E731
    encode = lambda s: [vocab.index(c) for c in s]  # noqa: E731
    p = SamplingParams(max_tokens=25, temperature=1.0, stop=["ca"], stop_at_eot=True)
    texts = generate_text(lm, encode, decode, "ab", p, seed=2, n=4, eot_id=10)
    assert all("ca" not in t for t in texts)
    for i, t in enumerate(texts):
        streamed = "".join(
            piece for _, piece in generate_text(lm, encode, decode, "ab", p, seed=2 + i, eot_id=10, stream=True)
        )
        assert streamed == t == generate_text(lm, encode, decode, "ab", p, seed=2 + i, eot_id=10, use_cache=False)[0]
    rows: dict[int, str] = {}
    for row, piece in generate_text(lm, encode, decode, "ab", p, seed=2, n=4, eot_id=10, stream=True, batch_size=3):
        rows[row] = rows.get(row, "") + piece
    assert [rows.get(i, "") for i in range(4)] == texts


def test_empty_prompt_starts_from_eot_or_fails(lm: TinyLM) -> None:
    p = SamplingParams(max_tokens=5, stop_at_eot=False)
    decode = lambda ids: ",".join(map(str, ids))  # noqa: E731
    text = generate_text(lm, lambda s: [], decode, "", p, seed=1, eot_id=0)
    assert text == [decode(run(lm, [0], p, [1])[0])]
    with pytest.raises(ConfigError):
        generate_text(lm, lambda s: [], decode, "", p)
    with pytest.raises(ConfigError):
        next(generate_ids(lm, [], p, [0]))
    with pytest.raises(ConfigError):
        generate_text(lm, lambda s: [1], decode, "x", SamplingParams(num_beams=2), n=2)


# --- beam search --------------------------------------------------------------------------------------
def test_one_beam_is_greedy(lm: TinyLM) -> None:
    for eot in (None, 0):
        greedy = run(lm, [1, 2], SamplingParams(max_tokens=15, temperature=0), [0], eot_id=eot)[0]
        beam = beam_search(lm, [1, 2], SamplingParams(max_tokens=15, num_beams=1), eot_id=eot)
        assert beam == greedy


def test_beam_search_beats_myopic_greedy() -> None:
    lm = TreeLM()
    greedy = run(lm, [0], SamplingParams(max_tokens=2, temperature=0), [0])[0]
    beam = beam_search(lm, [0], SamplingParams(max_tokens=2, num_beams=2))
    assert greedy[0] == 1 and beam == [2, 3]

    def logp(seq: list[int]) -> float:
        ctx = [0] + seq
        return sum(float(lm.next_logp(ctx[i])[ctx[i + 1]]) for i in range(len(seq)))

    assert logp(beam) > logp(greedy)
    text = generate_text(
        lm, lambda s: [0], lambda ids: "".join(map(str, ids)), "p", SamplingParams(max_tokens=2, num_beams=3)
    )
    assert text == ["23"]


def test_beam_search_stops_at_eot(lm: TinyLM) -> None:
    out = beam_search(lm, [1, 2], SamplingParams(max_tokens=40, num_beams=4), eot_id=0)
    assert out[-1] == 0 and 0 not in out[:-1]  # ends at (and with) eot
    long = beam_search(TinyLM(block_size=4), [1, 2, 3, 4, 5, 6], SamplingParams(max_tokens=12, num_beams=3))
    assert len(long) == 12  # past block_size, without eot
