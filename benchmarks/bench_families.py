"""Every image family on built-in digits for the same CPU budget, scored with every metric beside its floor.

For each family: train for ``--budget`` seconds (bf16 autocast where the CPU has it), then score
``--n`` samples with ``genloop.evaluate`` (FID, KID, precision/recall, density/coverage, class accuracy
for conditional models, near-copy rate), and for diffusion a steps-vs-FID sweep across samplers with
sampling time per image. Prints a Markdown table for BENCHMARKS.md and writes the raw numbers as JSON.

    python benchmarks/bench_families.py --budget 480                  # ~75 minutes on 2 cores
    python benchmarks/bench_families.py --budget 30 --n 500 --models dcgan ddpm   # a quick look
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

FAMILIES = ["dcgan", "wgan-gp", "cgan", "vae", "beta-vae", "cvae", "ddpm"]
# Per-family settings beyond the defaults. The diffusion model is the class-conditional one (classifier-free
# guidance), so that it is scored on class accuracy like the conditional GAN and VAE.
SETTINGS = {
    "ddpm": ["model.class_conditional=true", "train.lr=4e-4"],
}


def row_of(model: str, run, r: dict) -> dict:
    keys = (
        "fid",
        "fid_floor",
        "kid",
        "kid_floor",
        "precision",
        "precision_floor",
        "recall",
        "recall_floor",
        "density",
        "coverage",
        "class_accuracy",
        "class_accuracy_floor",
        "per_class_fid_mean",
        "per_class_fid_floor_mean",
        "copy_rate",
        "copy_rate_floor",
        "sampling_ms_per_image",
        "sampler",
        "steps",
        "guidance",
        "elbo_nats",
        "iwae_nats",
        "iwae_bits_per_dim",
    )
    timings = run.info["timings"]
    return {
        "model": model,
        "run_id": run.id,
        "train_steps": run.info["step"],
        "train_seconds": timings["train_seconds"],
        "train_images_per_s": timings["images_per_s"],
        "precision_mode": run.info.get("precision"),
        **{k: r[k] for k in keys if k in r},
    }


def fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(rows: list[dict]) -> str:
    head = (
        "| family | steps | train img/s | FID (floor) | × floor | KID (floor) | precision (floor) | recall (floor) "
        "| class acc. (floor) | near-copies (floor) | sampling ms/img |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ca = f"{fmt(r.get('class_accuracy'))} ({fmt(r.get('class_accuracy_floor'))})" if "class_accuracy" in r else "-"
        guidance = " (g=" + format(r["guidance"], "g") + ")" if "guidance" in r else ""
        lines.append(
            f"| {r['model']}{guidance} | {r['train_steps']} "
            f"| {r['train_images_per_s']:.0f} | {r['fid']:.2f} ({r['fid_floor']:.2f}) "
            f"| {r['fid'] / r['fid_floor']:.1f}× "
            f"| {r['kid']:.3f} ({r['kid_floor']:.3f}) | {fmt(r.get('precision'))} ({fmt(r.get('precision_floor'))}) "
            f"| {fmt(r.get('recall'))} ({fmt(r.get('recall_floor'))}) | {ca} "
            f"| {fmt(r.get('copy_rate'))} ({fmt(r.get('copy_rate_floor'))}) | {r['sampling_ms_per_image']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=480.0, help="training seconds per family")
    ap.add_argument("--models", nargs="+", default=FAMILIES)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--n", type=int, default=2000, help="samples scored per run")
    ap.add_argument("--guidance", type=float, nargs="*", default=[2.0], help="extra guidance scales for ddpm")
    ap.add_argument("--sweep-steps", default="5,10,20,50")
    ap.add_argument("--sweep-n", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "families.json")
    ap.add_argument("--runs-dir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    args = ap.parse_args()

    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="genloop-bench-"))
    rows, sweeps = [], {}
    t_start = time.time()
    for model in args.models:
        overrides = [f"data.image_size={args.image_size}", "train.tensorboard=false", *SETTINGS.get(model, [])]
        run = genloop.train(
            model, data="digits", overrides=overrides, time_budget=args.budget, runs_dir=runs_dir, progress=False
        )
        r = genloop.evaluate(run.id, n=args.n, runs_dir=runs_dir)
        rows.append(row_of(model, run, r))
        print(json.dumps(rows[-1]), flush=True)
        if model == "ddpm":
            for g in args.guidance:
                r = genloop.evaluate(run.id, n=args.n, runs_dir=runs_dir, guidance=g)
                rows.append(row_of(model, run, r))
                print(json.dumps(rows[-1]), flush=True)
            steps = [int(s) for s in args.sweep_steps.split(",")]
            sweeps[run.id] = genloop.sweep(
                run.id,
                samplers=("ddim", "dpmpp-2m", "ddpm"),
                steps=steps,
                n=args.sweep_n,
                runs_dir=runs_dir,
                progress=True,
            )
    result = {
        "command": "python benchmarks/bench_families.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in (("budget", args.budget), ("n", args.n))),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "genloop": genloop.__version__,
        "image_size": args.image_size,
        "budget_seconds": args.budget,
        "wall_seconds": round(time.time() - t_start, 1),
        "rows": rows,
        "sweeps": sweeps,
        "runs_dir": str(runs_dir),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(markdown(rows))
    for s in sweeps.values():
        print(f"\nsampler sweep ({s['n']} samples, FID floor {s['fid_floor']:.3f}):")
        print("| sampler | steps | FID | × floor | ms/image |\n|---|---|---|---|---|")
        for p in s["points"]:
            print(
                f"| {p['sampler']} | {p['steps']} | {p['fid']:.3f} | {p['fid'] / s['fid_floor']:.1f}× "
                f"| {p['ms_per_image']:.1f} |"
            )
    print(f"\nraw numbers: {args.out}")


if __name__ == "__main__":
    main()
