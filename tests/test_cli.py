"""The `genloop` command line, end to end, on tiny configs.

Most tests call ``genloop.cli.main.main([...])`` in-process (fast: no interpreter start, no re-import of
PyTorch) and read stdout/stderr with capsys; a few run the real ``genloop`` process where the process
boundary is the thing under test (the run id as the last line of stdout, exit codes, ``--help``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import GENLOOP, cli, cli_env, tiny
from PIL import Image

from genloop.data.image_io import read_recipe

RECIPE_KEYS = ("run_id", "checkpoint_sha256", "model", "seed", "genloop_version")


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process output does not depend on the width of the terminal pytest runs in (subprocesses get
    pipes, hence rich's 80-column default)."""
    monkeypatch.setenv("COLUMNS", "120")


# --- helpers --------------------------------------------------------------------------------------
def sets(model: str, *extra: str) -> list[str]:
    """`--set` arguments for the tiny config of ``model``."""
    return [a for item in tiny(model, *extra) for a in ("--set", item)]


def train(capsys, model: str = "dcgan", *args: str, steps: int = 4) -> str:
    """Train a tiny run in-process; returns its run id (the last line of stdout)."""
    code, out, err = cli(
        capsys, "train", model, "--data", "digits", *sets(model), "--steps", str(steps), "--quiet", *args
    )
    assert code == 0, err
    return out.strip().splitlines()[-1]


def proc(tmp_path: Path, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run the real `genloop` process against this test's run store and cache."""
    e = cli_env(tmp_path)
    e["OMP_NUM_THREADS"] = "1"  # the machine is shared; oversubscribed threads only slow tiny work down
    e.pop("COLUMNS", None)
    e.update(env)
    return subprocess.run(
        [*GENLOOP, *map(str, args)], env=e, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def store_entries(tmp_path: Path) -> list[str]:
    """Folders in the run store (runs, .tmp-*, .trash-*): none may appear after a rejected command. The store's
    own folders (the watermark index, the text-watermark key) are not runs."""
    root = tmp_path / "runs"
    own = {".watermark", ".keys"}
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in own) if root.is_dir() else []


def assert_user_error(code: int, err: str, *words: str) -> None:
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, err)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- data -----------------------------------------------------------------------------------------
def test_data_list(capsys) -> None:
    code, out, _ = cli(capsys, "data", "list")
    assert code == 0
    assert {"digits", "mnist", "fashion-mnist"} <= set(out.split())


def test_data_info_digits(capsys) -> None:
    code, out, err = cli(capsys, "data", "info", "digits", "--image-size", "8")
    assert code == 0, err
    for word in (
        "images",
        "1797",
        "shape",
        "[1, 8, 8]",
        "channels",
        "classes",
        "10",
        "value_range",
        "[0, 255]",
        "splits",
        "train",
        "1438",
        "val",
        "180",
        "test",
        "179",
    ):
        assert word in out, word
    code, out, err = cli(capsys, "data", "info", "digits", "--image-size", "8", "--set", "channels=3")
    assert code == 0, err
    assert "[3, 8, 8]" in out


# --- train: the run-id contract, --runs-dir, --resume, --time-budget ------------------------------
def test_train_prints_run_id_as_last_stdout_line_subprocess(tmp_path: Path) -> None:
    r = proc(tmp_path, "train", "dcgan", "--data", "digits", *sets("dcgan"), "--steps", "3")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    run_id = r.stdout.strip().splitlines()[-1].strip()
    assert "dcgan" in run_id
    run_dir = tmp_path / "runs" / run_id
    assert (run_dir / "run.json").is_file()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["id"] == run_id and info["status"] == "finished" and info["step"] == 3
    for name in ("config.json", "metrics.jsonl", "checkpoints/last.safetensors", "model.safetensors"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "samples").glob("*.png"))
    assert "trained dcgan" in r.stderr  # the summary goes to stderr, not stdout
    assert not list((tmp_path / "runs").glob(".tmp-*"))


