"""`genloop train --recipe`: what the data summary says, which recipe the rules pick, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, TINY_GPT, cli, tiny
from PIL import Image

import genloop
from genloop import recipes
from genloop.errors import ConfigError, NotFoundError
from genloop.recipes import DataSummary, batch_size, choose, pick, summarize
from genloop.systems import models

WITH_RESGAN = [*models.names(), "resgan"]  # the residual GAN lands on another branch: pick as if it were here
WITHOUT_RESGAN = [m for m in models.names() if m != "resgan"]


def _images(folder: Path, n: int, size: tuple[int, int], mode: str = "RGB", suffix: str = ".png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], len(mode))
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i:03d}{suffix}")
    return folder


@pytest.fixture
def rgb(tmp_path: Path) -> Path:
    """40 unlabelled RGB images of 16 px."""
    return _images(tmp_path / "rgb", 40, (16, 16))


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """40 RGB photos of 100x80 px in two class folders."""
    _images(tmp_path / "lab" / "cats", 20, (100, 80), suffix=".jpg")
    return _images(tmp_path / "lab" / "dogs", 20, (100, 80), suffix=".jpg").parent


@pytest.fixture
def grey(tmp_path: Path) -> Path:
    """40 unlabelled grey images of 8 px."""
    return _images(tmp_path / "grey", 40, (8, 8), mode="L")


def _settings(choice: recipes.Choice) -> dict[str, dict]:
    return choice.overrides


# --- the data summary -------------------------------------------------------------------------------
def test_summary_of_a_folder_comes_from_its_headers(rgb: Path, labelled: Path, grey: Path) -> None:
    s = summarize(str(rgb))
    assert (s.count, s.native_size, s.channels, s.labelled, s.default_family) == (40, 16, 3, False, "dcgan")
    assert s.describe() == "40 RGB images of 16 px, unlabelled"
    s = summarize(str(labelled))
    assert (s.count, s.native_size, s.channels, s.class_names) == (40, 80, 3, ["cats", "dogs"])
    s = summarize(str(grey))
    assert (s.native_size, s.channels, s.grey) == (8, 1, True)
    assert summarize("digits").describe() == "1,797 grey images of 8 px, 10 classes"


def test_summary_of_text_is_its_modalitys_default_family(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("some words\n" * 20)
    s = summarize(str(tmp_path / "notes.txt"))
    assert (s.default_family, s.native_size, s.count) == ("gpt", None, 1)
    # a folder of text with one stray image is text: the modality that would read the most files claims it
    _images(tmp_path / "mixed", 1, (8, 8))
    for i in range(3):
        (tmp_path / "mixed" / f"{i}.md").write_text("# notes\n")
    assert summarize(str(tmp_path / "mixed")).default_family == "gpt"


def test_summary_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such file or folder"):
        summarize(str(tmp_path / "missing"))
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(ConfigError, match="no data any modality"):
        summarize(str(tmp_path / "odd"))
    with pytest.raises(ConfigError, match="pass --data"):
        summarize(None)


# --- the rules --------------------------------------------------------------------------------------
def test_small_rgb_unlabelled_is_a_resgan_with_diffaugment_and_ada(rgb: Path) -> None:
    c = pick(summarize(str(rgb)), 1800, available=WITH_RESGAN)
    assert (c.name, c.model) == ("small-rgb-gan", "resgan")
    o = _settings(c)
    assert o["model"] == {"augment": "color,translation,cutout", "ada": True}
    assert o["data"] == {"flip": True, "image_size": 32}  # 16 px data: the nearest of 32/64
    assert o["train"]["batch_size"] == 8  # min(64, 40 // 4) = 10 -> 8
    assert c.reasons[0] == "40 RGB images of 16 px, unlabelled"
    assert any("differentiable augmentation" in r and "ADA" in r for r in c.reasons)
    assert c.lines()[0].startswith("recipe small-rgb-gan: resgan at 32 px — 40 RGB images")


def test_without_resgan_the_same_recipe_trains_dcgan_and_says_so(rgb: Path) -> None:
    c = pick(summarize(str(rgb)), 1800, available=WITHOUT_RESGAN)
    assert (c.name, c.model) == ("small-rgb-gan", "dcgan")
    assert c.overrides["model"] == {"augment": "color,translation,cutout", "ada": True}
    assert any("resgan is not registered here: dcgan instead" in r for r in c.reasons)


def test_labelled_rgb_is_class_conditional(labelled: Path) -> None:
    s = summarize(str(labelled))
    c = pick(s, 1800, available=WITH_RESGAN)
    assert (c.name, c.model, c.overrides["model"]["class_conditional"]) == ("small-rgb-gan", "resgan", True)
    assert c.overrides["data"]["image_size"] == 64  # 80 px: the nearest of 32/64
    assert any("conditioned on the 2 classes" in r for r in c.reasons)
    c = pick(s, 1800, available=WITHOUT_RESGAN)
    assert (c.model, "class_conditional" in c.overrides["model"]) == ("cgan", False)  # cgan is conditional itself


def test_a_long_budget_picks_diffusion(rgb: Path, labelled: Path) -> None:
    c = pick(summarize(str(rgb)), 4 * 3600, available=WITH_RESGAN)
    assert (c.name, c.model) == ("small-rgb-diffusion", "ddpm")
    m = c.overrides["model"]
    assert m == {
        "prediction_type": "v_prediction",
        "width": 64,
        "channel_mults": [1, 2, 2, 2],
        "attention_resolutions": [16],
        "dropout": 0.1,
    }
    assert c.overrides["train"] | {"lr": 1e-4, "ema_decay": 0.999} == c.overrides["train"]
    assert c.overrides["train"]["warmup_steps"] > 0 and c.overrides["data"]["flip"] is True
    c = pick(summarize(str(labelled)), 4 * 3600)
    assert (c.model, c.overrides["model"]["class_conditional"]) == ("ddpm", True)


def test_small_grey_is_digits_like(grey: Path) -> None:
    c = pick(summarize(str(grey)), 1800)
    assert (c.name, c.model) == ("digits-like", "dcgan")
    assert c.overrides["model"] == {} and c.overrides["data"] == {"flip": False, "image_size": 32}
    c = pick(summarize("digits"), 1800)
    assert (c.name, c.model, c.overrides["train"]["batch_size"]) == ("digits-like", "cgan", 64)


def test_many_images_are_large_images() -> None:
    """Over 5,000 images (a summary, not 5,000 files): a plain DCGAN with flips, no augmentation."""
    big = DataSummary("photos", "dcgan", count=6000, native_size=256, channels=3)
    c = pick(big, 1800, available=WITH_RESGAN)
    assert (c.name, c.model) == ("large-images", "dcgan")
    assert c.overrides["model"] == {} and c.overrides["data"] == {"flip": True, "image_size": 64}
    assert c.overrides["train"]["batch_size"] == 64
    labelled = DataSummary("photos", "dcgan", count=6000, native_size=40, channels=3, class_names=["a", "b"])
    c = pick(labelled, 1800)
    assert (c.model, c.overrides["data"]["image_size"]) == ("cgan", 32)
    # big grey digit-sized data stays digits-like (MNIST)
    assert pick(DataSummary("mnist", "dcgan", 70000, 28, 1, ["0", "1"]), 1800).name == "digits-like"


def test_text_and_music_train_their_default_family(tmp_path: Path) -> None:
    c = pick(DataSummary("corpus.txt", "gpt", count=1), 1800)
    assert (c.name, c.model) == ("defaults", "gpt")
    assert "gpt with its defaults" in c.reasons[0]
    assert pick(DataSummary("bach", "music-gpt"), None).model == "music-gpt"
    with pytest.raises(ConfigError, match="recipe small-rgb-gan is for images"):
        pick(DataSummary("corpus.txt", "gpt", count=1), 1800, recipe="small-rgb-gan")


def test_a_named_model_gets_its_own_recipe(labelled: Path) -> None:
    s = summarize(str(labelled))
    c = pick(s, 600, model="ddpm")  # a short budget, but the user asked for ddpm: ddpm's recipe
    assert (c.name, c.model, c.overrides["model"]["class_conditional"]) == ("small-rgb-diffusion", "ddpm", True)
    c = pick(s, 600, model="dcgan")  # labelled data, an unconditional family: no class settings
    assert (c.name, c.model, c.overrides["model"]) == ("small-rgb-gan", "dcgan", dict(recipes._AUGMENT))
    c = pick(s, 600, model="vae")  # no recipe for vae: its defaults, sized to the data
    assert (c.name, c.model, c.overrides["model"]) == ("defaults", "vae", {})
    assert c.overrides["data"] == {"image_size": 64}


def test_named_recipes_and_bad_names(rgb: Path) -> None:
    s = summarize(str(rgb))
    c = pick(s, 600, recipe="small-rgb-diffusion")
    assert (c.name, c.model) == ("small-rgb-diffusion", "ddpm")
    assert "as asked" in c.reasons[1]
    with pytest.raises(ConfigError) as e:
        pick(s, 600, recipe="best")
    assert str(e.value) == (
        "unknown recipe 'best'; valid: auto, digits-like, large-images, small-rgb-diffusion, small-rgb-gan"
    )
    with pytest.raises(ConfigError, match="recipe small-rgb-diffusion trains ddpm, not dcgan"):
        pick(s, 600, model="dcgan", recipe="small-rgb-diffusion")
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        pick(s, 600, model="nope")


@pytest.mark.parametrize(("count", "batch"), [(10, 8), (40, 8), (100, 16), (130, 32), (300, 64), (10**6, 64)])
def test_batch_size(count: int, batch: int) -> None:
    assert batch_size(count) == batch


def test_budget_settings(grey: Path) -> None:
    c = choose(str(grey))  # no end of training given: the default budget, printed as a choice
    assert c.overrides["train"] | {"time_budget": 1800.0, "steps": None} == c.overrides["train"]
    assert any("30 min budget" in r for r in c.reasons)
    c = choose(str(grey), steps=200)
    t = c.overrides["train"]
    assert "time_budget" not in t and (t["sample_every"], t["checkpoint_every"]) == (20, 50)
    c = choose(str(grey), time_budget=120.0)
    assert "time_budget" not in c.overrides["train"] and c.overrides["train"]["checkpoint_seconds"] == 60.0
    c = choose(str(grey), overrides=["train.steps=50"])  # --set ends training: no default budget
    assert "time_budget" not in c.overrides["train"]
    c = choose(str(grey), config={"train": {"time_budget": 60}})
    assert "time_budget" not in c.overrides["train"]


# --- end to end -------------------------------------------------------------------------------------
def _sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def _run_files(tmp_path: Path, run_id: str) -> tuple[dict, dict]:
    run_dir = tmp_path / "runs" / run_id
    return json.loads((run_dir / "config.json").read_text()), json.loads((run_dir / "run.json").read_text())


def test_cli_auto_trains_and_writes_the_choice(capsys, tmp_path: Path, grey: Path) -> None:
    code, out, err = cli(
        capsys, "train", "--recipe", "auto", "--data", grey, "--steps", "2", "--quiet", *_sets(*tiny("dcgan"))
    )
    assert code == 0, err
    assert "recipe digits-like: dcgan at 32 px — 40 grey images of 8 px, unlabelled" in err
    assert "settings: data.flip=false data.image_size=32 train.batch_size=8" in err
    assert "yours win: data.image_size, train.batch_size, train.log_every, train.sample_every (from" in err
    cfg, info = _run_files(tmp_path, out.strip().splitlines()[-1])
    assert cfg["model"]["name"] == "dcgan" and cfg["data"]["flip"] is False
    assert cfg["data"]["image_size"] == 8  # the user's --set wins over the recipe's 32
    assert cfg["train"]["batch_size"] == 16  # ... and over its batch size
    assert cfg["train"]["sample_every"] == 0 and cfg["train"]["steps"] == 2
    assert info["recipe"]["name"] == "digits-like" and info["recipe"]["model"] == "dcgan"
    assert info["recipe"]["reasons"][0] == "40 grey images of 8 px, unlabelled"


def test_cli_named_recipe_for_a_named_model(capsys, tmp_path: Path, rgb: Path) -> None:
    """`train dcgan --recipe small-rgb-gan`: DiffAugment + ADA + flips land in config.json."""
    args = ["train", "dcgan", "--recipe", "small-rgb-gan", "--data", rgb, "--steps", "2", "--quiet"]
    code, out, err = cli(capsys, *args, *_sets(*tiny("dcgan"), "data.flip=false"))
    assert code == 0, err
    cfg, info = _run_files(tmp_path, out.strip().splitlines()[-1])
    assert (cfg["model"]["augment"], cfg["model"]["ada"]) == ("color,translation,cutout", True)
    assert cfg["data"]["flip"] is False and cfg["data"]["image_size"] == 8  # --set wins
    assert info["recipe"]["settings"]["data"] == {"flip": True, "image_size": 32}  # what the recipe chose


def test_cli_auto_on_small_rgb_trains_the_augmented_residual_gan(capsys, tmp_path: Path, rgb: Path) -> None:
    code, out, err = cli(
        capsys, "train", "--recipe", "auto", "--data", rgb, "--steps", "2", "--quiet", *_sets(*tiny("resgan"))
    )
    assert code == 0, err
    assert "recipe small-rgb-gan: resgan" in err
    cfg, _ = _run_files(tmp_path, out.strip().splitlines()[-1])
    assert cfg["model"]["name"] == "resgan" and cfg["model"]["ada"] is True and cfg["data"]["flip"] is True


def test_cli_auto_on_text_trains_gpt(capsys, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    code, out, err = cli(
        capsys, "train", "--recipe", "auto", "--data", corpus, "--steps", "2", "--quiet", *_sets(*TINY_GPT)
    )
    assert code == 0, err
    assert "recipe defaults: gpt — 1 file: gpt with its defaults" in err
    cfg, info = _run_files(tmp_path, out.strip().splitlines()[-1])
    assert cfg["model"]["name"] == "gpt" and info["recipe"]["name"] == "defaults"


def test_api_auto(tmp_path: Path, grey: Path) -> None:
    run = genloop.train(data=str(grey), recipe="auto", overrides=tiny("dcgan"), steps=1, progress=False)
    assert run.info["model"] == "dcgan" and run.info["recipe"]["name"] == "digits-like"
    with pytest.raises(ConfigError, match="name a model"):
        genloop.train(data=str(grey), overrides=TINY, steps=1, progress=False)


def test_cli_errors(capsys, tmp_path: Path, grey: Path) -> None:
    code, _, err = cli(capsys, "train", "--recipe", "fancy", "--data", grey, "--steps", "1")
    assert code != 0 and "unknown recipe 'fancy'; valid: auto, digits-like" in err
    code, _, err = cli(capsys, "train", "--recipe", "auto", "--resume", "abc")
    assert code != 0 and "--resume continues a run with its own settings" in err
    code, _, err = cli(capsys, "train", "--recipe", "auto", "--steps", "1")
    assert code != 0 and "pass --data" in err
    code, _, err = cli(capsys, "train", "--data", grey, "--steps", "1")
    assert code != 0 and "--recipe auto --data FOLDER" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*-*"))


def test_help_lists_the_recipes(capsys) -> None:
    code, out, _ = cli(capsys, "train", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for name in recipes.names():
        assert name in flat
