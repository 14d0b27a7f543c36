"""Compiled against eager text decoding, per batch size, measured side by side in one process.

What ``genloop generate --compile`` (``TextPipeline(compile=True)``) buys: a GPT of nanoGPT's small CPU shape
(4 layers, 4 heads, 128 wide) with a 256-token context writes 255 tokens from a one-token prompt, in batches
of 1, 8, 16 and 32 rows (``n`` samples drawn together), through GenLoop's sampler (temperature 0.8, top-k
200): once with the eager KV-cached model, once through :class:`~genloop.models.transformer.CompiledDecoder`
forced to compile every batch size (``max_batch=None``). Two measures per arm:

- ``model``: the decoder's one-token steps alone (what compiling changes);
- ``generate``: ``generate_text`` end to end (what a user waits for; per-row sampling is the same in both).

The arms alternate within each repeat (eager, compiled, eager, ...), so a shared machine's load falls on
both alike; the table reports the median of the repeats and the ratio of medians. The result decides
``COMPILE_MAX_BATCH`` in ``genloop/models/transformer.py``: the largest batch size at which compiling won.
Weights are random (seeded): speed does not depend on them.

    python benchmarks/bench_compile.py --threads 1 --batches 1 4 8 16 32   # ~8 min, shared 2-core CPU
    python benchmarks/bench_compile.py --repeats 1 --batches 1 8    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from genloop.generation.text_sampling import SamplingParams, generate_text
from genloop.models.transformer import COMPILE_MAX_BATCH, GPT, CompiledDecoder, GPTConfig

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_flags, cpu_name  # noqa: E402

CFG = dict(n_layer=4, n_head=4, n_embd=128, block_size=256, dropout=0.0, bias=False)
VOCAB = 65  # tiny Shakespeare's characters


def encode(text: str) -> list[int]:
    return [ord(c) % VOCAB for c in text]


def decode(ids: list[int]) -> str:
    return "".join(chr(32 + i) for i in ids)


@torch.inference_mode()
def model_tokens_per_s(lm, batch: int, new: int) -> float:
    """Tokens/s of ``new`` one-token steps of ``lm`` over a cache of ``batch`` rows (no sampling)."""
    cache = lm.new_cache(batch)
    idx = torch.zeros(batch, 1, dtype=torch.long)
    lm(idx, cache)
    t0 = time.perf_counter()
    for _ in range(new - 1):
        lm(idx, cache)
    return (new - 1) * batch / (time.perf_counter() - t0)


def generate_tokens_per_s(lm, batch: int, new: int, seed: int) -> float:
    params = SamplingParams(max_tokens=new, temperature=0.8, top_k=200, stop_at_eot=False)
    t0 = time.perf_counter()
    generate_text(lm, encode, decode, "a", params, seed=seed, n=batch, batch_size=batch)
    return new * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "compile.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG), VOCAB).eval()
    compiled = CompiledDecoder(model, max_batch=None)  # forced: this benchmark is what decides the limit
    new = CFG["block_size"] - 1
    load_before = os.getloadavg()
    rows = []
    for batch in args.batches:
        t0 = time.perf_counter()
        model_tokens_per_s(compiled, batch, 4)  # compiles this batch size (or loads it from Inductor's cache)
        compile_s = time.perf_counter() - t0
        model_tokens_per_s(model, batch, 4)
        arms: dict[str, list[float]] = {"eager_model": [], "compiled_model": [], "eager_gen": [], "compiled_gen": []}
        for r in range(args.repeats):
            arms["eager_model"].append(model_tokens_per_s(model, batch, new))
            arms["compiled_model"].append(model_tokens_per_s(compiled, batch, new))
            arms["eager_gen"].append(generate_tokens_per_s(model, batch, new, seed=r))
            arms["compiled_gen"].append(generate_tokens_per_s(compiled, batch, new, seed=r))
        med = {k: statistics.median(v) for k, v in arms.items()}
        row = {
            "batch": batch,
            "compile_seconds": compile_s,
            "fallback": compiled._eager,
            **{f"{k}_tokens_per_s": v for k, v in med.items()},
            "model_ratio": med["compiled_model"] / med["eager_model"],
            "generate_ratio": med["compiled_gen"] / med["eager_gen"],
            "model_ratios_each": [c / e for c, e in zip(arms["compiled_model"], arms["eager_model"])],
            "generate_ratios_each": [c / e for c, e in zip(arms["compiled_gen"], arms["eager_gen"])],
            "default_compiles": batch <= COMPILE_MAX_BATCH,
        }
        rows.append(row)
        print(
            f"batch {batch}: model {med['compiled_model']:,.0f} vs {med['eager_model']:,.0f} tok/s "
            f"({row['model_ratio']:.2f}x), generate {med['compiled_gen']:,.0f} vs {med['eager_gen']:,.0f} "
            f"({row['generate_ratio']:.2f}x), compiled in {compile_s:.1f} s",
            flush=True,
        )
    result = {
        "benchmark": "compile",
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "model": CFG,
        "vocab": VOCAB,
        "new_tokens": new,
        "repeats": args.repeats,
        "compile_max_batch": COMPILE_MAX_BATCH,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print()
    print(
        f"{cpu_name()} ({', '.join(cpu_flags()) or 'no AVX2'}), torch {torch.__version__}, {result['threads']} threads"
    )
    print(
        "| rows | eager tok/s (generate) | compiled tok/s (generate) | compiled / eager (generate) | "
        "compiled / eager (model step) | compile s | `--compile` uses |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['eager_gen_tokens_per_s']:,.0f} | {r['compiled_gen_tokens_per_s']:,.0f} | "
            f"**{r['generate_ratio']:.2f}×** | {r['model_ratio']:.2f}× | {r['compile_seconds']:.1f} | "
            f"{'compiled' if r['default_compiles'] else 'eager'} |"
        )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
