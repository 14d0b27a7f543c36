"""Text metrics: the held-out loss scores every token once with the stated context; diversity and
memorisation statistics match hand computations, NLTK and brute force."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from genloop.errors import ConfigError, DataError
from genloop.evaluation.text_metrics import (
    CorpusIndex,
    bits_per_unit,
    distinct_n,
    longest_verbatim_span,
    memorization,
    self_bleu,
    sliding_window_loss,
    text_floor,
)

# ----------------------------------------------------------------------------------- toy language models


def uniform_lm(vocab: int):
    return lambda x: torch.zeros(*x.shape, vocab)


def bigram_lm(table: torch.Tensor):
    """logits at each position depend only on the current token: a bigram table model."""
    return lambda x: table[x]


def bigram_loss(table: torch.Tensor, tokens: np.ndarray) -> float:
    logp = torch.log_softmax(table.double(), -1).numpy()
    return float(-np.mean([logp[a, b] for a, b in zip(tokens[:-1], tokens[1:])]))


def context_lm(vocab: int):
    """Predicts token (x + 1) % vocab with confidence growing with its context: at window position t
    (t + 1 tokens of context) the right token's logit is t, all others 0."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape
        out = torch.zeros(b, t, vocab)
        pos = torch.arange(t, dtype=torch.float32).expand(b, t)
        out.scatter_(2, ((x + 1) % vocab)[..., None], pos[..., None])
        return out

    return fn


def context_loss(vocab: int, context: int) -> float:
    """Loss of context_lm on a target predicted from `context` tokens."""
    a = context - 1
    return -(a - math.log(math.exp(a) + vocab - 1))


# ---------------------------------------------------------------------------------------- held-out loss


def test_uniform_logits_give_log_vocab():
    tokens = np.random.default_rng(0).integers(0, 50, size=301)
    r = sliding_window_loss(uniform_lm(50), tokens, block_size=32)
    assert r["loss"] == pytest.approx(math.log(50), abs=1e-6)
    assert r["perplexity"] == pytest.approx(50, rel=1e-5)
    assert r["tokens_scored"] == 300 and r["block_size"] == 32 and r["stride"] == 16


@pytest.mark.parametrize(
    "n, block, stride",
    [(101, 8, 4), (101, 8, 8), (101, 8, 3), (100, 8, 1), (7, 8, 4), (2, 8, None), (64, 16, 16), (65, 16, 5)],
)
def test_bigram_model_matches_closed_form_and_scores_each_token_once(n, block, stride):
    g = torch.Generator().manual_seed(n * 100 + block)
    table = torch.randn(13, 13, generator=g) * 2
    tokens = np.random.default_rng(n).integers(0, 13, size=n).astype(np.uint16)
    r = sliding_window_loss(bigram_lm(table), tokens, block, stride=stride, batch_size=3)
    assert r["tokens_scored"] == n - 1
    assert r["loss"] == pytest.approx(bigram_loss(table, tokens.astype(np.int64)), abs=1e-6)


@pytest.mark.parametrize("block, stride", [(8, 4), (8, 8), (8, 3), (5, 1), (16, 7), (200, 50)])
def test_every_target_counted_exactly_once(block, stride):
    """Tokens 0..n-1 in order; the loss on target p is a distinct random value, so a target missed or
    counted twice would change the mean."""
    n = 103
    tokens = np.arange(n)
    conf = torch.from_numpy(np.random.default_rng(1).uniform(-3, 3, size=n)).float()
    table = torch.zeros(n, n)
    table[torch.arange(n - 1), torch.arange(1, n)] = conf[: n - 1]
    expected = np.mean([-(c - math.log(math.exp(c) + n - 1)) for c in conf[: n - 1].double().tolist()])
    r = sliding_window_loss(bigram_lm(table), tokens, block, stride=stride, batch_size=4)
    assert r["tokens_scored"] == n - 1
    assert r["loss"] == pytest.approx(expected, abs=1e-6)


