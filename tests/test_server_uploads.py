"""Uploaded data sets (issue 16): what POST /v1/uploads says it stored, GET /v1/uploads listing them again, several
images as one data set, which families can train on an upload (asked of the modalities), and a training job
refusing an upload its family cannot read, before anything is queued."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import tiny
from fastapi.testclient import TestClient
from studio_support import TEXT, TINY_GPT, drain

from genloop.server.app import create_app
from genloop.server.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        runs=tmp_path / "runs",
        db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}",
        media_dir=tmp_path / "media",
        uploads_dir=tmp_path / "uploads",
        poll_interval=0.01,
    )


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


def png(size: int = 8, value: int = 128) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (size, size), value).save(buf, "PNG")
    return buf.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def up(client: TestClient, *files: tuple[str, bytes]):
    return client.post("/v1/uploads", files=[("file", f) for f in files])


def test_an_upload_says_what_it_holds_and_who_can_train_on_it(client: TestClient) -> None:
    members = {f"digits/{i}.png": png(value=i * 10) for i in range(12)}
    members |= {"digits/README.txt": b"about", "__MACOSX/._0.png": b"junk", "digits/.DS_Store": b"x"}
    r = up(client, ("my set.zip", zipped(members)))
    assert r.status_code == 201, r.text
    z = r.json()
    assert (z["kind"], z["files"], z["skipped"], z["sizes"], z["filename"]) == ("zip", 12, 1, ["8x8"], "my_set.zip")
    assert z["purpose"] == "data"  # the default: a data set to train on
    assert z["modalities"] == ["image"] and {"vae", "ddpm", "dcgan"} <= set(z["families"])
    assert "gpt" not in z["families"] and "music-gpt" not in z["families"] and z["created"]

    t = up(client, ("notes.txt", TEXT.encode())).json()
    assert (t["kind"], t["files"], t["lines"], t["bytes"]) == ("text", 1, 1, len(TEXT.encode()))
    assert t["modalities"] == ["text"] and "gpt" in t["families"] and "vae" not in t["families"]

    listed = client.get("/v1/uploads").json()["uploads"]
    assert [u["upload_id"] for u in listed] == [t["upload_id"], z["upload_id"]]  # newest first
    assert listed[1] == z and listed[0] == t  # the listing says what the upload said
    assert len(client.get("/v1/uploads", params={"limit": 1}).json()["uploads"]) == 1
    assert client.get("/v1/uploads", params={"limit": 0}).status_code == 422


def test_several_images_make_one_data_set(client: TestClient, settings: Settings) -> None:
    r = up(client, ("a.png", png()), ("a.png", png(value=3)), ("b.png", png(16)))
    assert r.status_code == 201, r.text
    u = r.json()
    assert (u["kind"], u["files"], u["sizes"], u["filename"]) == ("images", 3, ["16x16", "8x8"], "3 images")
    stored = sorted(p.name for p in (settings.uploads / u["upload_id"] / "images").iterdir())
    assert stored == ["1-a.png", "a.png", "b.png"]  # a repeated name never overwrites
    r = up(client, ("a.png", png()), ("notes.txt", b"hello"))
    assert r.status_code == 422 and "each is an image" in r.json()["detail"]
    r = up(client, ("a.png", png()), ("fake.png", b"not an image"))
    assert r.status_code == 422 and r.json()["detail"] == "'fake.png' is not an image Pillow can read"
    assert [x["upload_id"] for x in client.get("/v1/uploads").json()["uploads"]] == [u["upload_id"]]
    assert not [p for p in settings.uploads.iterdir() if p.name.startswith(".upload-")]  # nothing half-stored


def test_inputs_of_one_job_are_kept_out_of_the_data_sets(client: TestClient) -> None:
    """An image to edit (or a mask, a MIDI prompt) is an upload of purpose "input": listed, but not as data."""
    data = up(client, ("set.zip", zipped({f"{i}.png": png() for i in range(3)}))).json()
    photo = client.post("/v1/uploads", files=[("file", ("photo.png", png()))], data={"purpose": "input"}).json()
    assert photo["purpose"] == "input" and photo["kind"] == "image"
    ids = lambda **q: [u["upload_id"] for u in client.get("/v1/uploads", params=q).json()["uploads"]]  # noqa: E731
    assert ids() == [photo["upload_id"], data["upload_id"]]
    assert ids(purpose="data") == [data["upload_id"]] and ids(purpose="input") == [photo["upload_id"]]
    assert ids(purpose="data", limit=1) == [data["upload_id"]]  # the limit counts what is listed
    bad = client.post("/v1/uploads", files=[("file", ("a.png", png()))], data={"purpose": "model"})
    assert bad.status_code == 422
    assert client.get("/v1/uploads", params={"purpose": "everything"}).status_code == 422


def test_bad_zip_is_one_line(client: TestClient) -> None:
    r = up(client, ("data.zip", bytes(range(256)) * 8))
    assert r.status_code == 422 and r.json()["detail"] == "the file is not a valid zip archive"


def test_midi_and_jsonl_uploads_name_their_families(client: TestClient, tmp_path: Path) -> None:
    from music_support import write_midi

    m = up(client, ("piece.mid", write_midi(tmp_path / "p.mid").read_bytes())).json()
    assert m["kind"] == "midi" and m["modalities"] == ["music"] and m["families"] == ["music-gpt"]
    j = up(client, ("rows.jsonl", b'{"text": "one"}\n{"text": "two"}\n')).json()
    assert (j["kind"], j["lines"], j["modalities"]) == ("jsonl", 2, ["text"])


def test_uploads_stored_before_descriptions_are_listed(client: TestClient, settings: Settings) -> None:
    u = up(client, ("set.zip", zipped({f"{i}.png": png() for i in range(3)}))).json()
    (settings.uploads / u["upload_id"] / ".upload.json").unlink()  # as an older server stored it
    [old] = client.get("/v1/uploads").json()["uploads"]
    assert (old["kind"], old["files"], old["modalities"], old["data"]) == ("zip", 3, ["image"], u["data"])
    assert old["purpose"] == "data"
    assert "vae" in old["families"]


def test_a_training_job_refuses_an_upload_its_family_cannot_read(client: TestClient) -> None:
    t = up(client, ("notes.txt", TEXT.encode())).json()
    r = client.post("/v1/jobs", json={"kind": "train", "params": {"model": "vae", "data": t["data"], "steps": 2}})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith(f"vae trains on image data and {t['data']} (notes.txt, kind text) holds none;")
    assert "gpt" in detail and "\n" not in detail
    gone = {"model": "vae", "data": "upload:0123456789abcdef", "steps": 2}
    r = client.post("/v1/jobs", json={"kind": "train", "params": gone})
    assert r.status_code == 422 and "does not exist" in r.json()["detail"]
    assert client.get("/v1/jobs").json()["jobs"] == []  # nothing queued


def test_train_on_uploaded_text_and_images(client: TestClient, settings: Settings) -> None:
    t = up(client, ("notes.txt", TEXT.encode())).json()
    z = up(client, ("set.zip", zipped({f"d/{i}.png": png(value=5 * i) for i in range(48)}))).json()
    jobs = [
        {"model": "gpt", "data": t["data"], "steps": 2, "overrides": TINY_GPT},
        {"model": "vae", "data": z["data"], "steps": 2, "overrides": tiny("vae")},
    ]
    ids = [client.post("/v1/jobs", json={"kind": "train", "params": p}).json()["id"] for p in jobs]
    drain(settings)
    for job_id in ids:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job["error"]
        info = json.loads((settings.runs / job["result"]["run_id"] / "run.json").read_text())
        assert info["status"] == "finished"
    shutil.rmtree(settings.uploads / z["upload_id"])  # the data went away: a new job says so before it is queued
    r = client.post("/v1/jobs", json={"kind": "train", "params": jobs[1]})
    assert r.status_code == 422 and "does not exist" in r.json()["detail"]
