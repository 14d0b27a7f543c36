"""`genloop eval` wall time per family on digits, and the UNet's sampling milliseconds per image at 25 steps.

Each family (vae, dcgan, ddpm) trains for a tiny budget on scikit-learn's digits at 16 px (a few steps: the
speed of evaluation does not depend on how good the model is), then ``genloop.evaluate(run, n=N)`` runs
twice: the first call trains the digits feature net if this cache has none and fills the cache of the real
images' features; the second is what every later evaluation costs. The table gives both wall times, the
sampling share (``sampling_ms_per_image`` from the result) and, for ddpm, the sampler and steps it used
(DDIM at 25 steps: the UNet's sampling cost per image).

    python benchmarks/bench_eval.py                     # -> benchmarks/results/eval_times.json
    python benchmarks/bench_eval.py --n 200 --families vae    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import genloop

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_flags, cpu_name  # noqa: E402

TRAIN = {
    "vae": [],
    "dcgan": [],
    "ddpm": ["model.width=32", "model.channel_mults=[1,2]", "model.attention_resolutions=[]"],
}
COMMON = ["train.sample_every=0", "train.tensorboard=false", "train.eval_every=0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(TRAIN), choices=list(TRAIN))
    parser.add_argument("--n", type=int, default=500, help="samples per evaluation")
    parser.add_argument("--steps", type=int, default=20, help="training steps per family (the tiny budget)")
    parser.add_argument("--ddpm-steps", type=int, default=25, help="sampling steps for ddpm")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_times.json")
    args = parser.parse_args()
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="genloop-bench-eval-"))
    rows = []
    load_before = os.getloadavg()
    for family in args.families:
        t0 = time.perf_counter()
        run = genloop.train(
            family,
            data="digits",
            steps=args.steps,
            progress=False,
            runs_dir=runs_dir,
            overrides=[*COMMON, *TRAIN[family]],
        )
        train_s = time.perf_counter() - t0
        extra = {"sampler": "ddim", "steps": args.ddpm_steps} if family == "ddpm" else {}
        walls, results = [], []
        for _ in range(2):
            t0 = time.perf_counter()
            results.append(genloop.evaluate(run.id, n=args.n, runs_dir=runs_dir, **extra))
            walls.append(time.perf_counter() - t0)
        last = results[-1]
        row = {
            "family": family,
            "run_id": run.id,
            "train_seconds": train_s,
            "eval_seconds_first": walls[0],
            "eval_seconds_cached": walls[1],
            "sampling_ms_per_image": last.get("sampling_ms_per_image"),
            "sampler": last.get("sampler"),
            "sampling_steps": last.get("steps"),
            "fid": last.get("fid"),
            "same_metrics_both_times": {k: results[0].get(k) for k in ("fid", "kid")}
            == {k: last.get(k) for k in ("fid", "kid")},
        }
        rows.append(row)
        print(
            f"{family}: eval {walls[0]:.1f} s first, {walls[1]:.1f} s cached; sampling "
            f"{row['sampling_ms_per_image']} ms/image"
            + (f" ({row['sampler']}, {row['sampling_steps']} steps)" if extra else ""),
            flush=True,
        )
    result = {
        "benchmark": "eval_times",
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "n": args.n,
        "train_steps": args.steps,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print()
    print(f"{cpu_name()} ({', '.join(cpu_flags()) or 'no AVX2'}), torch {torch.__version__}, n={args.n}")
    print("| family | `genloop eval` first (s) | again, cached (s) | sampling ms/image |")
    print("|---|---|---|---|")
    for r in rows:
        how = f" ({r['sampler']}, {r['sampling_steps']} steps)" if r["family"] == "ddpm" else ""
        print(
            f"| {r['family']} | {r['eval_seconds_first']:.1f} | {r['eval_seconds_cached']:.1f} | "
            f"{r['sampling_ms_per_image']}{how} |"
        )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
