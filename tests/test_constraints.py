"""Constrained decoding (genloop.generation.constraints): the regex -> DFA compiler against Python's ``re``, and
sampling under a constraint with a char and a byte-level BPE tokenizer — every finished sample is a whole
match, over many seeds, with the other controls, streaming and beams; unsatisfiable patterns fail in one line.

The model is a randomly initialised GPT: a constraint must hold whatever the model prefers."""

from __future__ import annotations

import random
import re

import pytest
import torch

from genloop.errors import ConfigError
from genloop.generation.constraints import RegexConstraint, compile_dfa, parse
from genloop.generation.text_sampling import SamplingParams, complete, generate_text
from genloop.modalities.text.tokenizers import CharTokenizer, train_tokenizer
from genloop.models.transformer import GPT, GPTConfig

PATTERNS = [
    r"[0-9]{3}-[0-9]{4}",
    r"(ab|a)*c?",
    r"a{2,4}b+",
    r"[^abc]x.",
    r"(?:\d+\.)+\d",
    r"x|yz|",
    r"\w\s\W\S",
    r"[一-龥]{2}，",
    r"a*?b",
    r"[]a-]+",
    r"(a|b)*abb",
    r"\u4e2d\x41\n",
]
ALPHABET = "abcxyz0123.-，中文 \n]A"
TEXT = "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。0123456789-abcxyz "


def lm_for(vocab: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64), vocab).eval()


@pytest.fixture(scope="module")
def char_tok() -> CharTokenizer:
    return CharTokenizer.train([TEXT])


