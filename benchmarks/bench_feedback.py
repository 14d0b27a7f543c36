"""The feedback loop measured with a scripted rater: does what people prefer become more common?

An unconditional VAE is trained on built-in digits at 16 px for ``--budget`` seconds. A scripted rater with
a stated preference ("class:7": prefers images the reference classifier calls a 7) rates ``--n-rate``
samples (stars for each, as many A/B choices) into a fresh studio database; a reward model is trained on
those judgments; then each use of it is measured on ``--n-eval`` fresh samples (the same seeds each time):

- best-of-k reranking (k = 4 and 8);
- reward-filtered fine-tuning: the top 5% of 4000 scored samples, mixed 70/30 with real training images,
  400 more steps into a new run;
- checkpoint selection between the parent and the fine-tuned run by mean predicted rating.

Each row gives the preferred-output share (the rater's own yes/no), FID on the reference net beside its
real-data floor (the loop narrows the distribution on purpose, so FID against *all* digits rises), and the
seconds taken. Repeated for ``--seeds`` (rating, reward and evaluation seeds). Writes
``benchmarks/results/feedback.json`` and prints a Markdown table.

    python benchmarks/bench_feedback.py                      # ~5 minutes on 2 cores
    python benchmarks/bench_feedback.py --budget 30 --seeds 0  # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import genloop
from genloop.feedback.optimize import FinetuneConfig
from genloop.feedback.simulate import simulate
from genloop.feedback.store import FeedbackStore

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name  # noqa: E402

ROWS = [
    ("baseline", "no feedback"),
    ("best_of_n", "best-of-4"),
    ("best_of_8", "best-of-8"),
    ("finetune", "reward-filtered fine-tune"),
    ("select", "checkpoint selection"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=120, help="seconds of VAE training")
    ap.add_argument("--rater", default="class:7")
    ap.add_argument("--n-rate", type=int, default=300)
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "feedback.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = Path(tempfile.mkdtemp(prefix="genloop-bench-feedback-"))
    t0 = time.perf_counter()
    run = genloop.train(
        "vae",
        data="digits",
        overrides=[
            "data.image_size=16",
            "train.tensorboard=false",
            "train.sample_every=0",
            f"train.threads={args.threads}",
        ],
        time_budget=args.budget,
        seed=0,
        runs_dir=runs,
        progress=False,
    )
    train_seconds = time.perf_counter() - t0
    print(f"trained {run.id}: {run.info['step']} steps in {train_seconds:.0f} s", file=sys.stderr)
    store = FeedbackStore(runs=runs)
    per_seed = []
    for seed in args.seeds:
        r = simulate(
            run.id,
            args.rater,
            n_rate=args.n_rate,
            n_eval=args.n_eval,
            k=4,
            seed=seed,
            store=store,
            runs_dir=runs,
            out=runs / f"sim_{seed}.json",
            finetune=FinetuneConfig(samples=4000, keep=0.05, real_fraction=0.3, steps=400, seed=seed),
            progress=lambda m, seed=seed: print(f"[seed {seed}] {m}", file=sys.stderr),
        )
        # best-of-8 with the same reward model (a second rerank, same evaluation seeds)
        from genloop.config import from_dict
        from genloop.data import DataConfig, load_dataset
        from genloop.evaluation import evaluate_images, get_feature_extractor
        from genloop.feedback.optimize import best_of_n
        from genloop.feedback.reward import RewardModel
        from genloop.feedback.simulate import make_rater

        reward = RewardModel.load(run.dir / "feedback" / f"reward-{r['job_id']}")
        ds = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
        t = time.perf_counter()
        best = best_of_n(genloop.load(run.id, runs_dir=runs), reward, n=args.n_eval, k=8, seed=r["eval_seed"])
        fid = evaluate_images(best.tensors, ds, get_feature_extractor(ds), seed=seed, metrics=("fid",))
        r["results"]["best_of_8"] = {
            "preferred_share": round(float(make_rater(args.rater, ds).preferred(best.tensors).mean()), 4),
            "fid": round(float(fid["fid"]), 3),
            "fid_floor": round(float(fid["fid_floor"]), 3),
            "k": 8,
            "seconds": round(time.perf_counter() - t, 2),
        }
        per_seed.append(r)
    result = {
        "what": "feedback loop with a scripted rater on digits 16 px (unconditional VAE)",
        "rater": args.rater,
        "preference": per_seed[0]["preference"],
        "run": {"id": run.id, "steps": run.info["step"], "train_seconds": round(train_seconds, 1)},
        "n_rate": args.n_rate,
        "n_pairs": args.n_rate,
        "n_eval": args.n_eval,
        "seeds": args.seeds,
        "finetune": {"samples": 4000, "keep": 0.05, "real_fraction": 0.3, "steps": 400},
        "cpu": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "genloop_version": genloop.__version__,
        "per_seed": [
            {"seed": r["seed"], "reward": r["reward"], "results": r["results"], "seconds": r["seconds"]}
            for r in per_seed
        ],
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    def stat(key: str, field: str) -> str:
        vals = [r["results"][key].get(field) for r in per_seed if r["results"].get(key, {}).get(field) is not None]
        if not vals:
            return "–"
        mean = statistics.mean(vals)
        spread = f" ± {statistics.stdev(vals):.{3 if field == 'preferred_share' else 1}f}" if len(vals) > 1 else ""
        return f"{mean:.3f}{spread}" if field == "preferred_share" else f"{mean:.1f}{spread}"

    acc = [r["reward"]["heldout_pair_accuracy"] for r in per_seed]
    print(
        f"\nRater {args.rater} ({result['preference']}); reward model held-out pairwise accuracy "
        f"{statistics.mean(acc):.3f} (seeds {args.seeds}); "
        f"FID floor {per_seed[0]['results']['baseline']['fid_floor']:.1f}\n"
    )
    print("| use | preferred share | FID | seconds |")
    print("|---|---|---|---|")
    for key, name in ROWS:
        print(
            f"| {name} | {stat(key, 'preferred_share')} | {stat(key, 'fid') if key != 'select' else '(of the pick)'} | "
            f"{stat(key, 'seconds')} |"
        )
    picks = [r["results"]["select"]["picked_truly_best"] for r in per_seed]
    print(
        "\ncheckpoint selection picked the run with the higher true preferred share in "
        f"{sum(map(bool, picks))}/{len(picks)} seeds"
    )
    print(f"wrote {args.out} ({result['total_seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
