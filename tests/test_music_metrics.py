"""Music metrics and reward features on hand-built cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from music_support import scale_piece

from genloop.errors import ConfigError
from genloop.modalities.music import features, metrics
from genloop.modalities.music.piece import build_score, piece_from_score

Q = 480  # ticks per quarter


def line(pitches, dur=Q, track="v", start=0):
    return (track, 0, [(start + i * dur, dur, p, 80) for i, p in enumerate(pitches)])


def piece(*tracks, ts=(4, 4)):
    return piece_from_score(build_score(list(tracks), Q, ts), "hand")


C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def test_pitch_descriptors_on_known_cases():
    chromatic = np.arange(60, 72)
    assert metrics.pitch_class_entropy(chromatic) == pytest.approx(math.log2(12))
    assert metrics.pitch_class_entropy(np.array([60, 72, 48])) == 0.0
    assert metrics.scale_consistency(np.array(C_MAJOR)) == 1.0
    assert metrics.scale_consistency(chromatic) == pytest.approx(7 / 12)
    d = metrics.descriptors(piece(line(C_MAJOR)))
    assert d["pitch_range"] == 12 and d["polyphony"] == 1.0 and d["empty_beat_rate"] == 0.0
    assert d["interval_hist"][12 + 2] == pytest.approx(5 / 7) and d["interval_hist"][12 + 1] == pytest.approx(2 / 7)
    assert d["note_length_hist"][metrics.NOTE_LENGTH_BINS.index(1.0)] == 1.0


def test_rhythm_descriptors_on_known_cases():
    chord = piece(line([60], 2 * Q, "a"), line([64], 2 * Q, "b"), line([67], 2 * Q, "c"))
    assert metrics.descriptors(chord)["polyphony"] == 3.0
    gaps = piece(("v", 0, [(0, Q, 60, 80), (2 * Q, Q, 62, 80)]))  # beats 0 and 2 played, beat 1 empty
    assert metrics.descriptors(gaps)["empty_beat_rate"] == pytest.approx(1 / 3)
    same_bars = piece(line([60, 62, 64, 65] * 3))
    assert metrics.descriptors(same_bars)["groove_consistency"] == 1.0
    one_extra = piece(("v", 0, [(0, 4 * Q, 60, 80), (4 * Q, 2 * Q, 60, 80), (6 * Q, 2 * Q, 62, 80)]))
    assert metrics.descriptors(one_extra)["groove_consistency"] == pytest.approx(1 - 1 / 48)  # 1 of 48 slots


def test_set_distances_on_known_cases():
    assert metrics.wasserstein1(np.array([0.0]), np.array([1.0])) == pytest.approx(1.0)
    assert metrics.wasserstein1(np.array([0.0, 1.0]), np.array([1.0, 0.0])) == 0.0
    assert metrics.wasserstein1(np.array([0.0, 2.0]), np.array([1.0, 3.0])) == pytest.approx(1.0)
    assert metrics.js_divergence(np.array([1, 0]), np.array([1, 0])) == 0.0
    assert metrics.js_divergence(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    same = [scale_piece(i) for i in range(3)]
    assert metrics.descriptor_distances(same, same)["mean"] == pytest.approx(0.0, abs=1e-12)


SENSITIVE = {
    "shuffled": {"interval_hist"},
    "out-of-key": {"pitch_class_entropy", "scale_consistency", "interval_hist"},
    "random-timing": {"polyphony", "empty_beat_rate", "groove_consistency", "note_length_hist", "interval_hist"},
}


@pytest.mark.parametrize(
    "name, corrupt",
    [
        ("shuffled", metrics.shuffled_pitches),
        ("out-of-key", metrics.out_of_key),
        ("random-timing", metrics.random_timing),
    ],
)
def test_distances_rank_corrupted_held_out_pieces_as_worse(name, corrupt):
    train = [scale_piece(i, f"t{i}") for i in range(12)]
    held = [scale_piece(100 + i, f"h{i}") for i in range(12)]
    floor = metrics.descriptor_distances(train, held)
    bad = metrics.descriptor_distances(train, [corrupt(p, seed=i) for i, p in enumerate(held)])
    assert bad["mean"] > floor["mean"]
    for k in SENSITIVE[name]:
        assert bad[k] > floor[k], k
    for k in set(metrics.SCALAR_DESCRIPTORS + metrics.HISTOGRAM_DESCRIPTORS) - SENSITIVE[name] - {"pitch_range"}:
        assert bad[k] >= floor[k] - 1e-9, k  # a corruption never makes an insensitive descriptor look better


def test_ngram_baselines():
    train = [np.array([1, 2, 3, 4] * 40)] * 3
    val = [np.array([1, 2, 3, 4] * 10)]
    out = metrics.ngram_baselines(train, val, vocab_size=8)
    assert out["unigram"] == pytest.approx(-math.log(121 / 488), rel=1e-6)  # add-one over 8 ids
    assert out["best"] < 0.3 < out["unigram"] and out["best"] <= out["2-gram"]
    kn = metrics.KneserNey(3, vocab_size=8).fit([np.array([1, 2, 3, 1, 2, 4, 5])])
    for ctx in [(1, 2), (2, 3), (7, 7), ()]:
        assert sum(kn.prob(ctx, w) for w in range(8)) == pytest.approx(1.0)  # a distribution for any context


def test_chorale_ranges_and_parallels():
    # S: C5 D5 E5 ; A: C4 D4 E4 (parallel octaves twice); T: F3 G3 A3 (parallel fifths with S? no: 19 = 12+7)
    s, a, t = line([72, 74, 76], track="Soprano"), line([60, 62, 64], track="Alto"), line([65, 67, 69], track="Tenor")
    b = line([30, 31, 33], track="Bass")  # far below E2: outside the bass range
    p = piece(s, a, t, b)
    ranges = metrics.voice_range_share(p)
    assert ranges == {"Soprano": 1.0, "Alto": 1.0, "Tenor": 1.0, "Bass": 0.0}
    par = metrics.parallel_perfects(p)
    # pairs moving in parallel perfect intervals over 2 moves in 3 beats: S-A octaves x2; S-T 7 then 7 (x2 fifths)
    # A-T: 5 (fourth) no; T-B 35, 36, 36 -> 11, 0, 0: one octave; S-B 42,43,43 -> 6,7,7 one fifth; A-B 30,31,31 -> 6,7,7
    assert par["octaves_per_100_beats"] == pytest.approx(100 * 3 / 3)
    assert par["fifths_per_100_beats"] == pytest.approx(100 * 4 / 3)
    oblique = piece(line([72, 72], track="Soprano"), line([65, 67], track="Alto"))
    assert metrics.parallel_perfects(oblique) == {"fifths_per_100_beats": 0.0, "octaves_per_100_beats": 0.0}


def test_memorisation_is_transposition_invariant():
    tune = [60, 62, 64, 65, 67, 65, 64, 62, 60, 67, 72, 71]
    train = [piece(line(tune)), piece(line([50, 52, 50, 52]))]
    copied_up = piece(line([p + 5 for p in tune]))
    partly = piece(line(tune[:6] + [90, 40, 91, 41]))
    out = metrics.memorisation([copied_up, partly], train, heldout=[piece(line([60, 61, 63, 66, 70]))])
    assert out["samples"] == [len(tune) - 1, 5]  # steps = intervals between consecutive notes
    assert out["heldout"] == [2]  # +1 +2 (E F G) is a stock fragment of the tune: real music shares some
    slower = piece(line(tune, dur=2 * Q))  # same pitches, other durations: not the same phrase
    assert metrics.memorisation([slower], train)["samples"] == [0]


def test_feature_vector_and_scripted_raters():
    p = piece(line(C_MAJOR))
    v = features.feature_vector(p)
    assert v.shape == (features.FEATURE_DIM,) and v.dtype == np.float32
    assert v[:12].sum() == pytest.approx(1.0) and v[:12][0] == pytest.approx(2 / 8)
    assert features.scripted_rater("in-key:C")(p) == 1.0
    assert features.scripted_rater("in-key:F#")(p) == pytest.approx(2 / 8)  # only F# major's B and E#=F
    assert features.scripted_rater("in-key:Am")(p) == 1.0
    assert features.scripted_rater("range:60-64")(p) == pytest.approx(3 / 8)
    assert features.parse_key("Bb minor") == (10, True) and features.parse_key("e") == (4, True)
    for bad in ("in-key:H", "range:72-60", "loud"):
        with pytest.raises(ConfigError):
            features.scripted_rater(bad)