def test_overlap_gives_context_and_matches_hand_computed_contexts():
    vocab, tokens = 7, np.arange(11) % 7  # 10 targets
    fn = context_lm(vocab)
    # block 4, stride 2: windows at 0, 2, 4, 6; the first scores targets 1-4 with 1-4 tokens of context,
    # each later one its last 2 targets with 3 and 4 tokens of context.
    overlapping = sliding_window_loss(fn, tokens, 4, stride=2)
    ctx = [1, 2, 3, 4, 3, 4, 3, 4, 3, 4]
    assert overlapping["loss"] == pytest.approx(np.mean([context_loss(vocab, c) for c in ctx]), abs=1e-6)
    assert overlapping["windows"] == 4
    # block 4, stride 4: non-overlapping blocks at 0, 4, 8 (the last one short).
    blocks = sliding_window_loss(fn, tokens, 4, stride=4)
    ctx = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2]
    assert blocks["loss"] == pytest.approx(np.mean([context_loss(vocab, c) for c in ctx]), abs=1e-6)
    assert overlapping["loss"] < blocks["loss"]
    # on a long stream, smaller strides give every token more context, so the loss keeps falling
    long = np.arange(500) % vocab
    losses = [sliding_window_loss(fn, long, 16, stride=s)["loss"] for s in (16, 8, 4, 1)]
    assert all(a > b for a, b in zip(losses, losses[1:]))


def test_batch_size_max_tokens_and_input_types():
    table = torch.randn(11, 11, generator=torch.Generator().manual_seed(3))
    tokens = np.random.default_rng(3).integers(0, 11, size=400)
    a = sliding_window_loss(bigram_lm(table), tokens, 16, stride=8, batch_size=1)
    b = sliding_window_loss(bigram_lm(table), torch.from_numpy(tokens), 16, stride=8, batch_size=64)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-9)
    capped = sliding_window_loss(bigram_lm(table), tokens, 16, stride=8, max_tokens=100)
    assert capped["tokens_scored"] == 100
    assert capped["loss"] == pytest.approx(bigram_loss(table, tokens[:101]), abs=1e-6)
    # a (logits, cache) tuple is accepted, as a cached causal LM returns
    t = sliding_window_loss(lambda x: (table[x], None), tokens, 16, stride=16)
    assert t["loss"] == pytest.approx(bigram_loss(table, tokens), abs=1e-6)


def test_loss_runs_in_inference_mode_and_rejects_bad_input():
    seen = []
    sliding_window_loss(
        lambda x: seen.append(torch.is_inference_mode_enabled()) or torch.zeros(*x.shape, 5), np.arange(20) % 5, 4
    )
    assert seen and all(seen)
    with pytest.raises(ConfigError):
        sliding_window_loss(uniform_lm(5), np.arange(20) % 5, 4, stride=5)
    with pytest.raises(ConfigError):
        sliding_window_loss(uniform_lm(5), np.arange(20) % 5, 0)
    with pytest.raises(DataError):
        sliding_window_loss(uniform_lm(5), np.array([3]), 4)
    with pytest.raises(DataError):
        sliding_window_loss(uniform_lm(5), np.arange(20), 4)  # ids beyond the vocabulary


def test_bits_per_unit():
    assert bits_per_unit(math.log(2), 100, 100) == pytest.approx(1.0)
    assert bits_per_unit(1.0, 1000, 4000) == pytest.approx(1000 / (4000 * math.log(2)))
    assert bits_per_unit(2.0, 300, 1200) == pytest.approx(0.5 / math.log(2))
    with pytest.raises(DataError):
        bits_per_unit(1.0, 10, 0)


# -------------------------------------------------------------------------------------------- diversity


