"""music-gpt: the GPT over music tokens, its pipeline (seeded MIDI, prompts, robust decoding) and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from music_support import scale_piece, two_track_score, write_midi

from genloop.modalities.music.dataset import MusicDataset
from genloop.modalities.music.evaluate import evaluate_music, metric_keys
from genloop.modalities.music.piece import PITCH, piece_from_score
from genloop.modalities.music.pipeline import MusicPipeline, key_token_of, meter_token_of, safe_decode
from genloop.modalities.music.render import read_recipe
from genloop.modalities.music.tokenizer import MusicTokenizer, MusicTokenizerConfig
from genloop.systems.base import DataSpec
from genloop.systems.music_gpt import MusicGPTConfig, MusicGPTSystem, music_batches
from genloop.training import TrainConfig, Trainer

TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "dropout": 0.0}


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one thread is both faster and free of scheduling noise for these tiny models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok() -> MusicTokenizer:
    return MusicTokenizer(MusicTokenizerConfig(styles=["test"]))


@pytest.fixture(scope="module")
def pieces() -> list:
    return [scale_piece(i, f"p{i}") for i in range(4)]


def _system(tok: MusicTokenizer, seed: int = 0, **cfg) -> MusicGPTSystem:
    torch.manual_seed(seed)
    system = MusicGPTSystem(MusicGPTConfig(**{**TINY, **cfg}), DataSpec(vocab_size=tok.vocab_size))
    system.tokenizer = tok
    return system


def _train_cfg(steps: int, **kw) -> TrainConfig:
    base = dict(
        steps=steps,
        batch_size=4,
        lr=3e-3,
        ema_decay=None,
        precision="fp32",
        device="cpu",
        threads=1,
        log_every=1,
        sample_every=0,
        tensorboard=False,
        select_metric="val_loss",
        checkpoint_every=1000,
        keep_checkpoints=0,
    )
    return TrainConfig(**{**base, **kw})


def _ids(tok: MusicTokenizer, pieces: list) -> list[np.ndarray]:
    return [np.asarray(tok.encode(p), dtype=np.int32) for p in pieces]


@pytest.fixture(scope="module")
def trained(tok: MusicTokenizer, pieces: list) -> MusicGPTSystem:
    """A tiny model trained a few dozen steps: enough that it writes Bar tokens and notes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    system = _system(tok)
    Trainer(system, music_batches(_ids(tok, pieces), 8, 32, seed=0), _train_cfg(40), progress=False).fit()
    torch.set_num_threads(before)
    return system.eval()


# --- the system -----------------------------------------------------------------------------------


def test_shapes_and_defaults(tok: MusicTokenizer, pieces: list) -> None:
    cfg = MusicGPTConfig()
    assert (cfg.name, cfg.n_layer, cfg.n_embd, cfg.block_size) == ("music-gpt", 4, 256, 512)
    system = _system(tok)
    assert (system.modality, system.unit, system.ema_target) == ("music", "tokens", "net")
    x, y = next(music_batches(_ids(tok, pieces), 3, 32, seed=0))
    assert x.shape == y.shape == (3, 32) and torch.equal(x[:, 1:], y[:, :-1])
    assert system.causal_lm()(x).shape == (3, 32, tok.vocab_size)
    assert system.loss(x, y).dim() == 0 and system.batch_units((x, y)) == 96
    with pytest.raises(Exception, match="music"):
        MusicGPTSystem(MusicGPTConfig(**TINY), DataSpec())


def test_overfits_one_batch(tok: MusicTokenizer, pieces: list) -> None:
    batch = next(music_batches(_ids(tok, pieces), 2, 32, seed=0))

    class Repeat:
        def __next__(self):
            return batch

        def state_dict(self) -> dict:
            return {}

    system = _system(tok, n_embd=64)
    with torch.no_grad():
        first = float(system.loss(*batch))
    Trainer(system, Repeat(), _train_cfg(80, lr=1e-2), progress=False).fit()
    with torch.no_grad():
        last = float(system.eval().loss(*batch))
    assert first > 5 and last < 0.25 * first, (first, last)


def test_seeded_training_and_bit_exact_resume(tok: MusicTokenizer, pieces: list, tmp_path: Path) -> None:
    ids = _ids(tok, pieces)

    def run(name: str, steps: int, resume: Path | None = None, total: int | None = None) -> MusicGPTSystem:
        system = _system(tok, seed=1, dropout=0.1)  # dropout: the RNG state must resume exactly too
        (tmp_path / name).mkdir(exist_ok=True)
        trainer = Trainer(
            system, music_batches(ids, 4, 32, seed=5), _train_cfg(total or steps, seed=3), tmp_path / name, False
        )
        if resume is not None:
            trainer.resume(resume / "checkpoints" / "last.safetensors")
        trainer.fit()
        return system

    full = run("full", 6)
    again = run("again", 6)
    run("part", 3)
    resumed = run("part", 3, resume=tmp_path / "part", total=6)
    a, b, c = full.state_dict(), again.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "same seed, different weights"
    assert all(torch.equal(a[k], c[k]) for k in a), "6 steps != 3 steps + resume 3"
    assert not torch.equal(a["net.lm_head.weight"], _system(tok, seed=1).state_dict()["net.lm_head.weight"])


# --- the pipeline ---------------------------------------------------------------------------------


