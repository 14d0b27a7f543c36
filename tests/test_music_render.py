"""Music output: MIDI with its recipe, WAV by FluidSynth or the NumPy fallback, piano-roll PNG."""

from __future__ import annotations

import logging
import shutil
import wave

import numpy as np
import pytest
from music_support import two_track_score

from genloop.modalities.music import render
from genloop.modalities.music.piece import piece_from_score
from genloop.modalities.music.sources import read_midi


def test_midi_carries_its_recipe_and_sidecar(tmp_path):
    recipe = {"model": "tiny-lm", "seed": 7, "prefix": ["Style_bach"]}
    path = render.write_midi(tmp_path / "out.mid", two_track_score(), recipe)
    assert render.read_recipe(path.read_bytes()) == recipe
    assert (tmp_path / "out.mid.json").is_file()
    assert read_midi(path).num_notes == 16  # still an ordinary MIDI file
    assert render.read_recipe(render.midi_bytes(two_track_score())) is None


def test_numpy_fallback_renders_audio_and_wav(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(render, "find_soundfont", lambda: None)
    with caplog.at_level(logging.WARNING):
        audio, rate, engine = render.render_audio_engine(two_track_score(), sample_rate=8000)
    assert engine == "numpy" and "NumPy synthesiser" in caplog.text
    assert audio.dtype == np.float32 and rate == 8000
    assert 0.1 < np.abs(audio).max() <= 1.0
    assert len(audio) / rate == pytest.approx(8 * 0.6 + 0.5, abs=0.3)  # 8 beats at 100 qpm, plus release tail
    path = render.write_wav(tmp_path / "a.wav", audio, rate)
    with wave.open(str(path)) as w:
        assert (w.getsampwidth(), w.getnchannels(), w.getframerate()) == (2, 1, 8000)
    back, _ = render.read_wav(path)
    assert np.abs(back - audio).max() < 1e-3
    assert render.render_wav(two_track_score(), tmp_path / "b.wav", 8000, prefer="numpy") == "numpy"
    assert render.read_wav(tmp_path / "b.wav")[0].shape == audio.shape
    assert render.render_audio(two_track_score(), 8000, prefer="numpy")[1] == 8000


def test_numpy_tracks_have_different_timbres():
    from genloop.modalities.music.piece import build_score

    # A4 on track 0 during beats 0-2, then on track 1 during beats 4-6 (120 qpm: 0-1 s and 2-3 s)
    score = build_score([("a", 0, [(0, 960, 69, 100)]), ("b", 0, [(1920, 960, 69, 100)])], tempo=120.0)
    audio = render.render_numpy(score, 8000)

    def second_harmonic_share(segment):
        spec = np.abs(np.fft.rfft(segment))
        freqs = np.fft.rfftfreq(len(segment), 1 / 8000)
        return spec[np.abs(freqs - 880) < 5].sum() / spec[np.abs(freqs - 440) < 5].sum()

    assert second_harmonic_share(audio[1000:7000]) > 0.3  # track 0: piano-like, strong 2nd partial
    assert second_harmonic_share(audio[17000:23000]) < 0.05  # track 1: clarinet-like, odd partials only


@pytest.mark.skipif(
    shutil.which("fluidsynth") is None or render.find_soundfont() is None,
    reason="fluidsynth and a General MIDI SoundFont are not installed",
)
def test_fluidsynth_renders_when_available():
    audio, rate, engine = render.render_audio_engine(two_track_score(), sample_rate=22050)
    assert engine == "fluidsynth" and rate == 22050 and audio.dtype == np.float32
    assert np.abs(audio).max() > 0.01 and len(audio) / rate > 4.5


def test_piano_roll_png(tmp_path):
    piece = piece_from_score(two_track_score(), "roll")
    path = render.piano_roll_png(piece, tmp_path / "roll.png", title="two tracks")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
