"""Music metrics, each meant to be read beside a *real-data floor*: the same number for training pieces
vs held-out pieces (two samples of real music), which a generator's samples can at best match.

Descriptors (MusPy-style, from note lists; :func:`descriptors` lists them):
  scalar: pitch-class entropy (bits), scale consistency (best share of notes in one of the 24 major /
  natural-minor scales), pitch range (semitones), polyphony (mean notes sounding on 16th-note steps that
  sound any), empty-beat rate (share of beats with no note *onset*), groove consistency (1 - mean
  Hamming distance between consecutive bars' onset patterns on a 12-per-beat grid).
  histogram: note length (11 bins in beats), melodic interval within each track (-12..+12, clipped).
Set distance (:func:`descriptor_distances`): for a scalar, the Wasserstein-1 distance between the two
empirical distributions divided by the reference set's standard deviation (so 0.3 means "a third of the
real spread", comparable across descriptors; a constant reference divides by its |mean|); for a histogram,
the Jensen-Shannon divergence (base 2, in [0, 1]) between the sets' mean histograms. Lower is better;
``floor`` = the same on train vs held-out.

Validation NLL baselines (:func:`ngram_baselines`): add-one unigram and interpolated Kneser-Ney 2/3/4-grams
(discount 0.75) fitted on training ids, scored in nats/token on validation ids. A model that does not
beat the best n-gram has not learned more than local statistics.

Chorales: voice-range compliance (SATB) and parallel fifths/octaves per 100 beats. Memorisation: the
longest run of consecutive (interval, duration) steps of a sample found verbatim in any training voice,
transposition-invariant (rolling hashes + binary search), beside held-out pieces' own longest runs.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from .piece import DURATION, ONSET, PITCH, TRACK, Piece

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
NOTE_LENGTH_BINS = (0.125, 0.25, 1 / 3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # beats; nearest bin (log)
INTERVAL_MAX = 12
SCALAR_DESCRIPTORS = (
    "pitch_class_entropy",
    "scale_consistency",
    "pitch_range",
    "polyphony",
    "empty_beat_rate",
    "groove_consistency",
)
HISTOGRAM_DESCRIPTORS = ("note_length_hist", "interval_hist")
SATB_RANGES = {"Soprano": (60, 81), "Alto": (55, 74), "Tenor": (48, 69), "Bass": (40, 62)}  # C4-A5 ... E2-D4


# -------------------------------------------------------------------------------------- descriptors


def pitch_class_histogram(pitches: np.ndarray) -> np.ndarray:
    h = np.bincount(np.asarray(pitches, dtype=np.int64) % 12, minlength=12).astype(np.float64)
    return h / h.sum() if h.sum() else h


def pitch_class_entropy(pitches: np.ndarray) -> float:
    h = pitch_class_histogram(pitches)
    h = h[h > 0]
    return float(-(h * np.log2(h)).sum()) if len(h) else 0.0


def scale_consistency(pitches: np.ndarray) -> float:
    """Best share of notes inside one major or natural-minor scale (any of 12 roots): 1.0 = fully diatonic."""
    h = pitch_class_histogram(pitches)
    if not h.sum():
        return 0.0
    best = 0.0
    for scale in (MAJOR, MINOR):
        for root in range(12):
            best = max(best, float(h[[(root + s) % 12 for s in scale]].sum()))
    return best


def polyphony(notes: np.ndarray, tpq: int) -> float:
    """Mean number of notes sounding on 16th-note steps where at least one sounds."""
    if not len(notes):
        return 0.0
    step = max(1, tpq // 4)
    end = int((notes[:, ONSET] + notes[:, DURATION]).max() // step) + 1
    active = np.zeros(end + 1, dtype=np.int64)
    starts = notes[:, ONSET] // step
    stops = np.maximum(starts + 1, (notes[:, ONSET] + notes[:, DURATION]) // step)
    np.add.at(active, starts, 1)
    np.add.at(active, stops, -1)
    sounding = np.cumsum(active)[:end]
    return float(sounding[sounding > 0].mean()) if (sounding > 0).any() else 0.0


def empty_beat_rate(notes: np.ndarray, tpq: int) -> float:
    """Share of beats (quarter notes, from the first to the last onset) with no note onset."""
    if not len(notes):
        return 1.0
    beats = notes[:, ONSET] // tpq
    first, last = int(beats.min()), int(beats.max())
    return 1.0 - len(np.unique(beats)) / (last - first + 1)


def groove_consistency(notes: np.ndarray, tpq: int, bar_beats: float) -> float:
    """1 - mean Hamming distance (as a share of grid slots) between consecutive bars' onset patterns."""
    grid = 12  # slots per beat: 16ths and triplets
    slots = max(1, round(bar_beats * grid))
    if not len(notes):
        return 0.0
    pos = np.rint(notes[:, ONSET] * grid / tpq).astype(np.int64)
    bars = pos // slots
    n_bars = int(bars.max()) + 1
    if n_bars < 2:
        return 1.0
    pattern = np.zeros((n_bars, slots), dtype=bool)
    pattern[bars, pos % slots] = True
    return float(1.0 - (pattern[1:] != pattern[:-1]).mean())


