"""Privacy-utility of DP-SGD (train.dp) at several epsilons, equal steps: a VAE on the built-in digits (FID), or
with ``--family gpt`` a tiny character-level GPT on a text corpus (validation loss).

Each epsilon trains the same VAE for the same number of steps (epsilon = inf is the ordinary, non-private run:
no clipping, no noise), then ``genloop.evaluate`` scores samples with FID against held-out digits in the
reference network's features, beside the real-data floor, and the ELBO on held-out digits. The issue's bar:
at epsilon 10 the FID stays within 3x the non-private run's.

Sampling (see genloop.training.dp): Poisson samples (train.dp.poisson, the default; results/dp_poisson.json);
results/dp.json and dp_batch256.json were measured before that existed, on GenLoop's shuffled fixed-size batches
(``--set train.dp.poisson=false`` today), whose epsilon is the usual Poisson approximation.

    nice -n 19 python benchmarks/bench_dp.py   # ~12 minutes on 2 busy cores (a DP step is ~2.5x slower)
    nice -n 19 python benchmarks/bench_dp.py --steps 40 --n 300   # a quick look
    nice -n 19 python benchmarks/bench_dp.py --batch-size 256 --steps 50 --out benchmarks/results/dp_batch256.json

The GPT part (``--family gpt``; results/dp_gpt.json) trains the same tiny GPT (2 layers, 64 wide, context 64,
characters) for the same steps at each epsilon on the built-in ``pydoc`` corpus (CPython's help topics; it ships
with Python) or on ``--data FILE``, and scores the validation loss (nats per character) of ``genloop eval``. The
privacy unit is one training window of ``block_size`` characters, so n is ~400,000 windows and q = batch / n is
small: the noise the target epsilon needs is small too.

    nice -n 19 python benchmarks/bench_dp.py --family gpt   # ~15 minutes on one thread
    nice -n 19 python benchmarks/bench_dp.py --family gpt --data /work/shared/data/tinyshakespeare.txt

DP-SGD's noise on the mean gradient is noise_multiplier * max_grad_norm / batch_size per coordinate, so larger
batches help it more than they help the non-private run (results/dp_batch256.json beside results/dp.json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import genloop

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_flags, cpu_name  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["vae", "gpt"], default="vae", help="vae on digits, or a tiny GPT on text")
    ap.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 4.0, 10.0, math.inf])
    ap.add_argument("--steps", type=int, default=None, help="training steps of every run (vae 100, gpt 600)")
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--n", type=int, default=None, help="samples drawn per run by genloop eval (vae 500, gpt 20)")
    ap.add_argument("--data", default="pydoc", help="gpt: the text corpus (a built-in name or a file)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (vae 2, gpt 1)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    ap.add_argument(
        "--clip-only", action="store_true", help="gpt: add a run with per-example clipping and no noise (sigma 0)"
    )
    ap.add_argument("--out", type=Path, default=None, help="default: results/dp.json, or results/dp_gpt.json")
    ap.add_argument("--runs-dir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    args = ap.parse_args()
    results = Path(__file__).parent / "results"
    if args.family == "gpt":
        gpt_part(args, args.out or results / "dp_gpt.json")
        return
    args.steps = args.steps or 100
    args.n = args.n or 500
    args.threads = args.threads or 2
    args.out = args.out or results / "dp.json"

    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="genloop-bench-dp-"))
    rows = []
    for eps in args.epsilons:
        private = math.isfinite(eps)
        overrides = [
            f"data.image_size={args.image_size}",
            f"train.batch_size={args.batch_size}",
            "train.precision=fp32",
            "train.tensorboard=false",
            "train.sample_every=0",
            f"train.threads={args.threads}",
            *([f"train.dp.epsilon={eps}", f"train.dp.max_grad_norm={args.max_grad_norm}"] if private else []),
            *args.overrides,
        ]
        t0 = time.perf_counter()
        run = genloop.train(
            "vae", data="digits", overrides=overrides, steps=args.steps, runs_dir=runs_dir, progress=False
        )
        wall = time.perf_counter() - t0
        m = genloop.evaluate(run.id, n=args.n, runs_dir=runs_dir)
        dp = run.info.get("dp") or {}
        row = {
            "epsilon_target": eps if private else "inf",
            "epsilon_spent": dp.get("epsilon") if private else "inf",
            "delta": dp.get("delta"),
            "noise_multiplier": dp.get("noise_multiplier", 0.0),
            "max_grad_norm": args.max_grad_norm if private else None,
            "sample_rate": dp.get("sample_rate"),
            "sampling": dp.get("sampling"),
            "steps": run.info["step"],
            "train_seconds": run.info["timings"]["train_seconds"],
            "images_per_s": run.info["timings"]["images_per_s"],
            "wall_seconds": round(wall, 1),
            **{k: m.get(k) for k in ("fid", "fid_floor", "kid", "kid_floor", "elbo_nats", "n_generated")},
            "run_id": run.id,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    base = next((r["fid"] for r in rows if r["epsilon_target"] == "inf"), None)
    for r in rows:
        r["fid_ratio_vs_nonprivate"] = r["fid"] / base if base else None
    at10 = next((r for r in rows if r["epsilon_target"] == 10.0), None)
    bar = {"rule": "FID at epsilon 10 <= 3 x the non-private FID"}
    if at10 is not None and base:
        bar.update(ratio=at10["fid"] / base, passed=at10["fid"] <= 3 * base)
    out = {
        "meta": {
            "cpu": cpu_name(),
            "cpu_flags": cpu_flags(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "genloop": genloop.__version__,
            "opacus": _opacus_version(),
            "date": time.strftime("%Y-%m-%d"),
            "command": "python " + " ".join(sys.argv),
            "model": "vae (family defaults), digits, fp32, equal steps; inf = no DP",
            "sampling": next((r["sampling"] for r in rows if r["sampling"]), None),  # train.dp.poisson decides
        },
        "bar": bar,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print()
    print("| epsilon | sigma | FID (floor) | FID / non-private | ELBO (nats) | img/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        eps = r["epsilon_spent"] if r["epsilon_spent"] == "inf" else f"{r['epsilon_spent']:.2f}"
        print(
            f"| {eps} | {r['noise_multiplier']:.3g} | {r['fid']:.2f} ({r['fid_floor']:.2f}) | "
            f"{r['fid_ratio_vs_nonprivate']:.2f} | {r['elbo_nats']} | {r['images_per_s']} |"
        )
    print(f"\nbar: {bar}")


# the tiny GPT of the GPT part: small enough that four runs with per-example gradients take ~15 min on one thread
GPT_MODEL = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.block_size=64"]


def gpt_part(args: argparse.Namespace, out_path: Path) -> None:
    """Validation loss of the same tiny GPT at each epsilon, equal steps (inf: the family's ordinary recipe)."""
    steps, n_samples = args.steps or 600, args.n or 20
    threads = args.threads or 1
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="genloop-bench-dp-gpt-"))
    rows = []
    # (target epsilon, noise multiplier): the epsilons, then optionally clipping alone (sigma 0: epsilon is inf)
    plan = [(eps, None) for eps in args.epsilons] + ([(math.inf, 0.0)] if args.clip_only else [])
    for eps, sigma in plan:
        private = math.isfinite(eps)
        dp_set = [f"train.dp.epsilon={eps}"] if private else []
        if sigma is not None:
            dp_set = [f"train.dp.noise_multiplier={sigma}"]
        overrides = [
            *GPT_MODEL,
            "data.tokenizer=char",
            f"train.batch_size={args.batch_size}",
            "train.precision=fp32",
            "train.tensorboard=false",
            f"train.threads={threads}",
            "train.log_every=50",
            *([*dp_set, f"train.dp.max_grad_norm={args.max_grad_norm}"] if dp_set else []),
            *args.overrides,
        ]
        t0 = time.perf_counter()
        run = genloop.train("gpt", data=args.data, overrides=overrides, steps=steps, runs_dir=runs_dir, progress=False)
        wall = time.perf_counter() - t0
        m = genloop.evaluate(run.id, n=n_samples, runs_dir=runs_dir)
        dp = run.info.get("dp") or {}
        row = {
            "epsilon_target": eps if private else "inf",
            "epsilon_spent": dp.get("epsilon") if private else "inf",
            "delta": dp.get("delta"),
            "noise_multiplier": dp.get("noise_multiplier", 0.0),
            "max_grad_norm": args.max_grad_norm if dp_set else None,
            "grad_clip": None if dp_set else run.config["train"].get("grad_clip"),
            "clip_only": sigma == 0.0,
            "sampling": dp.get("sampling"),
            "sample_rate": dp.get("sample_rate"),
            "n_windows": dp.get("n"),
            "steps": run.info["step"],
            "train_seconds": run.info["timings"]["train_seconds"],
            "tokens_per_s": run.info["timings"].get("tokens_per_s"),
            "wall_seconds": round(wall, 1),
            **{k: m.get(k) for k in ("val_loss", "perplexity", "bits_per_char", "distinct_2", "copy_rate")},
            "tokens_scored": m["loss_protocol"]["tokens_scored"],
            "run_id": run.id,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = next((r["val_loss"] for r in rows if r["epsilon_target"] == "inf" and not r["clip_only"]), None)
    for r in rows:
        r["val_loss_minus_nonprivate"] = r["val_loss"] - base if base is not None else None
    out = {
        "meta": {
            "cpu": cpu_name(),
            "cpu_flags": cpu_flags(),
            "threads": threads,
            "torch": torch.__version__,
            "genloop": genloop.__version__,
            "opacus": _opacus_version(),
            "date": time.strftime("%Y-%m-%d"),
            "command": "python " + " ".join(sys.argv),
            "model": f"gpt {' '.join(GPT_MODEL)}, char tokenizer, data {args.data}, fp32, batch {args.batch_size}, "
            f"{steps} steps (the family's cosine schedule); inf = no DP (the family's grad_clip 1)",
            "privacy_unit": "one training window of block_size characters",
            "sampling": next((r["sampling"] for r in rows if r["sampling"]), None),  # train.dp.poisson decides
        },
        "rows": rows,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    print()
    print("| ε (spent) | noise σ | val loss (nats/char) | − non-private | perplexity | train s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        eps = "∞" if r["epsilon_spent"] == "inf" else f"{r['epsilon_target']:g} ({r['epsilon_spent']:.3f})"
        eps += " (clipping only)" if r["clip_only"] else ""
        print(
            f"| {eps} | {r['noise_multiplier']:.3g} | {r['val_loss']:.3f} | "
            f"{_signed(r['val_loss_minus_nonprivate'])} | {r['perplexity']:.2f} | {r['train_seconds']:.0f} |"
        )
    print(f"\ncpu: {cpu_name()} flags {cpu_flags()}")


def _signed(x: float | None) -> str:
    return "–" if x is None else f"{x:+.3f}"


def _opacus_version() -> str | None:
    try:
        import opacus

        return str(opacus.__version__)
    except ImportError:
        return None


if __name__ == "__main__":
    main()
