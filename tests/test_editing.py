"""Editing with a diffusion prior: the task registry's contract, inpainting (known pixels kept exactly), SDEdit,
seeds, sizes and channels, every bad input as one line, the CLI end to end, and GAN runs refusing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cli, tiny
from PIL import Image

import genloop
from genloop.errors import ConfigError, DataError, GenLoopError, NotFoundError
from genloop.generation.editing import EDIT_TASKS, EditContext, EditTask
from genloop.generation.editing.inpaint import repaint_calls, repaint_walk
from genloop.generation.pipelines import DiffusionPipeline
from genloop.safety.provenance import image_sha256
from genloop.systems import DataSpec
from genloop.systems.ddpm import DDPMConfig, DDPMSystem

COND = ("model.class_conditional=true",)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tiny grey 8 px DDPM trained a few steps on digits, a conditional one, and a DCGAN."""
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        ddpm = genloop.train("ddpm", overrides=tiny("ddpm"), steps=3, runs_dir=runs, progress=False)
        cond = genloop.train("ddpm", overrides=tiny("ddpm", *COND), steps=2, runs_dir=runs, progress=False)
        gan = genloop.train("dcgan", overrides=tiny("dcgan"), steps=1, runs_dir=runs, progress=False)
    return {"runs": runs, "ddpm": ddpm.id, "cond": cond.id, "gan": gan.id}


@pytest.fixture(scope="module")
def pipe(store) -> DiffusionPipeline:
    return genloop.load(store["ddpm"], runs_dir=store["runs"])


def rgb_pipe() -> DiffusionPipeline:
    """An untrained RGB 8 px DDPM: enough for what only depends on shapes and channels."""
    torch.manual_seed(0)
    config = DDPMConfig(width=8, channel_mults=[1, 2], attention_resolutions=[], num_train_timesteps=100)
    system = DDPMSystem(config, DataSpec(3, 8, 0))
    return DiffusionPipeline(system, {"run_id": "rgb", "model": "ddpm", "checkpoint": "last", "step": 0})


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1


def centre_mask(size: int = 8) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return m


# --- the registry ---------------------------------------------------------------------------------------------
def test_registry_contract() -> None:
    assert {"inpaint", "inpaint-fast", "img2img"} <= set(EDIT_TASKS)
    for name, task in EDIT_TASKS.items():
        assert isinstance(task, EditTask) and task.name == name and callable(task.run) and task.description
        assert set(task.defaults) <= set(task.options)
    assert EDIT_TASKS["inpaint"].mask and not EDIT_TASKS["img2img"].mask


def test_a_new_task_plugs_in_through_the_registry(pipe, monkeypatch) -> None:
    """One EditTask in EDIT_TASKS is all a task needs: the front door validates its options and passes the context."""
    seen = {}

    def flip(ctx: EditContext) -> torch.Tensor:
        seen.update(options=ctx.options, shape=tuple(ctx.x.shape), gens=len(ctx.generators))
        ctx.predict(ctx.x, 0)
        ctx.info["flipped"] = True
        return -ctx.x

    monkeypatch.setitem(EDIT_TASKS, "flip", EditTask("flip", flip, ("amount",), "negate", {"amount": 1}))
    x = images(3)
    out = pipe.edit(x, task="flip", amount=2)
    assert torch.equal(out.tensors, -x)
    assert seen == {"options": {"amount": 2}, "shape": (3, 1, 8, 8), "gens": 3}
    assert out.recipe["flipped"] and out.recipe["model_calls"] == 1 and out.recipe["amount"] == 2
    with pytest.raises(ConfigError, match=r"^task flip takes no option strength; its options: amount$"):
        pipe.edit(x, task="flip", strength=0.5)


def test_repaint_walk_counts_and_shape() -> None:
    assert repaint_walk(5, 2, 1) == [0, 1, 2, 3, 4, 5]  # no resampling: plain sampling
    walk = repaint_walk(4, 2, 3)
    assert walk[0] == 0 and walk[-1] == 4
    assert {b - a for a, b in zip(walk, walk[1:], strict=False)} == {1, -2}
    assert sum(b == a + 1 for a, b in zip(walk, walk[1:], strict=False)) == repaint_calls(4, 2, 3) == 4 + 2 * 2 * 2
    assert repaint_calls(25, 10, 10) == 25 + 2 * 9 * 10


