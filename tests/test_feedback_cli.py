"""`genloop feedback` end to end against a temporary database: generate, list, rate, prefer, export,
train-reward, rerank, select, finetune, simulate; and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import cli, tiny
from typer.testing import CliRunner

import genloop
from genloop.cli.feedback import feedback_app


def test_feedback_cli_end_to_end(capsys, tmp_path: Path) -> None:
    run = genloop.train("vae", data="digits", overrides=tiny("vae", "train.batch_size=32"), steps=200, progress=False)
    db = ["--db", f"sqlite:///{tmp_path / 'fb.sqlite'}"]
    # empty store: clear errors, exit 2, no traceback
    code, _, err = cli(capsys, "feedback", "train-reward", *db)
    assert code == 2 and err.strip().startswith("error: no ratings or preferences") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "feedback", "export", "--out", tmp_path / "x.jsonl", *db)
    assert code == 2 and "nothing to export" in err

    code, out, _ = cli(capsys, "feedback", "generate", run.id, "--n", "6", "--seed", "0", *db)
    assert code == 0
    ids = re.findall(r"\b[0-9a-f]{16}\b", out)
    assert len(ids) == 6
    assert cli(capsys, "feedback", "rate", ids[0], "--stars", "5", *db)[0] == 0
    code, out, _ = cli(capsys, "feedback", "rate", ids[1], "--down", *db)
    assert code == 0 and "0 up, 1 down" in out
    assert cli(capsys, "feedback", "prefer", ids[0], ids[1], *db)[0] == 0
    code, out, _ = cli(capsys, "feedback", "list", *db)
    assert code == 0 and ids[0] in out

    # bad input
    code, _, err = cli(capsys, "feedback", "rate", ids[0], "--stars", "7", *db)
    assert code == 2 and "stars must be an integer from 1 to 5, got 7" in err
    code, _, err = cli(capsys, "feedback", "rate", "0123456789abcdef", "--up", *db)
    assert code == 2 and "no generation '0123456789abcdef'" in err
    code, _, err = cli(capsys, "feedback", "rate", ids[0], *db)
    assert code == 2 and "needs thumbs" in err
    code, _, err = cli(capsys, "feedback", "prefer", ids[0], ids[0], *db)
    assert code == 2 and "two different generations" in err
    code, _, err = cli(capsys, "feedback", "export", "--format", "csv", "--out", tmp_path / "x.jsonl", *db)
    assert code == 2 and "unknown export format 'csv'" in err
    code, _, err = cli(capsys, "feedback", "simulate", run.id, "--rater", "tall", *db)
    assert code == 2 and "unknown rater 'tall'" in err

    code, out, _ = cli(capsys, "feedback", "export", "--format", "trl-pairs", "--out", tmp_path / "pairs.jsonl", *db)
    assert code == 0 and "wrote 1 lines" in out
    row = json.loads((tmp_path / "pairs.jsonl").read_text())
    assert set(row) == {"prompt", "chosen", "rejected"} and row["chosen"].endswith(f"{ids[0]}.png")
    code, out, _ = cli(capsys, "feedback", "export", "--format", "trl-unpaired", "--out", tmp_path / "kto.jsonl", *db)
    assert code == 0 and [json.loads(x)["label"] for x in (tmp_path / "kto.jsonl").read_text().splitlines()] == [
        True,
        False,
    ]

    # the scripted rater fills the store; then the reward model and its uses from the command line
    code, out, err = cli(
        capsys,
        "feedback",
        "simulate",
        run.id,
        "--rater",
        "class:0",
        "--n-rate",
        "100",
        "--n-eval",
        "50",
        "--steps",
        "20",
        "--out",
        tmp_path / "sim.json",
        *db,
    )
    assert code == 0, err
    assert (
        "preferred" in out and "best_of_n" in out and json.loads((tmp_path / "sim.json").read_text())["n_rate"] == 100
    )
    code, out, _ = cli(capsys, "feedback", "train-reward", "--run", run.id, "--epochs", "100", *db)
    assert code == 0 and "heldout_pair_accuracy" in out
    reward_dir = Path(out.strip().splitlines()[-1].removeprefix("saved "))
    assert (reward_dir / "reward.json").is_file()
    code, out, _ = cli(capsys, "feedback", "rerank", run.id, "--n", "3", "--k", "4", "--store", *db)
    assert code == 0 and len(re.findall(r"\b[0-9a-f]{16}\b", out)) == 3
    code, out, err = cli(capsys, "feedback", "finetune", run.id, "--steps", "10", "--samples", "100", *db)
    assert code == 0, err
    child = re.search(r"fine-tuned: (\S+)", out).group(1)
    code, out, _ = cli(capsys, "feedback", "select", run.id, child, "--n", "20")
    assert code == 0 and "best " in out
    code, _, err = cli(capsys, "feedback", "rerank", run.id, "--reward", tmp_path / "none")
    assert code == 2 and "no reward model here" in err


def test_sub_app_with_clirunner() -> None:
    result = CliRunner().invoke(feedback_app, ["--help"])
    assert result.exit_code == 0
    for command in ("rate", "prefer", "export", "train-reward", "rerank", "simulate", "select", "finetune"):
        assert command in result.output