@pytest.mark.parametrize("model", ["wgan-gp", "vae"])
def test_train_other_models(capsys, tmp_path: Path, model: str) -> None:
    run_id = train(capsys, model, steps=3)
    assert model in run_id
    info = json.loads((tmp_path / "runs" / run_id / "run.json").read_text())
    assert info["model"] == model and info["step"] == 3 and info["status"] == "finished"
    assert (tmp_path / "runs" / run_id / "model.safetensors").is_file()


def test_train_runs_dir_option_overrides_env(capsys, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    run_id = train(capsys, "dcgan", "--runs-dir", str(other), steps=2)
    assert (other / run_id / "run.json").is_file()
    assert store_entries(tmp_path) == []  # $GENLOOP_RUNS_DIR's store was not touched
    code, out, _ = cli(capsys, "runs", "show", run_id, "--runs-dir", str(other))
    assert code == 0 and json.loads(out)["run"]["id"] == run_id


def test_train_seed_and_config_file(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  lr: 0.001\nmodel:\n  z_dim: 6\n")
    run_id = train(capsys, "dcgan", "--config", str(cfg), "--seed", "7", steps=2)
    code, out, _ = cli(capsys, "runs", "show", run_id)
    shown = json.loads(out)
    assert code == 0
    assert shown["config"]["train"]["seed"] == 7 and shown["run"]["seed"] == 7
    assert shown["config"]["train"]["lr"] == 0.001
    assert shown["config"]["model"]["z_dim"] == 8  # --set (from tiny) wins over the file


def test_resume_continues_the_same_run(capsys, tmp_path: Path) -> None:
    run_id = train(capsys, "dcgan", steps=3)
    code, out, err = cli(capsys, "train", "--resume", run_id, "--steps", "6", "--quiet")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == run_id
    info = json.loads((tmp_path / "runs" / run_id / "run.json").read_text())
    assert info["step"] == 6 and info["status"] == "finished"
    assert store_entries(tmp_path) == [run_id]  # no new run
    # a run that reached its steps says how to go on
    code, _, err = cli(capsys, "train", "--resume", run_id)
    assert_user_error(code, err, "already reached", "--steps")


def test_resume_matches_an_uninterrupted_run(capsys, tmp_path: Path) -> None:
    straight = train(capsys, "dcgan", steps=6)
    split = train(capsys, "dcgan", steps=3)
    code, _, err = cli(capsys, "train", "--resume", split, "--steps", "6", "--quiet")
    assert code == 0, err
    runs = tmp_path / "runs"
    assert sha256(runs / straight / "model.safetensors") == sha256(runs / split / "model.safetensors")


def test_train_time_budget(capsys, tmp_path: Path) -> None:
    code, out, err = cli(capsys, "train", "vae", "--data", "digits", *sets("vae"), "--time-budget", "1s", "--quiet")
    assert code == 0, err
    run_id = out.strip().splitlines()[-1]
    info = json.loads((tmp_path / "runs" / run_id / "run.json").read_text())
    assert info["status"] == "finished" and info["step"] >= 1 and info["stopped_by"] == "time"


# --- user data: IDX and npz -----------------------------------------------------------------------
def _digits_like(n: int = 48, size: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8), (np.arange(n) % 4).astype(np.uint8)


def test_train_on_gzipped_idx_file(capsys, tmp_path: Path) -> None:
    images, labels = _digits_like()
    data = tmp_path / "mine"
    data.mkdir()
    n, h, w = images.shape
    (data / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">4B3I", 0, 0, 8, 3, n, h, w) + images.tobytes())
    )
    (data / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">4BI", 0, 0, 8, 1, n) + labels.tobytes())
    )
    code, out, err = cli(capsys, "data", "info", str(data / "train-images-idx3-ubyte.gz"), "--image-size", "8")
    assert code == 0, err
    assert "48" in out and "[1, 8, 8]" in out and "idx" in out
    for source in (data / "train-images-idx3-ubyte.gz", data):  # the file, and the folder holding it
        code, out, err = cli(capsys, "train", "dcgan", "--data", str(source), *sets("dcgan"), "--steps", "2", "--quiet")
        assert code == 0, err
        run_id = out.strip().splitlines()[-1]
        info = json.loads((tmp_path / "runs" / run_id / "run.json").read_text())
        assert info["step"] == 2 and info["status"] == "finished"


