"""One process against two (torchrun, gloo) on this CPU: throughput, and that both train the same weights.

Each family trains the same global batch for the same steps three ways, each in a fresh ``genloop train``
process (so start-up is excluded, and only training time, from ``run.json``, is compared):

- ``1 proc x 2 threads``: one process using both cores through torch's intra-op threads;
- ``1 proc x 1 thread``: one process on one core (what each rank below gets);
- ``2 procs x 1 thread``: ``genloop train --nproc 2`` (DistributedDataParallel over gloo, half the batch each).

On a 2-core machine data parallelism can at best match the 2-thread process: the same two cores do the same
arithmetic, and DDP adds an all-reduce of every gradient per step. What this shows honestly is the overhead
of that all-reduce and how the work splits, not a speed-up; the speed-up is for machines with more cores or
GPUs than one process can use. The weights of the 2-process run are compared with the 1-process run's, beside
the difference between one process on 1 and on 2 threads: both differ only in the order of floating-point sums,
which a GAN's training amplifies over hundreds of steps (the test suite's 50-step comparison is where the
1e-5 bar applies).

    python benchmarks/bench_distributed.py               # ~4 minutes on 2 cores
    python benchmarks/bench_distributed.py --steps 60    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_flags, cpu_name  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
FAMILIES = {
    # nanoGPT's small CPU configuration of shakespeare_char (batch 12 splits evenly over 2 processes)
    "gpt": [
        "model.n_layer=4",
        "model.n_head=4",
        "model.n_embd=128",
        "model.block_size=64",
        "train.batch_size=12",
        "train.lr=1e-3",
    ],
    # DCGAN on digits at 32 px, batch 64 (two optimizers, batch norm synced across ranks)
    "dcgan": ["data.image_size=32", "train.batch_size=64"],
    # DDPM on digits at 16 px, batch 32
    "ddpm": ["data.image_size=16", "train.batch_size=32", "model.width=32"],
}
COMMON = ["train.precision=fp32", "train.sample_every=0", "train.tensorboard=false", "train.log_every=20"]


def train(family: str, steps: int, threads: int, nproc: int, runs: Path, env: dict[str, str]) -> dict:
    data = ["--data", str(SHAKESPEARE)] if family == "gpt" and SHAKESPEARE.is_file() else []
    sets = [a for s in [*FAMILIES[family], *COMMON, f"train.threads={threads}"] for a in ("--set", s)]
    cmd = [sys.executable, "-m", "genloop", "train", family, *data, "--steps", str(steps), *sets]
    cmd += ["--runs-dir", str(runs), "--quiet", *(["--nproc", str(nproc)] if nproc > 1 else [])]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    run_id = done.stdout.strip().splitlines()[-1]
    info = json.loads((runs / run_id / "run.json").read_text())
    unit = "tokens_per_s" if "tokens_per_s" in info["timings"] else "images_per_s"
    return {"run": run_id, "unit": unit, "per_s": info["timings"][unit], "seconds": info["timings"]["train_seconds"]}


def relative_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    keys = [k for k in x if x[k].is_floating_point()]
    num = sum(float((x[k].double() - y[k].double()).pow(2).sum()) for k in keys) ** 0.5
    return num / sum(float(x[k].double().pow(2).sum()) for k in keys) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--families", default="gpt,dcgan,ddpm")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "distributed.json"))
    args = ap.parse_args()
    results: dict = {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "steps": args.steps,
        "precision": "fp32",
        "families": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        env = {**os.environ, "GENLOOP_CACHE_DIR": str(Path(tmp) / "cache"), "OMP_NUM_THREADS": "1"}
        for family in args.families.split(","):
            row = {
                "1proc_2threads": train(family, args.steps, 2, 1, runs, env),
                "1proc_1thread": train(family, args.steps, 1, 1, runs, env),
                "2procs_1thread": train(family, args.steps, 1, 2, runs, env),
            }
            weights = [runs / row[k]["run"] / "model.safetensors" for k in ("1proc_1thread", "2procs_1thread")]
            row["weights_relative_difference_1_vs_2_procs"] = relative_difference(*weights)
            # the yardstick: one process on 1 vs 2 threads differs only in the order of float sums too
            threads = [runs / row[k]["run"] / "model.safetensors" for k in ("1proc_1thread", "1proc_2threads")]
            row["weights_relative_difference_1_vs_2_threads"] = relative_difference(*threads)
            base = row["1proc_2threads"]["per_s"]
            row["ratio_2procs_vs_1proc_2threads"] = row["2procs_1thread"]["per_s"] / base
            row["ratio_2procs_vs_1proc_1thread"] = row["2procs_1thread"]["per_s"] / row["1proc_1thread"]["per_s"]
            results["families"][family] = row
            print(
                f"{family:6s} {row['1proc_2threads']['unit']:13s} 1x2t {base:9.0f}  "
                f"1x1t {row['1proc_1thread']['per_s']:9.0f}  2x1t {row['2procs_1thread']['per_s']:9.0f}  "
                f"2procs/1x2t {row['ratio_2procs_vs_1proc_2threads']:.2f}  "
                f"2procs/1x1t {row['ratio_2procs_vs_1proc_1thread']:.2f}  "
                f"weights 1 vs 2 procs {row['weights_relative_difference_1_vs_2_procs']:.1e} "
                f"(1 vs 2 threads {row['weights_relative_difference_1_vs_2_threads']:.1e})",
                flush=True,
            )
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