@pytest.fixture(scope="module")
def bpe_tok():
    return train_tokenizer("bpe", [TEXT * 10, "hello 你好 world 世界 " * 20], vocab_size=300)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_dfa_agrees_with_python_re(pattern: str) -> None:
    dfa, rnd = compile_dfa(pattern), random.Random(0)
    texts = ["".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, 7))) for _ in range(2000)]
    texts += ["123-4567", "aab", "abc", "ab", "aaabbb", "1.2.3", "yz", "", "a b!", "中文，", "abb", "中A\n"]
    for t in texts:
        assert dfa.matches(t) == bool(re.fullmatch(pattern, t, re.ASCII)), (pattern, t)


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("^abc", "anchors are implicit"),
        (r"(a)\1", "unsupported escape"),
        ("(ab", "missing ')'"),
        ("ab)", "unbalanced"),
        ("a{3,1}", "repeat bounds"),
        ("*a", "nothing to repeat"),
        ("(?=a)b", "groups are supported"),
        ("[b-a]", "bad range"),
        ("[^\\x00-\\U0010ffff]", "matches no text"),
    ],
)
def test_bad_patterns_are_one_config_error_line(pattern: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        compile_dfa(pattern)
    assert "\n" not in str(e.value)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        parse(3)  # type: ignore[arg-type]


def _samples(tok, pattern: str, n: int = 40, **settings) -> list:
    c = RegexConstraint(pattern).bind(tok)
    params = SamplingParams(**{"max_tokens": 60, **settings}, constraint=c)
    return complete(lm_for(tok.vocab_size), tok.encode, tok.decode, "", params, seed=0, n=n, eot_id=tok.eot_id)


@pytest.mark.parametrize("pattern", [r"[0-9]{3}-[0-9]{2}", r"(ab|ba)+c", r"[白日依山]{2}，[a-c]?x", r"(黄河|a)+。"])
def test_every_char_sample_matches_its_pattern(char_tok, pattern: str) -> None:
    outs = _samples(char_tok, pattern)
    assert all(o.finish_reason == "stop" for o in outs)  # ended by end-of-text, allowed only on a match
    assert all(re.fullmatch(pattern, o.text) for o in outs), [o.text for o in outs]
    assert len({o.text for o in outs}) > 5  # seeds differ


@pytest.mark.parametrize("pattern", [r"[白日依山尽]{3}，[0-9]+。", r"(你好|世界)+ [a-z]{2}", r"[一-龥]{2}x"])
def test_every_bpe_sample_matches_its_pattern_across_half_characters(bpe_tok, pattern: str) -> None:
    outs = _samples(bpe_tok, pattern, n=25)
    assert all(o.finish_reason == "stop" and re.fullmatch(pattern, o.text) for o in outs), [o.text for o in outs]


def test_bpe_token_bytes_are_exact(bpe_tok) -> None:
    tb = bpe_tok.token_bytes()
    assert tb[bpe_tok.eot_id] is None
    ids = bpe_tok.encode("你好 world 黄河")
    assert b"".join(tb[i] for i in ids).decode("utf-8") == "你好 world 黄河"


def test_constraint_composes_with_every_control(char_tok) -> None:
    pattern = r"[0-9a-c]{4}-[0-9]{2}"
    ban = char_tok.encode("7")[0]
    outs = _samples(
        char_tok,
        pattern,
        n=30,
        temperature=0.7,
        top_k=3,
        top_p=0.5,
        repetition_penalty=1.3,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={ban: -100.0},
    )
    assert all(re.fullmatch(pattern, o.text) and "7" not in o.text for o in outs)
    greedy = _samples(char_tok, pattern, n=2, temperature=0)
    assert greedy[0].text == greedy[1].text and re.fullmatch(pattern, greedy[0].text)


def test_constraint_composes_with_the_watermark(char_tok) -> None:
    from genloop.safety.text_watermark import TextWatermark

    pattern = r"[0-9a-c]{6}"
    wm = TextWatermark(b"k" * 16, delta=4.0, vocab_size=char_tok.vocab_size)
    outs = _samples(char_tok, pattern, n=20, watermark=wm)
    plain = _samples(char_tok, pattern, n=20)
    assert all(re.fullmatch(pattern, o.text) for o in outs)
    assert [o.text for o in outs] != [o.text for o in plain]  # the watermark still moves the choice


def test_streamed_constrained_text_is_the_text(char_tok) -> None:
    pattern = r"(黄河|白日)+，[0-9]{3}。"
    c = RegexConstraint(pattern).bind(char_tok)
    lm = lm_for(char_tok.vocab_size)
    params = SamplingParams(max_tokens=40, constraint=c, stop=["。"])
    for seed in range(5):
        pieces = list(generate_text(lm, char_tok.encode, char_tok.decode, "", params, seed=seed, stream=True,
                                    eot_id=char_tok.eot_id))  # fmt: skip
        whole = generate_text(lm, char_tok.encode, char_tok.decode, "", params, seed=seed, eot_id=char_tok.eot_id)
        assert "".join(p for _, p in pieces) == whole[0]
        assert re.fullmatch(pattern, whole[0] + "。")  # the stop string cut the final 。


@pytest.mark.parametrize("tok_name", ["char_tok", "bpe_tok"])
def test_beam_search_keeps_to_the_constraint(tok_name: str, request: pytest.FixtureRequest) -> None:
    tok = request.getfixturevalue(tok_name)
    pattern = r"[a-c]{2,5}x|[0-9]{3}"
    c = RegexConstraint(pattern).bind(tok)
    params = SamplingParams(max_tokens=20, num_beams=4, constraint=c)
    text = generate_text(lm_for(tok.vocab_size), tok.encode, tok.decode, "0", params, eot_id=tok.eot_id)[0]
    assert re.fullmatch(pattern, text)


def test_unsatisfiable_pattern_is_one_line_not_a_hang(char_tok) -> None:
    with pytest.raises(ConfigError, match="no text this tokenizer can write") as e:
        RegexConstraint("[QZ]+").bind(char_tok)  # the vocabulary has neither character
    assert "\n" not in str(e.value)


def test_dead_ends_are_never_offered(char_tok) -> None:
    c = RegexConstraint("aQ|bx").bind(char_tok)  # no 'Q' in the vocabulary: starting with 'a' leads nowhere
    allowed = c.allowed(c.start())
    a, b = char_tok.encode("ab")
    assert not allowed[a] and allowed[b]
    assert not allowed[char_tok.eot_id]  # end-of-text only on a whole match
    state = c.advance(c.advance(c.start(), b), char_tok.encode("x")[0])
    assert c.allowed(state)[char_tok.eot_id] and int(c.allowed(state).sum()) == 1


def test_unk_is_never_allowed_and_leaving_the_language_is_reported(char_tok) -> None:
    c = RegexConstraint(".+").bind(char_tok)
    assert not c.allowed(c.start())[char_tok.unk_id]
    logits = torch.zeros(1, char_tok.vocab_size)
    with pytest.raises(ConfigError, match="has left the constraint"):
        RegexConstraint("a+").bind(char_tok)(logits, torch.tensor([char_tok.encode("ab")]))


def test_sampling_params_reject_a_non_callable_constraint() -> None:
    with pytest.raises(ConfigError, match="constraint must be a processor"):
        SamplingParams(constraint="[a-z]+").validate()
