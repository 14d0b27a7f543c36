"""Image quality on small RGB data sets (<= 2,000 images at 64 px): every configuration gets the same CPU time.

For each data set (built by small_rgb_data.py: ``pokemon`` sprites, ``photo-patches`` of bundled photos) it
first trains GenLoop's reference net for unlabelled RGB data (the contrastive SimCLR net ``genloop eval``
uses by default; trained once per data set and cached) and runs the metric sanity suite on it once (the
Spearman ρ of FID against seven degradations). Then for each configuration of ``CONFIGS`` it trains for
``--budget`` seconds (seed 0, ``train.precision=auto``, ``--threads`` threads) and scores ``--n`` samples with
``genloop.evaluate``: FID, KID, precision and recall, each beside its real-data floor (held-out val+test
images as the reference, the same number of training images as the floor).

Writes the numbers to a JSON (merged by data set and configuration into an existing file, so partial reruns
add up) and per data set a PNG with one row of 8 samples per configuration and a row of real training
images; prints a summary table.

    python benchmarks/bench_small_rgb.py --budget 900                       # the benchmark: ~3 h on 2 free cores
    python benchmarks/bench_small_rgb.py --budget 10 --n 100 --limit 200    # smoke test (~15 min, most of it ddpm)
    python benchmarks/bench_small_rgb.py --datasets pokemon --configs dcgan ddpm --budget 600

Costs beyond the budgets: the reference net and its sanity suite, a few minutes per data set on one thread
(once; cached after); scoring ddpm, whose default sampler (dpmpp-2m, 25 steps) runs the UNet 25 times per
sample: tens of minutes for ``--n 1000`` at 64 px. ``--threads`` should not exceed the free cores: on a busy
machine two threads ran DCGAN several times slower than one.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import small_rgb_data  # noqa: E402
from common import cpu_flags, cpu_name  # noqa: E402

DIFFAUG = ["model.augment=color,translation,cutout", "model.ada=true", "data.flip=true"]  # the small-rgb-gan recipe's
# name -> (family, overrides beyond data.image_size=64 and the shared train settings)
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "dcgan": ("dcgan", []),  # what GenLoop trained before: no augmentation at all
    "dcgan+diffaug": ("dcgan", DIFFAUG),
    "resgan": ("resgan", DIFFAUG),
    # the small-rgb-diffusion recipe at width 32 instead of 64: at 64 a CPU step takes ~10 s and a budget of
    # minutes is a few dozen steps; the recipe's width is for budgets of hours (it picks it from 3 h on)
    "ddpm": (
        "ddpm",
        [
            "model.width=32",
            "model.channel_mults=[1,2,2,2]",
            "model.attention_resolutions=[16]",
            "model.prediction_type=v_prediction",
            "model.dropout=0.1",
            "data.flip=true",
            "train.lr=1e-4",
            "train.warmup_steps=200",
        ],
    ),
}
DIFFUSION_STEPS = 10  # dpm-solver++ steps when scoring a diffusion run (25 by default: 2.5x the scoring time)
IMAGE_SIZE = 64
METRICS = ("fid", "kid", "precision", "recall")
RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def reference_net(folder: Path) -> tuple[dict, float]:
    """Train (or load from the cache) the reference net ``genloop eval`` uses for this data, with its sanity
    suite; return its summary and the seconds it took here (0-ish when it was cached)."""
    from genloop.data import DataConfig, load_dataset
    from genloop.evaluation.features import cache_key, get_feature_extractor
    from genloop.paths import cache_dir

    dataset = load_dataset(DataConfig(name=str(folder), image_size=IMAGE_SIZE))
    cached = (cache_dir("features") / f"{cache_key(dataset)}.safetensors").is_file()
    t0 = time.perf_counter()
    # the same call genloop.evaluate makes for features="ref": the default kind (contrastive for unlabelled data)
    # (no per-step progress: 100-200 lines of loss; the caller prints one line before and one after)
    fe = get_feature_extractor(dataset, progress=False)
    seconds = time.perf_counter() - t0
    s = fe.sanity or {}
    rho_fid = {d: body["rho"]["fid"] for d, body in s.get("degradations", {}).items()}
    summary = {
        "id": fe.id,
        "kind": fe.kind,
        "sha256": fe.sha256,
        "accuracy": round(fe.accuracy, 4),
        "quality": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in (fe.quality or {}).items()},
        "sanity_rho_fid": rho_fid,
        "sanity_rho_fid_min": min((v for v in rho_fid.values() if v is not None), default=None),
        "sanity_rho": {d: body["rho"] for d, body in s.get("degradations", {}).items()},
        "sanity_passed": s.get("passed"),
        "sanity_failures": s.get("failures"),
        "sanity_n_reference": s.get("n_reference"),
        "cached": cached,  # True: loaded, so the seconds below are not its training time
        "seconds_train_and_sanity": round(seconds, 1),
        "images": {k: int(v.numel()) for k, v in dataset.splits.items()},
    }
    return summary, seconds


def row_of(name: str, family: str, overrides: list[str], run, m: dict, train_wall: float, eval_wall: float) -> dict:
    timings = run.info.get("timings", {})
    row = {
        "config": name,
        "family": family,
        "overrides": overrides,
        "run_id": run.id,
        "precision_mode": run.info.get("precision"),  # what train.precision=auto chose ("precision" is the metric)
        "steps": run.info.get("step"),
        "train_seconds": timings.get("train_seconds"),
        "images_per_s": timings.get("images_per_s"),
        "train_wall_seconds": round(train_wall, 1),
        "eval_wall_seconds": round(eval_wall, 1),
        "n_generated": m.get("n_generated"),
        "n_reference": m.get("n_reference"),
        "n_floor": m.get("n_floor"),
        "sampler": m.get("sampler"),
        "sampling_steps": m.get("steps"),
        "sampling_ms_per_image": m.get("sampling_ms_per_image"),
    }
    for k in METRICS:
        v, floor = m.get(k), m.get(f"{k}_floor")
        row[k], row[f"{k}_floor"] = v, floor
        # KID's unbiased estimate can fall below 0 at the floor: no ratio then
        row[f"{k}_ratio_to_floor"] = round(v / floor, 4) if v is not None and floor and floor > 0 else None
    row["kid_std"] = m.get("kid_std")
    return row


def save_grid(path: Path, rows: list[tuple[str, torch.Tensor]], title: str, upscale: int = 2) -> None:
    """One labelled row of images (floats in [-1, 1], N x 3 x H x W) per entry."""
    from PIL import Image, ImageDraw, ImageFont

    cell, pad, label_w, title_h = IMAGE_SIZE * upscale, 4, 170, 28
    cols = max(t.shape[0] for _, t in rows)
    width = label_w + cols * (cell + pad) + pad
    height = title_h + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=16)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        font = ImageFont.load_default()
    draw.text((pad, 6), title, fill=(0, 0, 0), font=font)
    for r, (label, imgs) in enumerate(rows):
        y = title_h + r * (cell + pad)
        draw.multiline_text((pad, y + cell // 2 - 10 * (label.count("\n") + 1)), label, fill=(0, 0, 0), font=font)
        arr = ((imgs.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        for c, a in enumerate(arr):
            img = Image.fromarray(a if a.shape[2] == 3 else a[..., 0]).convert("RGB")
            canvas.paste(img.resize((cell, cell), Image.NEAREST), (label_w + c * (cell + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def real_row(folder: Path, k: int = 8, seed: int = 0) -> torch.Tensor:
    from genloop.data import DataConfig, load_dataset

    ds = load_dataset(DataConfig(name=str(folder), image_size=IMAGE_SIZE))
    train = ds.float_images("train")
    pick = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))[:k]
    return train[pick]


def merge(out: Path, meta: dict, datasets: dict) -> dict:
    """Add this invocation's results to ``out`` (keyed by data set, then configuration) and write it."""
    try:
        old = json.loads(out.read_text())
    except (OSError, ValueError):
        old = {}
    merged = {"meta": meta, "datasets": old.get("datasets", {})}
    for ds, body in datasets.items():
        slot = merged["datasets"].setdefault(ds, {"configs": {}})
        old_ref, new_ref = slot.get("reference_net") or {}, body.get("reference_net") or {}
        keep_ref = new_ref.get("cached") and old_ref.get("sha256") == new_ref.get("sha256")
        # a net loaded from the cache keeps the entry (and training time) recorded when it was trained
        slot.update({k: v for k, v in body.items() if k != "configs" and not (k == "reference_net" and keep_ref)})
        slot.setdefault("configs", {}).update(body.get("configs", {}))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2, default=str) + "\n")
    return merged