def test_distinct_n_hand_examples():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)  # pooled across samples
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["x"], 2) == 0.0 and distinct_n([], 1) == 0.0
    assert distinct_n(["abab"], 1, unit="char") == 0.5
    assert distinct_n(["ab ab"], 2, unit="char") == pytest.approx(3 / 4)  # ab, "b ", " a", ab
    assert distinct_n(["你好你好"], 1, unit="char") == 0.5
    with pytest.raises(ConfigError):
        distinct_n(["a"], 1, unit="token")


def _random_texts(seed: int, n: int, vocab: int = 30, lo: int = 0, hi: int = 25) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{w}" for w in rng.integers(0, vocab, size=rng.integers(lo, hi))) for _ in range(n)]


def test_self_bleu_matches_nltk_sentence_bleu():
    bleu = pytest.importorskip("nltk.translate.bleu_score")
    smooth = bleu.SmoothingFunction().method1
    for seed, max_n in [(0, 4), (1, 4), (2, 2), (3, 3), (4, 1)]:
        texts = _random_texts(seed, 12, vocab=8 + 10 * seed)
        texts[3] = texts[5]  # a duplicate pair
        words = [t.split() for t in texts]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NLTK warns about empty / short hypotheses
            ref = np.mean(
                [
                    bleu.sentence_bleu(
                        words[:i] + words[i + 1 :], words[i], weights=(1 / max_n,) * max_n, smoothing_function=smooth
                    )
                    for i in range(len(words))
                ]
            )
        assert self_bleu(texts, max_n=max_n) == pytest.approx(ref, abs=1e-12)


def test_self_bleu_extremes_and_monotonic_in_overlap():
    same = ["the cat sat on the mat today"] * 5
    assert self_bleu(same) == pytest.approx(1.0)
    disjoint = [" ".join(f"{c}{i}" for i in range(8)) for c in "abcdef"]
    assert self_bleu(disjoint) == 0.0
    # samples share the first k of 12 words and differ in the rest: more overlap, higher self-BLEU
    rng = np.random.default_rng(0)

    def overlapping(k: int) -> list[str]:
        shared = [f"s{i}" for i in range(k)]
        return [" ".join(shared + [f"u{j}_{rng.integers(10**6)}" for j in range(12 - k)]) for _ in range(6)]

    scores = [self_bleu(overlapping(k)) for k in (0, 3, 6, 9, 12)]
    assert scores[0] == 0.0 and scores[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(scores, scores[1:]))


def test_self_bleu_subset_is_seeded():
    texts = _random_texts(7, 60)
    a, b = self_bleu(texts, max_samples=20, seed=1), self_bleu(texts, max_samples=20, seed=1)
    assert a == b
    assert self_bleu(texts, max_samples=None) == self_bleu(texts, max_samples=60)
    with pytest.raises(ConfigError):
        self_bleu(["only one"])


# ----------------------------------------------------------------------------------------- memorisation


def _brute_longest(sample: str, corpus: str) -> tuple[int, int]:
    best = (0, 0)
    for i in range(len(sample)):
        for j in range(i + best[0] + 1, len(sample) + 1):
            if sample[i:j] in corpus:
                best = (j - i, i)
            else:
                break
    return best


def test_longest_span_planted_copy_none_and_whole():
    rng = np.random.default_rng(0)
    corpus = "".join(rng.choice(list("abcdefgh"), size=5000))
    sample = "".join(rng.choice(list("xyz"), size=200))
    assert longest_verbatim_span(sample, corpus) == (0, 0)
    planted = sample[:70] + corpus[1234:1294] + sample[70:]
    length, start = longest_verbatim_span(planted, corpus)
    assert (length, start) == (60, 70)
    assert longest_verbatim_span(corpus[100:400], corpus) == (300, 0)
    assert longest_verbatim_span(corpus, corpus) == (5000, 0)
    assert longest_verbatim_span("", corpus) == (0, 0)
    assert longest_verbatim_span("abc", "") == (0, 0)


