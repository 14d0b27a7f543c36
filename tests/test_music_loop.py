"""Music end to end: train a tiny music-gpt on files the test writes, generate (API, CLI, studio), evaluate
beside the floors, report with players and piano rolls, simulate feedback with a scripted rater, and refuse
bad music input with one line and no half-made run."""

from __future__ import annotations

import base64
import io
import json
import re
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli
from fastapi.testclient import TestClient
from music_support import TWO_TUNES, scale_piece, two_track_score
from studio_support import drain

import genloop
from genloop.evaluation import catalog
from genloop.modalities import modalities
from genloop.modalities.music.evaluate import metric_keys
from genloop.modalities.music.pipeline import MusicOutput
from genloop.modalities.music.render import read_recipe

TINY_MUSIC = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "model.dropout=0.0",
    "train.batch_size=4",
    "train.precision=fp32",
    "train.tensorboard=false",
    "train.threads=1",
    "train.log_every=1",
    "train.lr=3e-3",
    "train.warmup_steps=2",
    "train.eval_every=3",
    "train.eval_tokens=64",
    "train.select_metric=val_loss",
]


def music_folder(folder: Path) -> Path:
    """Five two-voice C-major MIDI pieces and an ABC file of two tunes: seven pieces."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        (folder / f"p{i}.mid").write_bytes(bytes(scale_piece(i, f"p{i}").score.dumps_midi()))
    (folder / "tunes.abc").write_text(TWO_TUNES, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def music_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("music")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_CACHE_DIR", str(root / "cache"))
        run = genloop.train(
            "music-gpt",
            data=str(music_folder(root / "data")),
            overrides=TINY_MUSIC,
            steps=6,
            runs_dir=root / "runs",
            progress=False,
        )
    torch.set_num_threads(threads)
    return root / "runs", run.id


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_training_saves_the_tokenizer_quick_evals_and_previews(music_run) -> None:
    runs, run_id = music_run
    run = genloop.api.RunStore(runs).get(run_id)
    assert run.info["status"] == "finished" and run.info["step"] == 6
    assert (run.dir / "tokenizer" / "genloop_music_tokenizer.json").is_file()
    records = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/val_loss" in r for r in records)
    assert (run.dir / "samples" / "step-0000006.mid").is_file()
    assert (run.dir / "samples" / "step-0000006.png").is_file()
    assert genloop.api.modality(run_id, runs) == "music"


def test_api_generates_seeded_music_with_recipes(music_run, tmp_path: Path) -> None:
    runs, run_id = music_run
    pipe = genloop.load(run_id, runs_dir=runs)
    out = pipe(n=2, bars=2, seed=5)
    assert isinstance(out, MusicOutput) and len(out) == 2
    again = pipe(n=1, bars=2, seed=6)
    assert again[0].ids == out[1].ids  # sample i depends only on seed + i
    recipe = read_recipe(out[0].midi_bytes)
    assert recipe["run_id"] == run_id and recipe["seed"] == 5 and recipe["bars"] == 2
    paths = genloop.generate_music(run_id, n=1, bars=2, seed=0, out=tmp_path / "gen", runs_dir=runs)
    assert sorted(p.name for p in paths) == [
        "sample_000000.mid",
        "sample_000000.mid.json",
        "sample_000000.png",
        "sample_000000.wav",
    ]


def test_cli_generate_eval_report(music_run, capsys, tmp_path: Path) -> None:
    runs, run_id = music_run
    out_dir = tmp_path / "gen"
    args = ["--runs-dir", runs, "--out", out_dir]
    code, out, err = cli(
        capsys,
        "generate",
        run_id,
        "--n",
        "2",
        "--bars",
        "2",
        "--temperature",
        "0.9",
        "--top-p",
        "0.95",
        "--seed",
        "0",
        *args,
    )
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    for seed in (0, 1):
        for ext in ("mid", "mid.json", "wav", "png"):
            assert f"sample_{seed:06d}.{ext}" in names
    recipe = read_recipe((out_dir / "sample_000001.mid").read_bytes())
    assert recipe["seed"] == 1 and recipe["temperature"] == 0.9 and recipe["top_p"] == 0.95

    prompt = tmp_path / "first_bars.mid"
    prompt.write_bytes(bytes(two_track_score().dumps_midi()))
    code, out, err = cli(
        capsys, "generate", run_id, "--n", "1", "--bars", "3", "--prompt-midi", prompt, "--prompt-bars", "1", *args
    )
    assert code == 0, err
    assert read_recipe((out_dir / "sample_000000.mid").read_bytes())["prompt_midi_sha256"]
    code, out, err = cli(capsys, "generate", run_id, "--class", "3", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1

    code, out, err = cli(capsys, "eval", run_id, "--n", "3", "--runs-dir", runs)
    assert code == 0, err
    assert "validation NLL" in out and "floor" in out
    r = json.loads((runs / run_id / "eval" / "metrics.json").read_text())
    assert set(metric_keys(chorale=False)) <= set(r)
    known = set(catalog.CATALOG) | catalog.companions() | catalog.BOOKKEEPING
    assert set(metric_keys(chorale=True)) <= known  # every key evaluate_music can write is described
    for m in catalog.for_modality("music"):
        if m.key in r and m.floor:
            assert m.floor in r, m.key  # each beside its floor
    known = set(catalog.CATALOG) | catalog.companions() | catalog.BOOKKEEPING
    numbers = {k for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert numbers - known == set()

    code, out, err = cli(capsys, "report", run_id, "--runs-dir", runs)
    assert code == 0, err
    html = (runs / run_id / "report.html").read_text(encoding="utf-8")
    assert "<audio controls" in html and "data:audio/wav;base64," in html
    assert "piano roll" in html and "validation NLL" in html
    embedded = re.findall(r'src="data:audio/wav;base64,([^"]+)"', html)
    assert 1 <= len(embedded) <= 4  # the cap on players
    for b64 in embedded:
        with wave.open(io.BytesIO(base64.b64decode(b64))) as w:
            assert w.getframerate() == 11025 and w.getnchannels() == 1  # the report's excerpt, not the render


def test_report_audio_is_a_small_excerpt(tmp_path: Path) -> None:
    """A 30 s render at 22.05 kHz was embedded whole (~1.3 MB as base64); the report gets 12 s at 11.025 kHz."""
    from genloop.modalities.music.render import preview_wav, read_wav, write_wav

    t = np.arange(30 * 22050) / 22050
    path = write_wav(tmp_path / "long.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 22050)
    data, cut = preview_wav(path)
    assert cut and len(data) < 300_000 < path.stat().st_size
    (tmp_path / "small.wav").write_bytes(data)
    audio, rate = read_wav(tmp_path / "small.wav")
    assert rate == 11025 and len(audio) == 12 * 11025
    spectrum = np.abs(np.fft.rfft(audio[: 11025 * 4]))
    assert abs(np.argmax(spectrum) / 4 - 440) < 1  # still an A: resampled, not sped up
    assert abs(audio[-1]) < 0.01  # faded out, no click
    short = write_wav(tmp_path / "short.wav", 0.5 * np.sin(2 * np.pi * 440 * t[:22050]), 22050)
    assert preview_wav(short)[1] is False


def _midi(score=None) -> bytes:
    return bytes((score or two_track_score()).dumps_midi())


@pytest.mark.parametrize("case", ["corrupt", "no-notes", "type-2", "bad-abc", "empty-folder"])
def test_cli_refuses_bad_music_with_one_line_and_no_run(case: str, capsys, tmp_path: Path) -> None:
    from symusic import Score

    folder = tmp_path / "music"
    folder.mkdir()
    if case == "corrupt":
        (folder / "a.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\xff\xff garbage")
    elif case == "no-notes":
        (folder / "a.mid").write_bytes(bytes(Score(480).dumps_midi()))
    elif case == "type-2":
        data = bytearray(_midi())
        data[8:10] = (2).to_bytes(2, "big")
        (folder / "a.mid").write_bytes(bytes(data))
    elif case == "bad-abc":
        (folder / "a.abc").write_text("X:1\nT:Broken\nM:4/4\nL:1/8\nC D E F |]\n", encoding="utf-8")
    runs = tmp_path / "runs"
    code, out, err = cli(capsys, "train", "music-gpt", "--data", folder, "--steps", "1", "--runs-dir", runs, "-q")
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert not runs.exists() or not [p for p in runs.iterdir() if p.is_dir() and "music-gpt" in p.name]


def test_data_list_shows_the_music_corpora(capsys) -> None:
    code, out, _ = cli(capsys, "data", "list")
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
    assert code == 0 and all(rows.get(name) == "music" for name in ("bach", "essen", "ryans-mammoth"))


def test_data_info_reads_music(capsys, tmp_path: Path) -> None:
    folder = music_folder(tmp_path / "tunes")
    code, out, err = cli(capsys, "data", "info", folder, "--music")
    assert code == 0, err
    info = genloop.dataset_info(str(folder), music=True)
    assert info["pieces"] == 7 and info["train_pieces"] + info["val_pieces"] + info["test_pieces"] == 7
    assert info["styles"] == ["tunes"] and "pieces" in out


def test_studio_lists_generates_and_plays_music(music_run, tmp_path: Path) -> None:
    from genloop.server.app import create_app
    from genloop.server.settings import Settings

    runs, run_id = music_run
    settings = Settings(
        runs=runs,
        db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}",
        media_dir=tmp_path / "media",
        uploads_dir=tmp_path / "uploads",
        poll_interval=0.01,
    )
    client = TestClient(create_app(settings))
    models = {m["run_id"]: m for m in client.get("/v1/models").json()["data"]}
    m = models[run_id]
    assert m["modality"] == "music" and {c["name"] for c in m["controls"]} >= {"bars", "temperature", "key"}
    r = client.post("/v1/generations", json={"run_id": run_id, "n": 2, "seed": 3, "bars": 2, "temperature": 0.9})
    assert r.status_code == 202, r.text
    drain(settings)
    job = client.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "succeeded", job["error"]
    gids = job["result"]["generation_ids"]
    g = client.get(f"/v1/generations/{gids[0]}").json()
    assert g["modality"] == "music" and g["recipe"]["bars"] == 2 and g["recipe"]["seed"] == 3
    audio = client.get(g["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav" and audio.content[:4] == b"RIFF"
    roll = client.get(g["image_url"])
    assert roll.status_code == 200 and roll.content[:4] == b"\x89PNG"
    assert client.get(g["midi_url"]).content[:4] == b"MThd"
    assert client.post(f"/v1/generations/{gids[0]}/ratings", json={"stars": 4}).status_code == 201
    assert client.post("/v1/preferences", json={"chosen_id": gids[0], "rejected_id": gids[1]}).status_code == 201
    replay = client.post(f"/v1/generations/{gids[1]}/replay")
    assert replay.status_code == 202, replay.text
    drain(settings)
    done = client.get(f"/v1/jobs/{replay.json()['id']}").json()
    assert done["status"] == "succeeded" and done["result"]["identical"] is True
    bad = client.post("/v1/generations", json={"run_id": run_id, "class_label": 3})
    assert bad.status_code == 422

    # A MIDI prompt: uploaded (checked like a MIDI file you name), continued, and replayed from its upload id.
    refused = client.post("/v1/uploads", files={"file": ("theme.mid", b"MThd garbage", "audio/midi")})
    assert refused.status_code == 422 and "MIDI" in refused.json()["detail"]
    up = client.post("/v1/uploads", files={"file": ("theme.mid", bytes(two_track_score().dumps_midi()), "audio/midi")})
    assert up.status_code == 201 and up.json()["kind"] == "midi"
    r = client.post("/v1/generations", json={"run_id": run_id, "n": 1, "bars": 3, "prompt_midi": up.json()["data"]})
    assert r.status_code == 202, r.text
    drain(settings)
    job = client.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "succeeded", job["error"]
    g = client.get(f"/v1/generations/{job['result']['generation_ids'][0]}").json()
    assert g["recipe"]["prompt_midi"] == up.json()["data"] and g["recipe"]["prompt_midi_sha256"]
    assert g["recipe"]["prompt_bars"] == 2
    replay = client.post(f"/v1/generations/{g['id']}/replay")
    drain(settings)
    done = client.get(f"/v1/jobs/{replay.json()['id']}").json()
    assert done["status"] == "succeeded" and done["result"]["identical"] is True
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/generations/{gid}/audio", "/v1/generations/{gid}/midi"} <= set(paths)


def test_simulate_with_a_scripted_music_rater(music_run, tmp_path: Path) -> None:
    from genloop.feedback.optimize import DPOConfig
    from genloop.feedback.simulate import make_rater, simulate
    from genloop.feedback.store import FeedbackStore

    runs, run_id = music_run
    music = modalities["music"]
    assert music.make_rater("range:60-72", None).modality == "music"
    with pytest.raises(genloop.GenLoopError, match="rater"):
        make_rater("in-key:C")  # no image/text rater of that name
    store = FeedbackStore(url=f"sqlite:///{tmp_path / 'fb.sqlite'}", runs=runs, media_dir=tmp_path / "media")
    r = simulate(
        run_id,
        "in-key:C",
        n_rate=10,
        n_eval=10,
        k=2,
        store=store,
        runs_dir=runs,
        out=tmp_path / "sim.json",
        dpo=DPOConfig(steps=4, lr=1e-3),
    )
    assert r["modality"] == "music" and r["feedback"]["ratings"] == 10
    assert "best_of_n" in r["results"] and 0 <= r["results"]["best_of_n"]["preferred_share"] <= 1
    ft = r["results"]["finetune"]  # DPO on the rater's pairs, re-tokenised from their MIDI
    assert ft["method"] == "dpo" and ft["parent"] == run_id and 0 <= ft["preferred_share"] <= 1
    assert r["results"]["select"]["chosen"].split("@")[0] in (run_id, ft["run_id"])


def test_feedback_cli_on_music(music_run, capsys, tmp_path: Path) -> None:
    runs, run_id = music_run
    db = f"sqlite:///{tmp_path / 'fb.sqlite'}"
    code, out, err = cli(
        capsys,
        "feedback",
        "simulate",
        run_id,
        "--rater",
        "range:60-72",
        "--n-rate",
        "10",
        "--n-eval",
        "10",
        "--k",
        "2",
        "--uses",
        "best_of_n",
        "--db",
        db,
        "--runs-dir",
        runs,
        "--out",
        tmp_path / "sim.json",
    )
    assert code == 0, err
    assert "best_of_n" in out and "notes" in out
    code, out, err = cli(capsys, "feedback", "finetune", run_id, "--steps", "2", "--db", db, "--runs-dir", runs)
    assert code == 0, err  # DPO on the pairs the simulation's rater recorded
    assert "dpo" in out
    code, out, err = cli(capsys, "feedback", "generate", run_id, "--n", "2", "--db", db, "--runs-dir", runs)
    assert code == 0, err
    # the music options reach the pipeline, through the modality's generate_keys
    args = ("--n", "2", "--bars", "2", "--temperature", "0.5", "--key", "C major", "--db", db, "--runs-dir", runs)
    code, out, err = cli(capsys, "feedback", "generate", run_id, *args)
    assert code == 0, err
    assert "2 bars" in out or "1 bars" in out
    code, out, err = cli(capsys, "feedback", "generate", run_id, "--class", "1", "--db", db, "--runs-dir", runs)
    assert code == 2 and "--class" in err and "pieces" in err
    code, out, err = cli(
        capsys, "feedback", "train-reward", "--out", tmp_path / "rw", "--epochs", "5", "--db", db, "--runs-dir", runs
    )
    assert code == 0, err
    rerank = ("--reward", tmp_path / "rw", "--n", "2", "--k", "2", "--bars", "2", "--store", "--db", db)
    code, out, err = cli(capsys, "feedback", "rerank", run_id, *rerank, "--runs-dir", runs)
    assert code == 0, err
    from genloop.feedback.store import FeedbackStore

    rows = FeedbackStore(url=db, runs=runs).list(run_id=run_id, limit=100)
    kept = [g for g in rows if "best_of" in g.recipe]
    assert len(kept) == 2 and all(g.recipe["bars"] == 2 and g.media for g in kept)


class _NotesReward:
    """A reward that prefers more notes: enough for best-of-n, no training."""

    modality, id = "music", "notes"

    def score(self, items) -> torch.Tensor:
        return torch.tensor([float(p.num_notes) for p in items])


def test_best_of_n_keeps_music_samples_in_their_own_field(music_run, tmp_path: Path) -> None:
    from genloop.feedback.optimize import best_of_n
    from genloop.feedback.store import FeedbackStore

    runs, run_id = music_run
    pipe = genloop.load(run_id, runs_dir=runs)
    out = pipe(n=2, bars=2, seed=0)
    assert isinstance(out, MusicOutput) and out.modality == MusicOutput.modality == "music"
    r = best_of_n(pipe, _NotesReward(), n=2, k=2, seed=0, bars=2)
    assert r.texts is None and r.tensors is None and len(r.samples) == 2
    assert [p.num_notes for p in modalities["music"].items(r)] == [s.piece.num_notes for s in r.samples]
    store = FeedbackStore(url=f"sqlite:///{tmp_path / 'fb.sqlite'}", runs=runs, media_dir=tmp_path / "media")
    ids = store.add_outputs(r)
    assert len(ids) == 2 and all((tmp_path / "media" / i[:2] / f"{i}.mid").is_file() for i in ids)
    # stored pieces carry the velocity watermark, as the CLI's do: exactly the notes embed() gives
    from symusic import Score

    from genloop.safety import music_watermark

    for i, sample in zip(ids, r.samples):
        marked = music_watermark.embed(sample.score, music_watermark.content_id(sample.score))
        stored = Score(str(tmp_path / "media" / i[:2] / f"{i}.mid"))

        def velocities(score: Score) -> list[int]:
            return sorted(n.velocity for t in score.tracks for n in t.notes)

        assert velocities(stored) == velocities(marked)


def test_clip_to_bars_cuts_late_notes_and_shortens_long_ones() -> None:
    from genloop.modalities.music.piece import build_score, piece_from_score
    from genloop.modalities.music.pipeline import clip_to_bars

    bar = 3 * 480  # 3/4
    notes = [(0, 480, 60, 80), (bar, 4 * bar, 62, 80), (2 * bar, 480, 64, 80), (5 * bar, 480, 65, 80)]
    score = build_score([("x", 0, notes)], 480, (3, 4))
    clipped = piece_from_score(clip_to_bars(score, 2), "c")
    assert clipped.bars() == 2 and clipped.notes[:, 1].tolist() == [480, bar]  # the late ones gone, one shortened
    assert piece_from_score(score, "s").bars() == 6  # the input is left as it was


def test_an_untrained_model_stops_at_the_requested_bars(music_run) -> None:
    """Six steps on seven pieces teach no Bar tokens: its far positions and bar-long notes once ran a
    2-bar request to 5 bars."""
    runs, run_id = music_run
    pipe = genloop.load(run_id, runs_dir=runs)
    for bars in (1, 2, 4):
        out = pipe(n=6, bars=bars, seed=0)
        assert max(s.piece.bars() for s in out) == bars, [s.piece.bars() for s in out]