def test_train_on_npz(capsys, tmp_path: Path) -> None:
    images, labels = _digits_like()
    path = tmp_path / "mine.npz"
    np.savez(path, x=images, y=labels.astype(np.int64))
    code, out, err = cli(capsys, "train", "vae", "--data", str(path), *sets("vae"), "--steps", "2", "--quiet")
    assert code == 0, err
    run_id = out.strip().splitlines()[-1]
    shown = json.loads(cli(capsys, "runs", "show", run_id)[1])
    assert shown["run"]["step"] == 2 and shown["config"]["data_spec"]["channels"] == 1


# --- generate -------------------------------------------------------------------------------------
def test_generate_pngs_recipes_and_seeds(capsys, tmp_path: Path) -> None:
    run_id = train(capsys, "dcgan", steps=3)
    run_dir = tmp_path / "runs" / run_id
    code, out, err = cli(capsys, "generate", run_id, "--n", "6", "--seed", "3", "--extras")
    assert code == 0, err
    gen = run_dir / "generated"
    names = sorted(p.name for p in gen.glob("*.png"))
    assert names == ["grid.png", "interpolation.png"] + [f"sample_{i:06d}.png" for i in range(3, 9)]
    assert not (gen / "reconstructions.png").exists()  # a GAN has no encoder
    weights_sha = sha256(run_dir / "model.safetensors")
    for p in gen.glob("*.png"):
        recipe = read_recipe(p)
        assert recipe is not None, p
        for key in RECIPE_KEYS:
            assert key in recipe, (p.name, key)
        assert recipe["run_id"] == run_id and recipe["model"] == "dcgan"
        assert recipe["checkpoint_sha256"] == weights_sha
    for i in range(6):
        assert read_recipe(gen / f"sample_{3 + i:06d}.png")["seed"] == 3 + i
    assert read_recipe(gen / "grid.png")["seed"] == 3
    assert pixels(gen / "sample_000003.png").shape == (8, 8)

    # image i of a batch with seed s is regenerated alone with --n 1 --seed s+i
    code, _, err = cli(capsys, "generate", run_id, "--n", "1", "--seed", "5", "--out", str(tmp_path / "one"))
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "one" / "sample_000005.png"), pixels(gen / "sample_000005.png"))

    # same seed: identical pixels; another seed: different pixels
    code, _, err = cli(
        capsys, "generate", run_id, "--n", "6", "--seed", "3", "--extras", "--out", str(tmp_path / "again")
    )
    assert code == 0, err
    code, _, err = cli(capsys, "generate", run_id, "--n", "6", "--seed", "4", "--out", str(tmp_path / "other"))
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "again" / "grid.png"), pixels(gen / "grid.png"))
    assert np.array_equal(pixels(tmp_path / "again" / "interpolation.png"), pixels(gen / "interpolation.png"))
    assert not np.array_equal(pixels(tmp_path / "other" / "grid.png"), pixels(gen / "grid.png"))


def test_generate_vae_writes_reconstructions(capsys, tmp_path: Path) -> None:
    run_id = train(capsys, "vae", steps=3)
    code, out, err = cli(capsys, "generate", run_id, "--n", "4", "--seed", "0", "--extras")
    assert code == 0, err
    gen = tmp_path / "runs" / run_id / "generated"
    for name in ("grid.png", "interpolation.png", "reconstructions.png", "sample_000000.png", "sample_000003.png"):
        assert (gen / name).is_file(), name
    recipe = read_recipe(gen / "reconstructions.png")
    assert recipe["run_id"] == run_id and recipe["model"] == "vae"
    assert recipe["checkpoint_sha256"] == sha256(tmp_path / "runs" / run_id / "model.safetensors")
    assert "genloop_version" in recipe
    assert read_recipe(gen / "sample_000002.png")["seed"] == 2