# --- inpainting -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "sampler", "options"),
    [
        ("inpaint", None, {"jump_length": 2, "jump_n_sample": 3}),
        ("inpaint", "dpmpp-2m", {"jump_length": 2, "jump_n_sample": 2}),
        ("inpaint", "ddim", {"jump_n_sample": 1}),
        ("inpaint-fast", None, {}),
    ],
)
def test_inpaint_keeps_known_pixels_exactly(pipe, task, sampler, options) -> None:
    x, m = images(3), centre_mask()
    out = pipe.edit(x, task=task, mask=m, seed=4, steps=4, sampler=sampler, **options)
    options = {**EDIT_TASKS[task].defaults, **options}
    assert out.tensors.shape == (3, 1, 8, 8) and out.tensors.abs().max() <= 1
    keep = m == 0
    assert torch.equal(out.tensors[:, :, keep], x[:, :, keep])  # bit for bit
    assert not torch.equal(out.tensors[:, :, ~keep], x[:, :, ~keep])  # the hole was filled
    for i in range(3):
        assert torch.equal(out.full_size[i], out.tensors[i])  # the input was at the model's size already
    r = out.recipe
    assert r["task"] == task and r["sampler"] == (sampler or EDIT_TASKS[task].sampler) and r["sampling_steps"] == 4
    j = options["jump_length"] or 2  # default: 2
    assert r["method"] == "repaint" and r["jump_length"] == j and r["jump_n_sample"] == options["jump_n_sample"]
    assert r["model_calls"] == repaint_calls(4, j, options["jump_n_sample"])
    assert r["kind"] == "edit" and len(r["input_sha256"][0]) == 64 and len(r["mask_sha256"]) == 3


def test_fast_inpainting_needs_fewer_model_calls(pipe) -> None:
    x, m = images(1), centre_mask()
    slow = pipe.edit(x, task="inpaint", mask=m, steps=25)  # jumps of 2, 5 samples
    fast = pipe.edit(x, task="inpaint-fast", mask=m)  # 10 steps, jumps of 2, 3 samples
    assert slow.recipe["model_calls"] == repaint_calls(25, 2, 5) == 121
    assert fast.recipe["sampling_steps"] == 10 and fast.recipe["jump_length"] == 2
    assert fast.recipe["model_calls"] == repaint_calls(10, 2, 3) == 30
    model_default = pipe.edit(x, task="inpaint", mask=m)  # the tiny model samples in 4 steps
    assert model_default.recipe["model_calls"] == repaint_calls(4, 2, 5) == 20
    one_step = pipe.edit(x, task="inpaint", mask=m, steps=1)  # the default jump never exceeds the steps
    assert one_step.recipe["jump_length"] == 1


def test_all_white_mask_is_fine(pipe) -> None:
    out = pipe.edit(images(1), task="inpaint-fast", mask=torch.ones(8, 8), steps=3)
    assert out.tensors.shape == (1, 1, 8, 8)


def test_seeds(pipe) -> None:
    x, m = images(3), centre_mask()
    a = pipe.edit(x, task="inpaint", mask=m, seed=7, steps=4, jump_length=2, jump_n_sample=2)
    b = pipe.edit(x, task="inpaint", mask=m, seed=7, steps=4, jump_length=2, jump_n_sample=2)
    c = pipe.edit(x, task="inpaint", mask=m, seed=8, steps=4, jump_length=2, jump_n_sample=2)
    assert torch.equal(a.tensors, b.tensors)
    assert not torch.equal(a.tensors, c.tensors)
    alone = pipe.edit(x[2:], task="inpaint", mask=m, seed=9, steps=4, jump_length=2, jump_n_sample=2)
    assert torch.equal(alone.tensors[0], a.tensors[2])  # image i uses seed + i, in a batch or alone
    assert a.recipe_of(2)["seed"] == 9 and a.recipe_of(2)["input_sha256"] == alone.recipe["input_sha256"][0]
    s1 = pipe.edit(x, task="img2img", seed=1, strength=0.7)
    assert torch.equal(s1.tensors, pipe.edit(x, task="img2img", seed=1, strength=0.7).tensors)
    assert not torch.equal(s1.tensors, pipe.edit(x, task="img2img", seed=2, strength=0.7).tensors)


# --- image-to-image ---------------------------------------------------------------------------------------------
def test_img2img_strength_sets_the_start(pipe) -> None:
    x = images(2)
    low = pipe.edit(x, task="img2img", strength=0.25, steps=8, sampler="ddim")
    full = pipe.edit(x, task="img2img", strength=1.0, steps=8, sampler="ddim")
    assert low.tensors.shape == (2, 1, 8, 8)
    assert low.recipe["model_calls"] == 2 and full.recipe["model_calls"] == 8
    assert low.recipe["start_timestep"] < full.recipe["start_timestep"] == 99
    assert low.recipe["strength"] == 0.25 and low.recipe["method"] == "sdedit"
    default = pipe.edit(x, task="img2img")
    assert default.recipe["strength"] == 0.6 and default.recipe["sampler"] == pipe.system.config.sampler


