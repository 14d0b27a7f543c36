"""Music ingest: MIDI / MusicXML / ABC / kern files and folders, bad input, corpora, splits, caches."""

from __future__ import annotations

import numpy as np
import pytest
from music_support import BROKEN_ABC, TWO_TUNES, two_track_score, write_midi

from genloop.errors import DataError
from genloop.modalities.music import dataset, sources
from genloop.modalities.music.piece import PITCH, build_score


def test_midi_file_keeps_tracks_notes_and_labels(tmp_path):
    piece = sources.read_midi(write_midi(tmp_path / "a.mid"))
    assert piece.track_names == ["melody", "bass"]
    assert piece.num_notes == 16
    assert piece.time_signature == (4, 4) and piece.key_name == "F major"
    assert piece.tempo == pytest.approx(100, abs=0.5)
    assert piece.notes[0].tolist()[:3] == [0, 960, 41]  # onset, duration, pitch: bass first (lower pitch)


def test_abc_file_with_two_tunes_gives_two_pieces(tmp_path):
    (tmp_path / "two.abc").write_text(TWO_TUNES)
    loaded = sources.load_path(tmp_path / "two.abc")
    assert [p.id for p in loaded.pieces] == ["two.abc#1", "two.abc#2"]
    first, second = loaded.pieces
    assert first.time_signature == (3, 4) and first.key_name == "G major"
    assert second.key_name == "D major" and second.notes[:, PITCH].tolist()[:4] == [62, 64, 66, 67]
    assert first.meta["title"] == "First"


def test_folder_is_read_recursively_with_relative_ids(tmp_path):
    (tmp_path / "sub").mkdir()
    write_midi(tmp_path / "sub" / "a.midi")
    (tmp_path / "t.abc").write_text(TWO_TUNES)
    (tmp_path / "notes.txt").write_text("not music")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "junk.mid").write_bytes(b"not read: hidden folders are skipped")
    loaded = sources.load_path(tmp_path)
    assert sorted(p.id for p in loaded.pieces) == ["sub/a.midi", "t.abc#1", "t.abc#2"]


def test_musicxml_and_kern_files_are_read(tmp_path):
    from music21 import converter

    stream = converter.parse(TWO_TUNES.split("\n\n")[0].split("\n", 1)[1], format="abc")
    xml = stream.write("musicxml", fp=str(tmp_path / "one.musicxml"))
    piece = sources.read_file(xml).pieces[0]
    assert piece.num_notes == 9 and piece.key_name == "G major"
    kern = tmp_path / "k.krn"
    kern.write_text("**kern\n*M4/4\n=1\n4c\n4d\n4e\n4f\n=2\n1g\n*-\n")
    assert sources.read_file(kern).pieces[0].notes[:, PITCH].tolist() == [60, 62, 64, 65, 67]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("corrupt.mid", b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff", "corrupt MIDI"),
        ("notmidi.mid", b"hello, not a midi file", "not a MIDI file"),
        (
            "type2.mid",
            b"MThd\x00\x00\x00\x06\x00\x02\x00\x01\x01\xe0MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
            "type-2 MIDI",
        ),
        ("broken.abc", BROKEN_ABC.encode(), "ABC tune X:1 cannot be read"),
        ("none.abc", b"T:no tunes here\nK:C\nCDEF|\n", "no ABC tunes"),
    ],
)
def test_bad_files_raise_one_line_data_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        sources.load_path(path)
    assert message in str(err.value) and name in str(err.value) and "\n" not in str(err.value)


def test_midi_without_notes_and_empty_folder_raise(tmp_path):
    empty = build_score([("x", 0, [])])
    write_midi(tmp_path / "silent.mid", empty)
    with pytest.raises(DataError, match="silent.mid: MIDI file has no notes"):
        sources.load_path(tmp_path / "silent.mid")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="folder has no music files"):
        sources.load_path(tmp_path / "nothing")


def test_corpus_skips_unreadable_tunes_with_a_count(tmp_path):
    (tmp_path / "mixed.abc").write_text(TWO_TUNES + "\n" + BROKEN_ABC.replace("X:1", "X:3"))
    loaded = sources.read_abc(tmp_path / "mixed.abc", strict=False)
    assert len(loaded.pieces) == 2 and [s[0] for s in loaded.skipped] == ["mixed.abc#3"]


def test_bach_corpus_smoke_three_chorales():
    loaded = sources.load_corpus("bach", limit=3)
    assert len(loaded.pieces) == 3
    for p in loaded.pieces:
        assert p.track_names == ["Soprano", "Alto", "Tenor", "Bass"] and p.num_notes > 100
        assert p.key is not None and p.style == "bach"