# --- eval, runs, report ---------------------------------------------------------------------------
@pytest.mark.slow
def test_eval_vae_runs_list_show_report_rm(capsys, tmp_path: Path) -> None:
    vae = train(capsys, "vae", steps=3)
    gan = train(capsys, "dcgan", steps=2)
    code, out, err = cli(capsys, "eval", vae, "--n", "64")
    assert code == 0, err
    assert "FID" in out and "KID" in out and "Inception Score" in out and "ELBO" in out
    metrics = json.loads((tmp_path / "runs" / vae / "eval" / "metrics.json").read_text())
    for key in ("fid", "fid_floor", "kid", "is", "feature_net", "elbo_nats"):
        assert key in metrics, key
    assert metrics["run_id"] == vae and metrics["n_generated"] == 64
    # A 3-step VAE is far from the data and held-out real images are close to it: the floor sits well below
    # (a broken floor, e.g. real images scored against themselves, would be 0; a swapped pair would invert this)
    assert 0 < 2 * metrics["fid_floor"] < metrics["fid"] and 2 * metrics["kid_floor"] < metrics["kid"]
    # The likelihood bounds are what their parts say (metrics.json rounds family metrics to 4 decimals)
    assert metrics["kl_nats"] > 0  # a KL divergence between distinct Gaussians
    assert metrics["elbo_nats"] == pytest.approx(-(metrics["recon_nats"] + metrics["kl_nats"]), abs=2e-4)
    dims = 1 * 8 * 8  # digits are grayscale, trained at 8 px
    assert metrics["elbo_bits_per_dim"] == pytest.approx(-metrics["elbo_nats"] / (dims * np.log(2)), abs=1e-4)

    # runs list, with the model filter
    code, out, _ = cli(capsys, "runs", "list")
    assert code == 0 and "vae" in out and "dcgan" in out
    code, out, _ = cli(capsys, "runs", "list", "--model", "vae")
    assert code == 0 and "vae" in out and "dcgan" not in out
    code, out, _ = cli(capsys, "runs", "list", "--model", "wgan-gp")
    assert code == 0 and "vae" not in out and "dcgan" not in out  # piped: only the header line

    # runs show: JSON, by full id and by a unique prefix; the eval is included
    code, out, _ = cli(capsys, "runs", "show", vae[:-1])
    shown = json.loads(out)
    assert code == 0 and shown["run"]["id"] == vae and shown["config"]["model"]["name"] == "vae"
    assert shown["eval"]["fid"] == metrics["fid"]
    assert shown["run"]["summary"]["fid"] == metrics["fid"]
    common = os.path.commonprefix([vae, gan])
    code, _, err = cli(capsys, "runs", "show", common)
    assert_user_error(code, err, "ambiguous")

    # report: the path of a self-contained report.html
    code, out, err = cli(capsys, "report", vae)
    assert code == 0, err
    report = tmp_path / "runs" / vae / "report.html"
    assert Path("".join(out.split())) == report
    html = report.read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and vae in html
    assert 'src="http' not in html and "<script" not in html.lower()

    # runs rm
    code, out, _ = cli(capsys, "runs", "rm", gan, "--yes")
    assert code == 0 and gan in out
    assert store_entries(tmp_path) == [vae]
    code, out, _ = cli(capsys, "runs", "list")
    assert "dcgan" not in out
    code, _, err = cli(capsys, "runs", "show", gan)
    assert_user_error(code, err, "no run", gan)


def test_report_prints_the_path_on_one_line_when_piped(capsys, tmp_path: Path) -> None:
    runs = tmp_path / ("a-run-store-with-a-long-name-" + "x" * 60)
    run_id = train(capsys, "vae", "--runs-dir", str(runs), steps=1)
    r = proc(tmp_path, "report", run_id, "--runs-dir", runs)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(runs / run_id / "report.html")]


def test_runs_list_shows_whole_run_ids_when_piped(capsys, tmp_path: Path) -> None:
    run_id = train(capsys, "vae", steps=1)
    r = proc(tmp_path, "runs", "list")
    assert r.returncode == 0, r.stderr
    assert run_id in r.stdout


