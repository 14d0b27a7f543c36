"""Read music into :class:`Piece` objects: MIDI, MusicXML, ABC and ``**kern`` files or folders, and the
corpora that ship inside music21 (so they are always available offline).

MIDI goes through symusic (C++, ~100x faster than music21); the notation formats go through music21 and
are flattened into a symusic ``Score`` (one track per part, ties merged, repeats *not* expanded, a pickup
bar shifted so that bar lines fall on multiples of the bar length). A multi-tune ABC file gives one piece
per ``X:`` tune.

Two error policies, on purpose: a file the *user* names is their data, so anything wrong with it (corrupt,
no notes, type-2 MIDI, an ABC syntax error, a folder with no music) raises a one-line
:class:`~genloop.errors.DataError` naming the file; a built-in corpus is ours, and the few pieces music21
cannot read are skipped and *counted* (``Loaded.skipped``) so one bad tune never blocks a run.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from symusic import Score
from symusic.core import ScoreTick

from ...errors import DataError, NotFoundError
from .piece import Piece, build_score, piece_from_score

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")
MUSICXML_SUFFIXES = (".musicxml", ".mxl", ".xml")
ABC_SUFFIXES = (".abc",)
KERN_SUFFIXES = (".krn",)
MUSIC_SUFFIXES = MIDI_SUFFIXES + MUSICXML_SUFFIXES + ABC_SUFFIXES + KERN_SUFFIXES
TPQ = 480  # ticks per quarter note for pieces built from notation (divisible by 2..8, 10, 12, 16)

# Built-in corpora: name -> (music21 corpus folder, suffixes). All ship with the music21 package.
CORPORA: dict[str, tuple[str, tuple[str, ...]]] = {
    "bach": ("bach", (".mxl", ".xml", ".musicxml")),  # ~400 four-part chorales (SATB)
    "essen": ("essenFolksong", (".abc",)),  # Essen folk song collection: many tunes per file
    "ryans-mammoth": ("ryansMammoth", (".abc",)),  # Ryan's Mammoth Collection: Irish/Scottish fiddle tunes
}
# One line each for `genloop data list` (counted from the music21 corpus files: chorale files, ABC tunes).
CORPUS_DESCRIPTIONS: dict[str, str] = {
    "bach": "~410 Bach four-part chorales (SATB), MusicXML, ~2.3 MB (ships with music21)",
    "essen": "~8,500 Essen folk songs, monophonic ABC, ~2.6 MB (ships with music21)",
    "ryans-mammoth": "~1,060 Irish and Scottish fiddle tunes (Ryan's Mammoth Collection), ABC (ships with music21)",
}
_SATB = ("soprano", "alto", "tenor", "bass")
_X_HEADER = re.compile(r"^X:\s*(\S*)", re.MULTILINE)


@dataclass
class Loaded:
    """What a load produced: the pieces, and (built-in corpora only) what was skipped and why."""

    pieces: list[Piece]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (piece id, one-line reason)


# --------------------------------------------------------------------------------------------- MIDI


def read_midi(path: Path, id: str | None = None, style: str = "unknown") -> Piece:
    """One MIDI file as a piece; corrupt, type-2 or note-less files raise DataError naming the file."""
    data = path.read_bytes()
    return read_midi_bytes(data, id or path.name, str(path), style)


def read_midi_bytes(data: bytes, id: str, source: str = "", style: str = "unknown") -> Piece:
    where = source or id
    if len(data) < 14 or data[:4] != b"MThd":
        raise DataError(f"{where}: not a MIDI file (no 'MThd' header)")
    fmt = int.from_bytes(data[8:10], "big")
    if fmt == 2:
        raise DataError(f"{where}: type-2 MIDI (independent sequences) is not supported; save it as type 0 or 1")
    if fmt not in (0, 1):
        raise DataError(f"{where}: unknown MIDI format type {fmt} (valid: 0, 1)")
    try:
        score = Score.from_midi(data)
    except Exception as e:  # symusic raises RuntimeError/ValueError with C++ messages for corrupt chunks
        raise DataError(f"{where}: corrupt MIDI file ({_one_line(e)})") from None
    piece = piece_from_score(score, id, source, style)
    if piece.num_notes == 0:
        raise DataError(f"{where}: MIDI file has no notes")
    return piece


# -------------------------------------------------------------------------------- music21 formats


def stream_to_score(stream) -> ScoreTick:  # noqa: ANN001 - a music21 Stream; imported lazily
    """A music21 score/part as a symusic Score: one track per part, ties merged, chords split into notes."""
    from music21 import stream as m21stream

    parts = list(stream.parts) if hasattr(stream, "parts") and len(stream.parts) else [stream]
    pickup = _pickup_shift(parts[0])
    tracks = []
    for i, part in enumerate(parts):
        notes = []
        flat = part.stripTies(inPlace=False).flatten() if isinstance(part, m21stream.Stream) else part
        for n in flat.notes:
            ql = float(n.duration.quarterLength)
            if ql <= 0:  # grace notes have no duration of their own
                continue
            onset = round((float(n.offset) + pickup) * TPQ)
            velocity = int(n.volume.velocity) if n.volume.velocity is not None else 80
            for p in n.pitches:
                notes.append((onset, max(1, round(ql * TPQ)), int(p.midi), velocity))
        inst = part.getInstrument(returnDefault=False) if hasattr(part, "getInstrument") else None
        program = int(inst.midiProgram) if inst is not None and inst.midiProgram is not None else 0
        name = (part.partName or (inst.partName if inst is not None else None) or f"part{i}").strip()
        tracks.append((name, program, notes))
    return build_score(tracks, TPQ, _time_signature(stream), _key(stream), _tempo(stream))


def _pickup_shift(part) -> float:  # noqa: ANN001
    """Quarter notes to shift by so an anacrusis bar counts as a full bar (bar lines land on the grid)."""
    measure = part.getElementsByClass("Measure").first() if hasattr(part, "getElementsByClass") else None
    return float(measure.paddingLeft) if measure is not None and measure.paddingLeft else 0.0


def _time_signature(stream) -> tuple[int, int] | None:  # noqa: ANN001
    ts = stream.recurse().getElementsByClass("TimeSignature").first()
    return (int(ts.numerator), int(ts.denominator)) if ts is not None else None


def _key(stream) -> tuple[int, bool] | None:  # noqa: ANN001
    ks = stream.recurse().getElementsByClass("KeySignature").first()
    if ks is None:
        return None
    return int(ks.sharps), getattr(ks, "mode", "major") == "minor"


def _tempo(stream) -> float | None:  # noqa: ANN001
    mm = stream.recurse().getElementsByClass("MetronomeMark").first()
    try:
        return float(mm.getQuarterBPM()) if mm is not None and mm.number else None
    except Exception:  # an unusual referent (e.g. dotted half) that music21 cannot express in quarters
        return None


def _parse_music21(path_or_text, fmt: str | None = None):  # noqa: ANN001, ANN202
    from music21 import converter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # music21 warns about every odd ornament; errors still raise
        if fmt is None:
            return converter.parse(path_or_text)
        return converter.parse(path_or_text, format=fmt)


def read_notation(path: Path, id: str | None = None, style: str = "unknown") -> Piece:
    """One MusicXML or ``**kern`` file as a piece (a file music21 cannot parse raises DataError)."""
    id = id or path.name
    try:
        stream = _parse_music21(path)
        if hasattr(stream, "scores") and len(stream.scores):  # an Opus: take the first score
            stream = stream.scores[0]
        score = stream_to_score(stream)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read {path.suffix} file ({_one_line(e)})") from None
    title = stream.metadata.title if stream.metadata is not None else None
    piece = piece_from_score(score, id, str(path), style, {"title": title} if title else None)
    if piece.num_notes == 0:
        raise DataError(f"{path}: no notes in {path.suffix} file")
    return piece


def split_abc_tunes(text: str) -> list[tuple[str, str]]:
    """``[(X number, tune text)]``: each tune with the file header (lines before the first ``X:``) prepended."""
    starts = [m.start() for m in _X_HEADER.finditer(text)]
    if not starts:
        return []
    header = text[: starts[0]]
    header = "\n".join(line for line in header.splitlines() if re.match(r"^[A-Za-z]:", line))  # fields only
    tunes = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        body = text[start:end]
        header_match = _X_HEADER.match(body)
        number = (header_match.group(1) if header_match else "") or str(i + 1)
        tunes.append((number, (header + "\n" + body) if header else body))
    return tunes


def read_abc(
    path: Path, id: str | None = None, style: str = "unknown", strict: bool = True, limit: int | None = None
) -> Loaded:
    """Every tune of an ABC file, one piece each (id ``name#X``).

    ``strict`` (a user's file): any tune that does not parse, or a file with no tunes, raises DataError
    naming the file and tune. Not strict (a built-in corpus): such tunes are skipped and listed.
    ``limit`` stops after that many pieces (an Essen file holds hundreds of tunes).
    """
    id = id or path.name
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")  # older ABC collections are Latin-1
    tunes = split_abc_tunes(text)
    if not tunes:
        raise DataError(f"{path}: no ABC tunes (no 'X:' header line)")
    out = Loaded([])
    for number, tune in tunes:
        if limit is not None and len(out.pieces) >= limit:
            break
        tune_id = f"{id}#{number}" if len(tunes) > 1 else id
        try:
            if not re.search(r"^K:", tune, re.MULTILINE):
                raise DataError("tune has no 'K:' (key) line, which ends an ABC header")
            stream = _parse_music21(tune, "abc")
            if hasattr(stream, "scores") and len(stream.scores):
                stream = stream.scores[0]
            title = stream.metadata.title if stream.metadata is not None else None
            piece = piece_from_score(stream_to_score(stream), tune_id, str(path), style, {"title": title})
            if piece.num_notes == 0:
                raise DataError("tune has no notes")
        except Exception as e:
            reason = f"{path}: ABC tune X:{number} cannot be read ({_one_line(e)})"
            if strict:
                raise DataError(reason) from None
            out.skipped.append((tune_id, reason))
            continue
        out.pieces.append(piece)
    return out


# ------------------------------------------------------------------------------------ files, folders


def music_files(path: Path) -> list[Path]:
    """The music files under ``path`` (recursive, sorted, hidden files skipped), or ``[path]`` for a file."""
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in MUSIC_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def read_file(
    path: Path, id: str | None = None, style: str = "unknown", strict: bool = True, limit: int | None = None
) -> Loaded:
    """Any supported file: MIDI, MusicXML, ABC (many tunes; at most ``limit``) or kern."""
    suffix = path.suffix.lower()
    if suffix in MIDI_SUFFIXES:
        return Loaded([read_midi(path, id, style)])
    if suffix in ABC_SUFFIXES:
        return read_abc(path, id, style, strict, limit)
    if suffix in MUSICXML_SUFFIXES + KERN_SUFFIXES:
        if not strict:
            try:
                return Loaded([read_notation(path, id, style)])
            except DataError as e:
                return Loaded([], [(id or path.name, str(e))])
        return Loaded([read_notation(path, id, style)])
    raise DataError(f"{path}: unsupported music file type '{path.suffix}' (valid: {', '.join(MUSIC_SUFFIXES)})")


def load_path(path: str | Path, style: str | None = None) -> Loaded:
    """A file or a folder (recursive) of the user's music; ids are paths relative to the folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise NotFoundError(f"{path}: no such music file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    files = music_files(path)
    if path.is_file() and path.suffix.lower() not in MUSIC_SUFFIXES:
        raise DataError(f"{path}: unsupported music file type '{path.suffix}' (valid: {', '.join(MUSIC_SUFFIXES)})")
    if not files:
        raise DataError(f"{path}: folder has no music files ({', '.join(MUSIC_SUFFIXES)})")
    root = path if path.is_dir() else path.parent
    style = style or (path.name if path.is_dir() else path.stem)
    out = Loaded([])
    for f in files:
        got = read_file(f, f.relative_to(root).as_posix(), style, strict=True)
        out.pieces.extend(got.pieces)
    return out


# ------------------------------------------------------------------------------------------ corpora


def corpus_files(name: str) -> list[Path]:
    """The files of a built-in corpus, sorted (for ``bach``: the chorales, one MusicXML file each)."""
    if name not in CORPORA:
        raise NotFoundError(f"unknown music corpus '{name}' (valid: {', '.join(CORPORA)})")
    from music21 import corpus

    folder, suffixes = CORPORA[name]
    files = [Path(p) for p in corpus.getPaths()]
    files = [p for p in files if p.parent.name == folder and p.suffix.lower() in suffixes]
    if name == "bach":
        files = [p for p in files if p.name.startswith("bwv")]
    return sorted(files, key=lambda p: p.name)


def _satb_only(piece: Piece) -> Piece | None:
    """A chorale reduced to its four voices (S, A, T, B order), dropping doubling instruments; None if not 4-part."""
    names = [n.lower() for n in piece.track_names]
    picks = []
    for voice in _SATB:
        hit = [i for i, n in enumerate(names) if n.startswith(voice)]
        if not hit:
            break
        picks.append(hit[0])
    if len(picks) != 4:
        if len(names) != 4:
            return None
        picks = [0, 1, 2, 3]
    tracks = [piece.score.tracks[i].copy() for i in picks]
    for track, voice in zip(tracks, _SATB, strict=True):
        track.name = voice.capitalize()
    piece.score.tracks.clear()
    piece.score.tracks.extend(tracks)
    return piece


def load_corpus(name: str, limit: int | None = None) -> Loaded:
    """A built-in corpus (``bach``, ``essen``, ``ryans-mammoth``); pieces music21 cannot read are skipped."""
    files = corpus_files(name)
    out = Loaded([])
    for f in files:
        if limit is not None and len(out.pieces) >= limit:
            break
        left = None if limit is None else limit - len(out.pieces)
        got = read_file(f, f"{CORPORA[name][0]}/{f.name}", name, strict=False, limit=left)
        out.skipped.extend(got.skipped)
        for piece in got.pieces:
            if name == "bach":
                reduced = _satb_only(piece)
                if reduced is None:
                    reason = f"{piece.id}: not a four-part chorale ({len(piece.track_names)} parts)"
                    out.skipped.append((piece.id, reason))
                    continue
                piece = reduced
            out.pieces.append(piece)
    if limit is not None:
        out.pieces = out.pieces[:limit]
    if out.skipped:
        log.info("music corpus %s: skipped %d pieces music21 could not read", name, len(out.skipped))
    return out


def load_music(name: str, limit: int | None = None) -> Loaded:
    """A built-in corpus name, else a path to a music file or folder."""
    if name in CORPORA:
        return load_corpus(name, limit)
    loaded = load_path(name)
    if limit is not None:
        loaded.pieces = loaded.pieces[:limit]
    return loaded


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]
