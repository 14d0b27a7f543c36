"""What the studio's Edit tab reads from the server: a diffusion run's ``/v1/models`` descriptor lists the editing
tasks it can do (with each task's options, defaults and types, and the model's image size), other runs list none;
an edit job reports its phases as progress events and its result is a generation in the gallery whose stored
image keeps the known pixels (up to the watermark) and whose recipe names the uploads and the input's sha256."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import tiny
from fastapi.testclient import TestClient
from PIL import Image
from studio_support import drain, events_of

import genloop
from genloop.errors import ConfigError
from genloop.generation.editing import EDIT_TASKS
from genloop.generation.editing.tasks import describe_tasks
from genloop.safety.provenance import image_sha256
from genloop.server.app import create_app
from genloop.server.settings import Settings


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        ddpm = genloop.train("ddpm", overrides=tiny("ddpm"), steps=2, runs_dir=root, progress=False)
        vae = genloop.train("vae", overrides=tiny("vae"), steps=1, runs_dir=root, progress=False)
    return {"root": root, "ddpm": ddpm.id, "vae": vae.id}


@pytest.fixture
def client_settings(runs, tmp_path):
    settings = Settings(
        runs=runs["root"],
        db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}",
        media_dir=tmp_path / "media",
        uploads_dir=tmp_path / "uploads",
        poll_interval=0.01,
    )
    return TestClient(create_app(settings)), settings


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of 8-bit pixels: the invisible watermark alone costs about 39 dB (safety/image_watermark.py)."""
    mse = float(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_describe_tasks_lists_every_registered_task_with_typed_options() -> None:
    tasks = {t["name"]: t for t in describe_tasks()}
    assert set(tasks) == set(EDIT_TASKS)
    for name, t in tasks.items():
        spec = EDIT_TASKS[name]
        assert t["mask"] is spec.mask and t["description"] == spec.description and t["steps"] == spec.steps
        assert [o["name"] for o in t["options"]] == list(spec.options)
        assert t["sampler"] is (spec.own_sampler is None)
    assert tasks["inpaint"]["mask"] and not tasks["img2img"]["mask"]
    strength = {o["name"]: o for o in tasks["img2img"]["options"]}["strength"]
    assert strength == {"name": "strength", "default": 0.6, "type": "number"}
    jumps = {o["name"]: o for o in tasks["inpaint"]["options"]}
    assert jumps["jump_n_sample"] == {"name": "jump_n_sample", "default": 5, "type": "int"}
    assert jumps["jump_length"]["default"] is None  # the task works it out (half the steps, at most 2)
    assert tasks["upscale"]["input_scale"] == "scale" and tasks["upscale"]["sampler"] is False  # DDRM's own update
    # a task that needs RGB (colorize) is not offered to a grey model
    assert [t["name"] for t in describe_tasks(1)] == [n for n in EDIT_TASKS if n != "colorize"]
    assert [t["name"] for t in describe_tasks(3)] == list(EDIT_TASKS)


def test_models_say_which_runs_can_edit(client_settings, runs) -> None:
    client, _ = client_settings
    models = {m["run_id"]: m for m in client.get("/v1/models").json()["data"]}
    ddpm, vae = models[runs["ddpm"]], models[runs["vae"]]
    assert [t["name"] for t in ddpm["edit_tasks"]] == [n for n in EDIT_TASKS if n != "colorize"]  # grey digits
    assert json.loads(json.dumps(ddpm["edit_tasks"])) == describe_tasks(1)  # JSON as it is
    assert ddpm["image_size"] == 8 and ddpm["channels"] == 1
    assert "edit_tasks" not in vae and vae["image_size"] == 8  # a VAE cannot edit; the page lists it disabled


def test_edit_job_progress_result_in_gallery_and_known_pixels(client_settings, runs) -> None:
    client, settings = client_settings

    def upload(im: Image.Image, name: str) -> str:
        buf = io.BytesIO()
        im.save(buf, "PNG")
        r = client.post("/v1/uploads", files={"file": (name, buf.getvalue())})
        assert r.status_code == 201, r.text
        return r.json()["data"]

    pixels = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)  # every pixel its own value
    photo = Image.fromarray(pixels, "L")
    hole = np.zeros((8, 8), np.uint8)
    hole[2:5, 3:7] = 255
    params = {
        "run_id": runs["ddpm"],
        "task": "inpaint",
        "input": upload(photo, "photo.png"),
        "mask": upload(Image.fromarray(hole, "L"), "mask.png"),
        "seed": 3,
        "options": {"jump_n_sample": 2},
    }
    job = client.post("/v1/jobs", json={"kind": "edit", "params": params, "user": "ana"})
    assert job.status_code == 202, job.text
    drain(settings)
    events = events_of(client, job.json()["id"])
    phases = [d["phase"] for k, d in events if k == "progress"]
    assert phases == ["loading the model", "editing", "storing the outputs", "done"]
    final = client.get(f"/v1/jobs/{job.json()['id']}").json()
    assert final["status"] == "succeeded", final["error"]
    assert final["progress"] == {"phase": "done", "step": 3, "total": 3, "unit": "phases"}

    [gid] = final["result"]["generation_ids"]
    listed = client.get("/v1/generations", params={"run_id": runs["ddpm"]}).json()["generations"]
    assert [g["id"] for g in listed] == [gid]  # in the gallery like any generation
    g = client.get(f"/v1/generations/{gid}").json()
    assert g["recipe"]["task"] == "inpaint" and g["recipe"]["seed"] == 3 and g["user"] == "ana"
    assert g["recipe"]["input"] == params["input"] and g["recipe"]["input_sha256"] == image_sha256(photo)
    assert g["verified"]["status"] == "valid"
    with Image.open(io.BytesIO(client.get(f"/v1/generations/{gid}/image").content)) as im:
        out = np.asarray(im.convert("L")).astype(int)
    known = hole == 0
    # the known pixels come back (up to the invisible watermark, ~39 dB); the hole is redrawn
    assert psnr(out[known], pixels[known]) >= 33 and np.abs(out[known] - pixels[known]).max() <= 16
    assert np.abs(out[~known] - pixels[~known]).mean() > 8


def test_a_task_for_other_channels_is_one_line_at_submit_and_in_python(client_settings, runs) -> None:
    client, _ = client_settings
    buf = io.BytesIO()
    Image.new("L", (8, 8), 90).save(buf, "PNG")
    upload = client.post("/v1/uploads", files={"file": ("grey.png", buf.getvalue())}).json()["data"]
    params = {"run_id": runs["ddpm"], "task": "colorize", "input": upload}
    r = client.post("/v1/jobs", json={"kind": "edit", "params": params})
    line = f"task colorize needs a model of 3-channel images; run {runs['ddpm']} makes 1-channel images"
    assert r.status_code == 422 and r.json()["detail"] == line
    pipe = genloop.load(runs["ddpm"], runs_dir=runs["root"])
    with pytest.raises(ConfigError, match=f"^{line}$"):
        pipe.edit(Image.new("L", (8, 8), 90), task="colorize")