@pytest.mark.parametrize("name", ["essen", "ryans-mammoth"])
def test_abc_corpora_smoke_one_tune(name):
    loaded = sources.load_corpus(name, limit=1)
    assert len(loaded.pieces) == 1 and loaded.pieces[0].num_notes > 10 and loaded.pieces[0].style == name


def test_split_is_seeded_by_piece_and_augments_train_only(tmp_path):
    for i in range(10):
        score = two_track_score()
        write_midi(tmp_path / f"p{i}.mid", score.shift_pitch(i))
    cfg = dataset.MusicDataConfig(str(tmp_path), seed=1, transpose=2)
    ds = dataset.load_music_dataset(cfg)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 8, "val": 1, "test": 1}
    assert ds.splits == dataset.load_music_dataset(cfg).splits
    assert sorted(sum(ds.splits.values(), [])) == list(range(10))
    train = ds.train_pieces()
    assert len(train) == 8 * 5  # every shift -2..+2
    assert {p.id for p in ds.split("val")}.isdisjoint({p.id.split("@")[0] for p in train})
    assert all(0 <= p.notes[:, PITCH].min() and p.notes[:, PITCH].max() <= 127 for p in train)


def test_augmentation_keeps_pitches_in_midi_range():
    high = build_score([("x", 0, [(0, 480, 126, 80), (480, 480, 60, 80)])])
    from genloop.modalities.music.piece import piece_from_score

    shifted = dataset.augment([piece_from_score(high, "h")], 3)
    assert sorted(int(p.notes[:, PITCH].max()) - 126 for p in shifted) == [-3, -2, -1, 0, 1]


def test_parse_cache_is_reused_and_keyed_by_content(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    write_midi(folder / "a.mid")
    cfg = dataset.MusicDataConfig(str(folder), split=(1.0, 0.0, 0.0))
    first = dataset.load_music_dataset(cfg)
    again = dataset.load_music_dataset(cfg)
    assert not first.meta["from_cache"] and again.meta["from_cache"]
    assert again.pieces[0].notes.tolist() == first.pieces[0].notes.tolist()
    write_midi(folder / "a.mid", two_track_score().shift_pitch(1))
    changed = dataset.load_music_dataset(cfg)
    assert not changed.meta["from_cache"] and changed.source_hash != first.source_hash


def _chorale(tune: list[int], shift: int, seed: int):
    """A two-voice piece: ``tune`` (shifted) on top of a random bass, so copies differ below the melody."""
    rng = np.random.default_rng(seed)
    top = [(i * 480, 480, p + shift, 80) for i, p in enumerate(tune)]
    bass = [(i * 960, 960, int(rng.integers(36, 52)), 70) for i in range(len(tune) // 2)]
    return build_score([("Soprano", 0, top), ("Bass", 0, bass)])


def test_split_keeps_reharmonised_melodies_together(tmp_path):
    rng = np.random.default_rng(0)
    tunes = [list(60 + np.cumsum(rng.integers(-3, 4, 40)) % 24) for _ in range(12)]
    for i, tune in enumerate(tunes):
        write_midi(tmp_path / f"p{i:02d}.mid", _chorale(tune, 0, i))
    for k, shift in enumerate((0, 2, -5, 7)):  # one tune harmonised four more times, in other keys, with a new end
        write_midi(tmp_path / f"dup{k}.mid", _chorale(tunes[3][:35] + [60 + k, 62, 64], shift, 100 + k))
    for seed in range(5):
        cfg = dataset.MusicDataConfig(str(tmp_path), seed=seed, cache=False)
        ds = dataset.load_music_dataset(cfg)
        assert ds.meta["groups"] == 12 and ds.splits == dataset.load_music_dataset(cfg).splits
        assert sorted(sum(ds.splits.values(), [])) == list(range(16))
        windows = [dataset.melody_windows(p) for p in ds.pieces]
        train = set().union(*(windows[i] for i in ds.splits["train"]))
        assert all(not windows[i] & train for s in ("val", "test") for i in ds.splits[s])
        assert len(ds.splits["train"]) >= 11 and ds.splits["val"] and ds.splits["test"]


def test_grouped_split_matches_the_plain_split_without_duplicates():
    from genloop.data.prepare import split_indices

    plain = {k: v.tolist() for k, v in split_indices(50, [0.8, 0.1, 0.1], 3).items()}
    assert dataset.grouped_split([[i] for i in range(50)], [0.8, 0.1, 0.1], 3) == plain
