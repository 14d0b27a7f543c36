"""music-gpt on the Bach chorales: train for a time budget with the engine, sample, evaluate against floors.

Data: music21's Bach chorales, the fixed seeded split by chorale (0.8/0.1/0.1, seed 0, as
``benchmarks/music_floor.py``), REMI tokens (resolution 8, no velocities), optional transposition of the
training split. Model: :class:`~genloop.systems.music_gpt.MusicGPTSystem` (4 layers, 4 heads, 256 wide;
context 256 here by default: a chorale is ~800 tokens, and a shorter context trains ~1.5x faster on a
CPU). Training: ``genloop.training.Trainer`` on resumable random windows, AdamW (0.9, 0.99), warm-up then
cosine decay over the time budget, clipping at 1, fp32 unless ``--precision`` says otherwise.

Then :func:`~genloop.modalities.music.evaluate.evaluate_music`: validation nats/token and per note beside
the unigram and best Kneser-Ney n-gram on the same tokens, ``--n`` samples of ``--bars`` bars (key, meter
and style drawn by the model) against the held-out chorales beside the training-vs-held-out floor, chorale
rules beside the held-out chorales' own, memorisation. The bars: nats/token at least 20 % below the best
n-gram, and every descriptor distance within 2x its floor.

    python benchmarks/bench_music.py                  # 600 s of training, then ~3-5 min of evaluation
    python benchmarks/bench_music.py --budget 120     # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from genloop.modalities.music.dataset import MusicDataConfig, load_music_dataset, tokenize_dataset
from genloop.modalities.music.evaluate import DESCRIPTOR_NAMES, evaluate_music
from genloop.modalities.music.tokenizer import MusicTokenizer, MusicTokenizerConfig
from genloop.systems.base import DataSpec
from genloop.systems.music_gpt import MusicGPTConfig, MusicGPTSystem, music_batches
from genloop.training import TrainConfig, Trainer
from genloop.training.engine import cpu_has_bf16_matmul, pick_precision

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="at most this many chorales (a quick look)")
    ap.add_argument("--transpose", type=int, default=0, help="training split: shifts in -k..k semitones")
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--n", type=int, default=32, help="samples to generate")
    ap.add_argument("--bars", type=int, default=12, help="bars per sample (8-16)")
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--save", type=Path, default=None, help="also save the trained weights and tokenizer here")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "music.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    ds = load_music_dataset(MusicDataConfig(name="bach", seed=args.seed, limit=args.limit, transpose=args.transpose))
    tok = MusicTokenizer(MusicTokenizerConfig(kind="REMI", styles=["bach"]))
    ids = tokenize_dataset(ds, tok)
    data_s = time.perf_counter() - t0
    n_train_tokens = int(sum(len(a) for a in ids["train"]))
    print(f"data: {len(ds.pieces)} chorales {[len(v) for v in ds.splits.values()]}, {n_train_tokens} training tokens")

    cfg = MusicGPTConfig(block_size=args.block_size, dropout=args.dropout)
    torch.manual_seed(args.seed)
    system = MusicGPTSystem(cfg, DataSpec(vocab_size=tok.vocab_size))
    system.tokenizer = tok
    train_cfg = TrainConfig(
        steps=None,
        time_budget=args.budget,
        batch_size=args.batch_size,
        lr=args.lr,
        betas=[0.9, 0.99],
        weight_decay=0.1,
        schedule="cosine",
        warmup_steps=30,
        grad_clip=1.0,
        ema_decay=None,
        precision=args.precision,
        device="cpu",
        threads=args.threads,
        seed=args.seed,
        log_every=25,
        sample_every=0,
        tensorboard=False,
        select_metric="val_loss",
        checkpoint_every=100_000,
        checkpoint_seconds=1e9,
        keep_checkpoints=0,
    )
    batches = music_batches(ids["train"], args.batch_size, cfg.block_size, seed=args.seed)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(system, batches, train_cfg, Path(run_dir), progress=False)
        fit = trainer.fit()
        log = Path(run_dir) / "metrics.jsonl"
        losses = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    precision = str(trainer.dtype).replace("torch.", "") if trainer.dtype else "fp32"
    print(f"trained {fit.step} steps in {fit.seconds:.0f} s ({fit.units_per_s:.0f} tokens/s, {precision})")

    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
        torch.save(system.state_dict(), args.save / "model.pt")
        tok.save(args.save / "tokenizer")
    t1 = time.perf_counter()
    system.eval()
    info = {"run_id": "bench-music", "model": "music-gpt", "step": fit.step}
    metrics_out = evaluate_music(
        system, ds, n_samples=args.n, seed=args.seed, bars=args.bars, temperature=args.temperature,
        top_p=args.top_p, tokens=ids, info=info,
    )  # fmt: skip
    eval_s = time.perf_counter() - t1

    nll, ngram = metrics_out["val_nll_per_token"], metrics_out["ngram_nll_per_token"]
    nll_pass = nll <= 0.8 * ngram
    descriptors = {}
    for name in (*DESCRIPTOR_NAMES, "descriptor_mean"):
        d, f = metrics_out[f"{name}_dist"], metrics_out[f"{name}_dist_floor"]
        descriptors[name] = {"samples": d, "floor": f, "ratio": d / f if f else None, "within_2x": d <= 2 * f}
    result = {
        "benchmark": "music-gpt on the Bach chorales (REMI), time-budgeted training, then evaluate_music",
        "cpu": cpu_name(),
        "cpu_bf16_matmul": cpu_has_bf16_matmul(),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "auto_precision_here": str(pick_precision("auto", torch.device("cpu")) or "fp32").replace("torch.", ""),
        "data": {
            "pieces": {k: len(v) for k, v in ds.splits.items()},
            "train_tokens": n_train_tokens,
            "vocab_size": tok.vocab_size,
            "transpose": args.transpose,
            "seconds": data_s,
        },
        "model": {**vars(cfg), "params": sum(p.numel() for p in system.parameters())},
        "train": {
            "budget_s": args.budget,
            "steps": fit.step,
            "seconds": fit.seconds,
            "tokens_per_s": fit.units_per_s,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "epochs": fit.step * args.batch_size * cfg.block_size / n_train_tokens,
            "final_train_loss": next((r["loss"] for r in reversed(losses) if "loss" in r), None),
        },
        "generation": {
            "n": args.n,
            "bars": args.bars,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "tokens_per_s": metrics_out["generation_tokens_per_s"],
        },
        "nll": {
            "model_nats_per_token": nll,
            "best_ngram_nats_per_token": ngram,
            "best_ngram_order": metrics_out["ngram_best_order"],
            "unigram_nats_per_token": metrics_out["unigram_nll_per_token"],
            "model_nats_per_note": metrics_out["val_nll_per_note"],
            "best_ngram_nats_per_note": metrics_out["ngram_nll_per_note"],
            "reduction_vs_best_ngram": 1 - nll / ngram,
            "bar_20pct_below_best_ngram": nll_pass,
        },
        "descriptors": descriptors,
        "descriptors_all_within_2x_floor": all(v["within_2x"] for v in descriptors.values()),
        "metrics": metrics_out,
        "eval_seconds": eval_s,
    }
    print(f"nats/token: model {nll:.3f}, best n-gram {ngram:.3f} ({1 - nll / ngram:+.1%} lower); pass={nll_pass}")
    print(f"{'descriptor':24} {'samples':>8} {'floor':>8} {'ratio':>6}")
    for name, v in descriptors.items():
        ratio = f"{v['ratio']:.2f}" if v["ratio"] is not None else "-"
        print(f"{name:24} {v['samples']:8.4f} {v['floor']:8.4f} {ratio:>6} {'ok' if v['within_2x'] else 'OVER'}")
    for k in ("satb_range_share", "parallel_fifths_per_100_beats", "parallel_octaves_per_100_beats"):
        if k in metrics_out:
            print(f"{k}: {metrics_out[k]:.3f} (held-out {metrics_out[k + '_floor']:.3f})")
    print(
        f"memorisation span: {metrics_out['memorisation_longest_span']:.0f} "
        f"(held-out {metrics_out['memorisation_longest_span_floor']:.0f}); "
        f"generation {metrics_out['generation_tokens_per_s']:.0f} tokens/s; eval {eval_s:.0f} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
