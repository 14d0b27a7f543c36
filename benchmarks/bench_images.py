"""Image benchmark: DCGAN and VAE on built-in digits (32 px) for a fixed wall-time budget.

For each model it trains once in plain fp32 and once with bf16 autocast, in one process, one after the
other, then scores n samples with FID / KID / IS against held-out digits, beside the real-data floor.
It prints a Markdown table (for BENCHMARKS.md) and writes the raw numbers as JSON.

    python benchmarks/bench_images.py --budget 150            # ~12 minutes on 2 cores
    python benchmarks/bench_images.py --budget 20 --n 500     # a quick look
    python benchmarks/bench_images.py --steps 900 --models dcgan   # equal steps: bf16's effect on quality alone
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import genloop

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=150.0, help="training seconds per run")
    ap.add_argument("--steps", type=int, default=None, help="train a fixed number of steps instead of a time budget")
    ap.add_argument("--models", nargs="+", default=["dcgan", "vae"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--n", type=int, default=2000, help="samples scored per run")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "images.json")
    ap.add_argument("--runs-dir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    args = ap.parse_args()

    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="genloop-bench-"))
    rows = []
    for model in args.models:
        for precision in args.precisions:
            overrides = [
                f"data.image_size={args.image_size}",
                f"train.precision={precision}",
                "train.tensorboard=false",
                *args.overrides,
            ]
            budget = None if args.steps else args.budget
            run = genloop.train(
                model,
                data="digits",
                overrides=overrides,
                steps=args.steps,
                time_budget=budget,
                runs_dir=runs_dir,
                progress=False,
            )
            pipe = genloop.load(run.id, runs_dir=runs_dir)
            t0 = time.perf_counter()
            pipe(n=256, seed=0)
            sample_ms = (time.perf_counter() - t0) / 256 * 1000
            m = genloop.evaluate(run.id, n=args.n, runs_dir=runs_dir)
            row = {
                "model": model,
                "precision": precision,
                "budget_s": budget,
                "steps": run.info["step"],
                "train_seconds": run.info["timings"]["train_seconds"],
                "images_per_s": run.info["timings"]["images_per_s"],
                "sample_ms_per_image": round(sample_ms, 3),
                **{
                    k: m.get(k)
                    for k in (
                        "fid",
                        "fid_floor",
                        "kid",
                        "kid_floor",
                        "is",
                        "is_real",
                        "elbo_nats",
                        "n_generated",
                        "n_reference",
                        "n_floor",
                    )
                },
                "feature_net_accuracy": m["feature_net"]["accuracy"],
                "run_id": run.id,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    print()
    what = f"{args.steps} steps" if args.steps else f"{args.budget:.0f} s of training"
    print(
        f"{what} per run on digits at {args.image_size} px; "
        f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}\n"
    )
    print(
        "| model | precision | steps | train images/s | FID (floor) | FID / floor | KID (floor) | IS (real) "
        "| ELBO nats | sample ms/img |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        elbo = f"{r['elbo_nats']:.1f}" if r.get("elbo_nats") is not None else ""
        print(
            f"| {r['model']} | {r['precision']} | {r['steps']} | {r['images_per_s']:.0f} "
            f"| {r['fid']:.2f} ({r['fid_floor']:.2f}) | {r['fid'] / r['fid_floor']:.1f}× "
            f"| {r['kid']:.3f} ({r['kid_floor']:.3f}) | {r['is']:.2f} ({r['is_real']:.2f}) "
            f"| {elbo} | {r['sample_ms_per_image']:.2f} |"
        )
    by = {(r["model"], r["precision"]): r for r in rows}
    for model in args.models:
        if (model, "fp32") in by and (model, "bf16") in by:
            a, b = by[(model, "fp32")], by[(model, "bf16")]
            print(
                f"\n{model}: bf16/fp32 speed ratio {b['images_per_s'] / a['images_per_s']:.2f}×, "
                f"FID {a['fid']:.2f} -> {b['fid']:.2f}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "genloop": genloop.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", *__import__("sys").argv]),
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nraw results: {args.out}")


if __name__ == "__main__":
    main()
