"""C2PA export (issue 15): `genloop c2pa` re-issues a GenLoop PNG with a C2PA manifest signed with this
installation's key under a self-signed certificate; c2pa-python reads it back as intact (signer untrusted),
and a changed byte of image data as a hash mismatch."""

from __future__ import annotations

import stat
import struct
import sys
import zlib
from pathlib import Path

import pytest
from conftest import cli
from PIL import Image

import genloop
from genloop.data.image_io import save_png
from genloop.errors import DataError
from genloop.safety import c2pa_export, provenance

RECIPE = {"checkpoint_sha256": "ab" * 32, "run_id": "r1", "model": "dcgan", "seed": 7}


@pytest.fixture
def c2pa():  # noqa: ANN201 - the optional module
    return pytest.importorskip("c2pa")


def generated(folder: Path, name: str = "sample.png", generation_id: str = "gen42") -> Path:
    """A tiny signed GenLoop PNG, as the image writer makes it."""
    image = Image.new("RGB", (12, 10))
    image.putdata([((7 * i) % 256, (13 * i) % 256, (29 * i) % 256) for i in range(120)])
    return save_png(folder / name, image, RECIPE, sign=True, generation_id=generation_id)


def pixels(path: Path) -> str:
    with Image.open(path) as im:
        im.load()
        return provenance.image_sha256(im)


