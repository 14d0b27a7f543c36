"""Linear inverse problems with a DDPM prior (DDRM) against simple interpolation on held-out digits.

Trains a small DDPM on the built-in digits (or reuses a run with --run), then restores held-out test
images degraded by a known operator, and reports the mean PSNR (dB, images in [-1, 1]: peak-to-peak 2):

- upscale x2 / x4: block-averaged, then quantised to 8 bits like a saved low-resolution image; DDRM
  (sigma_y = 0; and DPS at x2) vs bicubic and nearest-neighbour upsampling of the same low-resolution input;
- denoise sigma = 0.2: DDRM vs the noisy input itself;
- deblur (Gaussian, sigma 1 px, noise 0.02): DDRM vs the blurred input itself.

The digits are 8x8 images; at a larger --image-size they are bicubic enlargements of those, so x2 at
16 px asks for detail the data never had (a prior that learned the enlargement recovers it almost
exactly). --image-size 8 measures on the digits' own pixels.

A quick check, not the product's evaluation (that is ``genloop eval --task ...``):

    nice -n 19 python benchmarks/bench_inverse.py                       # ~17 minutes on 2 busy cores
    nice -n 19 python benchmarks/bench_inverse.py --image-size 8 --time-budget 600   # the digits' own 8 px
    nice -n 19 python benchmarks/bench_inverse.py --run RUN_ID --runs-dir DIR   # score an existing run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import genloop
from genloop.data import DataConfig, load_dataset
from genloop.generation.editing.degradations import Downsample, GaussianBlur, Identity, LinearOperator
from genloop.generation.editing.inverse import ddrm, dps

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name  # noqa: E402


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a.clamp(-1, 1) - b) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(4 / mse)).mean())


def quantise(y: torch.Tensor) -> torch.Tensor:
    """Round to the 256 levels of an 8-bit image, as a saved low-resolution input would be."""
    return torch.round((y.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="score this DDPM run instead of training one")
    ap.add_argument("--runs-dir", type=Path, default=None, help="the run store (default: a temp dir)")
    ap.add_argument("--time-budget", type=float, default=900.0, help="training seconds")
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--n", type=int, default=64, help="held-out test images")
    ap.add_argument("--steps", type=int, default=20, help="DDRM steps (model calls)")
    ap.add_argument("--eta", type=float, default=0.85, help="DDRM's eta (eta_b stays 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default: results/inverse_digits<image size>.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="genloop-bench-inverse-"))
    run_id = args.run
    if run_id is None:
        overrides = [
            f"data.image_size={args.image_size}",
            "model.width=16",
            "model.channel_mults=[1,2]",
            "model.attention_resolutions=[]",
            "train.batch_size=32",
            "train.lr=1e-3",
            "train.warmup_steps=100",
            "train.ema_decay=0.995",
            "train.precision=fp32",
            "train.threads=1",  # on a busy machine, more threads are slower
            "train.tensorboard=false",
            "train.sample_every=0",
            "train.log_every=100",
        ]
        t0 = time.time()
        run = genloop.train(
            "ddpm", data="digits", overrides=overrides, time_budget=args.time_budget, runs_dir=runs_dir, progress=False
        )
        run_id, train_s = run.id, time.time() - t0
        print(f"trained {run_id} in {train_s:.0f} s", flush=True)
    system = genloop.load(run_id, runs_dir=runs_dir).system
    size = system.spec.image_size
    x = load_dataset(DataConfig(name="digits", image_size=size)).float_images("test")[: args.n]

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(args.seed + i) for i in range(len(x))]

    rows = []

    def record(task: str, method: str, out: torch.Tensor, seconds: float | None = None) -> None:
        row = {"task": task, "method": method, "psnr_db": round(psnr(out, x), 2)}
        if seconds is not None:
            row["seconds_per_image"] = round(seconds / len(x), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)

    def restore(task: str, y: torch.Tensor, op: LinearOperator, sigma_y: float) -> None:
        t = time.time()
        out = ddrm(system, gens(), y, op, sigma_y, steps=args.steps, eta=args.eta)
        record(task, "ddrm", out, time.time() - t)

    for scale in (2, 4):
        op = Downsample(scale)
        low = quantise(op.H(x))
        restore(f"upscale x{scale}", low, op, 0.0)
        if scale == 2:  # DPS, the gradient-guided alternative: 100 steps (~3 model-call costs each), zeta 1
            t = time.time()
            record("upscale x2", "dps 100 steps", dps(system, gens(), low, op, steps=100), time.time() - t)
        record(f"upscale x{scale}", "bicubic", F.interpolate(low, scale_factor=scale, mode="bicubic"))
        record(f"upscale x{scale}", "nearest", op.H_pinv(low))

    noisy = Identity().degrade(x, 0.2, gens())
    restore("denoise sigma 0.2", noisy, Identity(), 0.2)
    record("denoise sigma 0.2", "noisy input", noisy)

    blur = GaussianBlur(1.0)
    blurred = blur.degrade(x, 0.02, gens())
    restore("deblur 1px + 0.02", blurred, blur, 0.02)
    record("deblur 1px + 0.02", "blurred input", blurred)

    out = args.out or Path(__file__).parent / "results" / f"inverse_digits{size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"run": run_id, "train_step": genloop.load(run_id, runs_dir=runs_dir).info.get("step"), "cpu": cpu_name()}
    info.update({"n": len(x), "image_size": size, "ddrm_steps": args.steps, "eta": args.eta, "rows": rows})
    out.write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
