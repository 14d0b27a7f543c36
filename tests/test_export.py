"""`genloop export RUN --format transformers`: a gpt run that transformers loads, with logits equal to GenLoop's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_GPT, cli, tiny

import genloop

transformers = pytest.importorskip("transformers")

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _gpt(corpus: Path, *extra: str) -> genloop.api.Run:
    overrides = [*TINY_GPT, "model.n_layer=2", *extra]
    return genloop.train("gpt", data=str(corpus), overrides=overrides, steps=3, seed=1, progress=False)


@pytest.mark.parametrize(
    "extra",
    [(), ("data.tokenizer=bpe", "data.vocab_size=300", "model.bias=true")],
    ids=["char-nobias", "bpe-bias"],
)
def test_transformers_export_loads_and_matches_logits(capsys, corpus: Path, tmp_path: Path, extra) -> None:
    run = _gpt(corpus, *extra)
    _perturb(run)  # every weight moved well off its initial value: a bias or LayerNorm mapped wrongly cannot hide
    code, out, err = cli(capsys, "export", run.id, "--format", "transformers", "--out", tmp_path / "hf")
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1])
    assert folder == tmp_path / "hf" and (folder / "config.json").is_file()
    meta = json.loads((folder / "genloop_export.json").read_text())
    assert meta["run_id"] == run.id and meta["checkpoint_sha256"]

    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert type(model).__name__ == "GPT2LMHeadModel"
    pipe = genloop.load(run.id)
    text = "the lazy fox jumps"
    ids = pipe.tokenizer.encode(text)
    assert tok(text).input_ids == ids and tok.decode(ids) == text
    x = torch.tensor([ids[:16]])
    with torch.no_grad():
        ours, theirs = pipe.system.net(x), model(x).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert model.config.eos_token_id == pipe.tokenizer.eot_id


def _perturb(run: genloop.api.Run) -> None:
    from genloop.run_layout import RunLayout
    from genloop.serialization import load_tensors, save_tensors

    path = RunLayout(run.dir).weights_for("last")
    tensors, state = load_tensors(path)
    g = torch.Generator().manual_seed(0)
    save_tensors(path, {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in tensors.items()}, state)


def test_char_tokenizer_export_maps_unknown_characters_to_unk(corpus: Path, tmp_path: Path) -> None:
    from genloop.export import export_run

    run = _gpt(corpus)
    folder = export_run(run.id, "transformers", tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    pipe = genloop.load(run.id)
    for text in ("fox 你好 🦊\n dog", "  the\n\nend"):
        assert tok(text).input_ids == pipe.tokenizer.encode(text)


def test_export_refuses_what_it_cannot_represent(capsys, corpus: Path) -> None:
    gan = genloop.train("dcgan", data="digits", overrides=tiny("dcgan"), steps=1, progress=False)
    code, _, err = cli(capsys, "export", gan.id, "--format", "transformers")
    assert code == 2 and err.startswith("error: --format transformers exports gpt runs") and len(err.splitlines()) == 1
    run = _gpt(corpus)
    code, _, err = cli(capsys, "export", run.id, "--format", "tflite")
    assert code == 2 and "unknown export format 'tflite'; valid: transformers, onnx" in err


# --- onnx -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["dcgan", "cvae", "ddpm"])
def test_onnx_export_runs_in_onnxruntime_like_pytorch(capsys, tmp_path: Path, model: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    extra = ("model.class_conditional=true",) if model == "ddpm" else ()
    run = genloop.train(model, data="digits", overrides=tiny(model, *extra), steps=1, progress=False)
    code, out, err = cli(capsys, "export", run.id, "--format", "onnx", "--out", tmp_path / "onnx")
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1])
    meta = json.loads((folder / "genloop_export.json").read_text())
    assert meta["checked_with_onnxruntime"]["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    system = genloop.load(run.id).system
    g = torch.Generator().manual_seed(7)
    first = system.sample_latents(3, g)
    labels = torch.tensor([0, 4, 9])
    with torch.no_grad():
        if meta["graph"] == "unet-step":  # the noise predictor at given timesteps, conditional here
            t = torch.tensor([0, 50, 99])
            feeds = {"x": first, "t": t, "labels": labels}
            want = system.unet(first, t, labels).float()
        else:  # a one-step generator: latents (and classes) -> images in [-1, 1]
            feeds = {"latents": first, **({"labels": labels} if system.conditional else {})}
            want = system.decode(first, labels if system.conditional else None)
    assert sorted(i.name for i in session.get_inputs()) == sorted(feeds)
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    if meta["graph"] == "decoder":
        assert got.min() >= -1.0 - 1e-6 and got.max() <= 1.0 + 1e-6


def test_onnx_refuses_text_runs(capsys, corpus: Path) -> None:
    pytest.importorskip("onnxruntime")
    run = _gpt(corpus)
    code, _, err = cli(capsys, "export", run.id, "--format", "onnx")
    assert code == 2 and "--format onnx exports image generators" in err and len(err.splitlines()) == 1


def test_onnx_without_the_packages_is_one_line(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    run = genloop.train("dcgan", data="digits", overrides=tiny("dcgan"), steps=1, progress=False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of it fails, as when not installed
    code, _, err = cli(capsys, "export", run.id, "--format", "onnx")
    assert code == 2 and "pip install onnx onnxruntime" in err and len(err.splitlines()) == 1