def flip_image_byte(path: Path) -> None:
    """Change one byte inside the IDAT chunk's data (and fix the chunk's CRC, so only the image data differs)."""
    data = bytearray(path.read_bytes())
    pos = 8
    while data[pos + 4 : pos + 8] != b"IDAT":
        pos += 12 + struct.unpack(">I", data[pos : pos + 4])[0]
    size = struct.unpack(">I", data[pos : pos + 4])[0]
    data[pos + 8 + size // 2] ^= 0x01
    data[pos + 8 + size : pos + 12 + size] = struct.pack(">I", zlib.crc32(data[pos + 4 : pos + 8 + size]))
    path.write_bytes(bytes(data))


def test_export_reads_back_with_c2pa(c2pa, tmp_path: Path) -> None:
    src = generated(tmp_path)
    dst = c2pa_export.export_c2pa(src, tmp_path / "out" / "sample.c2pa.png")
    assert dst.is_file() and not [p for p in dst.parent.iterdir() if p.name.startswith(".")]  # atomic, no temps
    assert pixels(dst) == pixels(src)  # the pixels are unchanged
    with open(dst, "rb") as f, c2pa.Reader("image/png", f) as reader:
        active = reader.get_active_manifest()
        failures = [x["code"] for x in reader.get_validation_results()["activeManifest"]["failure"]]
        assert reader.get_validation_state() == "Valid"
    assert failures == ["signingCredential.untrusted"]  # self-signed: untrusted, but nothing else wrong
    assertions = {a["label"]: a["data"] for a in active["assertions"]}
    custom = assertions[c2pa_export.ASSERTION_LABEL]
    assert custom["generation_id"] == "gen42" and custom["recipe"] == RECIPE
    assert custom["model_sha256"] == "ab" * 32 and custom["genloop_key_id"] == provenance.key_id()
    (action,) = next(v for k, v in assertions.items() if k.startswith("c2pa.actions"))["actions"]
    assert action == {"action": "c2pa.created", "digitalSourceType": c2pa_export.TRAINED_ALGORITHMIC_MEDIA}
    assert active["claim_generator_info"][0]["name"] == "GenLoop"
    assert active["claim_generator_info"][0]["version"] == genloop.__version__
    assert active["signature_info"]["alg"] == "Ed25519"
    assert provenance.key_id() in active["signature_info"]["common_name"]
    # GenLoop's own manifest survives next to the C2PA one
    assert provenance.verify_file(dst).ok
    found = c2pa_export.read_c2pa(dst)
    assert found["intact"] and not found["trusted"] and found["assertions"][c2pa_export.ASSERTION_LABEL] == custom
    assert c2pa_export.read_c2pa(src) is None


def test_certificate_is_made_once_beside_the_key(c2pa, tmp_path: Path) -> None:
    from cryptography import x509

    first = c2pa_export.certificate()
    folder = provenance.key_dir()
    assert (folder / c2pa_export.CERTIFICATE).read_bytes() == first
    assert c2pa_export.certificate() == first  # reused
    assert stat.S_IMODE((folder / provenance.PRIVATE_KEY).stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(first)
    assert cert.public_key() == provenance.private_key().public_key() and cert.issuer == cert.subject
    (folder / c2pa_export.CERTIFICATE).write_text("not a certificate")
    assert c2pa_export.certificate() != b"not a certificate"  # an unreadable one is replaced


def test_changed_image_byte_fails_validation(c2pa, tmp_path: Path) -> None:
    dst = c2pa_export.export_c2pa(generated(tmp_path), tmp_path / "x.c2pa.png")
    flip_image_byte(dst)
    found = c2pa_export.read_c2pa(dst)
    assert found["validation_state"] == "Invalid" and not found["intact"]
    assert "assertion.dataHash.mismatch" in found["failures"]
    result = provenance.verify_file(dst)
    assert not result.ok and "c2pa: present, TAMPERED (assertion.dataHash.mismatch)" in result.line()


def test_cli_end_to_end(c2pa, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = generated(tmp_path, "a.png", "gen-a"), generated(tmp_path, "b.png", "gen-b")
    code, out, err = cli(capsys, "c2pa", a, b, "--out", tmp_path / "c2pa")
    assert code == 0, err
    written = [Path(line) for line in out.splitlines()]
    assert written == [tmp_path / "c2pa" / "a.c2pa.png", tmp_path / "c2pa" / "b.c2pa.png"]
    assert c2pa_export.read_c2pa(written[1])["assertions"][c2pa_export.ASSERTION_LABEL]["generation_id"] == "gen-b"
    code, out, _ = cli(capsys, "verify", written[0])
    assert code == 0 and out.count("\n") == 1
    assert out.startswith(f"{written[0]}: valid (generation gen-a;")
    assert f"c2pa: present, intact, signer untrusted (GenLoop key {provenance.key_id()}, self-signed)" in out
    code, out, _ = cli(capsys, "verify", a)  # a file without C2PA: the line is as before
    assert code == 0 and "c2pa" not in out
    code, out, _ = cli(capsys, "c2pa", a)  # default: beside the input
    assert code == 0 and out.strip() == str(tmp_path / "a.c2pa.png")


def test_bad_input_one_line(c2pa, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.png"
    text.write_text("just text\n")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    tampered = generated(tmp_path, "t.png")
    with Image.open(tampered) as im:
        info = im.text
        im.load()
        changed = im.copy()
    changed.putpixel((0, 0), (1, 2, 3))
    from PIL import PngImagePlugin

    png_info = PngImagePlugin.PngInfo()
    for k, v in info.items():
        png_info.add_itxt(k, v)
    changed.save(tampered, pnginfo=png_info)
    for bad, says in [
        (text, "not a PNG image (C2PA export supports PNG only)"),
        (plain, "not a GenLoop PNG with a valid manifest (unsigned"),
        (tampered, "not a GenLoop PNG with a valid manifest (tampered"),
        (tmp_path / "missing.png", "no such file"),
    ]:
        code, out, err = cli(capsys, "c2pa", bad, "--out", tmp_path / "out")
        assert code == 2 and out == "" and err.count("\n") == 1 and says in err, (bad, err)
        with pytest.raises(DataError):
            c2pa_export.export_c2pa(bad, tmp_path / "out" / "x.png")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_without_c2pa_python_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = generated(tmp_path)
    monkeypatch.setitem(sys.modules, "c2pa", None)  # import c2pa now raises ImportError
    code, out, err = cli(capsys, "c2pa", src)
    assert code == 2 and out == "" and err.count("\n") == 1 and "pip install c2pa-python" in err
    assert provenance.verify_file(src).ok  # verify never needs it for a file without C2PA


def test_verify_without_c2pa_python_still_notes_the_manifest(
    c2pa, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dst = c2pa_export.export_c2pa(generated(tmp_path), tmp_path / "x.c2pa.png")
    monkeypatch.setitem(sys.modules, "c2pa", None)
    result = provenance.verify_file(dst)
    assert result.ok and result.line().endswith("; c2pa: present, not checked (pip install c2pa-python))")
