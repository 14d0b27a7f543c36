"""Retrieval for chat: a help-desk model answers questions about items it never saw in training, from the
passages ``--knowledge`` retrieval (BM25, ``bm25s``) puts in its system message, and cites them.

The knowledge folder (made here): ``--items`` items, one paragraph each, e.g. "QX41 ships in 6 days and costs
37 euros." Training conversations (``data.format=chat``, loss on the assistant's tokens) ask about 80% of the
items, two questions each ("How long does QX41 take?" -> "QX41 ships in 6 days [1]."; "What does QX41 cost?"
-> "QX41 costs 37 euros [1]."), with the top ``k`` = 2 retrieved passages in the system message exactly as
``genloop chat --knowledge`` builds it (:meth:`KnowledgeBase.augment`). The other 20% of the items are held out:
their questions are asked of the tuned model (greedy) without and with retrieval. A reply is right when it
states the item's fact ("QX41 ships in 6 days" / "QX41 costs 37 euros"); with retrieval, its citation is also
checked against the passage that holds the fact (:meth:`KnowledgeBase.cited`).

    python benchmarks/bench_chat_retrieval.py      # writes benchmarks/results/chat_retrieval.json
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import tempfile
import time
from pathlib import Path

import genloop
from genloop.modalities.text.knowledge import KnowledgeBase

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name  # noqa: E402

MODEL = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "model.block_size=320",
    "train.batch_size=16",
    "train.lr=3e-3",
    "train.warmup_steps=20",
    "train.precision=fp32",
    "train.tensorboard=false",
    "train.threads=1",
    "train.log_every=100",
]


def items(n: int, seed: int) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    codes: set[str] = set()
    while len(codes) < n:
        codes.add("".join(rng.choices(string.ascii_uppercase, k=2)) + f"{rng.randrange(100):02d}")
    return [(c, rng.randrange(2, 10), rng.randrange(10, 100)) for c in sorted(codes)]


def qa(code: str, days: int, price: int) -> list[tuple[str, str]]:
    return [
        (f"How long does {code} take?", f"{code} ships in {days} days"),
        (f"What does {code} cost?", f"{code} costs {price} euros"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "chat_retrieval.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-rag-"))
    facts = items(args.items, 0)
    docs = root / "knowledge"
    docs.mkdir()
    lines = [f"{c} ships in {d} days and costs {p} euros." for c, d, p in facts]
    (docs / "i.md").write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    kb = KnowledgeBase.from_folder(docs, k=2, size=1)  # one passage per item
    rng = random.Random(1)
    order = list(range(len(facts)))
    rng.shuffle(order)
    cut = int(0.8 * len(facts))
    train_items, held_items = [facts[i] for i in order[:cut]], [facts[i] for i in order[cut:]]

    def source_of(code: str, given: list) -> int | None:
        return next((i for i, p in enumerate(given, 1) if p.text.startswith(code + " ")), None)

    rows, missed = [], 0
    for c, d, p in train_items:
        for q, a in qa(c, d, p):
            messages = kb.augment([{"role": "user", "content": q}])
            n = source_of(c, kb.last)
            missed += n is None
            reply = f"{a} [{n}]." if n else f"{a}."
            rows.append({"messages": [*messages, {"role": "assistant", "content": reply}]})
    data = root / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    t0 = time.perf_counter()
    run = genloop.train("gpt", str(data), overrides=MODEL, steps=args.steps, runs_dir=root / "runs", progress=False)
    seconds = time.perf_counter() - t0
    pipe = genloop.load(run.id, runs_dir=root / "runs")
    result = {
        "items": args.items,
        "train_conversations": len(rows),
        "retrieval_missed_in_training": missed,
        "held_out_questions": 2 * len(held_items),
        "steps": args.steps,
        "train_seconds": round(seconds, 1),
        "model": MODEL,
        "cpu": cpu_name(),
        "val_loss_assistant": run.info.get("best", {}).get("value"),
    }
    right = {"without retrieval": 0, "with retrieval": 0}
    cited_right, retrieved = 0, 0
    examples = []
    for c, d, p in held_items:
        for q, a in qa(c, d, p):
            plain = pipe.chat([{"role": "user", "content": q}], temperature=0, max_tokens=40)
            right["without retrieval"] += a in plain
            messages = kb.augment([{"role": "user", "content": q}])
            n = source_of(c, kb.last)
            retrieved += n is not None
            rag = pipe.chat(messages, temperature=0, max_tokens=40)
            right["with retrieval"] += a in rag
            cited = kb.cited(rag)
            cited_right += a in rag and bool(n) and [x.text for x in cited] == [kb.last[n - 1].text]
            if len(examples) < 4:
                examples.append({"question": q, "without": plain, "with": rag, "expected": a})
    total = 2 * len(held_items)
    result["correct"] = {k: f"{v}/{total}" for k, v in right.items()}
    result["correct_rate"] = {k: round(v / total, 4) for k, v in right.items()}
    result["retrieval_recall"] = round(retrieved / total, 4)
    result["right_and_cites_only_the_right_passage"] = f"{cited_right}/{total}"
    result["examples"] = examples
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
