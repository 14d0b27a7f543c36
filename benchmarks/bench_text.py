"""GenLoop's GPT against a plain fp32 PyTorch loop of the same architecture (what nanoGPT does), in one run.

Both train nanoGPT's small CPU configuration of ``shakespeare_char`` (4 layers, 4 heads, 128 wide, context
64, batch 12, 2,000 iterations, lr 1e-3 with 100 warm-up steps and cosine decay to 1e-4, AdamW (0.9, 0.99),
weight decay 0.1 on matrices, clipping at 1, no dropout) on the same tokens of tiny Shakespeare, from the
same initial weights, and are scored by the same validation-loss function (the whole validation split in
non-overlapping windows of 64 tokens: nanoGPT's estimate without its sampling noise). Evaluation time is
excluded from both clocks.

- the plain loop: nanoGPT's ``train.py`` reduced to its core — random windows, fp32, no autocast;
- GenLoop: ``genloop.train("gpt", ...)`` through the one engine, with its precision choice (bf16 autocast
  where the CPU has bf16 matrix units, fp32 elsewhere), checkpoints and logging on.

Generation is measured at context 256 (a model of the same width with a 256-token context): nanoGPT's
``generate`` (a full forward over the window for every token) against GenLoop's KV-cached sampler, at the
same temperature and top-k, for one stream of 255 tokens, and for ``sample.py``'s default job (10 samples of
500 tokens: nanoGPT draws them one after another, GenLoop in one batch).

    python benchmarks/bench_text.py                      # ~6 minutes on 2 cores
    python benchmarks/bench_text.py --iters 300 --eval-every 100    # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import genloop
from genloop.evaluation.text_metrics import sliding_window_loss
from genloop.generation.text_sampling import SamplingParams, generate_text
from genloop.modalities.text import TextDataConfig, load_text_dataset
from genloop.models.transformer import GPT, CompiledDecoder, GPTConfig
from genloop.training.engine import pick_precision

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
TARGET = 1.886  # nanoGPT's validation loss after 2,000 iterations of this configuration (76 s on this CPU)
CFG = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False)
HP = dict(batch_size=12, lr=1e-3, min_lr=1e-4, warmup=100, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0)


def val_loss(model: GPT, val: np.ndarray) -> float:
    model.eval()
    r = sliding_window_loss(lambda idx: model(idx), val, model.block_size, stride=model.block_size, batch_size=64)
    model.train()
    return float(r["loss"])


def lr_at(it: int, iters: int) -> float:
    """nanoGPT's get_lr: linear warm-up, cosine decay to min_lr at the last iteration."""
    if it < HP["warmup"]:
        return HP["lr"] * (it + 1) / (HP["warmup"] + 1)
    ratio = (it - HP["warmup"]) / max(1, iters - HP["warmup"])
    return HP["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * min(ratio, 1.0))) * (HP["lr"] - HP["min_lr"])


def plain_loop(train: np.ndarray, val: np.ndarray, vocab: int, iters: int, eval_every: int, seed: int) -> dict:
    """nanoGPT's training loop, reduced to what it computes: fp32, random windows, AdamW, cosine lr."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**CFG), vocab)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": HP["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=HP["lr"],
        betas=HP["betas"],
    )
    data = torch.from_numpy(train.astype(np.int64))
    T, B = CFG["block_size"], HP["batch_size"]
    curve, clock = [], 0.0
    g = torch.Generator().manual_seed(seed)
    for it in range(iters):
        t0 = time.perf_counter()
        ix = torch.randint(len(data) - T - 1, (B,), generator=g)
        x = torch.stack([data[i : i + T] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + T] for i in ix])
        for group in opt.param_groups:
            group["lr"] = lr_at(it, iters)
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), HP["grad_clip"])
        opt.step()
        clock += time.perf_counter() - t0
        if (it + 1) % eval_every == 0 or it + 1 == iters:
            curve.append({"step": it + 1, "time": clock, "val_loss": val_loss(model, val)})
            print(f"  plain   step {it + 1:5d}  {clock:6.1f}s  val {curve[-1]['val_loss']:.4f}", flush=True)
    return {"curve": curve, "seconds": clock, "tokens_per_s": iters * B * T / clock}


def genloop_run(data_path: Path, iters: int, eval_every: int, seed: int, runs_dir: Path) -> dict:
    overrides = [
        f"model.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in CFG.items() if k != "block_size"
    ]
    overrides += [
        f"model.block_size={CFG['block_size']}",
        "data.tokenizer=char",
        f"train.eval_every={eval_every}",
        "train.eval_tokens=0",
        "train.eval_time_share=1.0",
        "train.tensorboard=false",
        "train.log_every=100",
        f"train.warmup_steps={HP['warmup']}",
        f"train.min_lr_ratio={HP['min_lr'] / HP['lr']}",
    ]
    run = genloop.train(
        "gpt", data=str(data_path), overrides=overrides, steps=iters, seed=seed, runs_dir=runs_dir, progress=False
    )
    curve = []
    for line in (run.dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "eval/val_loss" in rec:
            curve.append({"step": rec["step"], "time": rec["time"], "val_loss": rec["eval/val_loss"]})
    timings = run.info["timings"]
    for p in curve:
        print(f"  genloop step {p['step']:5d}  {p['time']:6.1f}s  val {p['val_loss']:.4f}", flush=True)
    return {
        "curve": curve,
        "seconds": timings["train_seconds"],
        "tokens_per_s": timings["tokens_per_s"],
        "precision": run.info.get("precision"),
        "run_id": run.id,
        "run_dir": str(run.dir),
    }


def time_to(curve: list[dict], target: float) -> float | None:
    """Training seconds at the first evaluation at or below ``target`` (None if never reached)."""
    return next((p["time"] for p in curve if p["val_loss"] <= target), None)


def loss_at(curve: list[dict], seconds: float) -> float:
    """The last validation loss measured within ``seconds`` of training (the first one if none was)."""
    within = [p for p in curve if p["time"] <= seconds + 1e-9]
    return (within[-1] if within else curve[0])["val_loss"]


@torch.no_grad()
def nanogpt_generate(
    model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int, g: torch.Generator
) -> torch.Tensor:
    """nanoGPT's GPT.generate: crop to the context, full forward, keep the last logits, sample, append."""
    for _ in range(max_new_tokens):
        idx_cond = idx if idx.size(1) <= model.block_size else idx[:, -model.block_size :]
        logits = model(idx_cond)[:, -1, :] / temperature
        if top_k:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < v[:, [-1]]] = -float("Inf")
        probs = torch.softmax(logits, dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, num_samples=1, generator=g)), dim=1)
    return idx


