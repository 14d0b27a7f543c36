"""Provenance in the studio API: ``POST /v1/verify`` (valid, tampered with the field named, unsigned, a stripped
image traced by its watermark, a sidecar alone or with its file, MIDI), bad uploads as one-line 4xx answers,
the gallery's verified badge (computed from the stored file, cached) and server-stored texts signed like the
CLI's."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import tiny
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin
from studio_support import TEXT, TINY_GPT, drain

import genloop
from genloop.safety import provenance
from genloop.server.app import create_app
from genloop.server.services import verify as verify_service
from genloop.server.settings import Limits, Settings


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("verify")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    vae = genloop.train("vae", "digits", overrides=tiny("vae"), steps=5, runs_dir=root / "runs", progress=False)
    gpt = genloop.train("gpt", str(corpus), overrides=TINY_GPT, steps=10, runs_dir=root / "runs", progress=False)
    return root / "runs", {"vae": vae.id, "gpt": gpt.id}


@pytest.fixture
def settings(runs, tmp_path: Path) -> Settings:
    return Settings(
        runs=runs[0],
        db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}",
        media_dir=tmp_path / "media",
        uploads_dir=tmp_path / "uploads",
        poll_interval=0.01,
    )


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


def generate(client: TestClient, settings: Settings, **params) -> list[dict]:
    job = client.post("/v1/generations", json=params).json()
    drain(settings)
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done
    return [client.get(f"/v1/generations/{g}").json() for g in done["result"]["generation_ids"]]


def post_verify(client: TestClient, name: str, data: bytes, manifest: bytes | None = None):
    files = {"file": (name, data, "application/octet-stream")}
    if manifest is not None:
        files["manifest"] = (name + ".manifest.json", manifest, "application/json")
    return client.post("/v1/verify", files=files)


def png_bytes(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_itxt(k, v)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def flipped(image: Image.Image, xy: tuple[int, int]) -> Image.Image:
    """A copy with one pixel inverted."""
    out = image.copy()
    value = out.getpixel(xy)
    out.putpixel(xy, 255 - value if isinstance(value, int) else tuple(255 - c for c in value))
    return out


def test_a_generated_image_verifies_and_every_change_is_caught(client: TestClient, settings: Settings, runs) -> None:
    (g,) = generate(client, settings, run_id=runs[1]["vae"], n=1, seed=3)
    assert g["verified"] == {"status": "valid", "detail": ""} and g["download_url"].endswith("/download")
    download = client.get(g["download_url"])
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"
    assert f"genloop-{g['id']}.png" in download.headers["content-disposition"]

    r = post_verify(client, "mine.png", download.content)
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["status"] == "valid" and v["ok"] and v["generation_id"] == g["id"] and v["fields"] == []
    assert v["recipe"] == g["recipe"] and v["recipe_source"] == "studio database"
    assert v["generation"]["id"] == g["id"] and v["run"]["id"] == runs[1]["vae"]
    wm = v["watermark"]
    assert wm["kind"] == "image" and wm["detected"] and wm["generation_id"] == g["id"]
    assert wm["score"] >= wm["threshold"]

    with Image.open(io.BytesIO(download.content)) as im:
        im.load()
        chunk = im.text[provenance.MANIFEST_KEY]
        image = im.copy()
    changed = flipped(image, (0, 0))
    v = post_verify(client, "edited.png", png_bytes(changed, {provenance.MANIFEST_KEY: chunk})).json()
    assert v["status"] == "tampered" and v["fields"] == ["content_sha256"] and v["generation_id"] is None

    envelope = json.loads(chunk)
    envelope["manifest"]["recipe"]["seed"] = 99
    v = post_verify(client, "forged.png", png_bytes(image, {provenance.MANIFEST_KEY: json.dumps(envelope)})).json()
    assert v["status"] == "tampered" and v["fields"] == ["recipe"]

    # Stripped of its metadata: unsigned, but the watermark still names the generation, so its recipe is known.
    v = post_verify(client, "stripped.png", png_bytes(image)).json()
    assert v["status"] == "unsigned" and v["generation_id"] is None
    assert v["watermark"]["detected"] and v["watermark"]["generation_id"] == g["id"]
    assert v["recipe"] == g["recipe"] and v["generation"]["id"] == g["id"]

    # A JPEG copy: no manifest inside (unsigned), read as an image all the same.
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=90)
    v = post_verify(client, "copy.jpg", buf.getvalue()).json()
    assert v["status"] == "unsigned" and v["watermark"]["kind"] == "image" and "score" in v["watermark"]

    # ...and with its sidecar as the second part: valid again, the content checked against the manifest.
    v = post_verify(client, "stripped.png", png_bytes(image), manifest=chunk.encode()).json()
    assert v["status"] == "valid" and v["content_checked"] and v["generation_id"] == g["id"]
    # The sidecar alone: its signature is checked, its content cannot be.
    v = post_verify(client, "x.png.manifest.json", chunk.encode()).json()
    assert v["status"] == "valid" and v["content_checked"] is False and not v["ok"] and v["generation_id"] == g["id"]
    v = post_verify(client, "x.png.manifest.json", json.dumps(envelope).encode()).json()
    assert v["status"] == "tampered" and v["fields"] == ["recipe"]


def test_bad_uploads_get_one_clear_line(client: TestClient, settings: Settings, runs, tmp_path: Path) -> None:
    cases = [
        ("photo.png", b"this is not a PNG at all", 422, "not a PNG"),
        ("empty.png", b"", 422, "the upload is empty"),
        ("m.manifest.json", b'{"manifest": {"format": "genloop-manif', 422, "truncated"),
        ("blob.bin", bytes(range(256)) * 4, 422, "not a PNG, a MIDI file or UTF-8 text"),
        ("notes.mid", b"MThd\x00\x00\x00\x06garbage", 422, "not a readable MIDI file"),
        ("other.json", b'{"signature": 1, "hello": 2}', 422, "not a GenLoop manifest"),
    ]
    for name, data, code, words in cases:
        r = post_verify(client, name, data)
        assert r.status_code == code, (name, r.text)
        detail = r.json()["detail"]
        assert words in detail and "\n" not in detail, detail
    assert client.post("/v1/verify").status_code == 422  # no file at all

    small = settings.model_copy(update={"limits": Limits(max_verify_bytes=1000)})
    r = post_verify(TestClient(create_app(small)), "big.png", b"\x89PNG" + b"0" * 5000)
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_midi_and_plain_text_uploads(client: TestClient, tmp_path: Path) -> None:
    from music_support import two_track_score

    from genloop.modalities.music.render import write_midi

    mid = write_midi(tmp_path / "piece.mid", two_track_score(), {"run_id": "elsewhere", "seed": 1}, sign=True)
    v = post_verify(client, "piece.mid", mid.read_bytes()).json()
    assert v["status"] == "valid" and v["watermark"]["kind"] == "music" and v["recipe_source"] == "signed manifest"
    assert v["recipe"]["seed"] == 1 and v["run"] is None  # this run store has no run 'elsewhere'
    v = post_verify(client, "notes.txt", b"a plain text nobody signed").json()
    assert v["status"] == "unsigned" and v["watermark"]["kind"] == "text"


def test_server_stored_texts_are_signed_and_tampering_is_caught(
    client: TestClient, settings: Settings, runs, tmp_path: Path
) -> None:
    (g,) = generate(client, settings, run_id=runs[1]["gpt"], prompt="The ", n=1, max_tokens=8, seed=1)
    stored = settings.media / g["id"][:2] / f"{g['id']}.jsonl"
    record = json.loads(stored.read_text(encoding="utf-8"))
    assert record["text"] == g["text"] and record["recipe"] == g["recipe"]
    r = genloop.verify(stored, settings.runs)  # read as the CLI's texts.jsonl is
    assert r.status == "valid" and r.generation_id == g["id"] and r.run_id == runs[1]["gpt"]
    assert g["verified"]["status"] == "valid"

    v = post_verify(client, "text.jsonl", client.get(g["download_url"]).content).json()
    assert v["status"] == "valid" and v["generation_id"] == g["id"] and v["recipe"] == g["recipe"]
    assert v["watermark"]["kind"] == "text"

    forged = tmp_path / "forged.jsonl"
    forged.write_text(json.dumps({**record, "text": record["text"] + "!"}) + "\n", encoding="utf-8")
    assert genloop.verify(forged).status == "tampered" and "content_sha256" in genloop.verify(forged).detail
    v = post_verify(client, "forged.jsonl", forged.read_bytes()).json()
    assert v["status"] == "tampered" and v["fields"] == ["content_sha256"]


def test_the_gallery_badge_comes_from_the_stored_file_and_is_cached(
    client: TestClient, settings: Settings, runs
) -> None:
    gens = generate(client, settings, run_id=runs[1]["vae"], n=2, seed=0)
    before = verify_service.badge_checks()
    listed = client.get("/v1/generations").json()["generations"]
    assert {x["verified"]["status"] for x in listed} == {"valid"}
    assert verify_service.badge_checks() == before  # checked when the job's generations were read: cached
    path = settings.media / gens[0]["id"][:2] / f"{gens[0]['id']}.png"
    with Image.open(path) as im:
        im.load()
        chunk, image = im.text[provenance.MANIFEST_KEY], im.copy()
    path.write_bytes(png_bytes(flipped(image, (1, 1)), {provenance.MANIFEST_KEY: chunk}))  # changed on disk
    listed = {x["id"]: x for x in client.get("/v1/generations").json()["generations"]}
    assert listed[gens[0]["id"]]["verified"]["status"] == "tampered"
    assert listed[gens[1]["id"]]["verified"]["status"] == "valid"
    assert verify_service.badge_checks() == before + 1  # only the changed file was checked again
