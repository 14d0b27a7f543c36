"""Progress that moves while a job samples: a generation job's sampling steps and an evaluation job's phases
arrive as ``progress`` events (issue 16), through the ``progress(done, total)`` callback every pipeline takes and
the listener of :class:`genloop.progress.Phases`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny
from fastapi.testclient import TestClient
from studio_support import TEXT, TINY_GPT, drain, events_of

import genloop
from genloop.progress import Phases
from genloop.server.app import create_app
from genloop.server.settings import Settings


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("progress") / "runs"
    ddpm = genloop.train("ddpm", "digits", overrides=tiny("ddpm"), steps=2, runs_dir=root, progress=False)
    dcgan = genloop.train("dcgan", "digits", overrides=tiny("dcgan"), steps=1, runs_dir=root, progress=False)
    corpus = root.parent / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    gpt = genloop.train("gpt", str(corpus), overrides=TINY_GPT, steps=2, runs_dir=root, progress=False)
    return root, {"ddpm": ddpm.id, "dcgan": dcgan.id, "gpt": gpt.id}


@pytest.fixture
def client_settings(runs, tmp_path: Path) -> tuple[TestClient, Settings]:
    settings = Settings(
        runs=runs[0], db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}", media_dir=tmp_path / "media", poll_interval=0.01
    )
    return TestClient(create_app(settings)), settings


def test_a_ddpm_generation_reports_its_sampling_steps(client_settings, runs) -> None:
    client, settings = client_settings
    body = {"run_id": runs[1]["ddpm"], "n": 2, "steps": 10, "sampler": "ddim", "seed": 1}
    job = client.post("/v1/generations", json=body).json()
    drain(settings)
    events = events_of(client, job["id"])
    assert events[-1] == ("status", {"status": "succeeded"})
    progress = [d for k, d in events if k == "progress"]
    sampling = [d for d in progress if d["phase"] == "sampling" and d.get("unit") == "steps"]
    fractions = [d["fraction"] for d in sampling]
    # one batch of 10 steps: each step moves the bar by 0.1, more than ADVANCE_EVERY, so each is an event
    assert fractions == [round(i / 10, 4) for i in range(1, 11)], fractions
    assert [d["step"] for d in sampling] == list(range(1, 11)) and {d["total"] for d in sampling} == {10}
    every = [d["fraction"] for d in progress]
    assert every == sorted(every) and every[0] == 0.0 and every[-1] == 1.0  # the bar never moves back
    assert progress[-1]["phase"] == "done"


def test_a_long_sampling_sends_a_bounded_number_of_events(client_settings, runs) -> None:
    """80 steps: an event each time the bar moves on by 5 %, not one per step."""
    client, settings = client_settings
    body = {"run_id": runs[1]["ddpm"], "n": 1, "steps": 80, "sampler": "ddim"}
    job = client.post("/v1/generations", json=body).json()
    drain(settings)
    sampling = [d for k, d in events_of(client, job["id"]) if k == "progress" and d.get("unit") == "steps"]
    assert 10 <= len(sampling) <= 21 and sampling[-1]["fraction"] == 1.0 and sampling[-1]["step"] == 80
    steps = [d["step"] for d in sampling]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)


def test_an_evaluation_job_reports_its_phases_and_sampling(client_settings, runs) -> None:
    client, settings = client_settings
    job = client.post("/v1/jobs", json={"kind": "evaluate", "params": {"run_id": runs[1]["dcgan"], "n": 20}}).json()
    drain(settings)
    events = events_of(client, job["id"])
    assert events[-1] == ("status", {"status": "succeeded"}), events[-3:]
    phases = [d["phase"] for k, d in events if k == "progress"]
    seen = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert seen[:4] == [
        "sampling and scoring",
        "the data and the reference network",
        "sampling 20 images",
        "scoring 20 samples against the held-out images",
    ], seen
    assert seen[-1] == "done"
    steps = [d for k, d in events if k == "progress" and d.get("unit") == "steps"]
    assert steps and steps[-1]["fraction"] == 1.0 and steps[-1]["phase"] == "sampling 20 images"


def test_a_text_evaluation_job_reports_its_phases(client_settings, runs) -> None:
    client, settings = client_settings
    job = client.post("/v1/jobs", json={"kind": "evaluate", "params": {"run_id": runs[1]["gpt"], "n": 10}}).json()
    drain(settings)
    events = events_of(client, job["id"])
    assert events[-1] == ("status", {"status": "succeeded"}), events[-3:]
    phases = [d["phase"] for k, d in events if k == "progress"]
    assert phases == [
        "sampling and scoring",
        "the validation loss",
        "sampling 10 texts",
        "scoring 10 samples against held-out text",
        "done",
    ], phases


def test_phases_tell_a_listener_even_when_silent(capsys: pytest.CaptureFixture[str]) -> None:
    heard: list[dict] = []
    phase = Phases(False, listener=heard.append)
    phase("reading")
    phase("sampling 4 images")
    bar = phase.steps("sampling")
    assert bar is not None
    with bar:
        bar(1, 2)
        bar(2, 2)
    phase.end()
    assert heard == [
        {"phase": "reading"},
        {"phase": "sampling 4 images"},
        {"phase": "sampling 4 images", "step": 1, "total": 2, "unit": "steps"},
        {"phase": "sampling 4 images", "step": 2, "total": 2, "unit": "steps"},
    ]
    assert capsys.readouterr().err == ""  # not enabled: nothing on standard error
    assert Phases(False).steps("sampling") is None  # no listener, not enabled: no bar at all


def test_phases_said_quietly_print_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    heard: list[dict] = []
    phase = Phases(True, listener=heard.append)
    phase("the reference network", say=False)
    phase("scoring")
    phase.end()
    err = capsys.readouterr().err
    assert "reference network" not in err and "eval: scoring..." in err
    assert [h["phase"] for h in heard] == ["the reference network", "scoring"]


def test_music_pipelines_report_pieces_done(tmp_path: Path) -> None:
    """The music pipeline takes the same ``progress(done, total)`` as the image ones (the worker passes it to
    every pipeline): called per batch of pieces, and the output is the same with or without it; a music
    evaluation tells a listener its phases."""
    from test_music_loop import TINY_MUSIC, music_folder

    run = genloop.train(
        "music-gpt", str(music_folder(tmp_path / "data")), overrides=TINY_MUSIC, steps=2, runs_dir=tmp_path / "runs"
    )
    pipe = genloop.load(run.id, runs_dir=tmp_path / "runs")
    seen: list[tuple[int, int]] = []
    out = pipe(n=3, bars=1, seed=2, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (3, 3) and [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 2
    plain = pipe(n=3, bars=1, seed=2, batch_size=2)
    assert [s.ids for s in out.samples] == [s.ids for s in plain.samples]
    assert "progress" not in pipe.recipe_for(n=3, bars=1, seed=2)
    heard: list[dict] = []
    genloop.evaluate(run.id, n=2, runs_dir=tmp_path / "runs", progress=heard.append)
    assert [h["phase"] for h in heard] == [
        "sampling 2 pieces",
        "scoring the likelihood and the pieces against the held-out music",
    ]
