"""Sharded generation and evaluation: ``--nproc 2`` (torchrun, gloo on CPU) writes and scores what one process does.

Each case starts real torchrun jobs as subprocesses, so a case costs a few seconds; one tiny DCGAN is trained
once for the module. ``GENLOOP_SAMPLE_BATCH=4`` makes 12 images three sampling batches, so both ranks work
(and one process samples in the same batches). One thread per process: the comparison is of the files'
bytes, and a thread count is not something sharding should have to agree on.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GENLOOP, cli, cli_env, tiny

import genloop


@pytest.fixture(scope="module")
def gan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(run id, runs folder) of a 3-step DCGAN on 8 px digits, trained in-process once for this module."""
    root = tmp_path_factory.mktemp("sharded")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_CACHE_DIR", str(root / "cache"))
        run = genloop.train("dcgan", "digits", overrides=tiny("dcgan"), steps=3, runs_dir=root / "runs", progress=False)
    yield run.id, root / "runs"


def genloop_cli(tmp_path: Path, runs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(tmp_path), "GENLOOP_SAMPLE_BATCH": "4", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*GENLOOP, *args, "--runs-dir", str(runs)], env=env, capture_output=True, text=True, timeout=120
    )


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_generate_on_two_processes_writes_the_single_process_files_and_resumes(
    gan, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, runs = gan
    one, two = tmp_path / "one", tmp_path / "two"
    monkeypatch.setenv("GENLOOP_SAMPLE_BATCH", "4")  # the single-process run in-process (one thread, see conftest)
    # unsigned: a signature holds a fresh generation id and time, so two runs never match byte for byte with one
    code, single, err = cli(
        capsys, "generate", run_id, "--n", "12", "--out", one, "--runs-dir", runs, "--no-sign", "--no-watermark"
    )
    assert code == 0, err
    sharded = genloop_cli(
        tmp_path,
        runs,
        "generate",
        run_id,
        "--n",
        "12",
        "--out",
        str(two),
        "--nproc",
        "2",
        "--no-sign",
        "--no-watermark",
    )
    assert sharded.returncode == 0, sharded.stderr
    # rank 0 prints the usual line, rank 1 nothing
    assert sharded.stdout.splitlines() == [single.strip().replace(str(one), str(two))]
    expected = files(one)  # grid and 12 samples (no --extras): byte for byte
    assert len(expected) == 13
    got = files(two)
    index = got.pop("index.jsonl").decode().splitlines()
    assert got == expected
    # the one index, in item order, records each sample's file, seed and hash (the rank records are merged away)
    assert [json.loads(line) for line in index] == [
        {
            "index": i,
            "file": f"sample_{i:06d}.png",
            "seed": i,
            "sha256": hashlib.sha256(expected[f"sample_{i:06d}.png"]).hexdigest(),
        }
        for i in range(12)
    ]

    # a crash: two samples and the index gone, a rank record cut mid-line, a write's temporary left behind
    for name in ("sample_000001.png", "sample_000010.png", "index.jsonl"):
        (two / name).unlink()
    (two / "index-rank0.jsonl").write_text('{"index": 0, "file": "sample_0', encoding="utf-8")
    (two / ".sample_000005.png.x1y2.tmp").write_bytes(b"half a png")
    kept = {p.name: p.stat().st_mtime_ns for p in two.glob("sample_*.png")}
    again = genloop_cli(
        tmp_path,
        runs,
        "generate",
        run_id,
        "--n",
        "12",
        "--out",
        str(two),
        "--nproc",
        "2",
        "--no-sign",
        "--no-watermark",
    )
    assert again.returncode == 0, again.stderr
    got = files(two)
    assert got.pop("index.jsonl").decode().splitlines() == index
    assert got == expected  # no stray temporaries or rank records left
    # complete samples were kept, not made again
    assert {name: (two / name).stat().st_mtime_ns for name in kept} == kept


def test_eval_on_two_processes_gives_exactly_the_single_process_metrics(
    gan, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, runs = gan
    metrics_file = runs / run_id / "eval" / "metrics.json"
    monkeypatch.setenv("GENLOOP_SAMPLE_BATCH", "4")
    code, single, err = cli(capsys, "eval", run_id, "--n", "20", "--runs-dir", runs)  # trains the reference net
    assert code == 0, err
    m1 = json.loads(metrics_file.read_text())
    metrics_file.unlink()
    sharded = genloop_cli(tmp_path, runs, "eval", run_id, "--n", "20", "--nproc", "2")
    assert sharded.returncode == 0, sharded.stderr
    m2 = json.loads(metrics_file.read_text())
    # Exact equality, not a tolerance: rank 0 scores the gathered samples, which are the single-process tensors
    # (same seeds, same sampling batches), with the same code. Only the clock readings may differ.
    timing = ("seconds", "sampling_ms_per_image")
    assert {k: v for k, v in m2.items() if k not in timing} == {k: v for k, v in m1.items() if k not in timing}
    assert m1["n_generated"] == 20 and "fid" in m1
    # one table and one last line, from rank 0 only
    assert len(sharded.stdout.splitlines()) == len(single.splitlines())
    assert sharded.stdout.splitlines()[-1] == single.splitlines()[-1]


def test_nproc_errors_are_one_line(gan, capsys, tmp_path: Path) -> None:
    run_id, runs = gan
    for args, words in (
        (["generate", run_id, "--nproc", "0"], ("--nproc", ">= 1", "0")),
        (["eval", run_id, "--nproc", "0"], ("--nproc", ">= 1", "0")),
        (["eval", run_id, "--sweep", "1,2", "--nproc", "2"], ("--sweep", "one process")),
    ):
        code, out, err = cli(capsys, *args, "--runs-dir", str(runs))
        assert code == 2 and out == "", (args, err)
        assert len(err.strip().splitlines()) == 1 and all(w in err for w in words), err


def test_sample_batch_setting_and_nproc_stripping(monkeypatch: pytest.MonkeyPatch) -> None:
    from genloop.cli.main import _without_nproc
    from genloop.errors import ConfigError
    from genloop.generation import sharding

    assert _without_nproc(["generate", "r", "--nproc", "2", "-n", "3", "--nproc=4"]) == ["generate", "r", "-n", "3"]
    assert sharding.chunk_size() == 256 and [len(c) for c in sharding.chunks(600)] == [256, 256, 88]
    monkeypatch.setenv("GENLOOP_SAMPLE_BATCH", "5")
    assert [(c.start, c.stop) for c in sharding.chunks(12)] == [(0, 5), (5, 10), (10, 12)]
    monkeypatch.setenv("GENLOOP_SAMPLE_BATCH", "0")
    with pytest.raises(ConfigError, match="GENLOOP_SAMPLE_BATCH"):
        sharding.chunk_size()