# --- Python API -----------------------------------------------------------------------------------
def test_python_api_train_load_generate(tmp_path: Path) -> None:
    import genloop

    run = genloop.train("vae", data="digits", overrides=tiny("vae"), steps=5, progress=False)
    assert run.info["status"] == "finished" and run.info["step"] == 5
    assert run.dir == tmp_path / "runs" / run.id
    pipe = genloop.load(run.id)
    out = pipe(n=4, seed=0)
    assert tuple(out.tensors.shape) == (4, 1, 8, 8)
    assert float(out.tensors.min()) >= -1 and float(out.tensors.max()) <= 1
    assert len(out.images) == 4 and all(isinstance(im, Image.Image) and im.size == (8, 8) for im in out.images)
    again = pipe(n=4, seed=0)
    assert np.array_equal(again.tensors.numpy(), out.tensors.numpy())
    assert out.recipe["run_id"] == run.id and out.recipe["seed"] == 0


# --- bad input: exit 2, one line, no traceback, nothing in the store ------------------------------
def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(os.urandom(300))
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(truncated / "b.png")
    blob = (truncated / "b.png").read_bytes()
    (truncated / "b.png").write_bytes(blob[: len(blob) // 2])
    unknown_section = tmp_path / "unknown_section.yaml"
    unknown_section.write_text("optimizer:\n  lr: 0.1\n")
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("train: [steps: 3\n  lr: {\n")
    t = ["train", "dcgan", *sets("dcgan"), "--steps", "2"]
    return {
        "missing data path": (
            ["train", "dcgan", "--data", str(tmp_path / "nope"), "--steps", "2"],
            ("no such file", "nope"),
        ),
        "empty folder": ([*t, "--data", str(empty)], ("no images", "empty")),
        "corrupt png": ([*t, "--data", str(corrupt)], ("a.png", "not a readable image")),
        "truncated png": ([*t, "--data", str(truncated)], ("b.png", "not a readable image")),
        "unknown dataset": (
            ["train", "dcgan", "--data", "cifar-99", "--steps", "2"],
            ("unknown dataset", "cifar-99", "digits"),
        ),
        "unknown model": (["train", "diffusion", "--steps", "2"], ("unknown", "diffusion", "dcgan", "vae")),
        "unknown config key": ([*t, "--set", "train.nope=1"], ("unknown config key", "train.nope", "lr")),
        "wrong type": ([*t, "--set", "train.lr=abc"], ("train.lr", "float", "abc")),
        "unknown yaml section": ([*t, "--config", str(unknown_section)], ("unknown config section", "optimizer")),
        "malformed yaml": ([*t, "--config", str(malformed)], ("not valid yaml", "malformed.yaml")),
        "missing config file": ([*t, "--config", str(tmp_path / "nope.yaml")], ("nope.yaml", "does not exist")),
        "resume missing run": (
            ["train", "--resume", "20990101-000000-dcgan-dead"],
            ("no run", "20990101-000000-dcgan-dead"),
        ),
        "bad time budget": ([*t[:-2], "--time-budget", "3x"], ("--time-budget", "3x")),
        "zero steps": (["train", "dcgan", *sets("dcgan"), "--steps", "0"], ("train.steps", ">= 1", "0")),
        "generate missing run": (["generate", "nope-run"], ("no run", "nope-run")),
        "eval missing run": (["eval", "nope-run", "--n", "10"], ("no run", "nope-run")),
        "report missing run": (["report", "nope-run"], ("no run", "nope-run")),
        "show missing run": (["runs", "show", "nope-run"], ("no run", "nope-run")),
        "rm missing run": (["runs", "rm", "nope-run"], ("no run", "nope-run")),
    }


BAD_CASES = [
    "missing data path",
    "empty folder",
    "corrupt png",
    "truncated png",
    "unknown dataset",
    "unknown model",
    "unknown config key",
    "wrong type",
    "unknown yaml section",
    "malformed yaml",
    "missing config file",
    "resume missing run",
    "bad time budget",
    "zero steps",
    "generate missing run",
    "eval missing run",
    "report missing run",
    "show missing run",
    "rm missing run",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line(capsys, tmp_path: Path, case: str) -> None:
    args, words = _bad_inputs(tmp_path)[case]
    code, out, err = cli(capsys, *args)
    assert_user_error(code, err, *words)
    assert store_entries(tmp_path) == []  # no run directory, no leftover .tmp-* folder


def test_generate_n_zero_is_rejected(capsys, tmp_path: Path) -> None:
    run_id = train(capsys, "dcgan", steps=1)
    code, _, err = cli(capsys, "generate", run_id, "--n", "0")
    assert_user_error(code, err, "--n", "0")
    assert not (tmp_path / "runs" / run_id / "generated").exists()
    assert store_entries(tmp_path) == [run_id]


def test_bad_input_in_a_real_process(tmp_path: Path) -> None:
    r = proc(tmp_path, "train", "dcgan", "--data", tmp_path / "no-such-folder", "--steps", "2")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert [line for line in r.stderr.splitlines() if line.strip()] == [r.stderr.strip()]
    assert "no-such-folder" in r.stderr and "no such file" in r.stderr
    assert r.stdout == ""
    assert store_entries(tmp_path) == []


def test_error_message_keeps_square_brackets(capsys, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "train", "dcgan", "--data", str(tmp_path / "photos[v2]"), "--steps", "2")
    assert_user_error(code, err, "photos[v2]")


def test_error_message_with_closing_tag_lookalike_in_a_real_process(tmp_path: Path) -> None:
    r = proc(tmp_path, "train", "dcgan", "--data", tmp_path / "old[/data]", "--steps", "2")
    assert "Traceback" not in r.stderr, r.stderr[-300:]
    assert r.returncode == 2 and "old[/data]" in r.stderr


def test_generate_out_is_an_existing_file(capsys, tmp_path: Path) -> None:
    run_id = train(capsys, "dcgan", steps=1)
    (tmp_path / "afile").write_text("x")
    code, _, err = cli(capsys, "generate", run_id, "--n", "1", "--out", tmp_path / "afile")
    assert_user_error(code, err, "afile")


def test_train_runs_dir_is_an_existing_file(capsys, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    code, _, err = cli(capsys, "train", "dcgan", *sets("dcgan"), "--steps", "1", "--runs-dir", tmp_path / "afile")
    assert_user_error(code, err, "afile")


# --- help, demo -----------------------------------------------------------------------------------
HELP = [
    [],
    ["train"],
    ["generate"],
    ["eval"],
    ["report"],
    ["demo"],
    ["data"],
    ["data", "info"],
    ["data", "list"],
    ["runs"],
    ["runs", "list"],
    ["runs", "show"],
    ["runs", "rm"],
]


@pytest.mark.parametrize("command", HELP, ids=lambda c: " ".join(c) or "genloop")
def test_help(tmp_path: Path, command: list[str]) -> None:
    r = proc(tmp_path, *command, "--help", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.slow
def test_demo(capsys, tmp_path: Path) -> None:
    code, out, err = cli(capsys, "demo", "--time-budget", "5s", "--n", "200")
    assert code == 0, err
    [run_id] = store_entries(tmp_path)
    run_dir = tmp_path / "runs" / run_id
    report = run_dir / "report.html"
    assert report.is_file() and "data:image/png;base64," in report.read_text(encoding="utf-8")
    assert (run_dir / "generated" / "grid.png").is_file()
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["n_generated"] == 200
    flat = "".join(out.split())
    assert run_id in flat and str(report).replace(" ", "") in flat
    assert f"FID{metrics['fid']:.2f}(real-datafloor{metrics['fid_floor']:.2f}" in flat
    info = json.loads((run_dir / "run.json").read_text())
    assert info["model"] == "dcgan" and info["status"] == "finished" and info["dataset"] == "digits"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["data"]["image_size"] == 32
