"""The text loop end to end: train a GPT on a text file, a folder and a JSONL file (API and CLI), generate
with every control, stream, evaluate, report; exact resume; early stopping; gradient accumulation."""

from __future__ import annotations

import json
from pathlib import Path

import conftest
import pytest
import torch
from conftest import cli

import genloop
from genloop.errors import ConfigError, DataError

TINY_GPT = [*conftest.TINY_GPT, "train.warmup_steps=2", "train.lr=3e-3"]

TEXT = (
    "The quick brown fox jumps over the lazy dog. " * 6 + "\n"
    "机器学习很有趣。我们一起训练模型。\n"
    "Pack my box with five dozen liquor jugs! 🎵\n"
) * 8


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    for i in range(6):
        (root / ("sub" if i % 2 else "") / f"doc{i}.txt").write_text(
            f"Document {i}. " + TEXT[: 200 + 30 * i], encoding="utf-8"
        )
    return root


@pytest.fixture()
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    lines = [
        json.dumps({"id": i, "body": f"Record {i}: " + TEXT[i * 40 : i * 40 + 300]}, ensure_ascii=False)
        for i in range(8)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train(data: Path | str, steps: int = 30, extra: tuple[str, ...] = (), **kw) -> genloop.api.Run:
    return genloop.train("gpt", data=str(data), overrides=[*TINY_GPT, *extra], steps=steps, progress=False, **kw)


@pytest.mark.parametrize("source", ["corpus", "folder", "jsonl"])
def test_trains_on_file_folder_and_jsonl(source: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(source)
    extra = ("data.jsonl_field=body",) if source == "jsonl" else ()
    run = train(path, steps=40, extra=extra)
    records = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] - 0.5  # it learns
    assert run.info["timings"]["tokens_per_s"] > 0
    assert (run.dir / "tokenizer").is_dir()
    pipe = genloop.load(run.id)
    out = pipe(prompt="The ", max_tokens=10, seed=0)
    assert isinstance(out.text, str) and out.recipe["prompt"] == "The "


def test_bpe_tokenizer_and_chinese_prompt(corpus: Path) -> None:
    run = train(corpus, steps=20, extra=("data.tokenizer=bpe", "data.vocab_size=300"))
    pipe = genloop.load(run.id)
    assert pipe.tokenizer.kind == "bpe"
    text = pipe(prompt="机器", max_tokens=12, seed=1).text
    assert isinstance(text, str)


def test_generation_controls_seeds_and_streaming(corpus: Path) -> None:
    run = train(corpus, steps=60)
    pipe = genloop.load(run.id)
    a = pipe(prompt="The", max_tokens=30, seed=3, temperature=0.9, top_k=5, top_p=0.9, repetition_penalty=1.2, n=3)
    b = pipe(prompt="The", max_tokens=30, seed=3, temperature=0.9, top_k=5, top_p=0.9, repetition_penalty=1.2, n=3)
    assert a.texts == b.texts  # same seed, same text
    single = pipe(prompt="The", max_tokens=30, seed=4, temperature=0.9, top_k=5, top_p=0.9, repetition_penalty=1.2)
    assert single.text == a.texts[1]  # sample i is seed + i, alone or in a batch
    streamed = "".join(
        pipe(
            prompt="The",
            max_tokens=30,
            seed=3,
            temperature=0.9,
            top_k=5,
            top_p=0.9,
            repetition_penalty=1.2,
            stream=True,
        )
    )
    assert streamed == a.texts[0]
    greedy = pipe(prompt="The", max_tokens=20, temperature=0).text
    assert greedy == pipe(prompt="The", max_tokens=20, top_k=1, seed=99).text  # top-k 1 is greedy
    assert greedy == pipe(prompt="The", max_tokens=20, temperature=0, use_cache=False).text  # cache changes nothing
    beams = pipe(prompt="The", max_tokens=10, num_beams=3).text
    assert isinstance(beams, str)
    stopped = pipe(prompt="The", max_tokens=60, temperature=0, stop=[" "]).text
    assert " " not in stopped and len(stopped) < len(pipe(prompt="The", max_tokens=60, temperature=0).text)
    with pytest.raises(ConfigError):
        pipe(prompt="x", top_p=1.5)
    with pytest.raises(ConfigError):
        pipe(prompt="x", stream=True, n=2)


def test_long_prompt_is_truncated_with_a_warning(corpus: Path) -> None:
    run = train(corpus, steps=5)
    pipe = genloop.load(run.id)
    with pytest.warns(UserWarning, match="context"):
        out = pipe(prompt="The quick brown fox " * 10, max_tokens=5, seed=0)
    assert isinstance(out.text, str)


def test_resume_is_exact(corpus: Path, tmp_path: Path) -> None:
    """A run stopped part-way (here by a time budget) and resumed ends with the very weights of an unbroken run:
    same cosine schedule position, same batches, same optimizer state."""
    full = train(corpus, steps=1200, runs_dir=tmp_path / "a")
    part = train(corpus, steps=1200, time_budget=0.3, runs_dir=tmp_path / "b")
    assert 0 < part.info["step"] < 1200
    resumed = genloop.resume(part.id, time_budget=1000, runs_dir=tmp_path / "b", progress=False)
    assert resumed.info["step"] == 1200
    from genloop.serialization import load_tensors

    wa, _ = load_tensors(full.dir / "model.safetensors")
    wb, _ = load_tensors(resumed.dir / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_early_stopping_and_best_checkpoint(corpus: Path) -> None:
    # A learning rate far too high makes validation loss stop improving; early stopping ends the run.
    run = train(
        corpus,
        steps=400,
        extra=(
            "train.eval_every=5",
            "train.early_stop=2",
            "train.lr=0.5",
            "train.warmup_steps=0",
            "train.grad_clip=null",
            "train.eval_tokens=256",
        ),
    )
    assert run.info["stopped_by"] == "early_stop" and run.info["step"] < 400
    assert run.info["best"]["metric"] == "val_loss"
    assert (run.dir / "best.safetensors").is_file()
    assert genloop.load(run.id, checkpoint="best")(prompt="T", max_tokens=3).text is not None


def test_gradient_accumulation_accounting(corpus: Path, tmp_path: Path) -> None:
    # The accounting under accumulation (steps, one metric line per step, tokens/s); that K micro-batches
    # train the same weights as one K-times larger batch is tests/test_engine.py's accumulation test.
    run = train(corpus, steps=6, extra=("train.grad_accum=2",))
    t = run.info["timings"]
    assert run.info["step"] == 6 and t["tokens_per_s"] > 0
    records = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(records) == 6


def test_evaluate_and_report(corpus: Path) -> None:
    run = train(corpus, steps=40)
    r = genloop.evaluate(run.id, n=6)
    for key in (
        "val_loss",
        "perplexity",
        "bits_per_char",
        "bits_per_byte",
        "distinct_1",
        "distinct_2",
        "distinct_3",
        "self_bleu",
        "self_bleu_floor",
        "copy_rate",
        "copy_rate_floor",
        "longest_span_mean",
    ):
        assert key in r, key
    assert r["perplexity"] == pytest.approx(2.718281828 ** r["val_loss"], rel=1e-6)
    assert r["loss_protocol"]["block_size"] == 16
    assert (run.dir / "eval" / "metrics.json").is_file()
    html = genloop.report(run.id).read_text(encoding="utf-8")
    assert "Bits per character" in html and "Tokens / s" in html


def test_bad_text_inputs(tmp_path: Path) -> None:
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(DataError):
        train(binary)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError):
        train(empty)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 10)
    with pytest.raises(DataError, match="offset"):
        train(bad)
    with pytest.raises(ConfigError):
        genloop.train("gpt", data="digits", overrides=TINY_GPT, steps=1, progress=False)  # digits is an image set


