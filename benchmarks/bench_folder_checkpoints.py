"""FID over a DCGAN's training checkpoints on an unlabelled RGB folder, scored with the contrastive reference net.

Run:  .venv/bin/python benchmarks/bench_folder_checkpoints.py
      [--stages 20,60,120,250,400,600] [--n 500] [--crops 1000] [--threads 2]
      [--out benchmarks/results/folder_checkpoints.json] [--png benchmarks/results/folder_checkpoints.png]

Issue 14 asked that, on the user's own unlabelled images, FID over training checkpoints fall as the samples
visibly improve (with the old rotation-predictor reference net, a DCGAN that visibly improved from 3 to 15
epochs got a *worse* FID, and grey noise beat another model's blobs). This benchmark checks that offline:

1. It builds an unlabelled folder of ``--crops`` random square crops (48-160 px sides, resized to 32 px) of
   scikit-learn's two colour sample photos (china.jpg, flower.jpg) and matplotlib's grace_hopper.jpg (its
   other sample images are charts or data, scikit-image is not installed).
2. It trains ``dcgan`` on it (image_size 32, batch 64, fp32, ``--threads`` torch threads) in stages
   (``genloop.train`` then ``genloop.resume``, which continues exactly), and after each stage scores the
   run's weights with ``genloop.evaluate(run, n=--n)``: FID, KID, precision, recall, each beside its
   real-data floor, on the contrastive (SimCLR) reference net GenLoop trains for unlabelled data, in a
   fresh cache (so the net's training and sanity suite are part of the cost).
3. Anchors that must score worse than every trained checkpoint: grey noise images, uniform colour noise,
   and the untrained generator (a 1-step run, i.e. the initial weights).
4. It writes the JSON and one figure: FID and its floor over training steps, with an 8-sample grid of each
   checkpoint (the same seeds every time) under the curve.

Measured runtime with the defaults: 751 s in all on a shared 2-core "Intel(R) Xeon(R) Processor" (2 torch
threads; the reference net's training and sanity suite 51 s, DCGAN training about 645 s at ~0.9 step/s,
each evaluation of 500 samples 1-11 s). ``seconds`` in the JSON records it per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_flags, cpu_name  # noqa: E402

HERE = Path(__file__).resolve().parent


def photos() -> list[tuple[str, np.ndarray]]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sk = load_sample_images()
    out = [(Path(f).name, img) for f, img in zip(sk.filenames, sk.images)]
    try:
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            out.append(("grace_hopper.jpg", np.asarray(Image.open(f).convert("RGB"))))
    except Exception as e:  # matplotlib missing, or a build without its sample data
        print(f"matplotlib sample image unavailable ({e}); using scikit-learn's two photos", file=sys.stderr)
    return out


def rgb_folder(root: Path, n: int, size: int = 32, seed: int = 0) -> tuple[Path, list[str]]:
    """``n`` random square crops (48-160 px sides, resized to ``size``) of the sample photos, unlabelled."""
    from PIL import Image

    srcs = photos()
    rng = np.random.default_rng(seed)
    out = root / "photo-crops"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _, img = srcs[i % len(srcs)]
        side = int(rng.integers(48, min(161, min(img.shape[:2]))))
        y, x = (int(rng.integers(0, d - side + 1)) for d in img.shape[:2])
        crop = Image.fromarray(img[y : y + side, x : x + side]).resize((size, size), Image.BICUBIC)
        crop.save(out / f"crop_{i:04d}.png")
    return out, [name for name, _ in srcs]


def headline(m: dict) -> dict:
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
    )
    return {k: round(float(m[k]), 5) for k in keys if k in m}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default="20,60,120,250,400,600", help="cumulative training steps to score")
    ap.add_argument("--n", type=int, default=500, help="samples per evaluation")
    ap.add_argument("--crops", type=int, default=1000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=None, help="GenLoop cache dir (default: a fresh temporary one)")
    ap.add_argument("--out", default=str(HERE / "results" / "folder_checkpoints.json"))
    ap.add_argument("--png", default=str(HERE / "results" / "folder_checkpoints.png"))
    args = ap.parse_args()
    stages = [int(s) for s in args.stages.split(",")]
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="genloop-folder-ckpt-"))
    os.environ["GENLOOP_CACHE_DIR"] = args.cache or str(tmp / "cache")
    torch.set_num_threads(args.threads)

    import genloop
    from genloop.data import DataConfig, load_dataset
    from genloop.evaluation.features import get_feature_extractor
    from genloop.evaluation.suite import evaluate_images

    folder, sources = rgb_folder(tmp, args.crops, args.size)
    runs = tmp / "runs"
    overrides = [
        f"data.image_size={args.size}",
        "data.channels=3",
        "train.batch_size=64",
        "train.precision=fp32",
        "train.device=cpu",
        f"train.threads={args.threads}",
        "train.sample_every=0",
        "train.tensorboard=false",
        "train.log_every=20",
        f"train.checkpoint_every={stages[-1]}",
    ]

    # the reference net: trained (and sanity-checked) once, here explicitly so its cost is measured apart
    t0 = time.perf_counter()
    dataset = load_dataset(DataConfig(name=str(folder), image_size=args.size, channels=3))
    extractor = get_feature_extractor(dataset, progress=True)
    refnet_seconds = time.perf_counter() - t0
    sanity = extractor.sanity or {}
    refnet = {
        "kind": extractor.kind,
        "id": extractor.id,
        "feature_dim": int(extractor.feature_dim),
        "quality": extractor.quality,
        "sanity_passed": sanity.get("passed"),
        "sanity_failures": sanity.get("failures"),
        "sanity_rho": {d: body["rho"] for d, body in sanity.get("degradations", {}).items()},
        "seconds_train_and_sanity": round(refnet_seconds, 1),
    }
    print(json.dumps({"reference_net": refnet}), flush=True)

    grid_seed, grid_n = 12345, 8
    points, grids = [], []

    # anchor: the untrained generator (a 1-step run: EMA warm-up keeps its weights at ~initialisation)
    t0 = time.perf_counter()
    init_run = genloop.train("dcgan", data=str(folder), overrides=overrides, steps=1, runs_dir=runs, progress=False)
    m = genloop.evaluate(init_run.id, n=args.n, runs_dir=runs)
    anchors = {"untrained_generator": {**headline(m), "seconds": round(time.perf_counter() - t0, 1)}}
    init_grid = genloop.load(init_run.id, runs_dir=runs)(n=grid_n, seed=grid_seed).tensors
    print(json.dumps({"untrained_generator": anchors["untrained_generator"]}), flush=True)

    # anchors: noise images scored directly on the same net and reference
    g = torch.Generator().manual_seed(0)
    grey = (0.5 * torch.randn(args.n, 1, args.size, args.size, generator=g)).clamp(-1, 1).expand(-1, 3, -1, -1)
    colour = torch.rand(args.n, 3, args.size, args.size, generator=g) * 2 - 1
    for name, x in (("grey_noise", grey.contiguous()), ("uniform_colour_noise", colour)):
        r = evaluate_images(x, dataset, extractor, metrics=("fid", "kid", "prdc"))
        anchors[name] = headline(r)
        print(json.dumps({name: anchors[name]}), flush=True)

    run = None
    for steps in stages:
        t0 = time.perf_counter()
        if run is None:
            run = genloop.train(
                "dcgan", data=str(folder), overrides=overrides, steps=steps, runs_dir=runs, progress=False
            )
        else:
            run = genloop.resume(run.id, steps=steps, runs_dir=runs, progress=False)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = genloop.evaluate(run.id, n=args.n, runs_dir=runs)
        t_eval = time.perf_counter() - t0
        grids.append(genloop.load(run.id, runs_dir=runs)(n=grid_n, seed=grid_seed).tensors)
        epochs = steps * 64 / dataset.get("train")[0].shape[0]
        row = {
            "steps": int(m["step"]),
            "epochs": round(epochs, 2),
            **headline(m),
            "train_seconds": round(t_train, 1),
            "eval_seconds": round(t_eval, 1),
        }
        points.append(row)
        print(json.dumps(row), flush=True)

    fids = [p["fid"] for p in points]
    worst_anchor = min(a["fid"] for a in anchors.values())
    result = {
        "benchmark": "FID over DCGAN training checkpoints on an unlabelled RGB folder (contrastive reference net)",
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "torch_threads": args.threads,
        "data": {
            "what": f"{args.crops} random square crops (48-160 px sides) resized to {args.size} px",
            "sources": sources,
            "splits": {k: int(v.shape[0]) for k, v in dataset.splits.items()},
        },
        "model": "dcgan (defaults), batch 64, fp32, EMA 0.999 inference weights",
        "n_generated": args.n,
        "reference_net": refnet,
        "anchors": anchors,
        "checkpoints": points,
        "fid_monotone_decreasing": all(b < a for a, b in zip(fids, fids[1:])),
        "every_checkpoint_beats_every_anchor": max(fids) < worst_anchor,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    plot(points, grids, anchors, init_grid, refnet, args.png)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"written to {args.out} and {args.png} in {result['seconds']} s")


def _strip(t: torch.Tensor) -> np.ndarray:
    """(n, 3, S, S) in [-1, 1] -> a 2 x n/2 image grid as an (H, W, 3) array with 1-px white gutters."""
    x = ((t.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    n, s = x.shape[0], x.shape[1]
    cols = (n + 1) // 2
    out = np.ones((2 * s + 1, cols * s + cols - 1, 3))
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (s + 1) : r * (s + 1) + s, c * (s + 1) : c * (s + 1) + s] = x[i]
    return out


def plot(points, grids, anchors, init_grid, refnet, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(points)
    fig = plt.figure(figsize=(2.0 * (k + 1), 5.6), dpi=100)
    gs = fig.add_gridspec(2, k + 1, height_ratios=[2.2, 1.0], hspace=0.45, wspace=0.08)
    ax = fig.add_subplot(gs[0, :])
    steps = [p["steps"] for p in points]
    ax.plot(steps, [p["fid"] for p in points], "o-", color="C0", label="DCGAN checkpoint FID")
    ax.plot(steps, [p["fid_floor"] for p in points], "--", color="C2", label="floor (real train images)")
    colours = {"untrained_generator": "C3", "grey_noise": "C7", "uniform_colour_noise": "C1"}
    for name, a in anchors.items():
        ax.axhline(a["fid"], color=colours.get(name, "k"), lw=0.8, ls=":", label=f"{name.replace('_', ' ')}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training steps (batch 64)")
    ax.set_ylabel("FID (contrastive ref. net)")
    q = refnet.get("quality") or {}
    ax.set_title(
        f"DCGAN on 32-px photo crops: FID by checkpoint (ref. net retrieval top-1 {q.get('retrieval_top1', 0):.2f})",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    ax.grid(alpha=0.3, which="both")
    for i, (p, g) in enumerate(
        [({"steps": 0, "fid": anchors["untrained_generator"]["fid"]}, init_grid)] + list(zip(points, grids))
    ):
        a = fig.add_subplot(gs[1, i])
        a.imshow(_strip(g), interpolation="nearest")
        a.set_axis_off()
        a.set_title(f"step {p['steps']}\nFID {p['fid']:.3g}", fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
