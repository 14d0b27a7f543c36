"""Classical Chinese quatrains: a small char GPT trained for a fixed time on the regular Tang quatrains, sampled
with and without the form constraint, scored beside held-out real poems (the floor).

Data: the 全唐诗 folder of the chinese-poetry collection (https://github.com/chinese-poetry/chinese-poetry, MIT;
traditional characters, kept as they are: no converter to simplified is installed). Every poem whose text is
exactly a 五言绝句 or 七言绝句 in GenLoop's layout (:mod:`genloop.modalities.text.poetry`) becomes one
document ``title + "\\n" + poem``; the run holds out 5 % of them (its own document split). Read from a local git
mirror (``--repo``); nothing of the collection is committed.

Protocol, per form: ``--n`` samples, sample ``i`` continuing the title of held-out poem ``i mod k`` (seed
1,000,000 + i, temperature 1, no top-k/top-p), under the poem constraint (form and rhyme, the default), under the
form alone (``rhyme=False``), without any constraint (room for one poem of the form and end-of-text), and under
the poem constraint at temperature 0.7; the floor is the held-out poems themselves
(:func:`genloop.evaluation.poetry_eval.evaluate_poetry`). Rhyme and tone use modern Mandarin readings
(pypinyin): see :mod:`genloop.evaluation.poetry_metrics` for what that means for Tang poems.

    nice -n 19 python benchmarks/bench_poetry.py                        # ~15 minutes on 1 thread
    nice -n 19 python benchmarks/bench_poetry.py --budget 60 --n 50     # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

import genloop
from genloop.evaluation.poetry_eval import evaluate_poetry
from genloop.modalities.text.poetry import poem_document, regular_poem

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name  # noqa: E402

REPO = Path("/work/.mirror/chinese-poetry+chinese-poetry/repo")
FOLDER = "全唐诗"
MODEL = [
    "model.n_layer=4",
    "model.n_head=4",
    "model.n_embd=128",
    "model.block_size=64",
    "model.dropout=0.0",
    "train.batch_size=32",
    "train.lr=3e-3",
    "train.warmup_steps=100",
    "train.threads=1",
    "train.tensorboard=false",
    "data.val_fraction=0.05",
    "data.tokenizer=char",
]


def git_show(repo: Path, path: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], check=True, capture_output=True).stdout


def quatrains(repo: Path, vocab: int = 0) -> tuple[list[str], dict[str, int], int]:
    """The regular quatrains of the collection as documents, per-form counts, and how many poems were read.
    ``vocab`` > 0 keeps only the poems written entirely in the ``vocab`` most frequent characters (a smaller
    output layer: more training steps in the same time)."""
    names = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "--name-only", f"HEAD:{FOLDER}"], check=True, capture_output=True, text=True
    ).stdout.split()
    files = sorted(
        (n for n in names if n.startswith("poet.tang.") and n.endswith(".json")), key=lambda n: int(n.split(".")[2])
    )
    docs, counts, read = [], {"wujue": 0, "qijue": 0}, 0
    for name in files:
        for poem in json.loads(git_show(repo, f"{FOLDER}/{name}")):
            read += 1
            found = regular_poem(poem.get("paragraphs") or [])
            if found is None or found[0].name not in counts:
                continue
            docs.append((found[0].name, poem_document(poem.get("title") or "無題", found[1])))
    if vocab:
        common = {c for c, _ in Counter("".join(d for _, d in docs)).most_common(vocab)}
        docs = [(f, d) for f, d in docs if set(d) <= common]
    for f, _ in docs:
        counts[f] += 1
    return [d for _, d in docs], counts, read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=REPO)
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds")
    ap.add_argument("--vocab", type=int, default=3000, help="keep poems in the N commonest characters (0: all)")
    ap.add_argument("--n", type=int, default=200, help="samples per form and mode")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "poetry.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    docs, counts, read = quatrains(args.repo, args.vocab)
    print(f"{len(docs)} regular quatrains of {read} poems: {counts}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-poetry-") as tmp:
        data = Path(tmp) / "tang_quatrains.jsonl"
        data.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
        t_train = time.perf_counter()
        run = genloop.train(
            "gpt",
            data=str(data),
            overrides=MODEL,
            time_budget=args.budget,
            steps=1_000_000,
            seed=args.seed,
            runs_dir=Path(tmp) / "runs",
            progress=False,
        )
        train_seconds = time.perf_counter() - t_train
        log = run.files.metrics
        metrics = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
        losses = [m["loss"] for m in metrics if "loss" in m]
        pipe = genloop.load(run.dir)
        results = {}
        # (name, constrained, rhyme forced, temperature): the default constraint forces form and rhyme
        modes = [
            ("constrained", True, True, 1.0),
            ("form_only", True, False, 1.0),
            ("unconstrained", False, False, 1.0),
            ("constrained_t0.7", True, True, 0.7),
        ]
        for form in ("wujue", "qijue"):
            for mode, constrained, rhyme, temperature in modes:
                t = time.perf_counter()
                r = evaluate_poetry(
                    run,
                    pipe,
                    form,
                    args.n,
                    args.seed,
                    constrained=constrained,
                    rhyme=rhyme,
                    write=False,
                    temperature=temperature,
                )
                r["sample_seconds"] = round(time.perf_counter() - t, 1)
                key = f"{form}_{mode}"
                results[key] = r
                print(
                    f"{key}: form {r['form_rate']:.3f} (real {r['form_rate_floor']:.3f})  rhyme "
                    f"{r['rhyme_rate'] if r['rhyme_rate'] is None else round(r['rhyme_rate'], 3)} (real "
                    f"{r['rhyme_rate_floor']:.3f})  tone {r['tone_agreement']} (real {r['tone_agreement_floor']:.3f})  "
                    f"distinct-2 {r['distinct_2']:.3f} (real {r['distinct_2_floor']:.3f})  span "
                    f"{r['longest_span_mean']:.1f} (real {r['longest_span_mean_floor']:.1f})",
                    flush=True,
                )
    out = {
        "benchmark": "poetry",
        "command": "nice -n 19 python benchmarks/bench_poetry.py " + " ".join(sys.argv[1:]),
        "data": {
            "source": f"chinese-poetry {FOLDER} (traditional characters)",
            "poems_read": read,
            "quatrains": counts,
            "documents": len(docs),
            "vocab_filter": args.vocab,
            "held_out_documents": sum(r["n_real"] for k, r in results.items() if k.endswith("_unconstrained")),
        },
        "model": MODEL,
        "train_seconds": round(train_seconds, 1),
        "precision": run.info.get("precision"),
        "vocab_size": pipe.tokenizer.vocab_size,
        "steps": run.info.get("step"),
        "final_train_loss": losses[-1] if losses else None,
        "results": results,
        "threads": 1,
        "cpu": cpu_name(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
