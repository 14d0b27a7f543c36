"""Chat tuning: the loss on the assistant's tokens only vs the loss on every token, same data, same budget.

A synthetic help-desk set (made here, no download): ``--n`` conversations asking for the sum of two numbers
under 50 ("What is 17 plus 24?" -> "17 plus 24 is 41."), half as ``{"prompt", "response"}`` pairs and half in
the ``messages`` format with a system message and a second exchange ("Thanks!" -> "You are welcome."). Two
small GPTs (2 layers, 64 wide, context 192, char tokenizer) train for ``--steps`` on the same conversations:

- **masked**: ``data.format=chat`` (GenLoop's template; loss on the assistant's tokens, packed rows);
- **unmasked**: the same conversations rendered with the same template, read as plain text documents
  (``data.format=text``: loss on every token, random windows).

Both are scored on the held-out conversations (the same split): the loss on the assistant's tokens, and the
share of held-out questions whose greedy reply is exactly right.

    python benchmarks/bench_chat.py                      # writes benchmarks/results/chat.json
    python benchmarks/bench_chat.py --n 200 --steps 50   # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import genloop
from genloop.modalities.text import TextDataConfig, load_text_dataset
from genloop.modalities.text.chat import ChatTemplate, assistant_loss

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name  # noqa: E402

MODEL = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "model.block_size=192",
    "train.batch_size=16",
    "train.lr=3e-3",
    "train.warmup_steps=20",
    "train.precision=fp32",
    "train.tensorboard=false",
    "train.threads=1",
    "train.log_every=50",
]


def conversations(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randrange(50), rng.randrange(50)
        q, r = f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
        if i % 2:
            rows.append({"prompt": q, "response": r})
        else:
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": "You are a helpful desk."},
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": r},
                        {"role": "user", "content": "Thanks!"},
                        {"role": "assistant", "content": "You are welcome."},
                    ]
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "chat.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    chat_file = root / "chat.jsonl"
    chat_file.write_text("\n".join(json.dumps(r) for r in conversations(args.n, 0)) + "\n", encoding="utf-8")
    chat = load_text_dataset(TextDataConfig(name=str(chat_file)))
    plain = ChatTemplate(None)
    text_file = root / "text.jsonl"  # the same conversations, in the same order, as documents
    convs = [r["messages"] if "messages" in r else None for r in conversations(args.n, 0)]
    rendered = []
    for r, c in zip(conversations(args.n, 0), convs):
        c = c or [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]
        rendered.append({"text": plain.render(c)})
    text_file.write_text("\n".join(json.dumps(r) for r in rendered) + "\n", encoding="utf-8")
    result = {"n": args.n, "steps": args.steps, "model": MODEL, "cpu": cpu_name(), "arms": {}}
    val = chat.chat.val
    for arm, data, extra in (("masked", chat_file, []), ("unmasked", text_file, ["data.format=text"])):
        t0 = time.perf_counter()
        run = genloop.train(
            "gpt", str(data), overrides=[*MODEL, *extra], steps=args.steps, runs_dir=root / "runs", progress=False
        )
        seconds = time.perf_counter() - t0
        pipe = genloop.load(run.id, runs_dir=root / "runs")
        template = ChatTemplate(pipe.tokenizer)
        chat.chat.template = template
        loss = assistant_loss(pipe.system.causal_lm(), chat.chat, pipe.tokenizer.eot_id, 192)
        right = 0
        for c in val:
            question = [m for m in c if m["role"] != "assistant"][:2]  # the system message (if any) and the question
            reply = pipe.chat(question, temperature=0, max_tokens=24)
            right += reply.strip() == c[question.index(question[-1]) + 1]["content"]
        result["arms"][arm] = {
            "assistant_loss": round(loss["loss"], 4),
            "assistant_tokens_scored": loss["tokens_scored"],
            "exact_answers": f"{right}/{len(val)}",
            "exact_rate": round(right / len(val), 4),
            "train_seconds": round(seconds, 1),
        }
        print(arm, result["arms"][arm], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
