"""The command line's rough edges a new user hits (issue 16): version, data list, generate's extras and
progress, text options on image runs, long prompts, unknown characters, `runs rm` confirmation, compare across
reference nets, too-small folders, and honest training progress. Tiny runs, in-process."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_GPT, cli, tiny
from PIL import Image

import genloop
from genloop.cli import text_options


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")


def sets(model: str, *extra: str) -> list[str]:
    return [a for item in tiny(model, *extra) for a in ("--set", item)]


def train_image(capsys, model: str = "dcgan", steps: int = 2) -> str:
    code, out, err = cli(capsys, "train", model, "--data", "digits", *sets(model), "--steps", str(steps), "--quiet")
    assert code == 0, err
    return out.strip().splitlines()[-1]


@pytest.fixture
def text_run(tmp_path: Path) -> str:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    return genloop.train("gpt", data=str(corpus), overrides=TINY_GPT, steps=2, progress=False).id


def one_error_line(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for w in words:
        assert w in lines[0], (w, err)


# --- 1. version, data list -----------------------------------------------------------------------
def test_version(capsys) -> None:
    code, out, _ = cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"genloop {genloop.__version__}"


def test_data_list_has_descriptions_and_sizes(capsys) -> None:
    code, out, _ = cli(capsys, "data", "list")
    assert code == 0
    rows = {line.split()[0]: line for line in out.strip().splitlines()}
    assert {"digits", "mnist", "fashion-mnist", "pydoc", "bach", "essen", "ryans-mammoth"} <= set(rows)
    assert "image" in rows["digits"] and "1,797" in rows["digits"] and "8x8" in rows["digits"]
    assert "text" in rows["pydoc"] and "documents" in rows["pydoc"] and "M characters" in rows["pydoc"]
    assert "music" in rows["bach"] and "chorales" in rows["bach"]


# --- 2. generate: extras only when asked, sampling progress ---------------------------------------
def test_generate_writes_extras_only_when_asked(capsys, tmp_path: Path) -> None:
    run_id = train_image(capsys, "vae")
    code, _, err = cli(capsys, "generate", run_id, "--n", "3", "--out", str(tmp_path / "plain"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "plain").glob("*.png")) == [
        "grid.png",
        *[f"sample_{i:06d}.png" for i in range(3)],
    ]
    code, _, err = cli(capsys, "generate", run_id, "--n", "3", "--extras", "--out", str(tmp_path / "more"))
    assert code == 0, err
    names = {p.name for p in (tmp_path / "more").glob("*.png")}
    assert {"interpolation.png", "reconstructions.png", "grid.png"} <= names


def test_diffusion_sampling_reports_progress(capsys, tmp_path: Path) -> None:
    run_id = train_image(capsys, "ddpm", steps=1)
    seen: list[tuple[int, int]] = []
    paths = genloop.generate(run_id, n=3, steps=4, progress=lambda d, t: seen.append((d, t)), sign=False)
    assert [p.name for p in paths][0] == "grid.png" and not any(p.name == "interpolation.png" for p in paths)
    assert seen == [(i, 4) for i in range(1, 5)]  # one batch of 4 denoising steps
    code, _, err = cli(capsys, "generate", run_id, "--n", "2", "--steps", "3", "--out", str(tmp_path / "g"))
    assert code == 0, err
    assert "sampling: 1/3" in err and "sampling: 3/3" in err  # piped: plain lines on stderr


# --- 3. text options, --n 0, long prompts, errors on a fresh line ----------------------------------
def test_text_n_zero_is_refused(capsys, text_run: str) -> None:
    code, out, err = cli(capsys, "generate", text_run, "--n", "0", "--max-tokens", "3")
    one_error_line(code, err, "--n must be between 1 and 1000, got 0")


def test_image_run_refuses_text_options(capsys) -> None:
    run_id = train_image(capsys)
    for args, word in (
        (["--max-tokens", "5"], "--max-tokens"),
        (["--beams", "2"], "--beams"),
        (["--repetition-penalty", "1.3"], "--repetition-penalty"),
    ):
        code, _, err = cli(capsys, "generate", run_id, "--n", "2", *args)
        one_error_line(code, err, word, "only text models")


def test_long_prompt_echo_is_truncated_with_a_note(capsys, text_run: str) -> None:
    prompt = "the lazy dog " * 800  # 10,400 characters
    code, out, err = cli(capsys, "generate", text_run, "--prompt", prompt, "--max-tokens", "3")
    assert code == 0, err
    assert len(out) < 1000
    assert f"[prompt of {len(prompt):,} characters" in out and "not echoed]" in out
    assert prompt[-text_options.ECHO_TAIL :] in out
    assert text_options.echo("short") == "short"


def test_error_after_the_echo_starts_a_fresh_line(capsys, text_run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from genloop import api
    from genloop.errors import ConfigError

    def fails_midway(run_id, prompt="", on_piece=None, **kw):
        on_piece("abc")
        raise ConfigError("broke while streaming")

    monkeypatch.setattr(api, "generate_text", fails_midway)
    code, out, err = cli(capsys, "generate", text_run, "--prompt", "the", "--max-tokens", "3")
    assert code == 2
    assert out.endswith("theabc\n")  # the partial line is closed before the error is printed
    assert err.startswith("error: broke while streaming")


# --- 4. characters the tokenizer never saw ---------------------------------------------------------
def test_unknown_characters_are_named_in_a_warning(capsys, text_run: str) -> None:
    code, out, err = cli(capsys, "generate", text_run, "--prompt", "the 你好 fox 🦊", "--max-tokens", "3")
    assert code == 0, err
    line = next(x for x in err.splitlines() if "never saw" in x)
    assert line.startswith("warning:")
    assert "'你' (U+4F60)" in line and "'好' (U+597D)" in line and "U+1F98A" in line
    assert "3 place(s)" in line
    code, out, err = cli(capsys, "generate", text_run, "--prompt", "the fox", "--max-tokens", "3")
    assert code == 0 and "never saw" not in err


# --- 5. runs rm asks first -------------------------------------------------------------------------
class _Terminal(io.StringIO):
    """Standard input that says it is a terminal, with the user's answer typed in."""

    def isatty(self) -> bool:
        return True