def test_longest_span_matches_brute_force():
    rng = np.random.default_rng(1)
    corpus = "".join(rng.choice(list("abc d"), size=3000))
    index = CorpusIndex(corpus)
    for _ in range(40):
        sample = "".join(rng.choice(list("abc de"), size=rng.integers(0, 80)))
        assert index.longest_span(sample) == _brute_longest(sample, corpus)
    for needle in ["ab", "abcabcabc", corpus[-7:], corpus[:9], "e"]:
        assert (index.find(needle) >= 0) == (needle in corpus)
        if needle in index:
            assert corpus.startswith(needle, index.find(needle))


def test_longest_span_unicode():
    corpus = "床前明月光，疑是地上霜。举头望明月，低头思故乡。" * 3 + "春眠不觉晓，处处闻啼鸟。"
    sample = "今天我们读：举头望明月，低头思故乡。然后休息"
    length, start = longest_verbatim_span(sample, CorpusIndex(corpus))
    assert sample[start : start + length] == "举头望明月，低头思故乡。"
    assert (length, start) == _brute_longest(sample, corpus)
    assert longest_verbatim_span("🙂 emoji 🙂", "no emoji here 🙂") == _brute_longest("🙂 emoji 🙂", "no emoji here 🙂")


def test_corpus_index_on_a_megabyte_and_memorization_copy_rate():
    rng = np.random.default_rng(2)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz     "))
    corpus = "".join(rng.choice(letters, size=1_000_000))
    index = CorpusIndex(corpus)
    assert len(index) == 1_000_000
    novel = ["".join(rng.choice(letters, size=500)) for _ in range(40)]
    copies = []
    for k in range(10):  # a 60- to 150-character verbatim copy planted in novel text
        length, at = 60 + 10 * k, int(rng.integers(0, 999_000))
        copies.append(novel[k][:100] + corpus[at : at + length] + novel[k][100 : 500 - length])
    samples = novel + copies
    m = memorization(samples, index, threshold=50)
    assert m["copy_rate"] == pytest.approx(10 / 50)
    assert m["longest_span_max"] == 150 and m["threshold"] == 50
    assert [w["sample"] for w in m["worst"]] == [49, 48, 47, 46, 45]
    assert m["worst"][0]["length"] == 150 and m["worst"][0]["text"] in corpus
    assert m["longest_span_median"] < 15  # random text shares only short spans
    assert memorization(novel, index)["copy_rate"] == 0.0


def test_memorization_worst_text_truncated_and_str_corpus():
    corpus = "x" * 10 + "".join(chr(0x4E00 + i) for i in range(400))
    m = memorization([corpus[5:405], "none here"], corpus, threshold=300)
    assert m["longest_span_max"] == 400 and m["copy_rate"] == 0.5
    assert len(m["worst"][0]["text"]) == 200 and m["worst"][1]["length"] == 0
    with pytest.raises(DataError):
        memorization([], corpus)


def test_text_floor_is_seeded_and_cut_at_whitespace():
    rng = np.random.default_rng(5)
    words = [f"word{i}" for i in range(500)]
    val = " ".join(rng.choice(words, size=4000))
    corpus = " ".join(rng.choice(words, size=100))
    a = text_floor(val, corpus, 120, 10, seed=3)
    assert a == text_floor(val, CorpusIndex(corpus), 120, 10, seed=3)
    assert a != text_floor(val, corpus, 120, 10, seed=4)
    assert len(a) == 10
    for ex in a:
        assert 100 <= len(ex) <= 120 and ex in val
        start = val.index(ex)
        assert start == 0 or val[start - 1] == " "  # starts at a word
        assert start + len(ex) == len(val) or val[start + len(ex)] == " "  # ends at a word
    starts = sorted(val.index(ex) for ex in a)
    assert all(s2 >= s1 + 120 for s1, s2 in zip(starts, starts[1:]))  # non-overlapping
    with pytest.warns(UserWarning, match="overlaps the training"):
        text_floor(val, val, 120, 10)
    with pytest.raises(DataError):
        text_floor("too short", corpus, 120, 3)
