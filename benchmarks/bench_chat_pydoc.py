"""Questions about real documents: base vs tuned vs tuned + retrieval, on CPython's own help text.

The documents are the help topics that ship with Python (``pydoc_data.topics``), written one file per topic
into a knowledge folder and cut into passages of at most ``--passage-chars`` characters (BM25 over them,
``bm25s``). The question set is made from those passages (seeded, no download): a sentence of 50–160
characters is picked from a passage, one word of at least five letters in it (not a common word, not code)
is blanked, and the question is ``Fill the blank: "<sentence with ____>"``; the answer is the word. A reply is
right when its first word is the answer (case-insensitive). 80 % of the sentences train, 20 % are held out (one
question each); ``--per-sentence K`` makes up to K training questions of each training sentence, each blanking
a different word (more examples of the one skill retrieval needs: finding the sentence and copying the word).

Three small GPTs (BPE tokenizer, 4 layers, 128 wide, context 256), the same steps each:

- **base**: trained on the help text itself as plain text (it has read every held-out sentence, but was never
  taught the question format), asked in GenLoop's chat template;
- **tuned**: trained on the training questions (chat format, loss on the answer only), asked without passages;
- **tuned + retrieval**: trained on the training questions with the top passage retrieved for each question in
  its system message (as ``genloop chat --knowledge`` builds it), asked with retrieval.

The issue's bar: tuned + retrieval answers at least twice as many held-out questions as the base model.

    python benchmarks/bench_chat_pydoc.py --steps 2000 --per-sentence 4   # writes results/chat_pydoc.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import genloop
from genloop.modalities.text.knowledge import KnowledgeBase

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name  # noqa: E402

MODEL = [
    "data.tokenizer=bpe",
    "data.vocab_size=2048",
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
COMMON = set(
    "about above after again against being below between because before could doesn during every first following "
    "other their there these those through under until where which while would should value values given using "
    "object objects function functions method methods return returns returned called example section".split()
)
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def topics_folder(root: Path) -> Path:
    from pydoc_data.topics import topics

    folder = root / "pydoc"
    folder.mkdir()
    for name, text in sorted(topics.items()):
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


def questions(kb: KnowledgeBase, seed: int, per_sentence: int = 1) -> list[list[dict[str, str]]]:
    """Fill-the-blank questions (see the module docstring), grouped by sentence: up to ``per_sentence`` per usable
    sentence, each blanking a different word. Sentences are shuffled (seeded), so a split by sentence keeps
    every held-out sentence out of the training questions."""
    rng = random.Random(seed)
    out = []
    for p in kb.passages:
        for s in SENTENCE.split(" ".join(p.text.split())):
            if not 50 <= len(s) <= 160 or any(c in s for c in "`()[]{}=*>"):
                continue
            words = [w for w in re.findall(r"[A-Za-z]+", s) if len(w) >= 5 and w.lower() not in COMMON]
            words = sorted({w for w in words if len(re.findall(rf"\b{w}\b", s)) == 1})
            if not words:
                continue
            group = []
            for w in rng.sample(words, min(per_sentence, len(words))):
                blanked = re.sub(rf"\b{w}\b", "____", s)
                group.append({"question": f'Fill the blank: "{blanked}"', "answer": w})
            out.append(group)
    rng.shuffle(out)
    return out


def right(reply: str, answer: str) -> bool:
    first = re.findall(r"[A-Za-z]+", reply)
    return bool(first) and first[0].lower() == answer.lower()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--held-out", type=int, default=200)
    ap.add_argument("--passage-chars", type=int, default=300)
    ap.add_argument(
        "--per-sentence", type=int, default=1, help="training questions per training sentence (different blanks)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "chat_pydoc.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-pydoc-qa-"))
    folder = topics_folder(root)
    kb = KnowledgeBase.from_folder(folder, k=1, size=args.passage_chars)
    by_sentence = questions(kb, seed=0, per_sentence=max(1, args.per_sentence))
    cut = int(0.8 * len(by_sentence))
    train_q = [q for group in by_sentence[:cut] for q in group]
    held = [group[0] for group in by_sentence[cut:]][: args.held_out]
    rows_plain, rows_rag = [], []
    for q in train_q:
        user = [{"role": "user", "content": q["question"]}]
        rows_plain.append({"messages": [*user, {"role": "assistant", "content": f"{q['answer']}."}]})
        rows_rag.append({"messages": [*kb.augment(user), {"role": "assistant", "content": f"{q['answer']} [1]."}]})
    files = {}
    for name, rows in (("tuned", rows_plain), ("rag", rows_rag)):
        files[name] = root / f"{name}.jsonl"
        files[name].write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    overrides = [*MODEL, f"train.threads={args.threads}"]
    result = {
        "command": "python " + " ".join(sys.argv),
        "cpu": cpu_name(),
        "passages": len(kb.passages),
        "questions": {"train": len(train_q), "held_out": len(held), "per_sentence": args.per_sentence},
        "steps": args.steps,
        "model": MODEL,
        "arms": {},
    }
    arms = (
        ("base", str(folder), ["data.format=text"], False),
        ("tuned", str(files["tuned"]), [], False),
        ("tuned + retrieval", str(files["rag"]), [], True),
    )
    for arm, data, extra, rag in arms:
        t0 = time.perf_counter()
        run = genloop.train(
            "gpt", data, overrides=[*overrides, *extra], steps=args.steps, runs_dir=root / "runs", progress=False
        )
        seconds = time.perf_counter() - t0
        pipe = genloop.load(run.id, runs_dir=root / "runs")
        correct, found, examples = 0, 0, []
        for q in held:
            messages = [{"role": "user", "content": q["question"]}]
            if rag:
                messages = kb.augment(messages)
                found += any(q["answer"] in p.text for p in kb.last)
            reply = pipe.chat(messages, temperature=0, max_tokens=12)
            correct += right(reply, q["answer"])
            if len(examples) < 4:
                examples.append({**q, "reply": reply})
        result["arms"][arm] = {
            "correct": f"{correct}/{len(held)}",
            "correct_rate": round(correct / len(held), 4),
            "train_seconds": round(seconds, 1),
            **({"retrieval_recall": round(found / len(held), 4)} if rag else {}),
            "examples": examples,
        }
        print(arm, {k: v for k, v in result["arms"][arm].items() if k != "examples"}, flush=True)
    base = result["arms"]["base"]["correct_rate"]
    rag_rate = result["arms"]["tuned + retrieval"]["correct_rate"]
    result["rag_over_base"] = None if base == 0 else round(rag_rate / base, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