def test_runs_rm_asks_on_a_terminal_and_needs_yes_in_scripts(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = train_image(capsys)
    run_dir = tmp_path / "runs" / run_id
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # a pipe: nobody to ask
    code, out, err = cli(capsys, "runs", "rm", run_id)
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "--yes" in lines[0], err
    assert run_dir.is_dir() and "removed" not in out

    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    code, out, err = cli(capsys, "runs", "rm", run_id)
    assert code == 1 and run_dir.is_dir() and "nothing deleted" in err
    assert "[y/N]" in out and run_id in err  # it said what it would delete

    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    code, out, err = cli(capsys, "runs", "rm", run_id)
    assert code == 0 and not run_dir.exists() and f"removed {run_id}" in out

    other = train_image(capsys)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, _ = cli(capsys, "runs", "rm", other, "--yes")
    assert code == 0 and not (tmp_path / "runs" / other).exists()


# --- 6. compare refuses to rank runs scored by different reference nets ----------------------------
def _fake_eval(run, values: dict) -> None:
    (run.dir / "eval").mkdir(exist_ok=True)
    (run.dir / "eval" / "metrics.json").write_text(json.dumps({"step": 1, **values}))


def test_compare_says_when_reference_nets_differ_and_ranks_nothing(capsys, tmp_path: Path) -> None:
    runs = [genloop.train("dcgan", data="digits", overrides=tiny("dcgan"), steps=1, progress=False) for _ in range(3)]
    same = {"fid_floor": 3.0, "recall_floor": 0.9}
    _fake_eval(runs[0], {"fid": 9.0, "recall": 0.8, **same, "feature_net": {"id": "ref-digits-16px"}})
    _fake_eval(runs[1], {"fid": 6.0, "recall": 0.4, **same, "feature_net": {"id": "ref-digits-32px"}})
    _fake_eval(runs[2], {"fid": 5.0, "recall": 0.5, **same, "feature_net": {"id": "ref-digits-16px"}})
    code, out, err = cli(capsys, "compare", runs[0].id, runs[1].id, "--out", tmp_path / "mixed")
    assert code == 0, err
    written = json.loads((tmp_path / "mixed" / "compare.json").read_text())
    assert written["best"] == {} and written["feature_nets"] == ["ref-digits-16px", "ref-digits-32px"]
    assert "different reference networks" in written["unranked"]
    header = out.splitlines()[0].split("\t")
    assert "feature_net" in header  # each run's net is shown
    assert "ref-digits-32px" in out and "warning:" in err and "no run is ranked" in err
    # the same net: ranked as before, no features column
    code, out, err = cli(capsys, "compare", runs[0].id, runs[2].id, "--out", tmp_path / "same")
    assert code == 0, err
    written = json.loads((tmp_path / "same" / "compare.json").read_text())
    assert written["best"] == {"fid": runs[2].id, "recall": runs[0].id} and "unranked" not in written
    assert "feature_net" not in out.splitlines()[0].split("\t") and "warning" not in err


# --- 7. too few held-out images: said before training ----------------------------------------------
def _folder(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_a_folder_too_small_for_eval_is_flagged_before_training(capsys, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "three", 3)
    code, out, err = cli(capsys, "train", "dcgan", "--data", folder, *sets("dcgan"), "--steps", "1", "--quiet")
    assert code == 0, err
    lines = err.strip().splitlines()
    warning = next(i for i, x in enumerate(lines) if x.startswith("warning:"))
    assert warning < next(i for i, x in enumerate(lines) if x.startswith("trained"))  # before, not after
    assert "has 3 images" in lines[warning] and "needs at least 10 held-out images" in lines[warning]
    assert "add images (at least 48 in all with this split)" in lines[warning]
    code, _, err = cli(capsys, "train", "dcgan", "--data", "digits", *sets("dcgan"), "--steps", "1", "--quiet")
    assert code == 0 and "warning" not in err


def test_the_suggested_split_holds_out_enough() -> None:
    from types import SimpleNamespace

    from genloop.data import split_indices
    from genloop.evaluation.heldout import heldout_warning, images_needed
    from genloop.evaluation.sanity import MIN_HELDOUT

    for n in (13, 20, 33, 40):
        splits = split_indices(n, [0.8, 0.1, 0.1], 0)
        ds = SimpleNamespace(name="x", images=np.zeros((n, 1, 8, 8)), splits=splits)
        line = heldout_warning(ds, [0.8, 0.1, 0.1])
        suggested = json.loads(line.split("data.split=")[1].split()[0].rstrip(","))
        assert abs(sum(suggested) - 1) < 1e-6
        held = split_indices(n, suggested, 0)
        assert held["val"].numel() + held["test"].numel() >= MIN_HELDOUT, (n, suggested)
        assert held["train"].numel() >= 3
    need = images_needed([0.8, 0.1, 0.1])
    for n, ok in ((need - 1, False), (need, True)):
        splits = split_indices(n, [0.8, 0.1, 0.1], 0)
        ds = SimpleNamespace(name="x", images=np.zeros((n, 1, 8, 8)), splits=splits)
        assert (heldout_warning(ds, [0.8, 0.1, 0.1]) is None) == ok


# --- 8. training progress: every step, time budgets reach 100 % ------------------------------------
def test_plain_progress_shows_the_first_step_and_its_losses(capsys) -> None:
    genloop.train("dcgan", data="digits", overrides=tiny("dcgan", "train.log_every=100"), steps=2, progress=True)
    err = capsys.readouterr().err
    first = next(line for line in err.splitlines() if line.startswith("step "))
    assert first.startswith("step 1/2 (50%)"), err  # before any logging step
    assert "g_loss" in first and "d_loss" in first


def test_time_budget_bar_tracks_time_and_ends_full(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from genloop.training import progress as progress_mod

    screen = io.StringIO()
    monkeypatch.setattr(progress_mod, "Console", lambda **kw: Console(file=screen, force_terminal=True, width=160))
    bars: list = []
    real = progress_mod.TrainProgress

    class Spy(real):
        def __enter__(self):
            bars.append(self)
            return super().__enter__()

    monkeypatch.setattr("genloop.training.engine.TrainProgress", Spy)
    genloop.train("dcgan", data="digits", overrides=tiny("dcgan", "train.log_every=1000"), time_budget=1.0)
    [bar] = bars
    task = bar._bar.tasks[0]
    assert task.total == 1.0 and task.completed == task.total  # full at the end, not where the last log left it
    assert task.fields["step"] >= 1 and "g_loss" in task.fields["losses"]
    out = screen.getvalue()
    assert "100%" in out and "left" in out and f"step {task.fields['step']}" in out


def test_plain_line_for_a_time_budget_says_how_far() -> None:
    from genloop.training.config import TrainConfig
    from genloop.training.progress import TrainProgress

    cfg = TrainConfig(steps=None, time_budget=60.0)
    line = TrainProgress(True, cfg, 0).plain_line(7, 30.0, "loss 1")
    assert line == "step 7 (50% of 60s)  30s  loss 1"


@pytest.mark.slow
def test_eval_says_each_phase_as_it_starts(capsys) -> None:
    run = genloop.train("dcgan", data="digits", overrides=tiny("dcgan"), steps=1, progress=False)
    capsys.readouterr()
    genloop.evaluate(run.id, n=20, progress=True)
    err = capsys.readouterr().err
    starts = [line for line in err.splitlines() if line.startswith("eval: ") and line.endswith("...")]
    assert [s.split()[1] for s in starts] == ["training", "checking", "sampling", "scoring", "the"], err
    assert "(once per dataset, then cached)" in starts[0]
    assert "eval: sampling: 1/1" in err  # the sampling bar's plain line (one batch of a one-step model)
    genloop.evaluate(run.id, n=20, progress=False)
    assert "eval:" not in capsys.readouterr().err