def test_img2img_class_guidance(store) -> None:
    pipe = genloop.load(store["cond"], runs_dir=store["runs"])
    out = pipe.edit(images(2), task="img2img", class_label=3, guidance=2.0, strength=0.5)
    assert out.labels.tolist() == [3, 3] and out.recipe["guidance"] == 2.0
    assert out.recipe_of(1)["class_label"] == 3
    with pytest.raises(ConfigError, match="guidance needs class_label"):
        pipe.edit(images(1), task="img2img", guidance=2.0)
    with pytest.raises(ConfigError, match="class labels must be between 0 and 9"):
        pipe.edit(images(1), task="img2img", class_label=12)


# --- sizes and channels -----------------------------------------------------------------------------------------
def test_any_size_round_trips_and_rgb_becomes_grey(pipe) -> None:
    photo = Image.new("RGB", (30, 20), (200, 40, 10))
    photo.paste((10, 200, 90), (0, 0, 12, 20))
    mask = Image.new("L", (30, 20), 0)
    mask.paste(255, (14, 4, 26, 16))
    out = pipe.edit(photo, task="inpaint-fast", mask=mask, steps=3)
    assert out.tensors.shape == (1, 1, 8, 8) and out.full_size[0].shape == (1, 20, 30)
    grey = torch.from_numpy(np.asarray(photo.convert("L"), dtype=np.float32)) / 127.5 - 1
    keep = torch.from_numpy(np.asarray(mask) < 128)
    assert torch.allclose(out.originals[0][0], grey, atol=1 / 127.5)  # luminance, as PIL's "L"
    assert torch.equal(out.full_size[0][0][keep], out.originals[0][0][keep])  # known pixels exact at full size
    assert out.recipe["input_size"] == [[30, 20]] and out.recipe["model_size"] == 8
    assert out.recipe["input_sha256"] == [image_sha256(photo)] and out.recipe["mask_sha256"] == [image_sha256(mask)]
    assert out.recipe_of(0)["input_sha256"] == image_sha256(photo)


def test_grey_input_for_an_rgb_model_is_converted() -> None:
    pipe = rgb_pipe()
    grey = Image.new("L", (16, 16), 100)
    out = pipe.edit(grey, task="img2img", strength=0.3, steps=4)
    assert out.tensors.shape == (1, 3, 8, 8) and out.full_size[0].shape == (3, 16, 16)
    assert out.inputs.shape == (1, 3, 8, 8) and torch.equal(out.inputs[0, 0], out.inputs[0, 2])


def test_paths_lists_and_masks_per_image(pipe, tmp_path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("L", (8, 8), 50).save(a)
    Image.new("L", (12, 12), 200).save(b)
    ma, mb = Image.new("L", (8, 8), 255), Image.new("L", (12, 12), 0)
    mb.paste(255, (0, 0, 4, 4))
    out = pipe.edit([a, b], task="inpaint-fast", mask=[ma, mb], steps=2)
    assert [t.shape for t in out.full_size] == [(1, 8, 8), (1, 12, 12)] and out.names == ["a", "b"]
    assert out.recipe["input_sha256"][0] == image_sha256(Image.open(a))
    assert torch.all(out.full_size[1][:, 4:, :] == 200 / 127.5 - 1)  # b's known pixels


# --- bad input: one line each ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"task": "paint"},
            ConfigError,
            r"^unknown edit task 'paint'; known: colorize, deblur, denoise, img2img, inpaint, inpaint-fast, upscale$",
        ),
        ({"task": "inpaint", "mask": torch.zeros(8, 8)}, ConfigError, r"^the mask has no white pixel"),
        ({"task": "inpaint", "mask": torch.ones(6, 8)}, ConfigError, r"^the mask is 8x6 but input 0 is 8x8"),
        ({"task": "inpaint"}, ConfigError, r"^task inpaint needs a mask \(white = fill, black = keep\)$"),
        ({"task": "img2img", "mask": torch.ones(8, 8)}, ConfigError, r"^task img2img takes no mask"),
        ({"task": "img2img", "strength": 0}, ConfigError, r"^strength must be in \(0, 1\]"),
        ({"task": "img2img", "strength": 1.5}, ConfigError, r"^strength must be in \(0, 1\]"),
        ({"task": "img2img", "strength": "lots"}, ConfigError, r"^strength must be in \(0, 1\]"),
        ({"task": "img2img", "scale": 2}, ConfigError, r"^task img2img takes no option scale; its options: strength$"),
        (
            {"task": "inpaint", "mask": torch.ones(8, 8), "jump_length": 9, "steps": 4},
            ConfigError,
            r"^jump_length must be between 1 and 4",
        ),
        ({"task": "img2img", "guidance": 3.0}, ConfigError, r"guidance needs a class-conditional model"),
        ({"task": "img2img", "class_label": 1}, ConfigError, r"is unconditional, so it takes no class"),
        ({"task": "img2img", "steps": 0}, ConfigError, r"^steps must be between 1 and 100"),
        ({"task": "img2img", "sampler": "euler"}, GenLoopError, r"unknown sampler 'euler'"),
        (
            {"task": "inpaint", "mask": [torch.ones(8, 8)] * 3},
            ConfigError,
            r"^got 3 masks for 2 images; give one mask, or one per image$",
        ),
    ],
)
def test_bad_input_is_one_line(pipe, kwargs, error, message) -> None:
    with pytest.raises(error, match=message) as e:
        pipe.edit(images(2), **kwargs)
    assert "\n" not in str(e.value)


