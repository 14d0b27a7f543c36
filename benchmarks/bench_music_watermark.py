"""The MIDI watermark (the generation id's hash in the parity of note velocities;
``genloop.safety.music_watermark``): detection after re-export through symusic and music21, and false positives
on unmarked pieces.

Pieces: the first ``--n`` Bach chorales of music21's bundled corpus, written out as MIDI by music21 (the
"generated-like" input: 4-part, 100-500 notes). Each is marked with its own generation id, then read back
(1) as written, (2) after a symusic load/save, (3) after a music21 parse/write. Reported per version: the
share of pieces whose blind decode gives the exact 32-bit hash *and* passes the blind threshold, and the
share detected against their own id (z >= Z_THRESHOLD, 5). FPR: every unmarked piece scored against ``--ids`` random ids
(``detect``), and blind-decoded. Also the mark's cost: the share of notes whose velocity changed (by 1).

    python benchmarks/bench_music_watermark.py              # 100 chorales (a minute or two)
    python benchmarks/bench_music_watermark.py --n 10       # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_flags, cpu_name  # noqa: E402

from genloop.safety import image_watermark, music_watermark  # noqa: E402

KEY = bytes(range(32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100, help="chorales")
    ap.add_argument("--ids", type=int, default=100, help="random ids each unmarked piece is tested against")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "music_watermark.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from music21 import converter, corpus
    from symusic import Score

    t0 = time.time()
    paths = sorted(corpus.getComposer("bach"), key=str)[: args.n]
    versions = ("as_written", "symusic_round_trip", "music21_round_trip")
    blind = {v: [] for v in versions}
    detected = {v: [] for v in versions}
    z_marked = {v: [] for v in versions}
    null_z, null_blind, changed, notes = [], [], [], []
    skipped = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, path in enumerate(paths):
            src = folder / "src.mid"
            try:
                corpus.parse(path).write("midi", fp=str(src))
            except Exception:  # a corpus file music21 cannot write as MIDI
                skipped += 1
                continue
            data = src.read_bytes()
            score = Score.from_midi(data)
            if sum(len(t.notes) for t in score.tracks) < music_watermark.MIN_NOTES:
                skipped += 1
                continue
            gid = f"chorale-{i}"
            marked = music_watermark.embed(score, gid, KEY)
            before = [n.velocity for t in score.tracks for n in t.notes]
            after = [n.velocity for t in marked.tracks for n in t.notes]
            changed.append(float(np.mean(np.array(before) != np.array(after))))
            notes.append(len(before))
            written = bytes(marked.dumps_midi())
            out = folder / "marked.mid"
            out.write_bytes(written)
            m21 = folder / "m21.mid"
            converter.parse(str(out)).write("midi", fp=str(m21))
            for name, version in zip(
                versions,
                (written, bytes(Score.from_midi(written).dumps_midi()), m21.read_bytes()),
                strict=True,
            ):
                d = music_watermark.decode_full(version, KEY)
                blind[name].append(d.watermarked and d.bits == list(image_watermark.payload_bits(gid)))
                z = music_watermark.score(version, gid, KEY)
                z_marked[name].append(z)
                detected[name].append(z >= music_watermark.Z_THRESHOLD)
            null_blind.append(music_watermark.decode_full(data, KEY).watermarked)
            null_z += [music_watermark.score(data, f"random-{i}-{j}", KEY) for j in range(args.ids)]
    null_z = np.array(null_z)
    result = {
        "benchmark": "music_watermark",
        "method": "velocity parity, keyed by (onset in 1/48 quarters, pitch); 32-bit payload, repetition code",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "pieces": len(notes),
        "skipped": skipped,
        "notes_per_piece": {"min": int(min(notes)), "median": float(np.median(notes)), "max": int(max(notes))},
        "share_of_notes_changed_by_1": round(float(np.mean(changed)), 4),
        "z_threshold": music_watermark.Z_THRESHOLD,
        "detection": {
            v: {
                "blind_decode_rate": round(float(np.mean(blind[v])), 4),
                "detect_rate": round(float(np.mean(detected[v])), 4),
                "z_min": round(float(np.min(z_marked[v])), 2),
            }
            for v in versions
        },
        "null": {
            "detect_trials": int(null_z.size),
            "detect_false_positives": int(np.sum(null_z >= music_watermark.Z_THRESHOLD)),
            "z_max": round(float(null_z.max()), 2),
            "at_z_4": int(np.sum(null_z >= 4.0)),
            "blind_trials": len(null_blind),
            "blind_false_positives": int(np.sum(null_blind)),
        },
        "seconds": round(time.time() - t0, 1),
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
