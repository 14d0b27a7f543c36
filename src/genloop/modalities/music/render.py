"""Output for people: MIDI bytes that carry their recipe, WAV audio, and a piano-roll PNG.

MIDI: the generation recipe (model, seed, prompt...) is stored as JSON in a text meta event at tick 0 with
a ``genloop:`` prefix, so a file found on disk still says how it was made; a sidecar JSON holds the same.
WAV: FluidSynth with a General MIDI SoundFont when both exist (``$GENLOOP_SOUNDFONT``, else Debian's
TimGM6mb / FluidR3_GM); otherwise a small NumPy synthesiser (additive partials + ADSR, one timbre per
track) so audio never depends on system packages — a one-line note says which was used.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
from symusic import Score, TextMeta
from symusic.core import ScoreTick

from ...errors import DataError
from ...serialization import atomic_write, write_json
from .piece import DURATION, ONSET, PITCH, TRACK, VELOCITY, Piece, piece_from_score

log = logging.getLogger(__name__)

RECIPE_PREFIX = "genloop:"
SAMPLE_RATE = 22050
SOUNDFONTS = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
)


# --------------------------------------------------------------------------------------------- MIDI


def midi_bytes(score: ScoreTick, recipe: dict | None = None, manifest: dict | None = None) -> bytes:
    """The score as a type-1 MIDI file; ``recipe`` (JSON-able) rides in a tick-0 text meta event, and so does
    ``manifest`` (a signed provenance envelope, :mod:`genloop.safety.provenance`), prefixed ``genloop-manifest:``."""
    score = score.copy()
    if recipe is not None:
        score.markers.append(TextMeta(0, RECIPE_PREFIX + json.dumps(recipe, sort_keys=True, default=str)))
    if manifest is not None:
        from ...safety.provenance import MANIFEST_KEY, dumps

        score.markers.append(TextMeta(0, MANIFEST_KEY + ":" + dumps(manifest)))
    return bytes(score.dumps_midi())


def read_recipe(data: bytes) -> dict | None:
    """The recipe stored by :func:`midi_bytes`, or None if the file has none."""
    try:
        score = Score.from_midi(data)
    except Exception as e:
        raise DataError(f"not a readable MIDI file ({' '.join(str(e).split())[:160]})") from None
    for meta in list(score.markers) + [m for t in score.tracks for m in t.lyrics]:
        if meta.text.startswith(RECIPE_PREFIX):
            return json.loads(meta.text[len(RECIPE_PREFIX) :])
    return None


def write_midi(
    path: str | os.PathLike,
    score: ScoreTick,
    recipe: dict | None = None,
    sign: bool = False,
    generation_id: str | None = None,
    watermark: bool = False,
) -> Path:
    """Write ``path`` (.mid) atomically and, with a recipe, ``path.json`` beside it. ``sign``: a signed provenance
    manifest of the recipe and the notes goes into the file (a text meta event) and beside it as
    ``path.manifest.json``. ``watermark``: the velocities first carry the hash of the notes' content id
    (:mod:`genloop.safety.music_watermark`; the manifest is over the marked notes), recorded in the run store's
    watermark index."""
    path = Path(path)
    envelope = None
    if watermark:
        import uuid

        from ...safety import music_watermark

        generation_id = generation_id or uuid.uuid4().hex
        mark_id = music_watermark.content_id(score)  # the same notes get the same mark: replays stay exact
        score = music_watermark.embed(score, mark_id)
    if sign:
        from ...safety import provenance

        envelope = provenance.sign(recipe or {}, provenance.midi_sha256(midi_bytes(score, recipe)), generation_id)
    with atomic_write(path) as f:
        f.write(midi_bytes(score, recipe, envelope))
    if recipe is not None:
        write_json(path.with_suffix(path.suffix + ".json"), recipe)
    if envelope is not None:
        provenance.write_sidecar(path, envelope)
    if watermark:
        from ...safety import image_watermark

        image_watermark.record_if_indexing(str(generation_id), mark_id, recipe, "music", path)
    return path


# ---------------------------------------------------------------------------------------------- WAV


def find_soundfont() -> Path | None:
    env = os.environ.get("GENLOOP_SOUNDFONT")
    for candidate in ([env] if env else []) + list(SOUNDFONTS):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def render_fluidsynth(score: ScoreTick, soundfont: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Offline FluidSynth render (mono float32 in -1..1). Raises RuntimeError if fluidsynth fails."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RuntimeError("fluidsynth is not installed")
    with tempfile.TemporaryDirectory(prefix="genloop-fs-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi_bytes(score))
        cmd = [exe, "-ni", "-g", "0.5", "-F", str(wav), "-r", str(sample_rate), str(soundfont), str(mid)]
        proc = subprocess.run(cmd, capture_output=True, timeout=300)
        if proc.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"fluidsynth failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
        audio, rate = read_wav(wav)
    if rate != sample_rate:
        raise RuntimeError(f"fluidsynth wrote {rate} Hz, asked for {sample_rate}")
    return audio.mean(axis=1) if audio.ndim == 2 else audio


# partial amplitudes and ADSR (attack, decay, sustain level, release; seconds) per timbre; track i gets i % 4
_TIMBRES = (
    ((1.0, 0.5, 0.25, 0.12), (0.005, 0.3, 0.35, 0.15)),  # plucked/piano-like
    ((1.0, 0.0, 0.33, 0.0, 0.2), (0.03, 0.1, 0.8, 0.1)),  # clarinet-like (odd partials)
    ((1.0, 0.4, 0.3, 0.2, 0.15, 0.1), (0.05, 0.1, 0.7, 0.2)),  # string-like
    ((1.0, 0.2), (0.02, 0.05, 0.9, 0.1)),  # flute-like
)


def render_numpy(score: ScoreTick, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The fallback synthesiser: additive partials with an ADSR envelope per note, a timbre per track."""
    piece = piece_from_score(score, "render")
    notes = piece.notes
    seconds = _tick_seconds(score)
    if not len(notes):
        return np.zeros(sample_rate // 10, dtype=np.float32)
    starts, ends = seconds(notes[:, ONSET]), seconds(notes[:, ONSET] + notes[:, DURATION])
    total = int((ends.max() + 0.5) * sample_rate) + 1
    out = np.zeros(total, dtype=np.float64)
    for (pitch, vel, track), t0, t1 in zip(notes[:, [PITCH, VELOCITY, TRACK]], starts, ends, strict=True):
        partials, (a, d, s, r) = _TIMBRES[int(track) % len(_TIMBRES)]
        n = int((t1 - t0 + r) * sample_rate)
        if n <= 0:
            continue
        t = np.arange(n) / sample_rate
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        wave_ = sum(
            amp * np.sin(2 * np.pi * f0 * (k + 1) * t)
            for k, amp in enumerate(partials)
            if amp and f0 * (k + 1) < sample_rate / 2
        )
        hold = t1 - t0
        env = np.where(t < a, t / a, np.where(t < a + d, 1 - (1 - s) * (t - a) / d, s))
        env = np.where(t > hold, env * np.maximum(0, 1 - (t - hold) / r), env)
        i0 = int(t0 * sample_rate)
        seg = (vel / 127) * env * wave_
        out[i0 : i0 + len(seg)] += seg[: total - i0]
    peak = np.abs(out).max()
    return (out / peak * 0.8 if peak > 0 else out).astype(np.float32)


def _tick_seconds(score: ScoreTick):  # noqa: ANN202
    """A vectorised ticks -> seconds map honouring every tempo change."""
    tempos = sorted(((int(t.time), float(t.qpm)) for t in score.tempos), key=lambda x: x[0]) or [(0, 120.0)]
    if tempos[0][0] != 0:
        tempos.insert(0, (0, 120.0))
    times = np.array([t for t, _ in tempos], dtype=np.float64)
    spt = np.array([60.0 / q / score.tpq for _, q in tempos])  # seconds per tick in each segment
    base = np.concatenate([[0.0], np.cumsum(np.diff(times) * spt[:-1])])

    def seconds(ticks: np.ndarray) -> np.ndarray:
        i = np.searchsorted(times, ticks, side="right") - 1
        return base[i] + (ticks - times[i]) * spt[i]

    return seconds


def render_audio_engine(
    score: ScoreTick, sample_rate: int = SAMPLE_RATE, prefer: str = "auto"
) -> tuple[np.ndarray, int, str]:
    """``(mono float32 audio, sample rate, engine)``; engine is ``"fluidsynth"`` or ``"numpy"``.

    ``prefer="auto"`` uses FluidSynth when the program and a SoundFont exist, else (or if it fails) the NumPy
    synthesiser, with a one-line warning saying so; ``"numpy"`` forces the fallback (deterministic, no deps).
    """
    if prefer not in ("auto", "fluidsynth", "numpy"):
        raise ValueError(f"prefer must be auto, fluidsynth or numpy, got {prefer!r}")
    soundfont = find_soundfont()
    if prefer != "numpy" and soundfont is not None and shutil.which("fluidsynth"):
        try:
            return render_fluidsynth(score, soundfont, sample_rate), sample_rate, "fluidsynth"
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            log.warning("%s; using the NumPy synthesiser instead", e)
    elif prefer != "numpy":
        log.warning("no fluidsynth/General MIDI SoundFont found (set GENLOOP_SOUNDFONT); using the NumPy synthesiser")
    return render_numpy(score, sample_rate), sample_rate, "numpy"


def render_audio(score: ScoreTick, sample_rate: int = SAMPLE_RATE, prefer: str = "auto") -> tuple[np.ndarray, int]:
    """``(mono float32 audio in -1..1, sample rate)``; see :func:`render_audio_engine` for which engine."""
    audio, rate, _ = render_audio_engine(score, sample_rate, prefer)
    return audio, rate


def render_wav(score: ScoreTick, path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, prefer: str = "auto") -> str:
    """Render and write a 16-bit WAV at ``path``; returns the engine used."""
    audio, rate, engine = render_audio_engine(score, sample_rate, prefer)
    write_wav(path, audio, rate)
    return engine


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV (mono or ``(n, channels)``), written atomically."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1, 1) * 32767).astype("<i2")
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    path = Path(path)
    with atomic_write(path) as f:
        with wave.open(f, "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(pcm.tobytes())
    return path


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> (float32 in -1..1, sample rate); stereo as ``(n, 2)``."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise DataError(f"{path}: only 16-bit PCM WAV is supported")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
        channels, rate = w.getnchannels(), w.getframerate()
    return (data.reshape(-1, channels) if channels > 1 else data), rate


def preview_wav(
    path: str | os.PathLike, sample_rate: int = 11025, seconds: float = 12.0, fade: float = 0.25
) -> tuple[bytes, bool]:
    """A small WAV of a rendered file for embedding (a report's players): ``(wav bytes, was it cut short)``.

    Why: a report inlines its audio as base64 data URIs, and a full 22.05 kHz render came to ~1 MB a player.
    A mono 16-bit excerpt of the first ``seconds`` at ``sample_rate`` (polyphase resampling, which filters
    before it decimates) is ~4x smaller and still plays everywhere: every browser decodes 16-bit PCM WAV,
    while a compressed format would need an encoder this package does not depend on. The last ``fade``
    seconds of a cut excerpt fade out so it does not end in a click.
    """
    from math import gcd

    from scipy.signal import resample_poly

    audio, rate = read_wav(path)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    cut = len(audio) > int(seconds * rate)
    audio = audio[: int(seconds * rate)].astype(np.float64)
    if rate != sample_rate and len(audio):
        g = gcd(int(rate), int(sample_rate))
        audio = resample_poly(audio, sample_rate // g, rate // g)
    if cut:
        n = min(len(audio), int(fade * sample_rate))
        audio[len(audio) - n :] *= np.linspace(1.0, 0.0, n)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue(), cut


# ----------------------------------------------------------------------------------------- piano roll


def piano_roll_png(
    piece: Piece, path: str | os.PathLike, title: str | None = None, max_beats: float | None = None
) -> Path:
    """A piano roll: a colour per track (legend), bar lines, C lines labelled, gaps between repeated notes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notes = piece.notes
    num, den = piece.time_signature
    bar = num * 4 / den
    beats_total = max(piece.beats, bar)
    if max_beats is not None:
        notes = notes[notes[:, ONSET] / piece.tpq < max_beats]
        beats_total = min(beats_total, max_beats)
    fig, ax = plt.subplots(figsize=(min(24, 3 + beats_total * 0.25), 4), dpi=100)
    colors = plt.get_cmap("tab10")
    for t, name in enumerate(piece.track_names):
        tn = notes[notes[:, TRACK] == t]
        ax.broken_barh([], (0, 0), color=colors(t % 10), label=name)
        for onset, dur, pitch in tn[:, [ONSET, DURATION, PITCH]]:
            width = max(dur / piece.tpq - 0.06, dur / piece.tpq * 0.7)  # a gap shows repeated notes apart
            ax.add_patch(
                plt.Rectangle((onset / piece.tpq, pitch - 0.4), width, 0.8, color=colors(t % 10), alpha=0.85, lw=0)
            )
    lo = int(notes[:, PITCH].min()) - 2 if len(notes) else 58
    hi = int(notes[:, PITCH].max()) + 2 if len(notes) else 74
    for x in np.arange(0, beats_total + 1e-9, bar):
        ax.axvline(x, color="0.6", lw=0.6, zorder=0)
    cs = [p for p in range(lo, hi + 1) if p % 12 == 0]
    for p in cs:
        ax.axhline(p, color="0.85", lw=0.5, zorder=0)
    ax.set_yticks(cs, [f"C{p // 12 - 1}" for p in cs])
    ax.set_xlim(0, beats_total)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"beats (bar = {num}/{den})")
    ax.set_title(title or piece.id, fontsize=9)
    if len(piece.track_names) > 1:
        ax.legend(loc="upper right", fontsize=7, ncol=min(4, len(piece.track_names)))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path
