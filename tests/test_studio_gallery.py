"""The gallery's server side: a zip of chosen generations (their signed files and recipes.jsonl), named presets of
generate settings per model (a table in the studio database), each generation's reusable settings, and the
prompt warnings (truncated to fit the context, unknown characters) that a text job's result carries to the page —
with bad input for each, on SQLite and, where available, PostgreSQL."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import pytest
from conftest import TINY_GPT, tiny
from fastapi.testclient import TestClient
from studio_support import BACKENDS, database_url, drain

import genloop
from genloop.server.app import create_app
from genloop.server.settings import Settings

CORPUS = "the cat sat on the mat. the dog ran to the log. " * 20


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("gallery")
    (root / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    vae = genloop.train("vae", "digits", overrides=tiny("vae"), steps=3, runs_dir=root / "runs", progress=False)
    corpus = str(root / "corpus.txt")
    gpt = genloop.train("gpt", corpus, overrides=TINY_GPT, steps=3, runs_dir=root / "runs", progress=False)
    return root / "runs", {"vae": vae.id, "gpt": gpt.id}


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, runs: tuple[Path, dict[str, str]], tmp_path: Path):
    gen = database_url(request.param, tmp_path)
    yield Settings(runs=runs[0], db_url=next(gen), media_dir=tmp_path / "media", poll_interval=0.01)
    gen.close()


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


def generate(client: TestClient, settings: Settings, **params: object) -> dict:
    job = client.post("/v1/generations", json=params)
    assert job.status_code == 202, job.text
    drain(settings)
    done = client.get(f"/v1/jobs/{job.json()['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    return done


# --- the archive -----------------------------------------------------------------------------------------------
def test_archive_holds_each_signed_file_and_the_recipes(client: TestClient, settings: Settings, runs) -> None:
    images = generate(client, settings, run_id=runs[1]["vae"], n=2, seed=4)["result"]["generation_ids"]
    [text] = generate(client, settings, run_id=runs[1]["gpt"], prompt="the ", max_tokens=5)["result"]["generation_ids"]
    ids = [images[1], text, images[0]]
    r = client.post("/v1/generations/archive", json={"ids": ids})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == 'attachment; filename="genloop-3-generations.zip"'
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert z.testzip() is None
        names = z.namelist()
        files = [f"genloop-{images[1]}.png", f"genloop-{text}.jsonl", f"genloop-{images[0]}.png"]
        assert names == [*files, "recipes.jsonl"]
        for gid, name in zip(ids, names):  # each member is the generation's own download, byte for byte
            assert z.read(name) == client.get(f"/v1/generations/{gid}/download").content
        lines = [json.loads(x) for x in z.read("recipes.jsonl").decode().splitlines()]
    assert [x["generation_id"] for x in lines] == ids and [x["file"] for x in lines] == names[:3]
    for line in lines:
        gen = client.get(f"/v1/generations/{line['generation_id']}").json()
        assert line["recipe"] == gen["recipe"] and line["checkpoint_sha256"] == gen["checkpoint_sha256"]
        assert line["run_id"] == gen["run_id"] and line["modality"] == gen["modality"]
    assert lines[0]["recipe"]["seed"] == 5 and lines[2]["recipe"]["seed"] == 4  # image i is seed + i
    link = client.get(f"/v1/generations/archive?ids={','.join(ids)}")  # the same zip for a plain link
    assert link.status_code == 200 and zipfile.ZipFile(io.BytesIO(link.content)).namelist() == names
    # a generation whose file is gone still has its recipe in the zip, with file null
    store = client.app.state.ctx.feedback
    store.image_path(store.get(images[0])).unlink()
    with zipfile.ZipFile(io.BytesIO(client.post("/v1/generations/archive", json={"ids": ids}).content)) as z:
        assert z.namelist() == [*files[:2], "recipes.jsonl"]
        lines = [json.loads(x) for x in z.read("recipes.jsonl").decode().splitlines()]
    assert [x["file"] for x in lines] == [*files[:2], None] and lines[2]["generation_id"] == images[0]


def test_archive_refuses_bad_requests_in_one_line(client: TestClient, settings: Settings, runs) -> None:
    [gid] = generate(client, settings, run_id=runs[1]["vae"], n=1)["result"]["generation_ids"]
    cases = [
        ({"ids": []}, 422, "ids is empty"),
        ({"ids": [gid, gid]}, 422, f"generation {gid} is named twice"),
        ({"ids": [gid, "../../etc/passwd"]}, 422, "'../../etc/passwd' is not a generation id"),
        ({"ids": [gid, "0123456789abcdef"]}, 404, "no generation '0123456789abcdef'"),
    ]
    for body, status, words in cases:
        r = client.post("/v1/generations/archive", json=body)
        assert r.status_code == status, (body, r.text)
        assert words in r.json()["detail"], (body, r.json())
        assert "\n" not in r.json()["detail"]
    settings.limits.max_archive = 2
    r = client.post("/v1/generations/archive", json={"ids": [gid, "0" * 16, "1" * 16]})
    assert r.status_code == 422 and r.json()["detail"] == "an archive holds at most 2 generations, got 3"
    assert client.post("/v1/generations/archive", json={"ids": [gid], "extra": 1}).status_code == 422
    assert client.post("/v1/generations/archive", json={}).status_code == 422
    assert client.get("/v1/generations/archive").status_code == 422  # no ids
    r = client.get("/v1/generations/archive?ids=")
    assert r.status_code == 422 and r.json()["detail"].startswith("ids is empty")
    assert client.get(f"/v1/generations/archive?ids={gid},{gid}").json()["detail"] == f"generation {gid} is named twice"


# --- a generation's settings, for "Use these settings" ----------------------------------------------------------
def test_each_generation_carries_the_settings_that_make_it_again(client: TestClient, settings: Settings, runs) -> None:
    job = generate(client, settings, run_id=runs[1]["vae"], n=2, seed=10)
    second = client.get(f"/v1/generations/{job['result']['generation_ids'][1]}").json()
    assert second["settings"] == {"run_id": runs[1]["vae"], "checkpoint": "last", "seed": 11}
    asked = {"prompt": "the c", "max_tokens": 6, "temperature": 0.7, "top_k": 3, "stop": ["."]}
    [tid] = generate(client, settings, run_id=runs[1]["gpt"], seed=2, **asked)["result"]["generation_ids"]
    text = client.get(f"/v1/generations/{tid}").json()
    s = text["settings"]
    assert {k: s[k] for k in ("run_id", "seed", *asked)} == {"run_id": runs[1]["gpt"], "seed": 2, **asked}
    assert "n" not in s
    # submitting them makes the same text again
    [again] = generate(client, settings, **s, n=1)["result"]["generation_ids"]
    assert client.get(f"/v1/generations/{again}").json()["text"] == text["text"]


# --- presets --------------------------------------------------------------------------------------------------
def test_presets_save_list_apply_delete(client: TestClient, settings: Settings, runs) -> None:
    vae, gpt = runs[1]["vae"], runs[1]["gpt"]
    r = client.post("/v1/presets", json={"run_id": vae, "name": " Big batch ", "params": {"n": 16, "seed": 3}})
    assert r.status_code == 201, r.text
    big = r.json()
    assert big["name"] == "Big batch" and big["params"] == {"n": 16, "seed": 3} and big["run_id"] == vae
    warm = {"prompt": "the ", "temperature": 0.7, "max_tokens": 20, "stop": ["\n"]}
    r = client.post("/v1/presets", json={"run_id": gpt, "name": "Warm", "params": warm, "user": "ada"})
    assert r.status_code == 201 and r.json()["params"] == warm and r.json()["user"] == "ada"
    # the same name for another model is a different preset; for the same model, a 409
    assert client.post("/v1/presets", json={"run_id": vae, "name": "Warm", "params": {"seed": 1}}).status_code == 201
    r = client.post("/v1/presets", json={"run_id": gpt, "name": "Warm", "params": {"seed": 1}})
    assert r.status_code == 409 and r.json()["detail"] == (
        f"model {gpt} already has a preset named 'Warm': delete it or pick another name"
    )
    assert [p["name"] for p in client.get(f"/v1/presets?run_id={vae}").json()["presets"]] == ["Big batch", "Warm"]
    assert len(client.get("/v1/presets").json()["presets"]) == 3
    assert client.get(f"/v1/presets/{big['id']}").json() == big
    # a preset's params are a valid generate job for its model
    generate(client, settings, run_id=vae, **big["params"])
    # they live in the database: another app on it (another browser, a restarted server) sees them
    again = TestClient(create_app(settings))
    assert [p["id"] for p in again.get(f"/v1/presets?run_id={gpt}").json()["presets"]] == [
        p["id"] for p in client.get(f"/v1/presets?run_id={gpt}").json()["presets"]
    ]
    assert client.delete(f"/v1/presets/{big['id']}").status_code == 204
    assert client.get(f"/v1/presets/{big['id']}").status_code == 404
    r = client.delete(f"/v1/presets/{big['id']}")
    assert r.status_code == 404 and r.json()["detail"] == f"no preset '{big['id']}'"
    assert client.get("/v1/presets/not-an-id").status_code == 422


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"name": "", "params": {"seed": 1}}, 422, "a preset needs a name"),
        ({"name": "   ", "params": {"seed": 1}}, 422, "a preset needs a name"),
        ({"name": "x" * 65, "params": {"seed": 1}}, 422, "at most 64 characters, got 65"),
        ({"name": "two\nlines", "params": {"seed": 1}}, 422, "control characters"),
        ({"name": "a", "params": {}}, 422, "at least one setting"),
        ({"name": "a", "params": {"prompt": "hi"}}, 422, "params.prompt: a preset of a image model holds only"),
        ({"name": "a", "params": {"run_id": "x"}}, 422, "params.run_id"),
        ({"name": "a", "params": {"seed": -1}}, 422, "params.seed"),
        ({"name": "a", "params": {"n": 1000}}, 422, "n must be at most 64"),
        ({"name": "a", "params": {"sampler": "euler"}}, 422, "params.sampler"),
        ({"name": "a", "params": {"seed": 1}, "run_id": "no-such-run"}, 404, "the model 'no-such-run' does not exist"),
    ],
)
def test_presets_refuse_bad_input_in_one_line(client: TestClient, runs, body: dict, status: int, words: str) -> None:
    r = client.post("/v1/presets", json={"run_id": runs[1]["vae"], **body})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"] and "\n" not in r.json()["detail"]


def test_a_model_keeps_at_most_max_presets(settings: Settings, runs) -> None:
    settings.limits.max_presets = 2
    client = TestClient(create_app(settings))

    def save(model: str, name: str) -> object:
        return client.post("/v1/presets", json={"run_id": runs[1][model], "name": name, "params": {"seed": 1}})

    assert save("vae", "a").status_code == 201 and save("vae", "b").status_code == 201
    r = save("vae", "c")
    assert r.status_code == 422 and "already has 2 presets" in r.json()["detail"]
    assert save("gpt", "c").status_code == 201  # the limit is per model
    assert client.post("/v1/presets", json={"run_id": runs[1]["vae"], "name": "c"}).status_code == 422  # no params


# --- the prompt's warnings in the job's result ------------------------------------------------------------------
def test_a_text_jobs_result_carries_the_prompt_warnings(client: TestClient, settings: Settings, runs) -> None:
    gpt = runs[1]["gpt"]
    long = generate(client, settings, run_id=gpt, prompt="the cat sat on the mat. " * 3, max_tokens=3)
    [note] = long["result"]["warnings"]
    assert note == (
        "the prompt has 72 tokens but the model's context is 16; it sees only the last 12 (the start is truncated)"
    )
    assert generate(client, settings, run_id=gpt, prompt="the cat", max_tokens=3)["result"]["warnings"] == []
    odd = generate(client, settings, run_id=gpt, prompt="the 你", max_tokens=3)["result"]["warnings"]
    assert len(odd) == 1 and "U+4F60" in odd[0]
    image = generate(client, settings, run_id=runs[1]["vae"], n=1)
    assert "warnings" not in image["result"]  # only a prompted model has a prompt to warn about


def test_prompt_notes_say_without_warning_and_check_prompt_warns(runs) -> None:
    pipe = genloop.load(str(runs[0] / runs[1]["gpt"]))
    long = "the cat sat on the mat. " * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # prompt_notes itself never warns
        assert pipe.prompt_notes("the cat") == []
        [note] = pipe.prompt_notes(long)
    assert "the start is truncated" in note
    with pytest.warns(UserWarning, match="the start is truncated"):
        assert pipe.check_prompt(long) == [note]
