"""Reference nets compared, and the metric sanity suite run on each: digits (labelled) and an RGB folder (unlabelled).

Run:  PYTHONPATH=src python benchmarks/bench_metrics_sanity.py  [--out benchmarks/results/metrics_sanity.json]

For digits at 32 px it trains both nets GenLoop can use — the classifier (the default for labelled data) and
the contrastive SimCLR net (the default for unlabelled data, here trained without looking at the labels) —
and reports for each the linear-probe and kNN accuracy on held-out digits (the usual yardstick of
self-supervised features), the augmentation-retrieval top-1 and the sanity table (Spearman ρ per
degradation per metric). For the unlabelled case it builds a folder of 1,000 random 32-px crops of
scikit-learn's two sample photographs (china.jpg, flower.jpg; scikit-image is not installed here), where only
the contrastive net applies and only retrieval can measure it. Nets are trained in a fresh cache, one CPU thread, so the
timings are what a user's first ``genloop eval`` on such data costs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402


def rgb_folder(root: Path, n: int = 1000, size: int = 32, seed: int = 0) -> Path:
    """``n`` random square crops (48-160 px, resized to ``size``) of scikit-learn's two colour sample photos
    (a Chinese temple and a flower; scikit-image, whose photo set is larger, is not installed here)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images)
    rng = np.random.default_rng(seed)
    out = root / "photos"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = photos[i % len(photos)]
        side = int(rng.integers(48, min(161, min(img.shape[:2]))))
        y, x = (int(rng.integers(0, d - side + 1)) for d in img.shape[:2])
        crop = Image.fromarray(img[y : y + side, x : x + side]).resize((size, size), Image.BICUBIC)
        crop.save(out / f"crop_{i:04d}.png")
    return out


def summarise(fe) -> dict:
    s = fe.sanity
    return {
        "id": fe.id,
        "kind": fe.kind,
        "accuracy": round(fe.accuracy, 4),
        "quality": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fe.quality.items()},
        "sanity": {
            "n_reference": s["n_reference"],
            "modes": s["modes"],
            "failures": s["failures"],
            "passed": s["passed"],
            "rho": {d: body["rho"] for d, body in s["degradations"].items()},
            "levels": {d: body["levels"] for d, body in s["degradations"].items()},
            "fid": {d: [round(v, 4) for v in body["values"]["fid"]] for d, body in s["degradations"].items()},
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "metrics_sanity.json"))
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="genloop-sanity-"))
    os.environ["GENLOOP_CACHE_DIR"] = str(tmp / "cache")
    from genloop.data import DataConfig, load_dataset
    from genloop.evaluation.features import get_feature_extractor

    results: dict = {"cpu": cpu_name(), "torch_threads": 1, "image_size": args.size, "nets": {}}
    digits = load_dataset(DataConfig(name="digits", image_size=args.size))
    folder = load_dataset(DataConfig(name=str(rgb_folder(tmp, size=args.size)), image_size=args.size))
    for label, ds, kind in (
        ("digits/classifier", digits, "classifier"),
        ("digits/contrastive", digits, "contrastive"),
        ("rgb-photo-crops/contrastive", folder, "contrastive"),
    ):
        t0 = time.perf_counter()
        fe = get_feature_extractor(ds, kind=kind, progress=True)
        row = summarise(fe)
        row["seconds_train_and_sanity"] = round(time.perf_counter() - t0, 1)
        row["images"] = {k: int(v.numel()) for k, v in ds.splits.items()}
        results["nets"][label] = row
        print(json.dumps({label: row["quality"], "failures": row["sanity"]["failures"]}), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
