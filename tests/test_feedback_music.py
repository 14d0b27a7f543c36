"""DPO on music: stored pieces are re-tokenised with the run's tokenizer and prefix, the DPO loss falls on a
handful of pairs while the frozen reference does not move, the new run loads and generates, and the CLI
fine-tunes a music run (or says in one line why it cannot)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import cli
from test_music_loop import TINY_MUSIC, music_folder

import genloop
from genloop.errors import DataError
from genloop.feedback.optimize import DPOConfig
from genloop.feedback.store import FeedbackStore
from genloop.generation import pipelines
from genloop.modalities.music.preference import dpo_music, generation_tokens
from genloop.serialization import sha256_file


@pytest.fixture(scope="module")
def music_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("music-dpo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_CACHE_DIR", str(root / "cache"))
        run = genloop.train(
            "music-gpt", data=str(music_folder(root / "data")), overrides=TINY_MUSIC, steps=6, runs_dir=root / "runs"
        )
    return root / "runs", run.id


@pytest.fixture(scope="module")
def pairs(music_run) -> list[tuple[bytes, bytes]]:
    """Four (chosen, rejected) pairs of the run's own pieces, as MIDI bytes with their recipes."""
    runs, run_id = music_run
    out = genloop.load(run_id, runs_dir=runs)(n=8, bars=2, seed=0, max_tokens=24)
    return [(out[2 * i].midi_bytes, out[2 * i + 1].midi_bytes) for i in range(4)]


def test_retokenised_generation_keeps_the_pipelines_prefix(music_run, pairs) -> None:
    runs, run_id = music_run
    pipe = genloop.load(run_id, runs_dir=runs)
    drawn = pipe(n=1, bars=2, seed=3, max_tokens=24)[0]
    context, chosen = generation_tokens(pipe.tokenizer, drawn.midi_bytes)
    assert context == ["BOS_None"]  # every slot was drawn: the model chose style, key and meter
    c = drawn.recipe["conditions"]
    assert chosen[:4] == [f"Style_{c['Style']}", f"Key_{c['Key']}", f"Meter_{c['Meter']}", f"Bars_{c['Bars']}"]
    given = pipe(n=1, bars=2, seed=3, max_tokens=24, key="C major", time_signature="4/4", style="data")[0]
    context, chosen = generation_tokens(pipe.tokenizer, given.midi_bytes)
    assert context == ["BOS_None", "Style_data", "Key_Cmajor", "Meter_4/4", "Bars_2"]  # given: context, not choice
    assert all(t.split("_")[0] not in ("BOS", "Style", "Key", "Meter", "Bars") for t in chosen)


def test_dpo_loss_falls_on_music_pairs_and_the_reference_stays_frozen(music_run, pairs, monkeypatch) -> None:
    runs, run_id = music_run
    parent = genloop.runs.RunStore(runs).get(run_id)
    parent_sha = sha256_file(parent.weights)
    loaded: list[torch.nn.Module] = []
    real_load = pipelines.load_system

    def spy(*args, **kwargs):
        system, info = real_load(*args, **kwargs)
        loaded.append(system)
        return system, info

    monkeypatch.setattr(pipelines, "load_system", spy)
    r = dpo_music(run_id, pairs * 2, DPOConfig(beta=0.5, steps=12, lr=3e-3, batch_size=4), runs_dir=runs)
    policy, reference = loaded
    ref_before = {k: v.clone() for k, v in real_load(parent.dir)[0].state_dict().items()}
    assert all(not p.requires_grad and p.grad is None for p in reference.parameters())
    assert all(torch.equal(v, ref_before[k]) for k, v in reference.state_dict().items())
    assert not all(torch.equal(v, ref_before[k]) for k, v in policy.state_dict().items())  # the policy did move
    assert r["loss_last"] < r["loss_first"] and r["margin_after"] > r["margin_before"]
    assert r["implicit_reward_accuracy"] == 1.0 and r["pairs"] == 8 and r["mean_scored_tokens"] > 0
    assert sha256_file(parent.weights) == parent_sha
    child = genloop.runs.RunStore(runs).get(r["run_id"])
    assert child.info["parent"] == run_id and child.info["feedback"]["method"] == "dpo"
    assert child.info["step"] == parent.info["step"] + 12
    out = genloop.load(child.id, runs_dir=runs)(n=2, bars=2, seed=0, max_tokens=24)
    assert len(out) == 2 and out[0].recipe["run_id"] == child.id


def test_dpo_without_pairs_is_one_line(music_run) -> None:
    runs, run_id = music_run
    with pytest.raises(DataError, match="needs preference pairs") as e:
        dpo_music(run_id, [], runs_dir=runs)
    assert "\n" not in str(e.value)


def test_cli_finetunes_a_music_run(music_run, capsys, tmp_path: Path) -> None:
    runs, run_id = music_run
    db = ("--db", f"sqlite:///{tmp_path / 'fb.sqlite'}", "--runs-dir", runs)
    code, out, err = cli(capsys, "feedback", "finetune", run_id, "--steps", "3", *db)
    assert code == 2 and "needs preference pairs" in err and len(err.strip().splitlines()) == 1
    store = FeedbackStore(url=db[1], runs=runs)  # the CLI's media folder: <runs>/media
    ids = store.add_outputs(genloop.load(run_id, runs_dir=runs)(n=4, bars=2, seed=0, max_tokens=24))
    store.prefer(ids[0], ids[1])
    store.prefer(ids[2], ids[3])
    code, out, err = cli(capsys, "feedback", "finetune", run_id, "--steps", "3", "--lr", "1e-3", *db)
    assert code == 0, err
    assert "fine-tuned" in out and "dpo" in out and "margin_after" in out
