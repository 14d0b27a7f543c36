"""Summarisation and data-to-text: one small GPT trained on both tasks vs the classical baselines.

The data is the synthetic football set of :mod:`text_task_data` (made here, seeded, no download; how it is
made and why is in that module's docstring): ``--n`` training records per task (seed 0) and ``--eval`` fresh
held-out records per task (seed 1, matches never seen in training). One GPT (BPE tokenizer trained on the
data, 4 layers, 128 wide, context 256) trains ``--steps`` on both tasks at once, the loss on the targets only
(GenLoop's chat path). Scored greedily on the held-out records:

- summaries: ROUGE-1/2/L vs **lead-k** (k chosen on the same records to match the references' length), and the
  words written vs the words asked for (the length hint);
- data-to-text: field accuracy and ROUGE-L vs a **template** filler (every field stated by construction).

    python benchmarks/bench_text_tasks.py                 # writes benchmarks/results/text_tasks.json
    python benchmarks/bench_text_tasks.py --steps 100     # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import genloop
from genloop.evaluation.text_tasks import evaluate_task

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name  # noqa: E402
from text_task_data import records  # noqa: E402

MODEL = [
    "data.tokenizer=bpe",
    "data.vocab_size=1024",
    "model.n_layer=4",
    "model.n_head=4",
    "model.n_embd=128",
    "model.block_size=256",
    "train.batch_size=16",
    "train.lr=2e-3",
    "train.warmup_steps=100",
    "train.precision=fp32",
    "train.tensorboard=false",
    "train.log_every=100",
    "train.eval_every=500",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000, help="training records per task")
    ap.add_argument("--eval", type=int, default=100, help="held-out records per task")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "text_tasks.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-text-tasks-"))
    data = root / "matches.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in records(args.n, seed=0)) + "\n", encoding="utf-8")
    held = records(args.eval, seed=1)
    t0 = time.perf_counter()
    run = genloop.train(
        "gpt",
        str(data),
        overrides=[*MODEL, f"train.threads={args.threads}"],
        steps=args.steps,
        runs_dir=root / "runs",
        progress=False,
    )
    train_seconds = time.perf_counter() - t0
    pipe = genloop.load(run.id, runs_dir=root / "runs")
    result = {
        "command": "python " + " ".join(sys.argv),
        "cpu": cpu_name(),
        "train_records_per_task": args.n,
        "eval_records_per_task": args.eval,
        "steps": args.steps,
        "model": MODEL,
        "train_seconds": round(train_seconds, 1),
        "tasks": {},
    }
    for task in ("summarize", "data-to-text"):
        recs = [r for r in held if ("summary" in r) == (task == "summarize")]
        result["tasks"][task] = evaluate_task(pipe, task, recs, max_tokens=80)
        print(task, json.dumps({k: v for k, v in result["tasks"][task].items() if k != "samples"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
