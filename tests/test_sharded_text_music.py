"""Sharded text and music: ``--nproc 2`` (torchrun, gloo on CPU) writes and scores what one process does.

A torchrun launch costs several seconds, so the checks share launches: one script runs the sharded music
generation and both evaluations in one process group; one CLI launch generates text while resuming a
crashed run's record; one CLI launch finishes a music generation whose pieces were partly deleted.
``GENLOOP_SAMPLE_BATCH=2`` makes 8 texts four chunks and 4 pieces two, so both ranks work (and one process
samples in the same chunks). One thread per process, as in tests/test_sharded.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GENLOOP, TINY_GPT, cli, cli_env
from test_music_loop import TINY_MUSIC, music_folder

import genloop
from genloop import api

SCRIPT = """
import sys
from genloop import api, distributed
text_run, music_run, runs, out = sys.argv[1:5]
api.generate_music(music_run, n=4, seed=5, out=out, runs_dir=runs, bars=2, sign=False, watermark=False)
api.evaluate(text_run, n=6, seed=1, runs_dir=runs)
api.evaluate(music_run, n=4, seed=1, runs_dir=runs)
distributed.shutdown()
"""
TIMING = ("seconds", "generation_tokens_per_s")  # clock readings: the only keys that may differ


def env_of(tmp_path: Path) -> dict[str, str]:
    return {**cli_env(tmp_path), "GENLOOP_SAMPLE_BATCH": "2", "OMP_NUM_THREADS": "1"}


def torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args]
    return subprocess.run(command, env=env_of(tmp_path), capture_output=True, text=True, timeout=180)


def genloop_cli(tmp_path: Path, runs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GENLOOP, *args, "--runs-dir", str(runs), "--nproc", "2"],
        env=env_of(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def test_text_and_music_on_two_processes_match_one_process_and_resume(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    monkeypatch.setenv("GENLOOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GENLOOP_SAMPLE_BATCH", "2")  # the single-process runs sample in the same chunks
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 30)
    gpt = genloop.train("gpt", data=str(corpus), overrides=TINY_GPT, steps=1, runs_dir=runs, progress=False)
    music = genloop.train(
        "music-gpt", data=str(music_folder(tmp_path / "midi")), overrides=TINY_MUSIC, steps=3, runs_dir=runs,
        progress=False,
    )  # fmt: skip

    # --- one process: the reference files and metrics
    one, two = tmp_path / "one", tmp_path / "two"
    text_args = (
        "generate",
        gpt.id,
        "--n",
        "8",
        "--seed",
        "3",
        "--max-tokens",
        "8",
        "--no-stream",
        "--no-sign",
        "--no-watermark",
    )
    code, single_out, err = cli(capsys, *text_args, "--out", one / "text", "--runs-dir", runs)
    assert code == 0, err
    # unsigned: a signature holds a fresh generation id and time, so two runs never match byte for byte
    api.generate_music(music.id, n=4, seed=5, out=one / "music", runs_dir=runs, bars=2, sign=False, watermark=False)
    text_metrics = runs / gpt.id / "eval" / "metrics.json"
    music_metrics = runs / music.id / "eval" / "metrics.json"
    m_text = api.evaluate(gpt.id, n=6, seed=1, runs_dir=runs)
    m_music = api.evaluate(music.id, n=4, seed=1, runs_dir=runs)
    text_metrics.unlink(), music_metrics.unlink()

    # --- two processes, one launch: music generation and both evaluations
    script = tmp_path / "sharded.py"
    script.write_text(SCRIPT, encoding="utf-8")
    done = torchrun(tmp_path, str(script), gpt.id, music.id, str(runs), str(two / "music"))
    assert done.returncode == 0, done.stderr[-3000:]
    # exactly the single-process metrics: rank 0 scores the gathered samples with the same code
    assert untimed(json.loads(text_metrics.read_text())) == untimed(json.loads(json.dumps(m_text)))
    assert untimed(json.loads(music_metrics.read_text())) == untimed(json.loads(json.dumps(m_music)))
    expected = files(one / "music")  # four files per piece, byte for byte (recipes inside the MIDI too)
    assert len(expected) == 16
    got = files(two / "music")
    index = got.pop("index.jsonl").decode().splitlines()
    assert got == expected
    assert [json.loads(line)["file"] for line in index] == [f"sample_{5 + i:06d}.mid" for i in range(4)]

    # --- music, a crash: two pieces partly gone, the index gone; the re-run makes only those again
    for name in ("sample_000005.png", "sample_000008.wav", "index.jsonl"):
        (two / "music" / name).unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (two / "music").glob("sample_00000[67].*")}
    again = genloop_cli(tmp_path, runs, "generate", music.id, "--n", "4", "--seed", "5", "--bars", "2",
                        "--out", str(two / "music"), "--no-sign", "--no-watermark")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(again.stdout.splitlines()) == 1 and "wrote 16 files" in again.stdout  # rank 0 speaks
    got = files(two / "music")
    assert got.pop("index.jsonl").decode().splitlines() == index and got == expected
    assert {p.name: p.stat().st_mtime_ns for p in (two / "music").glob("sample_00000[67].*")} == kept

    # --- text, resuming a crashed run: chunk 2 (texts 4 and 5) recorded, a line cut mid-way, a stale text of
    # another command; the record's texts are marked so the test sees them reused rather than drawn again
    lines = [json.loads(line) for line in (one / "text" / "texts.jsonl").read_text().splitlines()]
    assert len(lines) == 8
    (two / "text").mkdir(parents=True)
    records = [{"index": i, "text": f"REUSED {i}", "recipe": lines[i]["recipe"]} for i in (4, 5)]
    stale = {"index": 1, "text": "STALE", "recipe": {**lines[1]["recipe"], "temperature": 0.5}}
    (two / "text" / "texts-rank0.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [*records, stale]) + '{"index": 6, "te', encoding="utf-8"
    )
    sharded = genloop_cli(tmp_path, runs, *text_args, "--out", str(two / "text"))
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    want = [dict(line, text=f"REUSED {i}") if i in (4, 5) else line for i, line in enumerate(lines)]
    got_text = (two / "text" / "texts.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in got_text] == want
    assert sorted(p.name for p in (two / "text").iterdir()) == ["texts.jsonl"]  # rank records merged away

    # rank 0 prints what one process prints, in item order (the reused texts where they were recorded)
    def printed(texts: list[str]) -> str:
        return "".join(f"--- sample {i} (seed {3 + i}) ---\n{t}\n" for i, t in enumerate(texts))

    assert single_out == printed([line["text"] for line in lines])
    assert sharded.stdout == printed([line["text"] for line in want])

    # the same command again appends a second batch, now all drawn: exactly the single-process lines
    again = genloop_cli(tmp_path, runs, *text_args, "--out", str(two / "text"))
    assert again.returncode == 0, again.stderr[-3000:]
    after = (two / "text" / "texts.jsonl").read_text().splitlines()
    assert after[:8] == got_text and after[8:] == (one / "text" / "texts.jsonl").read_text().splitlines()
