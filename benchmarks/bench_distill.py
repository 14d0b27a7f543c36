"""Few-step diffusion by distillation (``genloop train ddpm-distill``): FID against model calls.

A v-prediction DDPM teacher is trained on the built-in digits at 8 px, then distilled run by run, each run one
stage whose parent is the run before it. The first student (``--first`` steps, default 4) imitates
``--substeps`` steps of ``--teacher-sampler`` per step of its own (default: 6 steps of DPM-Solver++ 2M, i.e. the
teacher's 24-step DPM-Solver++ trajectory in 4 jumps); each next student halves the steps of the one before
with two DDIM steps of it as its teacher (Salimans & Ho's progressive distillation), down to 1 step.
``--first 8 --substeps 2 --teacher-sampler ddim`` is the plain halving chain 16 -> 8 -> 4 -> 2 -> 1 of the paper.
Every run is cached under ``--runs-dir`` by its settings, so a rerun only evaluates (delete it to train again).

Scored with ``genloop.evaluate`` (GenLoop's reference network for the data set, the held-out test digits),
``--n`` samples each, the same seeds for every row:

* the teacher with DPM-Solver++ 2M at 25 steps (the yardstick) and at 4, 2 and 1 steps, and with the first
  stage's teacher sampler at its step count (what the first student imitates);
* every student at its own step count, DDIM (η = 0), as it was taught.

The issue's bar: a student's FID within 1.5x the teacher's 25-step DPM-Solver++ at >= 6x fewer model calls
(4 steps or fewer).

    python benchmarks/bench_distill.py --runs-dir /work/benchcache/distill/runs --n 2000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_name  # noqa: E402

import genloop  # noqa: E402
from genloop.runs import RunStore  # noqa: E402

DATA = ["data.image_size=8", "train.sample_every=0"]
TEACHER = [
    "model.width=16",
    "model.channel_mults=[1,2]",
    "model.attention_resolutions=[]",
    "model.prediction_type=v_prediction",
    "train.batch_size=64",
    "train.lr=1e-3",
]


def cached_run(runs_dir: Path, model: str, overrides: list[str], steps: int, seed: int) -> str:
    """The id of a finished run trained with exactly these settings, training it first if there is none."""
    key = hashlib.sha256(json.dumps([model, overrides, steps, seed]).encode()).hexdigest()[:16]
    marker = runs_dir / f"bench-distill-{key}.id"
    if marker.is_file():
        run_id = marker.read_text().strip()
        info = RunStore(runs_dir).get(run_id).info
        if info.get("status") == "finished" and info.get("step") == steps:
            print(f"reusing {model} run {run_id}", flush=True)
            return run_id
    t0 = time.perf_counter()
    run = genloop.train(model, overrides=overrides, steps=steps, seed=seed, runs_dir=runs_dir, progress=False)
    print(f"trained {model} run {run.id} ({steps} steps) in {time.perf_counter() - t0:.0f}s", flush=True)
    marker.write_text(run.id)
    return run.id


def score(runs_dir: Path, run_id: str, sampler: str, steps: int, n: int) -> dict:
    r = genloop.evaluate(run_id, n=n, seed=0, runs_dir=runs_dir, sampler=sampler, steps=steps)
    row = {
        "run": run_id,
        "sampler": sampler,
        "model_calls": steps,
        "fid": r["fid"],
        "fid_floor": r.get("fid_floor"),
        "kid": r.get("kid"),
        "precision": r.get("precision"),
        "recall": r.get("recall"),
        "sampling_ms_per_image": r["sampling_ms_per_image"],
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs-dir", type=Path, default=Path("/work/benchcache/distill/runs"))
    p.add_argument("--teacher-steps", type=int, default=4000, help="DDPM training steps")
    p.add_argument("--stage-steps", type=int, default=1000, help="training steps of each distillation stage")
    p.add_argument("--first", type=int, default=4, help="the first student's steps")
    p.add_argument("--substeps", type=int, default=6, help="teacher steps per student step in the first stage")
    p.add_argument(
        "--teacher-sampler", default="dpmpp-2m", choices=["ddim", "dpmpp-2m"], help="the first stage's teacher"
    )
    p.add_argument("--lr", type=float, default=3e-4, help="distillation learning rate (annealed to 0 in a stage)")
    p.add_argument("--n", type=int, default=2000, help="samples per FID")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "distill.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    args.runs_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    teacher = cached_run(args.runs_dir, "ddpm", [*DATA, *TEACHER], args.teacher_steps, args.seed)
    rows = [score(args.runs_dir, teacher, "dpmpp-2m", 25, args.n)]
    rows += [score(args.runs_dir, teacher, args.teacher_sampler, args.substeps * args.first, args.n)]
    rows += [score(args.runs_dir, teacher, "dpmpp-2m", k, args.n) for k in (4, 2, 1)]
    students: list[tuple[int, str]] = []
    parent, n = teacher, args.first
    while n >= 1:  # one run per stage, each the next one's teacher (and parent)
        stage = [
            *DATA,
            "train.tensorboard=false",
            f"model.teacher={(args.runs_dir / parent).resolve()}",
            f"model.student_steps=[{n}]",
            *(
                [f"model.teacher_substeps={args.substeps}", f"model.teacher_sampler={args.teacher_sampler}"]
                if n == args.first and (args.substeps, args.teacher_sampler) != (2, "ddim")
                else []
            ),
            f"model.stage_steps={args.stage_steps}",
            "train.batch_size=64",
            f"train.lr={args.lr}",
            "train.schedule=linear",  # annealed to 0 within the stage (Salimans & Ho)
        ]
        parent = cached_run(args.runs_dir, "ddpm-distill", stage, args.stage_steps, args.seed)
        students.append((n, parent))
        rows.append({**score(args.runs_dir, parent, "ddim", n, args.n), "student": True})
        n //= 2
    seconds = time.perf_counter() - t0
    yardstick = rows[0]["fid"]
    for row in rows:
        row["vs_teacher_25"] = round(row["fid"] / yardstick, 3)
        row["fewer_calls"] = round(25 / row["model_calls"], 2)
    met = [r for r in rows if r.get("student") and r["fewer_calls"] >= 6 and r["vs_teacher_25"] <= 1.5]
    result = {
        "machine": cpu_name(),
        "torch": torch.__version__,
        "settings": vars(args) | {"runs_dir": str(args.runs_dir), "out": str(args.out)},
        "teacher": teacher,
        "students": {str(k): run for k, run in students},
        "seconds": round(seconds, 1),
        "rows": rows,
        "bar_met_by": [f"{r['model_calls']}-step student" for r in met],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}; bar met by: {', '.join(result['bar_met_by']) or 'none'}")


if __name__ == "__main__":
    main()