def test_generation_is_seeded_and_bar_limited(trained: MusicGPTSystem, tmp_path: Path) -> None:
    pipe = MusicPipeline(trained, {"run_id": "r1", "step": 40, "checkpoint_sha256": "ab" * 32, "model": "music-gpt"})
    out = pipe(n=3, bars=2, seed=7, max_tokens=120)
    again = pipe(n=3, bars=2, seed=7, max_tokens=120)
    assert [s.midi_bytes for s in out] == [s.midi_bytes for s in again]
    alone = pipe(n=1, bars=2, seed=8, max_tokens=120)  # sample 1 of the batch, regenerated on its own
    assert alone[0].ids == out[1].ids
    other = pipe(n=3, bars=2, seed=9, max_tokens=120)
    assert [s.ids for s in other] != [s.ids for s in out]
    bar = pipe.tokenizer.token_id("Bar_None")
    for i, s in enumerate(out):
        r = out.recipe_of(i)
        assert r["seed"] == 7 + i and r["run_id"] == "r1" and r["train_step"] == 40 and r["top_p"] == 0.95
        assert r["checkpoint_sha256"] == "ab" * 32 and r["temperature"] == 0.9 and r["bars"] == 2
        assert set(r["conditions"]) == {"Style", "Key", "Meter", "Bars"} and r["conditions"]["Bars"] == "2"
        assert s.ids.count(bar) <= 2 and r["finish_reason"] in ("eos", "bars", "length")
        assert read_recipe(s.midi_bytes)["seed"] == 7 + i
    fixed = pipe(n=2, bars=1, seed=0, key="G major", time_signature=(3, 4), style="test", max_tokens=60)
    assert all(s.recipe["conditions"] == {"Style": "test", "Key": "Gmajor", "Meter": "3/4", "Bars": "1"} for s in fixed)
    paths = out[0].save(tmp_path / "s0")
    assert [p.name for p in paths] == ["s0.mid", "s0.mid.json", "s0.wav", "s0.png"] and all(p.is_file() for p in paths)
    audio, rate = out[0].wav
    assert audio.dtype == np.float32 and rate > 0
    assert out[0].piano_roll_png()[:4] == b"\x89PNG"


def test_prompt_continuation_keeps_the_prompt(trained: MusicGPTSystem, tmp_path: Path) -> None:
    path = write_midi(tmp_path / "prompt.mid", two_track_score())
    pipe = MusicPipeline(trained, {"run_id": "r1"})
    out = pipe(n=2, bars=3, seed=0, prompt_midi=path, prompt_bars=1, style="test", max_tokens=80)
    prompt = piece_from_score(two_track_score(), "p")
    bar_ticks = 4 * prompt.tpq
    want = {(int(o), int(p)) for o, _, p, *_ in prompt.notes if o < bar_ticks}
    for s in out:
        got = {(int(o), int(p)) for o, _, p, *_ in s.piece.notes}
        assert want <= got, want - got
        assert s.recipe["conditions"]["Key"] == "Fmajor" and s.recipe["prompt_bars"] == 1
        assert s.recipe["prompt_midi_sha256"] and s.ids[:5] == out[0].ids[:5]
    assert pipe(n=1, bars=3, seed=0, prompt_midi=path.read_bytes(), prompt_bars=1, style="test", max_tokens=80)[
        0
    ].ids == (out[0].ids)


def test_decoding_random_ids_never_fails(tok: MusicTokenizer) -> None:
    rng = np.random.default_rng(0)
    for length in (0, 1, 5, 50, 400):
        for _ in range(4):
            ids = rng.integers(-5, tok.vocab_size + 5, size=length).tolist()
            score = safe_decode(tok, ids)
            assert score.tpq == 480
            notes = piece_from_score(score, "x").notes
            assert len(notes) == 0 or (notes[:, PITCH].min() >= 0 and notes[:, PITCH].max() <= 127)


def test_condition_spellings() -> None:
    assert key_token_of("F major") == key_token_of("Fmajor") == key_token_of("f") == "Key_Fmajor"
    assert key_token_of("B- minor") == key_token_of("Bb minor") == "Key_Bbminor"
    assert key_token_of("none") == "Key_none"
    assert meter_token_of((3, 4)) == meter_token_of("3/4") == "Meter_3/4" and meter_token_of("7/8") == "Meter_other"


# --- evaluation -----------------------------------------------------------------------------------


def test_evaluate_music_returns_every_key_with_its_floor(
    trained: MusicGPTSystem, tok: MusicTokenizer, pieces: list
) -> None:
    ds = MusicDataset("tiny", pieces, {"train": [0, 1], "val": [2, 3], "test": []}, "k")
    out = evaluate_music(trained, ds, n_samples=2, seed=0, bars=2, max_tokens=80, chorale=True)
    assert set(out) == set(metric_keys(chorale=True))
    for k in out:
        if k.endswith("_dist"):
            assert f"{k}_floor" in out
    for k in ("satb_range_share", "parallel_fifths_per_100_beats", "memorisation_longest_span"):
        assert f"{k}_floor" in out
    assert np.isfinite(out["val_nll_per_token"]) and out["val_nll_per_note"] > out["val_nll_per_token"] > 0
    assert out["ngram_nll_per_token"] == min(out[f"ngram_{n}_nll_per_token"] for n in (2, 3, 4))
    assert out["n_samples"] == 2 and out["generation_tokens_per_s"] > 0
    assert np.isfinite(out["pitch_class_entropy_dist_floor"]) and out["satb_range_share_floor"] >= 0