def test_cli_train_generate_stream_eval(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(
        capsys, "train", "gpt", "--data", corpus, "--steps", "30", "-q", *[x for s in TINY_GPT for x in ("--set", s)]
    )
    assert code == 0, err
    assert "tokens/s" in err
    run_id = out.strip().splitlines()[-1]
    controls = [
        "--prompt",
        "The",
        "--max-tokens",
        "20",
        "--temperature",
        "0.8",
        "--top-k",
        "10",
        "--top-p",
        "0.95",
        "--repetition-penalty",
        "1.1",
        "--presence-penalty",
        "0.3",
        "--frequency-penalty",
        "0.2",
        "--stop",
        "\n",
        "--seed",
        "7",
    ]
    code, streamed, err = cli(capsys, "generate", run_id, *controls)
    assert code == 0, err
    assert streamed.startswith("The")
    code, printed, _ = cli(capsys, "generate", run_id, *controls, "--no-stream")
    assert printed == streamed  # streamed as it came == printed at the end
    code, out, _ = cli(capsys, "generate", run_id, "--n", "2", "--max-tokens", "10")
    assert code == 0 and "sample 1" in out
    lines = (genloop.api.RunStore().get(run_id).dir / "generated" / "texts.jsonl").read_text().splitlines()
    recipe = json.loads(lines[0])["recipe"]
    assert len(lines) == 4 and recipe["seed"] == 7
    assert (recipe["presence_penalty"], recipe["frequency_penalty"]) == (0.3, 0.2)
    code, _, err = cli(capsys, "generate", run_id, "--class", "3")
    assert code == 2 and "only image models" in err
    code, _, err = cli(capsys, "generate", run_id, "--top-p", "2")
    assert code == 2 and "top-p" in err
    code, out, err = cli(capsys, "eval", run_id, "--n", "4")
    assert code == 0, err
    assert "bits per character" in out


def test_cli_text_options_refused_for_image_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import TINY, TINY_MODEL

    run = genloop.train("vae", overrides=[*TINY, *TINY_MODEL["vae"]], steps=2, progress=False)
    code, _, err = cli(capsys, "generate", run.id, "--prompt", "hi")
    assert code == 2 and "only text models" in err


def test_data_info_for_text(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = genloop.dataset_info(str(corpus), text=True)
    assert info["vocab_size"] > 10 and info["tokenizer"] == "char"
    code, out, _ = cli(capsys, "data", "info", "pydoc")
    assert code == 0 and "vocab_size" in out
    code, out, _ = cli(capsys, "data", "list")
    assert any(line.split()[:2] == ["pydoc", "text"] for line in out.splitlines())


def test_compiled_decoding_matches_eager(corpus: Path) -> None:
    """`compile=True` decodes through a torch.compile-d step with the same logits (to float rounding) as the
    eager cache; greedy text is the same."""
    from genloop.models.transformer import CompiledDecoder

    run = train(corpus, steps=30)
    pipe = genloop.load(run.id)
    eager = pipe(prompt="The", max_tokens=24, temperature=0).text  # 24 > block_size 16: the window slides too
    compiled = pipe(prompt="The", max_tokens=24, temperature=0, compile=True).text
    assert compiled == eager
    dec = pipe.compiled()
    assert isinstance(dec, CompiledDecoder)
    model = pipe.system.causal_lm()
    ids = torch.randint(0, model.vocab_size, (1, 10))
    with torch.inference_mode():
        c1, c2 = model.new_cache(1), dec.new_cache(1)
        model(ids[:, :3], c1), dec(ids[:, :3], c2)
        for t in range(3, 10):
            a, b = model(ids[:, t : t + 1], c1), dec(ids[:, t : t + 1], c2)
            assert torch.allclose(a, b, atol=1e-5)
    assert c2.length == 10
    assert not dec._eager  # it really ran compiled (no silent fallback to the eager model)


def test_unknown_character_token_is_never_sampled(corpus: Path) -> None:
    """A char tokenizer's <unk> is a placeholder for unseen input, not text: even an untrained model,
    sampled hot, must not write it (it would print U+FFFD); streaming and --compile paths alike."""
    pipe = genloop.load(train(corpus, steps=1).id)
    unk = pipe.tokenizer.unk_id
    texts = pipe(prompt="", n=8, seed=0, max_tokens=200, temperature=3.0).texts
    assert all("\ufffd" not in t for t in texts) and sum(map(len, texts)) > 500
    assert "\ufffd" not in "".join(pipe(prompt="The", n=1, seed=1, max_tokens=200, temperature=3.0, stream=True))
    raw = pipe.system.causal_lm()(torch.tensor([[0]]))[0, -1]
    assert torch.isfinite(raw[unk])  # the model itself is untouched; only sampling excludes the token