def generation(vocab: int, decode, encode, context: int, repeats: int, samples: int, sample_tokens: int) -> dict:
    """Two jobs on a model with a ``context``-token window (weights do not change the speed):
    one stream of ``context - 1`` tokens from a one-token prompt (the window fills up exactly), and
    nanoGPT ``sample.py``'s default job, ``samples`` samples of ``sample_tokens`` tokens (temperature 0.8,
    top-k 200): one after another for nanoGPT, in one batch for GenLoop."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**CFG, "block_size": context}), vocab).eval()
    new = context - 1
    start = torch.zeros((1, 1), dtype=torch.long)
    nanogpt_generate(model, start, 8, 0.8, 200, torch.Generator().manual_seed(0))  # warm-up
    generate_text(model, encode, decode, "a", SamplingParams(max_tokens=8, stop_at_eot=False), seed=0)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    plain = (
        repeats
        * new
        / sum(
            timed(lambda r=r: nanogpt_generate(model, start, new, 0.8, 200, torch.Generator().manual_seed(r)))
            for r in range(repeats)
        )
    )
    params = SamplingParams(max_tokens=new, temperature=0.8, top_k=200, stop_at_eot=False)
    cached = (
        repeats
        * new
        / sum(timed(lambda r=r: generate_text(model, encode, decode, "a", params, seed=r)) for r in range(repeats))
    )
    compiled_lm = CompiledDecoder(model)
    compile_s = timed(
        lambda: generate_text(compiled_lm, encode, decode, "a", SamplingParams(max_tokens=4, stop_at_eot=False), seed=0)
    )
    compiled = (
        repeats
        * new
        / sum(
            timed(lambda r=r: generate_text(compiled_lm, encode, decode, "a", params, seed=r)) for r in range(repeats)
        )
    )
    job = SamplingParams(max_tokens=sample_tokens, temperature=0.8, top_k=200, stop_at_eot=False)
    plain_job = (
        samples
        * sample_tokens
        / timed(
            lambda: [
                nanogpt_generate(model, start, sample_tokens, 0.8, 200, torch.Generator().manual_seed(r))
                for r in range(samples)
            ]
        )
    )
    ours_job = (
        samples * sample_tokens / timed(lambda: generate_text(model, encode, decode, "a", job, seed=0, n=samples))
    )
    return {
        "context": context,
        "new_tokens": new,
        "plain_tokens_per_s": plain,
        "genloop_tokens_per_s": cached,
        "ratio": cached / plain,
        "compiled_tokens_per_s": compiled,
        "compiled_ratio": compiled / plain,
        "compile_seconds": compile_s,
        "compiled_fallback": compiled_lm._eager,
        "job": {
            "samples": samples,
            "tokens": sample_tokens,
            "plain_tokens_per_s": plain_job,
            "genloop_tokens_per_s": ours_job,
            "ratio": ours_job / plain_job,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHAKESPEARE)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--gen-context", type=int, default=256)
    ap.add_argument("--gen-repeats", type=int, default=3)
    ap.add_argument("--gen-samples", type=int, default=10, help="nanoGPT sample.py's num_samples")
    ap.add_argument("--gen-tokens", type=int, default=500, help="nanoGPT sample.py's max_new_tokens")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "text.json")
    args = ap.parse_args()
    if not args.data.is_file():
        sys.exit(f"error: {args.data} not found (tiny Shakespeare is expected at ../shared/data/tinyshakespeare.txt)")

    ds = load_text_dataset(TextDataConfig(name=str(args.data), tokenizer="char"))
    vocab = ds.tokenizer.vocab_size
    print(
        f"tiny Shakespeare: {len(ds.train):,} train / {len(ds.val):,} val tokens, vocab {vocab}; "
        f"{cpu_name()}, {torch.get_num_threads()} threads; GenLoop precision here: "
        f"{pick_precision('auto', torch.device('cpu')) or 'fp32'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        print("GenLoop (genloop.train gpt):", flush=True)
        ours = genloop_run(args.data, args.iters, args.eval_every, args.seed, Path(tmp))
        print("plain fp32 loop (nanoGPT's):", flush=True)
        plain = plain_loop(ds.train, ds.val, vocab, args.iters, args.eval_every, args.seed)
    gen = generation(
        vocab,
        ds.tokenizer.decode,
        ds.tokenizer.encode,
        args.gen_context,
        args.gen_repeats,
        args.gen_samples,
        args.gen_tokens,
    )

    equal_time = min(plain["seconds"], ours["seconds"])
    t_plain, t_ours = time_to(plain["curve"], TARGET), time_to(ours["curve"], TARGET)
    result = {
        "command": f"python benchmarks/bench_text.py --iters {args.iters} --eval-every {args.eval_every}",
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "genloop": ours,  # the version is not recorded: a second "genloop" key (this run) always overrode it
        "config": {**CFG, **{k: v for k, v in HP.items()}, "iters": args.iters},
        "data": {"train_tokens": int(len(ds.train)), "val_tokens": int(len(ds.val)), "vocab": vocab},
        "plain": plain,
        "generation": gen,
        "target": TARGET,
        "equal_time_seconds": equal_time,
        "val_loss_at_equal_time": {
            "genloop": loss_at(ours["curve"], equal_time),
            "plain": loss_at(plain["curve"], equal_time),
        },
        "seconds_to_target": {"genloop": t_ours, "plain": t_plain},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}×" if a and b else "-"

    print("\n| measure | GenLoop | plain fp32 loop | GenLoop / plain |\n|---|---|---|---|")
    print(
        f"| training tokens/s | {ours['tokens_per_s']:,.0f} | {plain['tokens_per_s']:,.0f} "
        f"| {ratio(ours['tokens_per_s'], plain['tokens_per_s'])} |"
    )
    print(
        f"| train time for {args.iters} iterations | {ours['seconds']:.1f} s | {plain['seconds']:.1f} s "
        f"| {ratio(ours['seconds'], plain['seconds'])} |"
    )
    lv = result["val_loss_at_equal_time"]
    print(
        f"| val loss at {equal_time:.0f} s | {lv['genloop']:.4f} | {lv['plain']:.4f} "
        f"| {lv['genloop'] - lv['plain']:+.4f} (difference) |"
    )
    print(
        f"| seconds to val loss {TARGET} | {t_ours if t_ours is None else f'{t_ours:.1f}'} | "
        f"{t_plain if t_plain is None else f'{t_plain:.1f}'} | {ratio(t_ours, t_plain)} |"
    )
    print(
        f"| generation tokens/s at context {gen['context']} | {gen['genloop_tokens_per_s']:,.0f} | "
        f"{gen['plain_tokens_per_s']:,.0f} | {gen['ratio']:.2f}× |"
    )
    print(
        f"| generation tokens/s at context {gen['context']}, `--compile` "
        f"(after {gen['compile_seconds']:.0f} s compiling) | "
        f"{gen['compiled_tokens_per_s']:,.0f} | {gen['plain_tokens_per_s']:,.0f} | {gen['compiled_ratio']:.2f}× |"
    )
    jb = gen["job"]
    print(
        f"| generation tokens/s, sample.py's job ({jb['samples']} × {jb['tokens']} tokens, context {gen['context']}) "
        f"| {jb['genloop_tokens_per_s']:,.0f} | {jb['plain_tokens_per_s']:,.0f} | {jb['ratio']:.2f}× |"
    )
    print(f"| final val loss | {ours['curve'][-1]['val_loss']:.4f} | {plain['curve'][-1]['val_loss']:.4f} | |")
    print(f"\nraw numbers: {args.out}")


if __name__ == "__main__":
    main()