def summary_table(merged: dict) -> None:
    def f(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text when rich is missing
        Console = Table = None  # noqa: N806
    head = ["data set", "config", "dtype", "steps", "img/s", "FID (floor)", "× floor", "KID (floor)"]
    head += ["precision (floor)", "recall (floor)", "ref-net FID ρ min"]
    lines = []
    for ds, body in merged["datasets"].items():
        rho = body.get("reference_net", {}).get("sanity_rho_fid_min")
        for name, r in body.get("configs", {}).items():
            lines.append(
                [
                    ds,
                    name,
                    str(r.get("precision_mode")),
                    str(r.get("steps")),
                    f(r.get("images_per_s"), ".0f"),
                    f"{f(r['fid'], '.2f')} ({f(r['fid_floor'], '.2f')})",
                    f(r.get("fid_ratio_to_floor"), ".1f") + "×",
                    f"{f(r['kid'])} ({f(r['kid_floor'])})",
                    f"{f(r['precision'])} ({f(r['precision_floor'])})",
                    f"{f(r['recall'])} ({f(r['recall_floor'])})",
                    f(rho, ".2f"),
                ]
            )
    if Table is None:
        print(" | ".join(head))
        for line in lines:
            print(" | ".join(line))
        return
    table = Table(title=f"small RGB data sets, {merged['meta']['budget_seconds']:g} s of training per configuration")
    for h in head:
        table.add_column(h, justify="left" if h in ("data set", "config", "dtype") else "right")
    for line in lines:
        table.add_row(*line)
    console = Console()
    console.width = max(console.width, 170)  # the whole table, also when the output is a file or a pipe
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=900.0, help="training seconds per configuration")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for training and scoring")
    ap.add_argument("--n", type=int, default=1000, help="samples scored per run")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), help=f"any of: {', '.join(CONFIGS)}")
    ap.add_argument("--datasets", nargs="+", default=list(small_rgb_data.DATASETS))
    ap.add_argument("--limit", type=int, default=None, help="use a seeded random subset of this many images")
    ap.add_argument("--pokesprite", type=Path, default=None, help="a pokesprite checkout (default: the mirror)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="data sets' root (default: GenLoop's cache)")
    ap.add_argument("--out", type=Path, default=RESULTS / "small_rgb.json")
    ap.add_argument("--png-dir", type=Path, default=None, help="where the sample grids go (default: --out's folder)")
    ap.add_argument("--runs-dir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    args = ap.parse_args()
    unknown = [c for c in args.configs if c not in CONFIGS] + [
        d for d in args.datasets if d not in small_rgb_data.DATASETS
    ]
    if unknown:
        ap.error(
            f"unknown: {', '.join(unknown)}; configs: {', '.join(CONFIGS)}; data sets: "
            f"{', '.join(small_rgb_data.DATASETS)}"
        )

    from genloop.systems import models

    torch.set_num_threads(args.threads)
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="genloop-bench-small-rgb-"))
    png_dir = args.png_dir or args.out.parent
    meta = {
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "genloop": genloop.__version__,
        "threads": args.threads,
        "budget_seconds": args.budget,
        "n": args.n,
        "limit": args.limit,
        "image_size": IMAGE_SIZE,
        "runs_dir": str(runs_dir),
    }
    log(
        f"{meta['cpu']} (flags: {', '.join(meta['cpu_flags']) or 'none'}), torch {torch.__version__}, "
        f"{args.threads} threads, {args.budget:g} s per configuration, runs in {runs_dir}"
    )
    t_all = time.perf_counter()
    results: dict = {}
    root = small_rgb_data.data_root(args.cache_dir)
    for ds in args.datasets:
        folder = small_rgb_data.ensure(ds, root, args.pokesprite)
        if args.limit:
            folder = small_rgb_data.subset(folder, args.limit)
        n_images = len(list(folder.glob("*.png")))
        log(
            f"{ds}: {n_images} images in {folder}; reference net and its sanity suite "
            "(trained once per data set and cached; some minutes at 64 px on one thread) ..."
        )
        ref, ref_seconds = reference_net(folder)
        log(
            f"{ds}: reference net {ref['kind']} {ref['id'][:12]}, retrieval/accuracy {ref['accuracy']:.3f}, "
            f"sanity FID ρ {' '.join(f'{d} {r}' for d, r in ref['sanity_rho_fid'].items())} "
            f"(failures: {', '.join(ref['sanity_failures'] or []) or 'none'}), "
            f"{ref_seconds:.0f} s"
        )
        results[ds] = {"folder": str(folder), "images": n_images, "reference_net": ref, "configs": {}}
        for name in args.configs:
            family, extra = CONFIGS[name]
            if family not in models:
                log(f"{ds}/{name}: skipped: model family {family!r} is not registered in this GenLoop")
                continue
            overrides = [
                f"data.image_size={IMAGE_SIZE}",
                "train.tensorboard=false",
                "train.precision=auto",
                f"train.threads={args.threads}",
                # no sample grids during training: they count against the budget, and a 64-image grid of 25
                # diffusion steps costs far more than a GAN's (the grid at the end comes after the clock stops)
                "train.sample_every=0",
                *extra,
            ]
            log(f"{ds}/{name}: training {family} for {args.budget:g} s ({' '.join(extra) or 'defaults'})")
            t0 = time.perf_counter()
            run = genloop.train(
                family,
                data=str(folder),
                overrides=overrides,
                time_budget=args.budget,
                seed=0,
                runs_dir=runs_dir,
                progress=False,
            )
            train_wall = time.perf_counter() - t0
            log(f"{ds}/{name}: {run.info.get('step')} steps ({run.info.get('precision')}); scoring {args.n} samples")
            t0 = time.perf_counter()
            steps = DIFFUSION_STEPS if family == "ddpm" else None
            m = genloop.evaluate(run.id, n=args.n, runs_dir=runs_dir, steps=steps)
            eval_wall = time.perf_counter() - t0
            row = row_of(name, family, extra, run, m, train_wall, eval_wall)
            row.update(
                {
                    "budget_seconds": args.budget,
                    "threads": args.threads,
                    "cpu_flags": meta["cpu_flags"],
                    "torch": torch.__version__,
                    "date": meta["date"],
                }
            )
            results[ds]["configs"][name] = row
            log(
                f"{ds}/{name}: FID {row['fid']:.3f} (floor {row['fid_floor']:.3f}, {row['fid_ratio_to_floor']:.1f}×) "
                f"KID {row['kid']:.4f} P {row['precision']:.3f} R {row['recall']:.3f} "
                f"[train {train_wall:.0f} s, eval {eval_wall:.0f} s]"
            )
            row["runs_dir"] = str(runs_dir)
            merge(args.out, meta, {ds: results[ds]})  # after every run, so an interrupted benchmark keeps its rows
        merged = merge(args.out, meta, {ds: results[ds]})
        # the grid shows every configuration of the merged file whose run still exists (partial reruns add up)
        grid_rows: list[tuple[str, torch.Tensor]] = []
        done = merged["datasets"][ds]["configs"]
        for name in [c for c in CONFIGS if c in done] + [c for c in done if c not in CONFIGS]:
            row = done[name]
            try:  # the inference weights (the EMA average where the family trains one)
                pipe = genloop.load(row["run_id"], runs_dir=row.get("runs_dir", runs_dir))
            except Exception as e:  # noqa: BLE001 - a run of an earlier invocation may be gone (a temp dir)
                log(f"{ds}/{name}: no samples in the grid (run {row['run_id']} not found: {type(e).__name__})")
                continue
            ratio = row.get("fid_ratio_to_floor")
            label = f"{name}\nFID {ratio:.1f}x floor" if ratio is not None else name
            grid_rows.append((label, pipe(n=8, seed=0).tensors))
        if grid_rows:
            grid_rows.append(("real (train)", real_row(folder)))
            png = png_dir / f"small_rgb_{ds}.png"
            save_grid(png, grid_rows, f"{ds}: {n_images} images, 64 px, {args.budget:g} s per configuration, seed 0")
            log(f"{ds}: samples grid {png}")
    meta["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    merged = merge(args.out, meta, results)
    summary_table(merged)
    log(f"raw numbers: {args.out}")


if __name__ == "__main__":
    main()
