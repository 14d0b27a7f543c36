"""The compiled decoding step: same logits and cache contents as the eager model, compiled only for the batch
sizes where it was measured faster (``COMPILE_MAX_BATCH``), and no deprecation noise from the CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import conftest
import pytest
import torch
from conftest import GENLOOP, cli_env

import genloop
from genloop.models.transformer import COMPILE_MAX_BATCH, GPT, CompiledDecoder, GPTConfig, KVCache


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=12, dropout=0.0, bias=False), 11).eval()


def test_compiled_step_matches_eager_logits_and_cache(model: GPT) -> None:
    """Per-layer cache tensors are written in place at each position, as the eager stacked cache is."""
    dec = CompiledDecoder(model)
    ids = torch.randint(0, 11, (1, 9), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        eager, comp = model.new_cache(1), dec.new_cache(1)
        buffers = [k.data_ptr() for k in comp.k]
        model(ids[:, :3], eager), dec(ids[:, :3], comp)  # the prefill runs eagerly, into the same layout
        for t in range(3, 9):
            assert torch.allclose(model(ids[:, t : t + 1], eager), dec(ids[:, t : t + 1], comp), atol=1e-5)
    assert comp.length == eager.length == 9 and comp.batch_size == 1 and comp.block_size == 12
    assert [k.data_ptr() for k in comp.k] == buffers  # updated in place, never reallocated
    for i in range(2):
        assert torch.allclose(comp.k[i][:, :, :9], eager.k[i][:, :, :9], atol=1e-6)
        assert torch.allclose(comp.v[i][:, :, :9], eager.v[i][:, :, :9], atol=1e-6)
    assert not dec._eager


def test_batches_above_the_measured_limit_decode_eagerly(model: GPT) -> None:
    dec = CompiledDecoder(model)
    big = COMPILE_MAX_BATCH + 1
    assert dec.compiles(COMPILE_MAX_BATCH) and not dec.compiles(big)
    cache = dec.new_cache(big)
    assert type(cache) is KVCache and cache.k.shape[1] == big  # the model's own stacked cache
    calls = []
    dec._step = lambda *a: calls.append(a)  # must not be reached
    ids = torch.randint(0, 11, (big, 4), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        eager = model.new_cache(big)
        model(ids[:, :2], eager), dec(ids[:, :2], cache)
        assert torch.equal(model(ids[:, 2:3], eager), dec(ids[:, 2:3], cache))
    assert not calls and cache.length == 3
    assert CompiledDecoder(model, max_batch=None).compiles(10_000)  # what the benchmark forces


def test_cli_generate_compile_prints_no_deprecation_warnings(tmp_path: Path) -> None:
    """`genloop generate --compile` in a fresh process: Inductor imports torch.utils.mkldnn, whose
    ``torch.jit.script_method`` decorators each raise a DeprecationWarning; none may reach the terminal."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 40, encoding="utf-8")
    env = cli_env(tmp_path)
    run = genloop.train(
        "gpt", data=str(corpus), overrides=conftest.TINY_GPT, steps=2, progress=False, runs_dir=tmp_path / "runs"
    )
    args = [*GENLOOP, "generate", run.id, "--prompt", "The", "--max-tokens", "6", "--compile", "--seed", "0"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "deprecated" not in done.stderr.lower() and "script_method" not in done.stderr, done.stderr
    assert done.stdout.startswith("The")
