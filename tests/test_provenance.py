"""Signed provenance (issue 15): every generated PNG, text and MIDI file carries a manifest signed with this
installation's ed25519 key; `genloop verify` says valid / tampered / unsigned / unknown key, in one line."""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_GPT, cli, tiny
from PIL import Image, PngImagePlugin

import genloop
from genloop.data.image_io import save_png
from genloop.safety import provenance


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A 2-step DCGAN on 8 px digits and its generated (signed) PNGs, with the key in ``config``."""
    root = tmp_path_factory.mktemp("provenance")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_CACHE_DIR", str(root / "cache"))
        mp.setenv("GENLOOP_CONFIG_DIR", str(root / "config"))
        run = genloop.train("dcgan", "digits", overrides=tiny("dcgan"), steps=2, runs_dir=root / "runs", progress=False)
        paths = genloop.generate(run.id, n=2, out=root / "png", runs_dir=root / "runs")
    return SimpleNamespace(root=root, runs=root / "runs", run=run.id, config=root / "config", pngs=paths)


@pytest.fixture
def keys(store: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    monkeypatch.setenv("GENLOOP_CONFIG_DIR", str(store.config))
    monkeypatch.setenv("GENLOOP_RUNS_DIR", str(store.runs))
    return store


def sample(store: SimpleNamespace) -> Path:
    return next(p for p in store.pngs if p.name.startswith("sample_"))


def envelope_of(png: Path) -> dict:
    with Image.open(png) as im:
        return json.loads(im.text[provenance.MANIFEST_KEY])


def test_generated_png_is_valid_with_its_run(keys: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    png = sample(keys)
    assert provenance.sidecar(png).is_file()
    env = envelope_of(png)
    m = env["manifest"]
    assert m["format"] == "genloop-manifest/1" and m["assertion"] == "AI-generated"
    assert m["generator"] == f"GenLoop {genloop.__version__}"
    assert m["model_sha256"] == m["recipe"]["checkpoint_sha256"] and len(m["model_sha256"]) == 64
    assert m["key_id"] == provenance.key_id() and m["created"].endswith("Z")
    assert json.loads(provenance.sidecar(png).read_text()) == env  # the sidecar holds the same envelope
    result = genloop.verify(png)
    assert result.ok and result.status == "valid" and result.run_id == keys.run
    code, out, err = cli(capsys, "verify", png, provenance.sidecar(png), *[p for p in keys.pngs if p != png])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == len(keys.pngs) + 1 and all(": valid (generation " in line for line in lines)
    assert f"run {keys.run}" in lines[0] and m["generation_id"] in lines[0] and m["model_sha256"][:12] in lines[0]


def _flip(value: object) -> object:
    """``value`` with one byte/element changed."""
    if isinstance(value, str):
        return (chr(ord(value[0]) ^ 1) + value[1:]) if value else "x"
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, dict):
        return {**value, "added": 1}
    if isinstance(value, list):
        return [*value, 0]
    return "x" if value is None else None


def test_every_changed_field_is_tampered_and_named(keys: SimpleNamespace) -> None:
    png = sample(keys)
    env = envelope_of(png)
    with Image.open(png) as im:
        digest = provenance.image_sha256(im)
    assert provenance.verify_envelope(env, digest) == ("valid", "")
    fields = sorted(env["manifest"])
    assert set(fields) == {
        "format", "generation_id", "created", "assertion", "generator", "model_sha256", "recipe",
        "content_sha256", "key_id",
    }  # fmt: skip
    for name in fields:
        bad = copy.deepcopy(env)
        bad["manifest"][name] = _flip(bad["manifest"][name])
        status, detail = provenance.verify_envelope(bad, digest)
        assert status == "tampered" and name in detail, (name, status, detail)
    for key in env["manifest"]["recipe"]:  # and every value inside the recipe
        bad = copy.deepcopy(env)
        bad["manifest"]["recipe"][key] = _flip(bad["manifest"]["recipe"][key])
        assert provenance.verify_envelope(bad, digest) == ("tampered", "signature does not match field recipe"), key
    canonical = provenance.canonical(env["manifest"])
    for i in range(0, len(canonical), 7):  # a flipped bit anywhere in the signed bytes
        raw = bytearray(canonical)
        raw[i] ^= 0x01
        try:
            manifest = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if manifest == env["manifest"]:  # e.g. a flipped bit that JSON reads as the same value
            continue
        assert provenance.verify_envelope({**env, "manifest": manifest}, digest)[0] == "tampered", i
    for name in ("signature", "public_key"):
        bad = copy.deepcopy(env)
        bad[name] = ("B" if bad[name][0] == "A" else "A") + bad[name][1:]
        assert provenance.verify_envelope(bad, digest)[0] == "tampered", name


def test_tampered_file_resaved_file_and_stripped_file(
    keys: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = sample(keys)
    chunk = envelope_of(png)
    with Image.open(png) as im:
        im.load()
        pixels = im.copy()
    # re-saved with other metadata (no sidecar): still valid, the hash is of the pixels
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "re-saved by an editor")
    info.add_itxt(provenance.MANIFEST_KEY, json.dumps(chunk))
    resaved = tmp_path / "resaved.png"
    pixels.save(resaved, pnginfo=info, optimize=True)
    assert genloop.verify(resaved).status == "valid"
    # one pixel changed
    changed = pixels.copy()
    value = changed.getpixel((0, 0))
    changed.putpixel((0, 0), (value + 1) % 256 if isinstance(value, int) else tuple((v + 1) % 256 for v in value))
    tampered = tmp_path / "tampered.png"
    changed.save(tampered, pnginfo=info)
    r = genloop.verify(tampered)
    assert r.status == "tampered" and "content_sha256" in r.detail
    # metadata stripped, no sidecar: unsigned
    stripped = tmp_path / "stripped.png"
    pixels.save(stripped)
    assert genloop.verify(stripped).status == "unsigned"
    # a sidecar whose image changed: tampered too
    shutil.copy(provenance.sidecar(png), provenance.sidecar(stripped))
    assert genloop.verify(provenance.sidecar(stripped)).status == "valid"  # same pixels as the original
    shutil.copy(provenance.sidecar(png), provenance.sidecar(tampered))
    code, out, _ = cli(capsys, "verify", resaved, tampered, stripped)
    assert code == 1
    lines = out.strip().splitlines()
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines] == ["valid", "tampered", "valid"]


def test_unknown_key_until_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    monkeypatch.setenv("GENLOOP_CONFIG_DIR", str(theirs))
    png = save_png(
        tmp_path / "x.png", torch.zeros(3, 4, 4), {"run_id": "elsewhere", "checkpoint_sha256": "ab" * 32}, sign=True
    )
    code, pem, _ = cli(capsys, "keys", "export")
    assert code == 0 and pem.startswith("-----BEGIN PUBLIC KEY-----")
    their_id = provenance.key_id()
    monkeypatch.setenv("GENLOOP_CONFIG_DIR", str(mine))
    assert provenance.key_id() != their_id
    r = genloop.verify(png)
    assert r.status == "unknown key" and r.key_id == their_id
    code, out, _ = cli(capsys, "verify", png)
    assert code == 1 and f"unknown key (key {their_id} is not trusted" in out
    (mine / "keys" / "trusted").mkdir()
    (mine / "keys" / "trusted" / "theirs.pem").write_text(pem)
    assert genloop.verify(png).status == "valid"
    code, out, _ = cli(capsys, "keys", "show")
    assert code == 0 and their_id in out and provenance.key_id() in out


def test_private_key_is_0600_and_reused(tmp_path: Path) -> None:
    first = provenance.key_id()
    path = provenance.key_dir() / provenance.PRIVATE_KEY
    assert Path(os.environ["GENLOOP_CONFIG_DIR"]) in path.parents
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    assert provenance.key_id() == first and path.read_bytes() == before
    assert (provenance.key_dir() / provenance.PUBLIC_KEY).read_bytes() == provenance.public_pem()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_no_sign_writes_no_manifest(keys: SimpleNamespace, tmp_path: Path, capsys) -> None:
    out = tmp_path / "plain"
    code, _, err = cli(capsys, "generate", keys.run, "-n", "2", "--out", out, "--no-sign", "--runs-dir", keys.runs)
    assert code == 0, err
    assert not list(out.glob("*.manifest.json"))
    with Image.open(out / "sample_000000.png") as im:
        assert provenance.MANIFEST_KEY not in im.text and "genloop" in im.text
    code, text, _ = cli(capsys, "verify", out / "sample_000000.png")
    assert code == 1 and ": unsigned (no manifest; watermark: generation " in text  # the pixels still say
    code, help_text, _ = cli(capsys, "generate", "--help")
    assert "--no-sign" in help_text


def test_bad_input_gets_one_line(keys: SimpleNamespace, tmp_path: Path, capsys) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("just some text\n")
    garbage = tmp_path / "blob.bin"
    garbage.write_bytes(bytes(range(256)) * 4)
    truncated = tmp_path / "cut.png.manifest.json"
    shutil.copy(sample(keys), tmp_path / "cut.png")
    truncated.write_text(provenance.sidecar(sample(keys)).read_text()[:100])
    midi = tmp_path / "song.mid"
    midi.write_bytes(b"MThd\x00\x00\x00\x06garbage")
    for bad, says in [
        (fake, "not a PNG image"),
        (garbage, "not a PNG, a MIDI file or UTF-8 text"),
        (truncated, "not valid JSON"),
        (tmp_path / "missing.png", "no such file"),
        (midi, "not a readable MIDI file"),
    ]:
        code, out, err = cli(capsys, "verify", bad)
        assert code == 1 and err == "", (bad, err)
        assert out.count("\n") == 1 and out.startswith(f"{bad}: error (") and says in out, out
        assert not genloop.verify(bad)


def test_signed_text_in_texts_jsonl(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    run = genloop.train("gpt", str(corpus), overrides=TINY_GPT, steps=2, progress=False)
    _, path = genloop.generate_text(run.id, prompt="the", n=2, seed=0, max_tokens=8)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(
        provenance.verify_envelope(r["manifest"], provenance.text_sha256(r["text"]))[0] == "valid" for r in records
    )
    code, out, _ = cli(capsys, "verify", path)
    assert code == 0 and ": valid (2 generations" in out and f"run {run.id}" in out
    records[1]["text"] += "!"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    r = genloop.verify(path)
    assert r.status == "tampered" and "line 2" in r.detail and "content_sha256" in r.detail
    # sign=False: the record has no manifest, and the file no longer verifies as a whole
    genloop.generate_text(run.id, prompt="the", n=1, seed=1, max_tokens=4, sign=False, out=tmp_path / "plain")
    plain = tmp_path / "plain" / "texts.jsonl"
    assert "manifest" not in json.loads(plain.read_text())
    assert genloop.verify(plain).status == "unsigned"


def test_signed_music(tmp_path: Path, capsys) -> None:
    from test_music_loop import TINY_MUSIC, music_folder

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = genloop.train(
            "music-gpt", data=str(music_folder(tmp_path / "data")), overrides=TINY_MUSIC, steps=2, progress=False
        )
        paths = genloop.generate_music(run.id, n=1, seed=0, bars=2, out=tmp_path / "music")
    finally:
        torch.set_num_threads(threads)
    mid = next(p for p in paths if p.suffix == ".mid")
    assert provenance.sidecar(mid).is_file()
    code, out, err = cli(capsys, "verify", mid, provenance.sidecar(mid))
    assert code == 0, out + err
    assert out.count(": valid (generation ") == 2
    from symusic import Note, Score

    score = Score.from_midi(mid.read_bytes())  # a note added (the embedded manifest stays): tampered
    score.tracks[0].notes.append(Note(0, 10, 60, 64))
    edited = tmp_path / "edited.mid"
    edited.write_bytes(bytes(score.dumps_midi()))
    r = genloop.verify(edited)
    assert r.status == "tampered" and "content_sha256" in r.detail


class _Payload:
    def __reduce__(self):  # what a malicious checkpoint does: run code when unpickled
        return (os.system, ("echo pwned",))


def test_foreign_weights_load_tensors_only_and_warn_once(tmp_path: Path) -> None:
    import warnings

    from genloop.errors import DataError
    from genloop.evaluation.inception import _read_state_dict

    pth = tmp_path / "w.pth"
    torch.save({"a": torch.ones(2)}, pth)
    with pytest.warns(UserWarning, match="not a safetensors file"):
        assert torch.equal(_read_state_dict(pth)["a"], torch.ones(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _read_state_dict(pth)  # once per file
        _read_state_dict(pth, pinned=True)
    evil = tmp_path / "evil.ckpt"
    torch.save({"a": _Payload()}, evil)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="not a readable weights file"):
        _read_state_dict(evil)  # weights_only=True refuses to run the pickle's code


def test_studio_stored_images_are_signed_under_their_generation_id(tmp_path: Path) -> None:
    """The server's generate job stores outputs through the feedback store: each PNG is signed with the row's id."""
    from genloop.feedback.store import FeedbackStore
    from genloop.generation.pipelines import ImageOutput

    store = FeedbackStore(url=f"sqlite:///{tmp_path / 'studio.sqlite'}", media_dir=tmp_path / "media")
    out = ImageOutput(torch.linspace(-1, 1, 128).reshape(2, 1, 8, 8), {"run_id": "r-img", "model": "dcgan", "seed": 5})
    ids = store.add_outputs(out)
    for gid in ids:
        r = genloop.verify(store.image_path(store.get(gid)))
        assert r.status == "valid" and r.generation_id == gid
    with provenance.signing(False):
        (plain,) = store.add_outputs(ImageOutput(torch.zeros(1, 1, 8, 8), {"run_id": "r", "seed": 0}))
    assert genloop.verify(store.image_path(store.get(plain))).status == "unsigned"


def test_verify_without_files_is_one_line(capsys) -> None:
    code, out, err = cli(capsys, "verify")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: give at least one FILE to verify")
