"""The MIDI watermark (issue 15): the generation id's hash in the velocities' parity survives a symusic and a
music21 re-export, is absent from unmarked pieces, is written by write_midi before signing (``verify`` stays
valid) and read back by ``genloop verify`` from a stripped file; garbage MIDI gets one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli
from symusic import Score

from genloop.modalities.music.render import write_midi
from genloop.safety import image_watermark, provenance
from genloop.safety import music_watermark as mw

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def chorales(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Three Bach chorales from music21's corpus, written out as MIDI by music21."""
    from music21 import corpus

    folder = tmp_path_factory.mktemp("chorales")
    out = []
    for i, name in enumerate(["bach/bwv10.7", "bach/bwv11.6", "bach/bwv117.4"]):
        path = folder / f"{i}.mid"
        corpus.parse(name).write("midi", fp=str(path))
        out.append(path.read_bytes())
    return out


def music21_round_trip(data: bytes, folder: Path) -> bytes:
    from music21 import converter

    src, dst = folder / "in.mid", folder / "out.mid"
    src.write_bytes(data)
    converter.parse(str(src)).write("midi", fp=str(dst))
    return dst.read_bytes()


def test_payload_survives_symusic_and_music21_round_trips(chorales: list[bytes], tmp_path: Path) -> None:
    for i, data in enumerate(chorales):
        gid = f"piece-{i}"
        score = Score.from_midi(data)
        marked = mw.embed(score, gid, KEY)
        changed = [
            abs(a.velocity - b.velocity)
            for ta, tb in zip(score.tracks, marked.tracks, strict=True)
            for a, b in zip(ta.notes, tb.notes, strict=True)
        ]
        assert max(changed) <= 1 and 0.2 < sum(changed) / len(changed) < 0.8  # about half the notes, by 1
        once = bytes(marked.dumps_midi())
        for version in (once, bytes(Score.from_midi(once).dumps_midi()), music21_round_trip(once, tmp_path)):
            d = mw.decode_full(version, KEY)
            assert d.bits == list(image_watermark.payload_bits(gid)) and d.watermarked, i
            assert mw.detect(version, gid, KEY) and not mw.detect(version, "another", KEY)


def test_unmarked_pieces_are_not_detected(chorales: list[bytes]) -> None:
    for i, data in enumerate(chorales):
        assert not mw.decode_full(data, KEY).watermarked
        assert all(not mw.detect(data, f"id-{i}-{j}", KEY) for j in range(20))
    other = bytes(mw.embed(Score.from_midi(chorales[0]), "piece-0", bytes(32)).dumps_midi())  # another key
    assert not mw.detect(other, "piece-0", KEY)


def test_garbage_and_tiny_midi_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(mw.WatermarkError) as e:
        mw.decode(b"MThd\x00\x00\x00\x06garbage", KEY)
    assert "\n" not in str(e.value) and "not a readable MIDI file" in str(e.value)
    with pytest.raises(mw.WatermarkError, match="not a MIDI file"):
        mw.decode(b"hello", KEY)
    few = Score(480)
    from symusic import Note, Track

    track = Track()
    track.notes.extend([Note(i * 480, 240, 60 + i, 80) for i in range(5)])
    few.tracks.append(track)
    with pytest.raises(mw.WatermarkError, match="too few"):
        mw.decode(bytes(few.dumps_midi()), KEY)


def strip(data: bytes) -> bytes:
    """The notes only: no manifest marker or lyric."""
    score = Score.from_midi(data)
    score.markers.clear()
    for t in score.tracks:
        t.lyrics.clear()
    return bytes(score.dumps_midi())


def test_written_midi_is_marked_signed_and_traced(
    chorales: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("GENLOOP_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("GENLOOP_RUNS_DIR", str(tmp_path / "runs"))
    score = Score.from_midi(chorales[1])
    with image_watermark.indexing_to(tmp_path / "runs"):
        mid = write_midi(tmp_path / "piece.mid", score, {"run_id": "run-x"}, sign=True, watermark=True)
    code, out, err = cli(capsys, "verify", mid)
    assert code == 0, out + err
    gid = provenance.verify_file(mid).generation_id
    assert ": valid (generation " in out and f"watermark: generation {gid} (run run-x)" in out
    stripped = tmp_path / "stripped.mid"
    stripped.write_bytes(strip(music21_round_trip(mid.read_bytes(), tmp_path)))
    code, out, _ = cli(capsys, "verify", stripped)
    assert code == 1 and out.count("\n") == 1 and "unsigned (no manifest" in out
    assert f"watermark: generation {gid} (run run-x)" in out
    plain = write_midi(tmp_path / "plain.mid", score, {"run_id": "run-x"}, sign=True, watermark=False)
    code, out, _ = cli(capsys, "verify", plain)
    assert code == 0 and out.strip().endswith("no watermark)")
    garbage = tmp_path / "bad.mid"
    garbage.write_bytes(b"MThd\x00\x00\x00\x06garbage")
    code, out, _ = cli(capsys, "verify", garbage)
    assert code == 1 and out.count("\n") == 1 and ": error (not a readable MIDI file" in out
