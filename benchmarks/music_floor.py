"""The real-data floors a music model must be read against, on the Bach chorales (music21's corpus).

With a fixed seeded split by chorale (0.8/0.1/0.1, seed 0): n-gram baselines (add-one unigram, Kneser-Ney
2/3/4-grams fitted on training REMI ids) in nats/token on the validation chorales; descriptor distances
train vs validation (the floor a generator's samples are compared with); chorale rules (SATB range share,
parallel fifths/octaves per 100 beats) on real validation chorales; and memorisation spans of validation
chorales against the training set. Prints Markdown and writes JSON to ``--out``.

    python benchmarks/music_floor.py                 # every chorale (~1 min after music21's own cache is warm)
    python benchmarks/music_floor.py --limit 60      # a quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from genloop.modalities.music import metrics
from genloop.modalities.music.dataset import MusicDataConfig, load_music_dataset, tokenize_dataset
from genloop.modalities.music.tokenizer import MusicTokenizer, MusicTokenizerConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="at most this many chorales")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--transpose", type=int, default=0, help="training-split augmentation, semitones")
    ap.add_argument("--bpe", type=int, default=0, help="BPE vocabulary size (0: no BPE)")
    ap.add_argument("--out", default="benchmarks/results/music_floor.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    ds = load_music_dataset(MusicDataConfig("bach", seed=args.seed, limit=args.limit, transpose=args.transpose))
    t_load = time.perf_counter() - t0
    train, val, test = ds.split("train"), ds.split("val"), ds.split("test")
    tok = MusicTokenizer(MusicTokenizerConfig(styles=["bach"]))
    if args.bpe:
        tok.train_bpe(ds.train_pieces(), args.bpe)
    t0 = time.perf_counter()
    ids = tokenize_dataset(ds, tok)
    t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    ngram = metrics.ngram_baselines(ids["train"], ids["val"], tok.vocab_size)
    t_ngram = time.perf_counter() - t0
    floor = metrics.descriptor_distances(train, val)
    floor_test = metrics.descriptor_distances(train, test)
    corrupt = {
        name: metrics.descriptor_distances(train, [f(p, seed=i) for i, p in enumerate(val)])["mean"]
        for name, f in (
            ("shuffled", metrics.shuffled_pitches),
            ("out-of-key", metrics.out_of_key),
            ("random-timing", metrics.random_timing),
        )
    }
    ranges = [metrics.voice_range_share(p) for p in val]
    parallels = [metrics.parallel_perfects(p) for p in val]
    t0 = time.perf_counter()
    memo = metrics.memorisation(val, train)
    t_memo = time.perf_counter() - t0

    n_tokens = {k: int(sum(len(a) for a in v)) for k, v in ids.items()}
    result = {
        "pieces": {k: len(v) for k, v in ds.splits.items()},
        "skipped": len(ds.skipped),
        "vocab_size": tok.vocab_size,
        "tokens": n_tokens,
        "ngram_nats_per_token": ngram,
        "descriptor_floor_train_vs_val": floor,
        "descriptor_floor_train_vs_test": floor_test,
        "corrupted_val_mean_distance": corrupt,
        "val_voice_range_share": {v: float(np.mean([r[v] for r in ranges])) for v in ranges[0]},
        "val_parallels_per_100_beats": {k: float(np.mean([p[k] for p in parallels])) for k in parallels[0]},
        "val_memorisation_longest_span": {"median": memo["samples_median"], "max": int(max(memo["samples"]))},
        "seconds": {"load": t_load, "tokenize": t_tok, "ngram": t_ngram, "memorisation": t_memo},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"Bach chorales: {result['pieces']} pieces (seed {args.seed}), {len(ds.skipped)} skipped; "
        f"REMI vocab {tok.vocab_size}, tokens {n_tokens}"
    )
    print("\n| baseline | val nats/token |\n|---|---|")
    for k in ("unigram", "2-gram", "3-gram", "4-gram"):
        print(f"| {k} | {ngram[k]:.3f} |")
    print(f"| best (order {int(ngram['best_order'])}) | {ngram['best']:.3f} |")
    print("\n| descriptor | floor train vs val | train vs test |\n|---|---|---|")
    for k in (*metrics.SCALAR_DESCRIPTORS, *metrics.HISTOGRAM_DESCRIPTORS, "mean"):
        print(f"| {k} | {floor[k]:.3f} | {floor_test[k]:.3f} |")
    print(
        "\nmean distance of corrupted val chorales (vs floor {:.3f}): {}".format(
            floor["mean"], ", ".join(f"{k} {v:.3f}" for k, v in corrupt.items())
        )
    )
    print("val SATB range share:", {k: round(v, 3) for k, v in result["val_voice_range_share"].items()})
    print("val parallels per 100 beats:", {k: round(v, 2) for k, v in result["val_parallels_per_100_beats"].items()})
    print("val memorisation longest span (steps) vs train:", result["val_memorisation_longest_span"])
    print("seconds:", {k: round(v, 1) for k, v in result["seconds"].items()})


if __name__ == "__main__":
    main()
