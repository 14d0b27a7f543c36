"""Inpainting with a trained DDPM run (``genloop.generation.editing``): RePaint and cheaper variants against
classical fills, on held-out images of the run's own data set.

Every held-out test image (up to ``--n``) gets the same centre square masked (side ``round(S * sqrt(--hole))``;
the default ``--hole 0.5``: about half the image). Methods: ``inpaint`` (RePaint, jumps of 2, 5 samples: 121 model
calls at 25 steps), RePaint with the paper's jumps of 10 and 10 samples (205 calls at 25 steps), ``inpaint-fast``
(RePaint on 10 steps, jumps of 2, 3 samples: 30 calls),
``inpaint`` without resampling (``jump_n_sample=1``: ``--steps`` calls), and two classical fills: the mean of the
known pixels and scikit-image's biharmonic inpainting. Reported per method: PSNR in the hole (pixels in [0, 1]),
SSIM of the whole image (scikit-image, 7 px window, or the image side if smaller and odd), the share of images the
data set's reference classifier (GenLoop's reference net, as ``genloop eval`` uses) still gives the original label,
model calls per image and seconds per image (batched, on this machine's CPU).

    python benchmarks/bench_editing.py RUN --runs-dir runs --n 200 --steps 25 --hole 0.25 --grid fills.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_name  # noqa: E402

import genloop  # noqa: E402
from genloop.config import from_dict  # noqa: E402
from genloop.data import DataConfig, load_dataset  # noqa: E402
from genloop.runs import RunStore  # noqa: E402


def psnr_in_hole(a: torch.Tensor, b: torch.Tensor, hole: torch.Tensor) -> float:
    """Mean over images of the PSNR of the hole's pixels, images in [-1, 1] read as [0, 1]."""
    d = ((a - b) / 2) ** 2
    mse = (d * hole).flatten(1).sum(1) / (hole.flatten(1).sum(1) * a.shape[1])
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    from skimage.metrics import structural_similarity

    side = a.shape[-1]
    win = min(7, side if side % 2 else side - 1)
    vals = [
        structural_similarity(x.permute(1, 2, 0).numpy(), y.permute(1, 2, 0).numpy(), data_range=2.0,
                              channel_axis=2, win_size=win)
        for x, y in zip(a, b, strict=True)
    ]  # fmt: skip
    return float(np.mean(vals))


def mean_fill(x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    known = 1 - hole
    mean = (x * known).flatten(2).sum(2) / known.flatten(2).sum(2)
    return torch.where(hole.bool(), mean[:, :, None, None].expand_as(x), x)


def biharmonic(x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    from skimage.restoration import inpaint_biharmonic

    out = [
        torch.from_numpy(
            inpaint_biharmonic(im.permute(1, 2, 0).numpy().astype(np.float64), h[0].numpy().astype(bool),
                               channel_axis=2)
        ).permute(2, 0, 1).float()
        for im, h in zip(x, hole, strict=True)
    ]  # fmt: skip
    return torch.stack(out).clamp(-1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--runs-dir", default=None)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hole", type=float, default=0.5, help="the centre square's share of the image (about)")
    ap.add_argument("--grid", default=None, help="also write a PNG: originals, masked, then each method's fills")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "editing.json"))
    args = ap.parse_args()

    torch.set_num_threads(1)
    run = RunStore(args.runs_dir).get(args.run)
    pipe = genloop.load(args.run, runs_dir=args.runs_dir)
    dataset = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
    x = dataset.float_images("test")[: args.n]
    labels = dataset.get("test")[1]
    labels = None if labels is None else labels[: args.n]
    s = x.shape[-1]
    side = round(s * math.sqrt(args.hole))
    lo = (s - side) // 2
    mask = torch.zeros(s, s)
    mask[lo : lo + side, lo : lo + side] = 1
    hole = mask.expand(x.shape[0], 1, s, s)

    from genloop.evaluation.features import get_feature_extractor

    classifier = get_feature_extractor(dataset) if labels is not None else None

    def score(name: str, fill: torch.Tensor, calls: int | None, seconds: float) -> dict:
        row = {
            "method": name,
            "psnr_hole_db": round(psnr_in_hole(fill, x, hole), 2),
            "ssim": round(ssim(fill, x), 4),
            "model_calls": calls,
            "seconds_per_image": round(seconds / x.shape[0], 4),
        }
        if classifier is not None:
            kept = (classifier.probs(fill).argmax(1) == labels).float().mean()
            row["class_kept"] = round(float(kept), 4)
        print(json.dumps(row), flush=True)
        return row

    rows, fills = [], []
    for name, fn in (("mean fill", mean_fill), ("biharmonic (scikit-image)", biharmonic)):
        t = time.perf_counter()
        out = fn(x, hole)
        rows.append(score(name, out, None, time.perf_counter() - t))
        fills.append(out)
    settings = [
        (f"inpaint, no resampling ({args.steps} steps)", "inpaint", args.steps, {"jump_n_sample": 1}),
        ("inpaint-fast (RePaint: 10 steps, jumps of 2, 3 samples)", "inpaint-fast", None, {}),
        (f"inpaint (RePaint: {args.steps} steps, jumps of 2, 5 samples)", "inpaint", args.steps, {}),
        (
            f"RePaint, the paper's jumps ({args.steps} steps, jumps of 10, 10 samples)",
            "inpaint",
            args.steps,
            {"jump_length": 10, "jump_n_sample": 10},
        ),
    ]
    for name, task, steps, options in settings:
        t = time.perf_counter()
        out = pipe.edit(x, task=task, mask=mask, seed=args.seed, steps=steps, **options)
        rows.append(score(name, out.tensors, out.recipe["model_calls"], time.perf_counter() - t))
        fills.append(out.tensors)
    if args.grid:
        from genloop.data.image_io import make_grid, save_png

        k = 12
        masked = torch.where(hole.bool(), torch.zeros_like(x), x)
        grid = make_grid(torch.cat([x[:k], masked[:k], *[f[:k] for f in fills]]), nrow=k)
        save_png(args.grid, grid, {"rows": ["original", "masked", *[r["method"] for r in rows]]}, upscale=4)
    result = {
        "run": run.id,
        "model": pipe.info["model"],
        "train_step": pipe.info["step"],
        "data": run.config["data"].get("name"),
        "image_size": s,
        "n": int(x.shape[0]),
        "mask": f"centre square {side}x{side} ({side * side / (s * s):.0%} of the image)",
        "steps": args.steps,
        "seed": args.seed,
        "classifier_accuracy": None if classifier is None else classifier.accuracy,
        "cpu": cpu_name(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