def note_length_histogram(notes: np.ndarray, tpq: int) -> np.ndarray:
    if not len(notes):
        return np.zeros(len(NOTE_LENGTH_BINS))
    beats = np.maximum(notes[:, DURATION] / tpq, 1e-3)
    idx = np.abs(np.log(beats)[:, None] - np.log(np.array(NOTE_LENGTH_BINS))[None, :]).argmin(axis=1)
    h = np.bincount(idx, minlength=len(NOTE_LENGTH_BINS)).astype(np.float64)
    return h / h.sum()


def voice_lines(piece: Piece) -> list[np.ndarray]:
    """Per track, the melodic line as ``(n, 3)`` [onset, duration, pitch], the highest pitch per onset."""
    notes = piece.notes
    lines = []
    for t in np.unique(notes[:, TRACK]) if len(notes) else []:
        tn = notes[notes[:, TRACK] == t]
        order = np.lexsort((-tn[:, PITCH], tn[:, ONSET]))
        tn = tn[order]
        first = np.ones(len(tn), dtype=bool)
        first[1:] = tn[1:, ONSET] != tn[:-1, ONSET]
        lines.append(tn[first][:, [ONSET, DURATION, PITCH]])
    return lines


def interval_histogram(piece: Piece) -> np.ndarray:
    """Melodic intervals inside each track, clipped to -12..+12 semitones (25 bins)."""
    h = np.zeros(2 * INTERVAL_MAX + 1)
    for line in voice_lines(piece):
        iv = np.clip(np.diff(line[:, 2]), -INTERVAL_MAX, INTERVAL_MAX) + INTERVAL_MAX
        h += np.bincount(iv, minlength=len(h))
    return h / h.sum() if h.sum() else h


def descriptors(piece: Piece) -> dict[str, float | np.ndarray]:
    """Every descriptor of one piece (scalars as floats, histograms as arrays summing to 1)."""
    notes, tpq = piece.notes, piece.tpq
    num, den = piece.time_signature
    pitches = notes[:, PITCH]
    return {
        "pitch_class_entropy": pitch_class_entropy(pitches),
        "scale_consistency": scale_consistency(pitches),
        "pitch_range": float(pitches.max() - pitches.min()) if len(pitches) else 0.0,
        "polyphony": polyphony(notes, tpq),
        "empty_beat_rate": empty_beat_rate(notes, tpq),
        "groove_consistency": groove_consistency(notes, tpq, num * 4 / den),
        "note_length_hist": note_length_histogram(notes, tpq),
        "interval_hist": interval_histogram(piece),
    }


