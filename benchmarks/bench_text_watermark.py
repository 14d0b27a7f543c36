"""The green-list text watermark (Kirchenbauer et al. 2023; gamma 0.25, delta 2, z >= 4): detection rate vs
length, false-positive rate on unwatermarked text, and what the mark costs in perplexity.

A small GPT (2 layers, 64 wide, context 64, BPE 1024) is trained briefly on CPython's help topics (the
built-in ``pydoc`` corpus). Then, from an empty prompt (the end-of-text token, banned afterwards so that
every text runs to full length) at temperature 1:

- ``--n`` watermarked and ``--n`` plain texts of 200 tokens; each is scored at its first 25/50/100/200
  tokens (as text: decoded, re-encoded by the run's tokenizer, the first token unscored);
- ``--n-fpr`` more plain texts (default 5,000: the issue's bar) scored the same way, for the empirical
  false-positive rate at z >= 4;
- held-out real text: the validation documents of ``pydoc`` cut into windows of 25/50/100/200 tokens;
- the perplexity cost: the unwatermarked model's mean negative log-likelihood per token of the watermarked
  vs the plain generations (the sampler's own log-probabilities, before the watermark's bias).

    python benchmarks/bench_text_watermark.py              # 8.4 minutes on one thread of a 2-core CPU at load ~5
    python benchmarks/bench_text_watermark.py --n 50 --n-fpr 200 --steps 100   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import genloop
from genloop.generation.text_sampling import SamplingParams, complete
from genloop.modalities.text import TextDataConfig, load_text_dataset
from genloop.safety.text_watermark import TextWatermark

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_flags, cpu_name  # noqa: E402

LENGTHS = (25, 50, 100, 200)
MODEL = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "model.block_size=64",
    "data.tokenizer=bpe",
    "data.vocab_size=1024",
    "train.batch_size=16",
    "train.lr=3e-3",
    "train.warmup_steps=20",
    "train.precision=fp32",
    "train.tensorboard=false",
    "train.log_every=50",
]


def generate(pipe, params: SamplingParams, n: int, seed: int) -> list:
    tok = pipe.tokenizer
    return complete(
        pipe._lm(False), tok.encode, tok.decode, "", params, seed=seed, n=n, eot_id=tok.eot_id, batch_size=128
    )


def scores(wm: TextWatermark, tok, ids_list: list[list[int]], prefix: list[int]) -> dict[int, list[float]]:
    """z of each text at each length: its first L tokens decoded to text, re-encoded, scored as a detector would."""
    out: dict[int, list[float]] = {n: [] for n in LENGTHS}
    for ids in ids_list:
        for n in LENGTHS:
            if len(ids) >= n:
                text = tok.decode(ids[:n])
                if text.strip():
                    out[n].append(wm.detect_ids(prefix + list(tok.encode(text)), tok.vocab_size).z)
    return out


def rate(zs: list[float], z: float) -> float | None:
    return sum(v >= z for v in zs) / len(zs) if zs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="watermarked and plain texts for TPR and perplexity")
    ap.add_argument("--n-fpr", type=int, default=5000, help="more plain texts for the false-positive rate")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "text_watermark.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = genloop.train(
            "gpt",
            data="pydoc",
            overrides=[*MODEL, f"train.threads={args.threads}"],
            steps=args.steps,
            progress=False,
            runs_dir=tmp,
        )
        pipe = genloop.load(run.id, runs_dir=tmp)
        train_s = time.perf_counter() - t0
        tok = pipe.tokenizer
        wm = TextWatermark(bytes(range(32)))  # a fixed key: the benchmark repeats
        bias = {tok.eot_id: -100.0}
        plain_p = SamplingParams(max_tokens=max(LENGTHS), logit_bias=bias)
        marked_p = SamplingParams(max_tokens=max(LENGTHS), logit_bias=bias, watermark=wm)
        t1 = time.perf_counter()
        marked = generate(pipe, marked_p, args.n, seed=0)
        plain = generate(pipe, plain_p, args.n, seed=0)
        more = generate(pipe, plain_p, args.n_fpr, seed=10**6) if args.n_fpr else []
        gen_s = time.perf_counter() - t1
        prefix = [tok.eot_id]  # the prompt's token: the first generated token's "previous"
        z_marked = scores(wm, tok, [c.token_ids for c in marked], prefix)
        z_plain = scores(wm, tok, [c.token_ids for c in plain + more], prefix)
        data = load_text_dataset(TextDataConfig(name="pydoc", tokenizer="bpe", vocab_size=1024))
        val = [int(t) for t in data.val]  # the same tokenizer as the run's (trained on the train split)
        real: dict[int, list[float]] = {n: [] for n in LENGTHS}
        for n in LENGTHS:
            for i in range(0, len(val) - n, n):
                real[n].append(wm.detect_ids(val[i : i + n], tok.vocab_size).z)

        def nll(cs: list) -> float:
            lps = [lp for c in cs for lp in c.logprobs]
            return -sum(lps) / len(lps)

        nll_plain, nll_marked = nll(plain), nll(marked)
    result = {
        "benchmark": "text watermark (Kirchenbauer green list) on a small GPT trained on pydoc",
        "command": " ".join(["python benchmarks/bench_text_watermark.py", *sys.argv[1:]]),
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "threads": args.threads,
        "model": MODEL,
        "train_steps": args.steps,
        "watermark": {**wm.recipe(), "z_threshold": wm.z_threshold, "ignore_repeated": wm.ignore_repeated},
        "n_watermarked": args.n,
        "n_plain": args.n + args.n_fpr,
        "sampling": "temperature 1, no top-k/top-p, end-of-text banned, empty prompt",
        "by_length": {
            n: {
                "tpr": rate(z_marked[n], wm.z_threshold),
                "fpr_generated": rate(z_plain[n], wm.z_threshold),
                "fpr_real_heldout": rate(real[n], wm.z_threshold),
                "n_watermarked_scored": len(z_marked[n]),
                "n_plain_scored": len(z_plain[n]),
                "n_real_windows": len(real[n]),
                "mean_z_watermarked": sum(z_marked[n]) / max(1, len(z_marked[n])),
                "mean_z_plain": sum(z_plain[n]) / max(1, len(z_plain[n])),
                "max_z_plain": max(z_plain[n], default=None),
            }
            for n in LENGTHS
        },
        "nll_per_token": {"plain": nll_plain, "watermarked": nll_marked},
        "perplexity": {"plain": math.exp(nll_plain), "watermarked": math.exp(nll_marked)},
        "seconds": {"train": train_s, "generate": gen_s, "total": time.perf_counter() - t0},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
