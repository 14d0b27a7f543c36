"""The green-list text watermark (issue 15): the split, the detector's z-score, the store key, the recipe, and
the sampler's streaming and beam search with the watermark on."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import conftest
import pytest
import torch

import genloop
from genloop.errors import ConfigError
from genloop.generation.text_sampling import SamplingParams, generate_text
from genloop.safety.text_watermark import TextWatermark, detect_in_store, detect_text, key_path, store_key

KEY = bytes(range(32))
V = 64


class UniformLM:
    """Equal logits for every token after any context: text that is the watermark and nothing else."""

    block_size = 64

    def __init__(self, vocab: int = V) -> None:
        self.vocab = vocab

    def new_cache(self, batch_size: int) -> None:
        return None

    def __call__(self, idx: torch.Tensor, cache: Any = None) -> torch.Tensor:
        return torch.zeros(idx.shape[0], idx.shape[1], self.vocab)


def encode(s: str) -> list[int]:
    return [ord(c) - 32 for c in s]


def decode(ids: list[int]) -> str:
    return "".join(chr(i + 32) for i in ids)


def test_green_list_is_keyed_deterministic_and_gamma_v() -> None:
    wm = TextWatermark(KEY)
    a = wm.green_list(7, 1000)
    assert len(a) == 250 and torch.equal(a, TextWatermark(KEY).green_list(7, 1000))
    assert len(set(a.tolist())) == 250 and int(a.max()) < 1000
    assert not torch.equal(a, wm.green_list(8, 1000))  # another previous token, another list
    other = TextWatermark(bytes(range(1, 33))).green_list(7, 1000)
    assert len(set(a.tolist()) & set(other.tolist())) < 120  # ~62 by chance; the same list would share 250
    assert len(TextWatermark(KEY, gamma=0.5).green_list(3, 10)) == 5


def test_detector_z_near_zero_on_random_tokens_high_on_watermarked() -> None:
    wm = TextWatermark(KEY)
    g = torch.Generator().manual_seed(0)
    zs = [wm.detect_ids(torch.randint(0, V, (200,), generator=g).tolist(), V).z for _ in range(40)]
    assert abs(sum(zs) / len(zs)) < 0.6 and max(zs) < 4
    params = SamplingParams(max_tokens=200, watermark=wm, stop_at_eot=False)
    texts = generate_text(UniformLM(), encode, decode, "a", params, seed=0, n=4)
    for text in texts:
        r = wm.detect_ids(encode("a" + text), V)
        assert r.watermarked and r.z > 6 and r.p_value < 1e-8
        assert r.tokens_scored <= 200 and r.green <= r.tokens_scored
    plain = generate_text(UniformLM(), encode, decode, "a", SamplingParams(max_tokens=200), seed=0, n=4)
    assert all(not wm.detect_ids(encode(t), V).watermarked for t in plain)


def test_delta_zero_gives_no_signal() -> None:
    wm = TextWatermark(KEY, delta=0.0)
    params = SamplingParams(max_tokens=200, watermark=wm)
    marked = generate_text(UniformLM(), encode, decode, "a", params, seed=3, n=2)
    plain = generate_text(UniformLM(), encode, decode, "a", SamplingParams(max_tokens=200), seed=3, n=2)
    assert marked == plain  # delta 0 changes no logit, so no token
    assert all(abs(wm.detect_ids(encode(t), V).z) < 4 for t in marked)


def test_padded_logits_get_the_tokenizers_lists() -> None:
    """A model whose logits are wider than the tokenizer's vocabulary: the padding gets no bias, and the
    lists are the ones the detector (which knows only the tokenizer) draws."""
    wm = TextWatermark(KEY, vocab_size=V)
    out = wm(torch.zeros(2, V + 16), torch.tensor([3, 9]))
    assert torch.equal(out[:, V:], torch.zeros(2, 16))
    assert torch.equal(out[0, :V].nonzero()[:, 0], wm.green_list(3, V)) and out.max() == 2.0
    params = SamplingParams(max_tokens=200, watermark=wm, logit_bias={k: -100.0 for k in range(V, V + 16)})
    text = generate_text(UniformLM(V + 16), encode, decode, "a", params, seed=1, n=1)[0]
    assert wm.detect_ids(encode("a" + text), V).watermarked


def test_repeated_pairs_are_scored_once() -> None:
    wm = TextWatermark(KEY)
    ids = [1, 2] * 50
    assert wm.detect_ids(ids, V).tokens_scored == 2
    assert TextWatermark(KEY, ignore_repeated=False).detect_ids(ids, V).tokens_scored == 99


def test_streaming_equals_non_streaming_and_beams_run() -> None:
    wm = TextWatermark(KEY)
    lm = UniformLM()
    params = SamplingParams(max_tokens=60, temperature=0.9, top_p=0.95, watermark=wm)
    whole = generate_text(lm, encode, decode, "ab", params, seed=5, n=1)[0]
    pieces = "".join(p for _, p in generate_text(lm, encode, decode, "ab", params, seed=5, n=1, stream=True))
    assert pieces == whole and len(whole) == 60
    beams = SamplingParams(max_tokens=30, num_beams=3, watermark=wm)
    text = generate_text(lm, encode, decode, "ab", beams, n=1)[0]
    assert len(text) == 30 and wm.detect_ids(encode("b" + text), V).z > 4  # greedy over green ties


def test_store_key_is_0600_reused_and_never_in_the_recipe(tmp_path: Path) -> None:
    key = store_key(tmp_path / "store")
    path = key_path(tmp_path / "store")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(key) == 32
    assert store_key(tmp_path / "store") == key and store_key(tmp_path / "other") != key


def test_bad_settings_and_input_are_one_line_config_errors() -> None:
    for kwargs in ({"gamma": 0.0}, {"gamma": 1.0}, {"gamma": 1.5}, {"delta": -1.0}, {"delta": float("nan")}):
        with pytest.raises(ConfigError) as e:
            TextWatermark(KEY, **kwargs)
        assert "\n" not in str(e.value) and "watermark" in str(e.value)
    wm = TextWatermark(KEY)
    for text in ("", "   "):
        with pytest.raises(ConfigError, match="empty"):
            wm.detect(text, encode, V)


def varied_corpus(path: Path) -> Path:
    """Words in random order: a tiny model trained briefly on it writes varied text (a repetitive corpus
    would teach it to repeat, and repeated token pairs are scored once)."""
    import random

    rng = random.Random(0)
    words = "the quick brown fox jumps over lazy dog and cat sat on mat with big red hat in sun".split()
    path.write_text(" ".join(rng.choice(words) for _ in range(1500)) + ".", encoding="utf-8")
    return path


def test_pipeline_recipe_cli_and_detect_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = varied_corpus(tmp_path / "corpus.txt")
    overrides = [*conftest.TINY_GPT, "train.warmup_steps=2", "train.lr=3e-3"]
    run = genloop.train("gpt", data=str(corpus), overrides=overrides, steps=20, progress=False)
    pipe = genloop.load(run.id)
    full = {"max_tokens": 200, "seed": 0, "logit_bias": {pipe.tokenizer.eot_id: -100}}  # no early end of text
    out = pipe(prompt="The ", watermark=True, **full)
    plain = pipe(prompt="The ", **full)
    assert "watermark" not in plain.recipe  # off by default: recipes as before
    wm = out.recipe["watermark"]
    assert wm["scheme"] == "kirchenbauer" and wm["gamma"] == 0.25 and wm["delta"] == 2.0 and len(wm["key_id"]) == 12
    key = key_path(Path(os.environ["GENLOOP_RUNS_DIR"])).read_bytes()
    assert key.hex() not in json.dumps(out.recipe) and str(list(key)) not in json.dumps(out.recipe)
    found = detect_text("The " + out.text, run.id)
    assert found.watermarked and found.z >= 4 and found.tokens_scored > 100, found
    assert detect_text("The " + out.text, pipe).z == found.z
    assert not detect_text("The " + plain.text, run.id).watermarked
    assert detect_in_store("The " + out.text)[0] == run.id and detect_in_store("The " + out.text)[1].z == found.z
    streamed = "".join(pipe(prompt="The ", watermark=True, stream=True, **full))
    assert streamed == out.text
    code, printed, _ = conftest.cli(
        capsys, "generate", run.id, "--prompt", "The ", "--max-tokens", "60", "--watermark", "--no-stream"
    )
    assert code == 0
    lines = (Path(run.dir) / "generated" / "texts.jsonl").read_text(encoding="utf-8").splitlines()
    recipe = json.loads(lines[-1])["recipe"]
    assert recipe["watermark"]["key_id"] == wm["key_id"]
    assert key.hex() not in lines[-1]
    # `genloop verify --text`: the text alone (no metadata) is recognised, with or without --run
    marked, unmarked = tmp_path / "marked.txt", tmp_path / "plain.txt"
    marked.write_text("The " + out.text, encoding="utf-8")
    unmarked.write_text("The " + plain.text, encoding="utf-8")
    code, printed, _ = conftest.cli(capsys, "verify", "--text", str(marked))
    assert code == 0 and f"{marked}: watermarked (z " in printed and f"tokenizer of run {run.id}" in printed
    code, printed, _ = conftest.cli(capsys, "verify", "--text", str(marked), "--text", str(unmarked), "--run", run.id)
    assert code == 1 and "watermarked" in printed and f"{unmarked}: no watermark (z " in printed
    code, printed, _ = conftest.cli(capsys, "verify", "--text", str(tmp_path / "missing.txt"))
    assert code == 1 and "error (not a readable UTF-8 text file" in printed
    code, _, err = conftest.cli(capsys, "verify", "--run", run.id)
    assert code == 2 and "give at least one FILE" in err


def test_server_completions_take_watermark(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from studio_support import WorkerThread

    from genloop.server.app import create_app
    from genloop.server.settings import Settings

    corpus = varied_corpus(tmp_path / "corpus.txt")
    runs = tmp_path / "store"
    overrides = [*conftest.TINY_GPT, "train.warmup_steps=2", "train.lr=3e-3"]
    run = genloop.train("gpt", data=str(corpus), overrides=overrides, steps=20, progress=False, runs_dir=runs)
    settings = Settings(
        runs=runs,
        db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}",
        media_dir=tmp_path / "media",
        uploads_dir=tmp_path / "uploads",
        poll_interval=0.01,
    )
    client = TestClient(create_app(settings))
    eot = genloop.load(run.id, runs_dir=runs).tokenizer.eot_id
    ask = {"model": run.id, "prompt": "The ", "max_tokens": 200, "seed": 0, "logit_bias": {str(eot): -100}}
    with WorkerThread(settings):
        marked = client.post("/v1/completions", json={**ask, "watermark": True})
        plain = client.post("/v1/completions", json=ask)
    assert marked.status_code == 200 and plain.status_code == 200, marked.text
    text = marked.json()["choices"][0]["text"]
    assert text != plain.json()["choices"][0]["text"]
    assert detect_text("The " + text, run.id, runs_dir=runs).watermarked
    assert not detect_text("The " + plain.json()["choices"][0]["text"], run.id, runs_dir=runs).watermarked
