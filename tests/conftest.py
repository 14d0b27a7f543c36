"""Shared fixtures: every test gets its own cache and run store, and tiny configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Oversubscribed OpenMP threads (a busy second core) slow small CPU ops down by 10x; tests are tiny,
# so one thread per process is both faster and steadier.
import torch

torch.set_num_threads(1)

# `precision: auto` resolves per CPU (bf16 on AMX / AVX-512-BF16, fp32 elsewhere): no test may depend on which
# it got. The suite pins what `auto` means to fp32; `GENLOOP_TEST_PRECISION=bf16 make test` runs the same suite
# with auto meaning bf16, so both ways are checked on purpose on any CPU. Subprocesses inherit the pin.
TEST_PRECISION = os.environ.get("GENLOOP_TEST_PRECISION", "fp32")
os.environ["GENLOOP_PRECISION"] = TEST_PRECISION


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GENLOOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GENLOOP_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("GENLOOP_CONFIG_DIR", str(tmp_path / "config"))  # the signing key: never the user's
    return tmp_path


# A tiny, fast setup: digits at 8 px, small networks, no TensorBoard; precision `auto`, which the pin above
# makes fp32 (or bf16 under GENLOOP_TEST_PRECISION=bf16) on every CPU.
TINY = [
    "data.image_size=8",
    "train.batch_size=16",
    "train.log_every=1",
    "train.sample_every=0",
    "train.precision=auto",
    "train.tensorboard=false",
    "train.threads=1",
]
TINY_MODEL = {
    "dcgan": ["model.z_dim=8", "model.g_width=8", "model.d_width=8"],
    "wgan-gp": ["model.z_dim=8", "model.g_width=8", "model.d_width=8", "model.n_critic=2"],
    "vae": ["model.z_dim=4", "model.width=8"],
    "cgan": ["model.z_dim=8", "model.g_width=8", "model.d_width=8"],
    "beta-vae": ["model.z_dim=4", "model.width=8"],
    "cvae": ["model.z_dim=4", "model.width=8", "model.eval_k=4"],
    "resgan": ["model.z_dim=8", "model.g_width=4", "model.d_width=4", "model.r1_interval=2"],
    "ddpm": [
        "model.width=8",
        "model.channel_mults=[1,2]",
        "model.attention_resolutions=[]",
        "model.num_train_timesteps=100",
        "model.sampling_steps=4",
    ],
    "ddpm-text": [
        "model.width=8",
        "model.channel_mults=[1,2]",
        "model.attention_resolutions=[8]",
        "model.num_train_timesteps=100",
        "model.sampling_steps=4",
        "model.text_width=16",
        "model.text_layers=1",
        "model.text_heads=2",
    ],
}


# A one-layer GPT small enough to train in a second (text runs in the text, studio and catalogue tests).
TINY_GPT = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "model.block_size=16",
    "train.batch_size=4",
    "train.precision=fp32",
    "train.tensorboard=false",
    "train.threads=1",
    "train.log_every=1",
]


def tiny(model: str, *extra: str) -> list[str]:
    return [*TINY, *TINY_MODEL[model], *extra]


def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running `genloop` in a subprocess against the test's own dirs."""
    env = dict(os.environ)
    env["GENLOOP_CACHE_DIR"] = str(tmp_path / "cache")
    env["GENLOOP_RUNS_DIR"] = str(tmp_path / "runs")
    env["GENLOOP_CONFIG_DIR"] = str(tmp_path / "config")
    env["PYTHONUNBUFFERED"] = "1"
    return env


GENLOOP = [sys.executable, "-m", "genloop.cli.main"]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `genloop ARGS` in-process: (exit code, stdout, stderr)."""
    from genloop.cli.main import main

    capsys.readouterr()  # drop anything printed before
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # Typer/click exit through SystemExit (0 on success, 2 on usage errors)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
