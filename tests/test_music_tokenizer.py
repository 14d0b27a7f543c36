"""Music tokenizer: exact round trip on the grid, conditioning prefix, BPE, save/load."""

from __future__ import annotations

import pytest
from music_support import two_track_score

from genloop.errors import ConfigError
from genloop.modalities.music.piece import build_score, piece_from_score
from genloop.modalities.music.tokenizer import MusicTokenizer, MusicTokenizerConfig, distinct_programs


def _note_sets(score):
    piece = piece_from_score(score, "x")
    return [sorted((n.time, n.duration, n.pitch) for n in t.notes) for t in piece.score.tracks]


@pytest.mark.parametrize("kind", ["REMI", "TSD", "MIDILike"])
def test_round_trip_keeps_every_note_and_track(kind):
    score = two_track_score()
    tok = MusicTokenizer(MusicTokenizerConfig(kind=kind, styles=["test"]))
    back = tok.decode(tok.encode(piece_from_score(score, "x", style="test")))
    assert back.tpq == 480 and len(back.tracks) == 2
    assert _note_sets(back) == _note_sets(score)
    assert [int(t.program) for t in back.tracks] == [0, 32]
    assert back.time_signatures[0].numerator == 4 and back.key_signatures[0].key == -1


def test_voices_sharing_a_program_stay_separate_tracks():
    voices = [
        (name, 0, [(i * 480, 480, base + i, 80) for i in range(4)])
        for name, base in (("S", 72), ("A", 67), ("T", 60), ("B", 48))
    ]
    score = build_score(voices, 480, (3, 4), (0, True), 90.0)
    assert [t.program for t in distinct_programs(score).tracks] == [0, 1, 2, 3]
    tok = MusicTokenizer()
    back = tok.decode(tok.encode(piece_from_score(score, "chorale")))
    assert _note_sets(back) == _note_sets(score)


def test_conditioning_prefix_names_style_key_meter_and_bars():
    tok = MusicTokenizer(MusicTokenizerConfig(styles=["bach", "essen"]))
    piece = piece_from_score(two_track_score(), "x", style="essen")
    ids = tok.encode(piece)
    assert tok.tokens(ids)[:5] == ["BOS_None", "Style_essen", "Key_Fmajor", "Meter_4/4", "Bars_2"]
    assert tok.conditions(ids) == {"Style": "essen", "Key": "Fmajor", "Meter": "4/4", "Bars": "2"}
    assert tok.tokens(ids)[-1] == "EOS_None"
    other = piece_from_score(two_track_score(), "y", style="never-seen")
    assert tok.conditions(tok.encode(other))["Style"] == "unknown"
    assert sum(t.startswith("Bar_") for t in tok.tokens(ids)) == 2  # REMI's own bar tokens


def test_bpe_shortens_sequences_and_survives_save_and_load(tmp_path):
    pieces = [piece_from_score(two_track_score().shift_pitch(s), f"p{s}") for s in range(-3, 4)]
    tok = MusicTokenizer()
    plain = tok.encode(pieces[0])
    tok.train_bpe(pieces, len(tok) + 40)
    merged = tok.encode(pieces[0])
    assert len(merged) < len(plain)
    assert _note_sets(tok.decode(merged)) == _note_sets(pieces[0].score)
    tok.save(tmp_path / "tok")
    again = MusicTokenizer.load(tmp_path / "tok")
    assert again.encode(pieces[0]) == merged and again.fingerprint() == tok.fingerprint()
    assert again.vocab_size == tok.vocab_size


def test_bad_tokenizer_settings_raise_config_error():
    with pytest.raises(ConfigError, match="not supported"):
        MusicTokenizerConfig(kind="Octuple")
    with pytest.raises(ConfigError, match="must exceed"):
        MusicTokenizer().train_bpe([piece_from_score(two_track_score(), "x")], 10)


def test_dataset_tokens_are_cached_and_train_is_augmented(tmp_path):
    from music_support import write_midi

    from genloop.modalities.music.dataset import MusicDataConfig, load_music_dataset, tokenize_dataset

    for i in range(5):
        write_midi(tmp_path / f"p{i}.mid", two_track_score().shift_pitch(i))
    ds = load_music_dataset(MusicDataConfig(str(tmp_path), split=(0.6, 0.2, 0.2), transpose=1))
    tok = MusicTokenizer(MusicTokenizerConfig(styles=[tmp_path.name]))
    ids = tokenize_dataset(ds, tok)
    assert [len(ids[s]) for s in ("train", "val", "test")] == [3 * 3, 1, 1]
    assert tok.conditions(ids["val"][0].tolist())["Style"] == tmp_path.name.replace("_", "-")
    again = tokenize_dataset(ds, tok)
    assert all(a.tolist() == b.tolist() for s in ids for a, b in zip(ids[s], again[s], strict=True))
