"""The GPT model: shapes, loss, causality, KV-cache equivalence, tying, learning, config validation."""

from __future__ import annotations

import math

import pytest
import torch

from genloop.errors import ConfigError
from genloop.models.transformer import GPT, GPTConfig, KVCache

VOCAB = 11


def tiny(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16, **overrides})
    return GPT(cfg, VOCAB)


def tokens(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_untrained_loss() -> None:
    model = tiny()
    assert model.block_size == 16 and model.vocab_size == VOCAB
    idx = tokens(3, 10)
    logits = model(idx)
    assert logits.shape == (3, 10, VOCAB) and logits.dtype == torch.float32
    loss = model.loss(idx, tokens(3, 10, seed=2))
    assert loss.ndim == 0 and abs(loss.item() - math.log(VOCAB)) < 0.3
    assert model.num_params() == model.num_params(non_embedding=False) - 16 * 16


def test_ignored_targets() -> None:
    model = tiny()
    idx, targets = tokens(2, 8), tokens(2, 8, seed=2)
    masked = targets.clone()
    masked[:, 4:] = -1
    expected = model.loss(idx[:, :4], targets[:, :4])  # causal: the first 4 logits do not see the rest
    torch.testing.assert_close(model.loss(idx, masked), expected)


def test_causality() -> None:
    model = tiny().eval()
    idx = tokens(1, 12)
    changed = idx.clone()
    changed[0, 7] = (changed[0, 7] + 1) % VOCAB
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def run_chunks(model: GPT, idx: torch.Tensor, sizes: list[int], cache: KVCache | None = None) -> torch.Tensor:
    cache = cache if cache is not None else model.new_cache(idx.shape[0])
    outs, pos = [], 0
    for n in sizes:
        outs.append(model(idx[:, pos : pos + n], cache=cache))
        pos += n
        assert cache.length == pos
    assert pos == idx.shape[1]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "sizes", [[5] + [1] * 11, [1] * 16, [4, 3, 1, 6, 2], [16]], ids=["prefill+steps", "steps", "chunks", "one-prefill"]
)
def test_cache_matches_full_forward(batch: int, sizes: list[int]) -> None:
    model = tiny().eval()
    idx = tokens(batch, 16)
    with torch.no_grad():
        full = model(idx)
        cached = run_chunks(model, idx, sizes)
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-5)


def test_cache_under_inference_mode_and_bias() -> None:
    """The sampler creates and uses caches inside torch.inference_mode(); biases take the same path."""
    model = tiny(bias=True).eval()
    idx = tokens(2, 9)
    with torch.inference_mode():
        full = model(idx)
        cached = run_chunks(model, idx, [3, 1, 1, 4])
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-5)


def test_cache_overflow_and_reset() -> None:
    model = tiny().eval()
    idx = tokens(2, 16)
    cache = model.new_cache(2)
    assert cache.k.shape == (2, 2, 2, 16, 8) and cache.k.dtype == torch.float32
    with torch.no_grad():
        first = run_chunks(model, idx, [10, 6], cache)
        with pytest.raises(ValueError, match="context"):
            model(idx[:, :1], cache=cache)
        assert cache.length == 16  # a refused call leaves the cache as it was
        cache.reset()
        assert cache.length == 0
        with pytest.raises(ValueError, match="context"):
            model(torch.zeros(2, 17, dtype=torch.long), cache=cache)
        again = run_chunks(model, idx, [10, 6], cache)
        with pytest.raises(ValueError, match="batch size"):
            model(idx[:1, :1], cache=model.new_cache(2))
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 17, dtype=torch.long))
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def test_weight_tying_and_state_dict_round_trip() -> None:
    model = tiny().eval()
    assert model.lm_head.weight is model.wte.weight
    fresh = tiny(seed=123).eval()
    idx = tokens(2, 16)
    assert not torch.allclose(fresh(idx), model(idx))
    fresh.load_state_dict(model.state_dict())
    assert fresh.lm_head.weight is fresh.wte.weight
    torch.testing.assert_close(fresh(idx), model(idx), rtol=0, atol=0)


def test_gpt2_init() -> None:
    model = tiny(n_layer=8, n_embd=64, n_head=4)
    proj = torch.cat(
        [b.attn.c_proj.weight.flatten() for b in model.blocks] + [b.mlp.c_proj.weight.flatten() for b in model.blocks]
    )
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.blocks])
    assert abs(proj.std().item() - 0.02 / math.sqrt(16)) < 0.0005
    assert abs(fc.std().item() - 0.02) < 0.001
    assert all(b.attn.c_attn.bias is None for b in model.blocks)
    biased = tiny(bias=True)
    assert all(torch.count_nonzero(b.mlp.c_fc.bias) == 0 for b in biased.blocks)


def test_overfits_one_batch() -> None:
    model = tiny(n_embd=32)
    idx = tokens(2, 17, seed=3)
    idx[:, 0] = torch.tensor([0, 1])  # distinct first tokens: every prefix determines its next token
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if loss.item() < 0.1:
            break
    assert loss.item() < 0.1


def test_seeded_determinism() -> None:
    a, b = tiny(seed=7), tiny(seed=7)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    assert not torch.equal(tiny(seed=8).wte.weight, a.wte.weight)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_embd": 130, "n_head": 4}, r"model\.n_embd \(130\) must be divisible by model\.n_head \(4\)"),
        ({"n_layer": 0}, "model.n_layer"),
        ({"n_head": 0}, "model.n_head"),
        ({"block_size": 0}, "model.block_size"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"dropout": -0.1}, "model.dropout"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GPTConfig(**kwargs)


def test_config_name_is_first_field() -> None:
    import dataclasses

    assert dataclasses.fields(GPTConfig)[0].name == "name" and GPTConfig().name == "gpt"


def test_dropout_train_stochastic_eval_deterministic() -> None:
    model = tiny(dropout=0.3)
    idx = tokens(2, 12)
    model.train()
    assert not torch.allclose(model(idx), model(idx))
    model.eval()
    torch.testing.assert_close(model(idx), model(idx), rtol=0, atol=0)
    with torch.no_grad():  # eval mode turns dropout off on the cached path too
        torch.testing.assert_close(run_chunks(model, idx, [4, 1, 7]), model(idx), rtol=0, atol=1e-5)