# ---------------------------------------------------------------------------------- set distances


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between two 1-D empirical distributions (area between their CDFs)."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if not len(a) or not len(b):
        return float("nan")
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(a, grid[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, grid[:-1], side="right") / len(b)
    return float((np.abs(cdf_a - cdf_b) * np.diff(grid)).sum())


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = identical, 1 = disjoint)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    p, q = p / max(p.sum(), 1e-12), q / max(q.sum(), 1e-12)
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float((x[mask] * np.log2(x[mask] / m[mask])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def descriptor_table(pieces: list[Piece]) -> dict[str, np.ndarray]:
    """Descriptors of many pieces: scalars as ``(n,)`` arrays, histograms as ``(n, bins)``."""
    rows = [descriptors(p) for p in pieces]
    return {k: np.array([r[k] for r in rows]) for k in (*SCALAR_DESCRIPTORS, *HISTOGRAM_DESCRIPTORS)}


def descriptor_distances(reference: list[Piece], candidate: list[Piece]) -> dict[str, float]:
    """Per descriptor, how far ``candidate`` pieces are from ``reference`` (see module docstring); plus ``mean``."""
    ref, cand = descriptor_table(reference), descriptor_table(candidate)
    out = {}
    for k in SCALAR_DESCRIPTORS:
        scale = _spread(ref[k])
        out[k] = wasserstein1(ref[k], cand[k]) / scale
    for k in HISTOGRAM_DESCRIPTORS:
        out[k] = js_divergence(ref[k].mean(axis=0), cand[k].mean(axis=0))
    out["mean"] = float(np.mean([out[k] for k in (*SCALAR_DESCRIPTORS, *HISTOGRAM_DESCRIPTORS)]))
    return out


def _spread(values: np.ndarray) -> float:
    """The reference's standard deviation; a constant reference (all chorales fully diatonic) uses |mean| or 1."""
    std, mean = float(values.std()), float(np.abs(values).mean())
    return std if std > 1e-9 + 1e-6 * mean else (mean or 1.0)


def descriptor_report(train: list[Piece], heldout: list[Piece], samples: list[Piece]) -> dict[str, dict]:
    """``{descriptor: {"floor": train vs held-out, "samples": train vs samples}}``: the panel to show."""
    floor, got = descriptor_distances(train, heldout), descriptor_distances(train, samples)
    return {k: {"floor": floor[k], "samples": got[k]} for k in floor}


# Corruptions of real pieces: sanity checks that a distance moves the right way (and handy for a panel).


def _with_notes(piece: Piece, notes: np.ndarray, tag: str) -> Piece:
    from .piece import build_score

    tracks = []
    for t, track in enumerate(piece.score.tracks):
        tn = notes[notes[:, TRACK] == t]
        rows = [(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in tn]
        tracks.append((str(track.name), int(track.program), rows))
    score = build_score(tracks, piece.tpq, piece.time_signature, piece.key, piece.tempo)
    return Piece(f"{piece.id}~{tag}", score, piece.source, piece.style, dict(piece.meta))


def shuffled_pitches(piece: Piece, seed: int = 0) -> Piece:
    """Pitches permuted among each track's notes: same pitch set and rhythm, melody destroyed."""
    rng = np.random.default_rng(seed)
    notes = piece.notes.copy()
    for t in np.unique(notes[:, TRACK]):
        idx = np.flatnonzero(notes[:, TRACK] == t)
        notes[idx, PITCH] = rng.permutation(notes[idx, PITCH])
    return _with_notes(piece, notes, "shuffled")


def out_of_key(piece: Piece, seed: int = 0, share: float = 0.5) -> Piece:
    """A random ``share`` of notes moved by a tritone or a semitone: range kept, tonality broken."""
    rng = np.random.default_rng(seed)
    notes = piece.notes.copy()
    hit = rng.random(len(notes)) < share
    shift = rng.choice([-6, -1, 1, 6], size=len(notes))
    notes[hit, PITCH] = np.clip(notes[hit, PITCH] + shift[hit], 0, 127)
    return _with_notes(piece, notes, "out-of-key")


def random_timing(piece: Piece, seed: int = 0) -> Piece:
    """Onsets drawn uniformly over the piece's span and durations scaled randomly: the grid is gone."""
    rng = np.random.default_rng(seed)
    notes = piece.notes.copy()
    span = int((notes[:, ONSET] + notes[:, DURATION]).max())
    notes[:, ONSET] = rng.integers(0, span, size=len(notes))
    notes[:, DURATION] = np.maximum(1, (notes[:, DURATION] * rng.uniform(0.3, 2.0, size=len(notes))).astype(int))
    return _with_notes(piece, notes, "random-timing")


# --------------------------------------------------------------------------------- n-gram baselines


class KneserNey:
    """Interpolated Kneser-Ney n-gram model over token ids (fixed discount), with a uniform floor."""

    def __init__(self, order: int, vocab_size: int, discount: float = 0.75) -> None:
        self.order, self.vocab_size, self.d = order, vocab_size, discount
        # level n (1..order): context tuple (len n-1) -> Counter(next id); top level raw, lower continuation
        self.counts: list[dict[tuple, Counter]] = [defaultdict(Counter) for _ in range(order + 1)]
        self.totals: list[dict[tuple, int]] = []

    def fit(self, seqs: list[np.ndarray]) -> KneserNey:
        n = self.order
        top: Counter = Counter()
        for seq in seqs:
            s = [-1] * (n - 1) + [int(x) for x in seq]
            top.update(tuple(s[i : i + n]) for i in range(len(s) - n + 1))
        for gram, c in top.items():
            self.counts[n][gram[:-1]][gram[-1]] += c
        grams = set(top)
        for level in range(n - 1, 0, -1):  # continuation counts: distinct left extensions
            lower = set()
            for gram in grams:
                short = gram[1:]
                self.counts[level][short[:-1]][short[-1]] += 1
                lower.add(short)
            grams = lower
        self.totals = [{h: sum(c.values()) for h, c in level.items()} for level in self.counts]
        return self

    def prob(self, context: tuple, w: int) -> float:
        p = 1.0 / self.vocab_size
        for level in range(1, self.order + 1):
            h = context[len(context) - (level - 1) :] if level > 1 else ()
            followers = self.counts[level].get(h)
            if not followers:
                continue
            total = self.totals[level][h]
            p = max(followers.get(w, 0) - self.d, 0) / total + self.d * len(followers) / total * p
        return p

    def nll(self, seqs: list[np.ndarray]) -> float:
        """Mean negative log-likelihood in nats per token (every token after the padded context)."""
        total, n = 0.0, 0
        for seq in seqs:
            s = [-1] * (self.order - 1) + [int(x) for x in seq]
            for i in range(self.order - 1, len(s)):
                total -= math.log(self.prob(tuple(s[i - self.order + 1 : i]), s[i]))
                n += 1
        return total / max(n, 1)


def unigram_nll(train: list[np.ndarray], val: list[np.ndarray], vocab_size: int, k: float = 1.0) -> float:
    """Add-k unigram, nats/token on ``val``."""
    counts = np.bincount(np.concatenate(train).astype(np.int64), minlength=vocab_size).astype(float) + k
    logp = np.log(counts / counts.sum())
    ids = np.concatenate(val).astype(np.int64)
    return float(-logp[ids].mean())


def ngram_baselines(
    train: list[np.ndarray], val: list[np.ndarray], vocab_size: int, orders: tuple[int, ...] = (2, 3, 4)
) -> dict[str, float]:
    """``{"unigram": .., "2-gram": .., ..., "best": min over n-grams, "best_order": n}`` in nats/token.

    ``best`` picks the order on the same validation ids it reports (an optimistic floor for the n-gram
    family, which is the point of a baseline a model must beat).
    """
    out: dict[str, float] = {"unigram": unigram_nll(train, val, vocab_size)}
    for n in orders:
        out[f"{n}-gram"] = KneserNey(n, vocab_size).fit(train).nll(val)
    best = min(orders, key=lambda n: out[f"{n}-gram"])
    out["best"], out["best_order"] = out[f"{best}-gram"], float(best)
    return out


# ------------------------------------------------------------------------------------------ chorales


def _satb_voices(piece: Piece) -> list[str]:
    names = piece.track_names
    return names if all(n in SATB_RANGES for n in names) else list(SATB_RANGES)[: len(names)]


def voice_range_share(piece: Piece) -> dict[str, float]:
    """Per voice (tracks in S, A, T, B order, or named so), the share of its notes inside its SATB range."""
    out = {}
    lines = voice_lines(piece)
    for name, line in zip(_satb_voices(piece), lines, strict=False):
        lo, hi = SATB_RANGES[name]
        out[name] = float(((line[:, 2] >= lo) & (line[:, 2] <= hi)).mean()) if len(line) else 0.0
    return out


def parallel_perfects(piece: Piece) -> dict[str, float]:
    """Parallel fifths and octaves/unisons (consecutive, same direction, both voices move) per 100 beats."""
    lines = voice_lines(piece)
    if len(lines) < 2:
        return {"fifths_per_100_beats": 0.0, "octaves_per_100_beats": 0.0}
    times = np.unique(np.concatenate([line[:, 0] for line in lines]))
    sounding = np.full((len(lines), len(times)), -1, dtype=np.int64)  # pitch sounding at each time, -1 rest
    for v, line in enumerate(lines):
        for onset, dur, pitch in line:
            sounding[v, (times >= onset) & (times < onset + dur)] = pitch
    fifths = octaves = 0
    for a in range(len(lines)):
        for b in range(a + 1, len(lines)):
            pa, pb = sounding[a], sounding[b]
            ok = (pa[:-1] >= 0) & (pb[:-1] >= 0) & (pa[1:] >= 0) & (pb[1:] >= 0)
            ma, mb = pa[1:] - pa[:-1], pb[1:] - pb[:-1]
            moving = ok & (ma != 0) & (mb != 0) & (np.sign(ma) == np.sign(mb))
            iv0, iv1 = np.abs(pa[:-1] - pb[:-1]) % 12, np.abs(pa[1:] - pb[1:]) % 12
            fifths += int((moving & (iv0 == 7) & (iv1 == 7)).sum())
            octaves += int((moving & (iv0 == 0) & (iv1 == 0)).sum())
    beats = max(piece.beats, 1e-9)
    return {"fifths_per_100_beats": 100 * fifths / beats, "octaves_per_100_beats": 100 * octaves / beats}


# ------------------------------------------------------------------------------------- memorisation

_MASK = (1 << 64) - 1
_BASE = np.uint64(1_000_003)


def step_sequences(piece: Piece) -> list[np.ndarray]:
    """Per voice, the transposition-invariant steps: code of (interval to previous note, duration)."""
    out = []
    for line in voice_lines(piece):
        if len(line) < 2:
            continue
        iv = np.diff(line[:, 2]) + 128
        dur = np.minimum(line[1:, 1] * 48 // piece.tpq, 4095)  # duration on a 48-per-beat grid
        out.append((iv * 4096 + dur + 1).astype(np.uint64))
    return out


def _window_hashes(seq: np.ndarray, length: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(seq) + 1, dtype=np.uint64)
        for i, x in enumerate(seq):
            prefix[i + 1] = prefix[i] * _BASE + x
        power = np.uint64(pow(int(_BASE), length, 1 << 64))
        return prefix[length:] - prefix[: len(seq) - length + 1] * power


class TrainingIndex:
    """Hash sets of every window of the training voices' step sequences, built on demand per length."""

    def __init__(self, train: list[Piece]) -> None:
        self.seqs = [s for p in train for s in step_sequences(p)]
        self._sets: dict[int, set] = {}

    def contains_any(self, windows: np.ndarray, length: int) -> bool:
        if length not in self._sets:
            self._sets[length] = {int(h) for s in self.seqs if len(s) >= length for h in _window_hashes(s, length)}
        return any(int(h) in self._sets[length] for h in windows)

    def longest_span(self, piece: Piece) -> int:
        """Longest run of consecutive steps of ``piece`` (any voice) found verbatim in the training voices."""
        seqs = step_sequences(piece)
        lo, hi = 0, max((len(s) for s in seqs), default=0)
        while lo < hi:  # found(L) implies found(L-1): binary search the largest L found
            mid = (lo + hi + 1) // 2
            if any(len(s) >= mid and self.contains_any(_window_hashes(s, mid), mid) for s in seqs):
                lo = mid
            else:
                hi = mid - 1
        return lo


def memorisation(samples: list[Piece], train: list[Piece], heldout: list[Piece] | None = None) -> dict:
    """Longest verbatim spans of samples vs of held-out pieces (the floor: real music shares stock phrases)."""
    index = TrainingIndex(train)
    got = [index.longest_span(p) for p in samples]
    out = {"samples": got, "samples_median": float(np.median(got)) if got else 0.0}
    if heldout is not None:
        floor = [index.longest_span(p) for p in heldout]
        out.update(heldout=floor, heldout_median=float(np.median(floor)) if floor else 0.0)
    return out