def test_bad_images_are_one_line(pipe, tmp_path) -> None:
    with pytest.raises(NotFoundError, match="no such input image file"):
        pipe.edit(tmp_path / "nope.png", task="img2img")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="junk.png: not a readable image"):
        pipe.edit(tmp_path / "junk.png", task="img2img")
    with pytest.raises(ConfigError, match=r"in \[-1, 1\]"):
        pipe.edit(torch.full((1, 8, 8), 3.0), task="img2img")
    with pytest.raises(ConfigError, match="not torch.uint8"):
        pipe.edit(torch.zeros(1, 8, 8, dtype=torch.uint8), task="img2img")
    with pytest.raises(ConfigError, match="no input image given"):
        pipe.edit([], task="img2img")


def test_gan_runs_refuse_with_one_line(store) -> None:
    gan = genloop.load(store["gan"], runs_dir=store["runs"])
    line = f"task inpaint needs a diffusion run (family ddpm, ddpm-distill, ddpm-text); run {store['gan']} is dcgan"
    with pytest.raises(ConfigError) as e:
        gan.edit(images(1), task="inpaint", mask=centre_mask())
    assert str(e.value) == line
    with pytest.raises(ConfigError, match="^unknown edit task"):
        gan.edit(images(1), task="paint")


# --- the CLI, end to end ------------------------------------------------------------------------------------------
def test_cli_inpaint_and_img2img(store, tmp_path, capsys) -> None:
    from genloop.data.image_io import read_recipe

    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 28), dtype=np.uint8)).save(photo)
    m = np.zeros((20, 28), dtype=np.uint8)
    m[5:15, 8:20] = 255
    Image.fromarray(m).save(mask)
    runs, run = str(store["runs"]), store["ddpm"]
    out = tmp_path / "out"
    code, stdout, _ = cli(
        capsys, "edit", run, "--runs-dir", runs, "--input", photo, "--task", "inpaint", "--mask", mask,
        "--steps", "4", "--jump-length", "2", "--jump-n-sample", "2", "--seed", "3", "--out", out,
        "--no-watermark", "--no-sign",
    )  # fmt: skip
    assert code == 0, stdout
    assert "model calls" in stdout
    result, small = out / "photo_inpaint_3.png", out / "photo_inpaint_3_8px.png"
    compare = out / "photo_inpaint_3_compare.png"
    for p in (result, small, compare):
        assert p.is_file()
    assert not (out / "photo_inpaint_3.png.manifest.json").exists()
    r = read_recipe(result)
    assert r["task"] == "inpaint" and r["seed"] == 3 and r["model_calls"] == repaint_calls(4, 2, 2)
    assert r["input_sha256"] == image_sha256(Image.open(photo)) and r["mask_sha256"] == image_sha256(Image.open(mask))
    got, given = np.asarray(Image.open(result)), np.asarray(Image.open(photo))
    assert got.shape == given.shape and np.array_equal(got[m < 128], given[m < 128])  # known pixels, exactly
    assert Image.open(small).size == (8, 8)
    assert Image.open(compare).width > 3 * 28  # three panels, enlarged

    code, stdout, _ = cli(
        capsys, "edit", run, "--runs-dir", runs, "-i", photo, "--task", "img2img", "--option", "strength=0.5",
        "--out", out,
    )  # fmt: skip
    assert code == 0
    signed = out / "photo_img2img_0.png"
    assert read_recipe(signed)["strength"] == 0.5
    assert genloop.verify(signed, runs_dir=runs).status == "valid"  # signed and watermarked as generate's


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "img2img", "--strength", "2"], "strength must be in (0, 1]"),
        (["--task", "img2img", "--jump-length", "3"], "task img2img takes no option jump_length"),
        (["--task", "inpaint"], "task inpaint needs a mask"),
        (["--task", "img2img", "--option", "strength"], "--option wants key=value"),
        (["--task", "img2img", "--option", "seed=3"], "--option seed: not a task option"),
        (["--task", "wat"], "unknown edit task 'wat'"),
    ],
)
def test_cli_bad_input_is_one_line(store, tmp_path, capsys, args, message) -> None:
    photo = tmp_path / "p.png"
    Image.new("L", (8, 8), 9).save(photo)
    code, _, err = cli(capsys, "edit", store["ddpm"], "--runs-dir", store["runs"], "--input", photo, *args)
    assert code == 2 and message in err and err.strip().count("\n") == 0


