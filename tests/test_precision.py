"""`precision: auto` differs per CPU; GENLOOP_PRECISION pins what it means, so the suite runs the same everywhere.

The suite itself runs with auto pinned (conftest: fp32, or bf16 under GENLOOP_TEST_PRECISION=bf16); these tests
check the pin, and train a tiny model under each precision on purpose, whatever the CPU would pick."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny

import genloop
from genloop.errors import ConfigError
from genloop.training.engine import PRECISION_ENV, pick_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize(("pin", "dtype"), [("fp32", None), ("bf16", torch.bfloat16)])
def test_auto_follows_the_pin(monkeypatch: pytest.MonkeyPatch, pin: str, dtype: torch.dtype | None) -> None:
    monkeypatch.setenv(PRECISION_ENV, pin)
    assert pick_precision("auto", CPU) == dtype
    # an explicit setting is never overridden: the pin only says what `auto` means
    assert pick_precision("fp32", CPU) is None and pick_precision("bf16", CPU) == torch.bfloat16


def test_a_bad_pin_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(ConfigError, match="GENLOOP_PRECISION='fp8': expected fp32, bf16 or fp16"):
        pick_precision("auto", CPU)
    monkeypatch.setenv(PRECISION_ENV, "fp16")  # fp16 autocast is a CUDA thing
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        pick_precision("auto", CPU)


@pytest.mark.parametrize("pin", ["fp32", "bf16"])
def test_auto_trains_under_the_pinned_precision(monkeypatch: pytest.MonkeyPatch, pin: str) -> None:
    monkeypatch.setenv(PRECISION_ENV, pin)
    run = genloop.train("vae", data="digits", overrides=tiny("vae", "train.precision=auto"), steps=40, progress=False)
    assert run.info["precision"] == {"fp32": "fp32", "bf16": "bfloat16"}[pin]
    records = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 40 and sum(losses[-5:]) < 0.8 * sum(losses[:5])  # it learns under either precision
