"""The restoration tasks (upscale, deblur, denoise, colorize) through the editing front door: the registry
holds them, upscaling takes the low-resolution input and returns ``scale`` times its size, they refuse a
sampler (DDRM has its own update), a seed replays, the model calls are counted, and the CLI runs them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cli, tiny
from PIL import Image

import genloop
from genloop.errors import ConfigError
from genloop.generation.editing import EDIT_TASKS
from genloop.generation.pipelines import DiffusionPipeline
from genloop.systems import DataSpec
from genloop.systems.ddpm import DDPMConfig, DDPMSystem


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        run = genloop.train("ddpm", overrides=tiny("ddpm"), steps=2, runs_dir=runs, progress=False)
    return {"runs": runs, "ddpm": run.id}


@pytest.fixture(scope="module")
def pipe(store) -> DiffusionPipeline:
    return genloop.load(store["ddpm"], runs_dir=store["runs"])


def grey(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_restoration_tasks_are_registered() -> None:
    for name in ("upscale", "deblur", "denoise", "colorize"):
        task = EDIT_TASKS[name]
        assert task.own_sampler == "ddrm" and not task.mask and "eta" in task.options
    assert EDIT_TASKS["upscale"].input_scale == "scale"
    assert "noise" not in EDIT_TASKS["denoise"].options  # its sigma is the noise


def test_upscale_takes_the_small_input_and_returns_it_scale_times_larger(pipe) -> None:
    low = grey(2, 4)
    out = pipe.edit(low, task="upscale", scale=2, steps=3, seed=1)
    assert out.tensors.shape == (2, 1, 8, 8)
    assert [tuple(t.shape) for t in out.full_size] == [(1, 8, 8), (1, 8, 8)]
    r = out.recipe_of(0)
    assert r["task"] == "upscale" and r["method"] == "ddrm" and r["scale"] == 2 and r["model_calls"] == 3
    assert r["sampler"] == "ddrm" and r["input_model_size"] == 4
    odd = pipe.edit(grey(1, 3), task="upscale", scale=2, steps=2)  # any input size: resized to 4, back to 6
    assert tuple(odd.full_size[0].shape) == (1, 6, 6)
    again = pipe.edit(low, task="upscale", scale=2, steps=3, seed=1)
    assert torch.equal(again.tensors, out.tensors)


@pytest.mark.parametrize(
    ("task", "options"),
    [("deblur", {"blur_sigma": 0.8, "noise": 0.01}), ("denoise", {"sigma": 0.2}), ("denoise", {})],
)
def test_same_size_tasks(pipe, task, options) -> None:
    x = grey(2, 8)
    out = pipe.edit(x, task=task, steps=2, seed=0, **options)
    assert out.tensors.shape == x.shape and out.tensors.abs().max() <= 1
    assert out.recipe_of(1)["model_calls"] == 2


def test_colorize_needs_an_rgb_model_and_keeps_the_luminance_shape() -> None:
    torch.manual_seed(0)
    config = DDPMConfig(width=8, channel_mults=[1, 2], attention_resolutions=[], num_train_timesteps=100)
    rgb = DiffusionPipeline(DDPMSystem(config, DataSpec(3, 8, 0)), {"run_id": "rgb", "model": "ddpm", "step": 0})
    out = rgb.edit(grey(1, 8), task="colorize", steps=2)
    assert out.tensors.shape == (1, 3, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "upscale", "scale": 3}, "scale must be a whole number dividing the model's image size"),
        ({"task": "upscale", "scale": 0}, "scale must be a whole number dividing"),
        ({"task": "denoise", "sigma": -0.1}, "sigma"),
        ({"task": "denoise", "sampler": "ddim"}, "uses its own update"),
        ({"task": "denoise", "noise": 0.1}, "takes no option noise"),
        ({"task": "deblur", "blur_sigma": 0}, "sigma"),
        ({"task": "colorize"}, "1-channel"),
    ],
)
def test_bad_settings_are_one_line(pipe, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        pipe.edit(grey(1, 8), steps=2, **kwargs)
    assert "\n" not in str(e.value)


def test_cli_upscale_and_denoise(store, tmp_path, capsys) -> None:
    photo = tmp_path / "low.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 6), dtype=np.uint8)).save(photo)
    runs, run, out = str(store["runs"]), store["ddpm"], tmp_path / "out"
    base = ["edit", run, "--runs-dir", runs, "--input", photo, "--steps", "2", "--out", out]
    code, stdout, stderr = cli(capsys, *base, "--task", "upscale", "--scale", "2", "--no-watermark", "--no-sign")
    assert code == 0, stdout + stderr
    result = out / "low_upscale_0.png"
    assert Image.open(result).size == (12, 10)  # twice the input's own size
    code, stdout, stderr = cli(capsys, *base, "--task", "denoise", "--sigma", "0.1")
    assert code == 0, stdout + stderr
    code, _, stderr = cli(capsys, *base, "--task", "denoise", "--sampler", "ddim")
    assert code == 2 and "uses its own update" in stderr