def test_cli_gan_run_refuses(store, tmp_path, capsys) -> None:
    photo = tmp_path / "p.png"
    Image.new("L", (8, 8), 9).save(photo)
    code, _, err = cli(capsys, "edit", store["gan"], "--runs-dir", store["runs"], "--input", photo, "--task", "img2img")
    line = f"task img2img needs a diffusion run (family ddpm, ddpm-distill, ddpm-text); run {store['gan']} is dcgan"
    assert code == 2 and line in err


# --- the server's edit job ------------------------------------------------------------------------------------
def test_server_edit_job(store, tmp_path) -> None:
    import io

    from fastapi.testclient import TestClient
    from studio_support import drain

    from genloop.server.app import create_app
    from genloop.server.settings import Settings

    settings = Settings(
        runs=store["runs"],
        db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}",
        media_dir=tmp_path / "media",
        uploads_dir=tmp_path / "uploads",
        poll_interval=0.01,
    )
    client = TestClient(create_app(settings))

    def upload(im: Image.Image) -> str:
        buf = io.BytesIO()
        im.save(buf, "PNG")
        r = client.post("/v1/uploads", files={"file": ("p.png", buf.getvalue())})
        assert r.status_code == 201, r.text
        return r.json()["data"]

    photo = Image.new("L", (16, 12), 40)
    mask = Image.new("L", (16, 12), 0)
    mask.paste(255, (4, 4, 12, 8))
    params = {"run_id": store["ddpm"], "task": "inpaint", "input": upload(photo), "mask": upload(mask), "steps": 2}
    r = client.post("/v1/jobs", json={"kind": "edit", "params": {**params, "options": {"jump_n_sample": 2}}})
    assert r.status_code == 202, r.text
    drain(settings)
    job = client.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["model_calls"] == repaint_calls(2, 2, 2)
    recipe = client.get(f"/v1/generations/{job['result']['generation_ids'][0]}").json()["recipe"]
    assert recipe["task"] == "inpaint" and recipe["input"] == params["input"] and recipe["mask"] == params["mask"]
    assert recipe["input_sha256"] == image_sha256(photo)
    replay = client.post(f"/v1/generations/{job['result']['generation_ids'][0]}/replay")
    assert replay.status_code == 202 and replay.json()["kind"] == "edit", replay.text
    drain(settings)
    again = client.get(f"/v1/jobs/{replay.json()['id']}").json()
    assert again["status"] == "succeeded" and again["result"]["identical"] is True, again

    def refused(**change: object) -> str:
        r = client.post("/v1/jobs", json={"kind": "edit", "params": {**params, **change}})
        assert r.status_code == 422, r.text
        return r.json()["detail"]

    assert refused(task="paint").startswith("unknown edit task 'paint'")
    gan = store["gan"]
    families = "ddpm, ddpm-distill, ddpm-text"
    assert refused(run_id=gan) == f"task inpaint needs a diffusion run (family {families}); run {gan} is dcgan"
    assert refused(options={"strength": 0.5}).startswith("task inpaint takes no option strength")
    assert refused(mask=None) == "task inpaint needs a mask (white = fill, black = keep)"
    assert "upload:" in str(refused(input="/etc/passwd"))  # a path is never an input
