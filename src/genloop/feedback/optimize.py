"""Three ways a reward model improves what a generator gives people, each measurable on its own:

1. :func:`best_of_n` — at sampling time: draw ``k`` candidates per output and keep the one the reward
   model scores highest. No training; costs ``k``× the sampling.
2. Fine-tuning the generator toward preferred outputs, into a *new* run (the parent is never touched):
   - images, :func:`finetune_images` — reward-weighted fine-tuning by filtering: sample many images,
     keep the top-scoring share, write them as a PNG folder together with some real training images
     (which limits drift away from the data), and continue training a copy of the run from its own
     checkpoint on that folder;
   - text, :func:`dpo` — Direct Preference Optimisation (Rafailov et al. 2023) on the A/B pairs: the
     policy (a copy of the GPT run) is trained on ``-log σ(β[(log π(c) - log π_ref(c)) - (log π(r) -
     log π_ref(r))])`` against the frozen original as reference;
   - music, :func:`~genloop.modalities.music.preference.dpo_music` — the same DPO (:func:`dpo_on_tokens`) on
     the stored pieces re-tokenised from their MIDI with the run's tokenizer and the prefix their recipe
     records.
3. :func:`select_checkpoint` — among runs or checkpoints, the one whose samples have the highest mean
   predicted rating.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from ..errors import ConfigError, DataError
from ..modalities import Modality, modalities
from ..runs import RunStore
from ..serialization import write_json
from .reward import RewardModel


def _check_modality(pipe: Any, reward: RewardModel) -> Modality:
    m = pipe.modality
    if m != reward.modality:
        raise ConfigError(f"the reward model scores {reward.modality}s but run {pipe.info.get('run_id')} makes {m}s")
    return modalities[m]


# --- 1. best-of-n -----------------------------------------------------------------------------------
@dataclass
class Reranked:
    """The best of each group of ``k`` candidates. Quacks like the modality's own pipeline output for the store:
    the kept items sit in the field that output uses (the modality's :meth:`~genloop.modalities.Modality.rerank`
    says which), the others stay None."""

    modality: str  # the registered modality of the items
    prompt: str
    recipes: list[dict[str, Any]]  # each kept item's own recipe (its seed regenerates it alone)
    scores: torch.Tensor  # (n,) reward of each kept item
    candidate_scores: torch.Tensor  # (n, k) reward of every candidate
    labels: torch.Tensor | None = None
    tensors: torch.Tensor | None = None  # images (n, C, H, W)
    texts: list[str] | None = None  # completions
    samples: list[Any] | None = None  # music: MusicSamples (score, recipe, audio)

    @property
    def recipe(self) -> dict[str, Any]:
        return self.recipes[0]

    def recipe_of(self, i: int) -> dict[str, Any]:
        return self.recipes[i]


def best_of_n(pipe: Any, reward: RewardModel, n: int = 16, k: int = 4, seed: int = 0, **generate: Any) -> Reranked:
    """``n`` outputs, each the highest-scoring of ``k`` candidates (candidate ``j`` of output ``i`` is drawn
    with seed ``seed + i*k + j``). ``generate``: the pipeline's own options (class_label, prompt, ...)."""
    if n < 1 or k < 1 or n * k > 100_000:
        raise ConfigError(f"best-of-n needs n >= 1, k >= 1 and n*k <= 100000, got n={n}, k={k}")
    modality = _check_modality(pipe, reward)
    out = pipe(n=n * k, seed=seed, **generate)
    items = modality.items(out)
    scores = reward.score(items).reshape(n, k)
    pick = scores.argmax(1) + torch.arange(n) * k
    recipes = [
        {**out.recipe_of(int(i)), "best_of": k, "reward": round(float(s), 4), "reward_model": reward.id}
        for i, s in zip(pick, scores.max(1).values)
    ]
    labels = getattr(out, "labels", None)
    return Reranked(
        modality.name,
        getattr(out, "prompt", ""),
        recipes,
        scores.max(1).values,
        scores,
        None if labels is None else labels[pick],
        **modality.rerank(out, pick),
    )


# --- 2a. images: reward-filtered fine-tuning --------------------------------------------------------
@dataclass
class FinetuneConfig:
    samples: int = 2000  # images generated and scored
    keep: float = 0.2  # the top-scoring share of them kept as training data
    real_fraction: float = 0.3  # share of real training images in the fine-tuning set (limits drift)
    steps: int = 300  # training steps on it
    lr: float | None = None  # None: the run's own learning rate
    ema_decay: float | None = 0.99  # a shorter EMA than pre-training's, so a few hundred steps show (None: the run's)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 2 or not 0 < self.keep <= 1 or not 0 <= self.real_fraction < 1 or self.steps < 1:
            raise ConfigError("finetune: samples >= 2, keep in (0, 1], real_fraction in [0, 1), steps >= 1")
        if self.samples > 100_000:
            raise ConfigError(f"finetune: at most 100000 samples, got {self.samples}")


def finetune_images(
    run_id: str,
    reward: RewardModel,
    cfg: FinetuneConfig | None = None,
    runs_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Continue a copy of an unconditional image run on its own top-reward samples mixed with real data.

    The new run starts from the parent's last checkpoint (weights, EMA, optimizer state) and its data
    folder lives inside it (``feedback_data/``), so it is self-contained. Returns a summary with its id.
    """
    from .. import api
    from ..config import from_dict
    from ..data import DataConfig, load_dataset
    from ..data.image_io import save_png
    from ..generation.pipelines import load_pipeline

    cfg = cfg or FinetuneConfig()
    t0 = time.perf_counter()
    store = RunStore(runs_dir)
    parent = store.get(run_id)
    if not parent.last_checkpoint.is_file():
        raise DataError(f"run {parent.id} has no training checkpoint to continue from")
    pipe = load_pipeline(parent.dir)
    _check_modality(pipe, reward)
    if pipe.system.conditional:
        raise ConfigError(
            f"fine-tuning on feedback supports unconditional image runs; {pipe.info['model']} is conditional "
            "(use best-of-n with --class instead)"
        )
    out = pipe(n=cfg.samples, seed=30_000_000 + 100_000 * cfg.seed)  # apart from simulate's rating/eval seeds
    scores = reward.score(out.tensors)
    n_keep = max(1, round(cfg.keep * cfg.samples))
    top = scores.argsort(descending=True)[:n_keep]
    pcfg = parent.config
    dataset = load_dataset(from_dict(DataConfig, pcfg["data"], "data."))
    real = dataset.float_images("train")
    n_real = min(len(real), round(n_keep * cfg.real_fraction / (1 - cfg.real_fraction)))
    real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(cfg.seed))[:n_real]]

    step = int(parent.info.get("step", 0))
    train = {
        **pcfg["train"],
        "steps": step + cfg.steps,
        "time_budget": None,
        "schedule": "constant",
        "warmup_steps": 0,
        "eval_every": 0,
        "early_stop": 0,
        "sample_every": 0,
    }
    if cfg.lr is not None:
        train["lr"] = cfg.lr
    if cfg.ema_decay is not None and train.get("ema_decay") is not None:
        train["ema_decay"] = cfg.ema_decay
    child = store.create(parent.info["model"], "feedback", {**pcfg, "train": train}, int(pcfg["train"].get("seed", 0)))
    try:
        folder = child.files.feedback_data
        for j, i in enumerate(top.tolist()):
            save_png(folder / f"gen_{j:05d}.png", out.tensors[i])
        for j, image in enumerate(real):
            save_png(folder / f"real_{j:05d}.png", image)
        data = {
            **pcfg["data"],
            "name": str(folder.resolve()),
            "channels": dataset.channels,
            "image_size": dataset.image_size,
            "split": [1.0, 0.0, 0.0],
            "flip": False,
            "shift": 0,
        }
        write_json(child.files.config, {**pcfg, "data": data, "train": train})
        child.files.checkpoints.mkdir(exist_ok=True)
        shutil.copy2(parent.last_checkpoint, child.last_checkpoint)
        shutil.copy2(parent.weights, child.weights)
        feedback = {
            "method": "reward-filtered-finetune",
            "parent": parent.id,
            "reward_model": reward.id,
            "samples": cfg.samples,
            "kept": n_keep,
            "real": int(n_real),
            "steps": cfg.steps,
            "kept_reward_mean": round(float(scores[top].mean()), 4),
            "all_reward_mean": round(float(scores.mean()), 4),
        }
        store.update(child, step=step, parent=parent.id, feedback=feedback, dataset=parent.info.get("dataset"))
        api.resume(child.id, steps=step + cfg.steps, runs_dir=runs_dir, progress=progress)
    except BaseException:
        store.update(child, status="failed")
        raise
    return {"run_id": child.id, **feedback, "seconds": round(time.perf_counter() - t0, 2)}


# --- 2b. text and music: DPO ------------------------------------------------------------------------
@dataclass
class DPOConfig:
    beta: float = 0.1  # how far from the reference the policy may move (smaller: further)
    steps: int = 100
    lr: float = 1e-4
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.beta <= 0 or self.steps < 1 or self.lr <= 0 or self.batch_size < 1:
            raise ConfigError("dpo: beta > 0, steps >= 1, lr > 0, batch_size >= 1")


Encoded = tuple[list[int], int]  # (token ids, where the scored part starts)


def fit_context(ctx: list[int], comp: list[int], block: int) -> Encoded:
    """Context + completion cut to fit ``block + 1`` tokens: the context keeps its end (at most half the
    window), the completion its start. Returns (ids, where the completion starts)."""
    ctx = ctx[-max(1, (block + 1) // 2) :] if len(ctx) + len(comp) > block + 1 else ctx
    comp = comp[: block + 1 - len(ctx)]
    return ctx + comp, len(ctx)


def _encode_pair(tok: Any, prompt: str, completion: str, block: int) -> Encoded:
    """Prompt (or the end-of-text token that starts a document) + completion + end-of-text, cut to fit the
    context: the prompt keeps its end, the completion its start. Returns (ids, where the completion starts)."""
    ctx = tok.encode(prompt) if prompt else []
    ctx = ctx or [tok.eot_id]
    comp = tok.encode(completion) + [tok.eot_id]  # the end-of-text token is part of what was chosen: it stopped there
    return fit_context(ctx, comp, block)


def encode_chat_reply(template: Any, messages: Sequence[dict[str, str]], reply: str, block: int) -> Encoded:
    """A chat reply as the run's chat training saw it: the conversation rendered by ``template`` (the run's
    :class:`~genloop.modalities.text.chat.ChatTemplate`) segment by segment is the context, the reply's own
    target segment (its text and the template's end of turn, not the end-of-text token) is what is scored."""
    segments = template.segments([*messages, {"role": "assistant", "content": reply}])
    last = max(i for i, (_, target) in enumerate(segments) if target)
    tok = template.tokenizer
    ctx = [t for text, _ in segments[:last] if text for t in tok.encode(text)]
    return fit_context(ctx, tok.encode(segments[last][0]), block)


def sequence_logprobs(lm: Any, batch: list[Encoded]) -> torch.Tensor:
    """Sum of log-probabilities of each sequence's completion tokens, (B,)."""
    width = max(len(ids) for ids, _ in batch)
    idx = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width - 1)
    for b, (ids, start) in enumerate(batch):
        idx[b, : len(ids)] = torch.tensor(ids)
        mask[b, start - 1 : len(ids) - 1] = 1.0  # position t predicts token t+1
    device = next(lm.parameters()).device
    logits = lm(idx[:, :-1].to(device)).float()
    logp = torch.gather(F.log_softmax(logits, -1), 2, idx[:, 1:, None].to(device)).squeeze(-1)
    return (logp * mask.to(device)).sum(-1)


def dpo_loss(
    lm: Any, chosen: list[Encoded], rejected: list[Encoded], ref_margin: torch.Tensor, beta: float
) -> torch.Tensor:
    """``-log σ(β[(log π(c) - log π(r)) - (log π_ref(c) - log π_ref(r))])``, mean over the batch; ``ref_margin``
    is the reference's margin of each pair (computed once: the reference never changes)."""
    pi = sequence_logprobs(lm, chosen) - sequence_logprobs(lm, rejected)
    return -F.logsigmoid(beta * (pi - ref_margin)).mean()


Prompt = str | list[dict[str, str]]  # a text prompt, or a chat reply's conversation (TRL's conversational format)


def dpo(
    run_id: str,
    pairs: Sequence[tuple[Prompt, str, str]],
    cfg: DPOConfig | None = None,
    runs_dir: str | Path | None = None,
) -> dict[str, Any]:
    """DPO on ``(prompt, chosen, rejected)`` text pairs; saves a new run (weights, config, tokenizer).

    A prompt that is a list of messages makes the pair two chat replies to that conversation: they are encoded
    with the run's chat template as its chat training encodes them (:func:`encode_chat_reply`), so the loss is
    on the reply's tokens and its end of turn only.

    Reports the policy's mean log-prob margin ``log π(chosen) - log π(rejected)`` before and after, and
    the implicit reward's accuracy (how often ``β·log π/π_ref`` prefers the chosen one)."""
    if not pairs:
        raise DataError("DPO needs preference pairs; record some with `genloop feedback prefer CHOSEN REJECTED`")

    def encode(policy: Any) -> list[tuple[Encoded, Encoded]]:
        from ..modalities.text.chat import ChatTemplate

        tok, block = policy.tokenizer, policy.causal_lm().block_size
        template = ChatTemplate(tok) if any(not isinstance(p, str) for p, _, _ in pairs) else None

        def one(prompt: Prompt, completion: str) -> Encoded:
            if isinstance(prompt, str):
                return _encode_pair(tok, prompt, completion, block)
            return encode_chat_reply(template, prompt, completion, block)

        return [(one(p, c), one(p, r)) for p, c, r in pairs]

    return dpo_on_tokens(run_id, encode, cfg, runs_dir, "text")


def dpo_on_tokens(
    run_id: str,
    encode: Callable[[Any], list[tuple[Encoded, Encoded]]],
    cfg: DPOConfig | None = None,
    runs_dir: str | Path | None = None,
    modality: str = "text",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """DPO of a language-model run (text or music) on pairs that ``encode(policy)`` turns into token ids.

    Why one function for both: the loss, the frozen reference, the optimiser (AdamW, clipping at 1) and the
    new run's layout are the same whatever the tokens stand for; only how an item becomes ids differs.
    ``details`` go into the new run's ``feedback`` record beside the loss and margins."""
    from ..generation.pipelines import load_system

    cfg = cfg or DPOConfig()
    t0 = time.perf_counter()
    store = RunStore(runs_dir)
    parent = store.get(run_id)
    policy, info = load_system(parent.dir)
    if policy.modality != modality or not hasattr(policy, "causal_lm"):
        raise ConfigError(
            f"DPO on {modality} pairs fine-tunes {modality} language models; run {parent.id} is an "
            f"{policy.modality} model"
            + (" (use finetune_images)" if modalities[policy.modality].finetune_method != "dpo" else "")
        )
    enc = encode(policy)
    if not enc:
        raise DataError(f"DPO needs preference pairs; none of run {parent.id}'s could be encoded")
    reference, _ = load_system(parent.dir)
    reference.eval().requires_grad_(False)  # frozen: the anchor the policy's moves are measured from
    policy.eval()  # no dropout: the policy's log-probs must be comparable with the reference's
    lm, ref_lm = policy.causal_lm(), reference.causal_lm()

    @torch.no_grad()
    def margins(model: Any) -> torch.Tensor:
        return torch.cat(
            [
                sequence_logprobs(model, [e[0] for e in enc[i : i + 64]])
                - sequence_logprobs(model, [e[1] for e in enc[i : i + 64]])
                for i in range(0, len(enc), 64)
            ]
        )

    ref_margin = margins(ref_lm)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for _ in range(cfg.steps):
        pick = torch.randint(0, len(enc), (min(cfg.batch_size, len(enc)),), generator=g).tolist()
        chosen, rejected = [enc[i][0] for i in pick], [enc[i][1] for i in pick]
        loss = dpo_loss(lm, chosen, rejected, ref_margin[pick], cfg.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    after = margins(lm)
    step = int(parent.info.get("step", 0))
    child = store.create(
        parent.info["model"], parent.info.get("dataset", "?"), parent.config, int(parent.info.get("seed", 0))
    )
    try:
        if parent.files.tokenizer.is_dir():
            shutil.copytree(parent.files.tokenizer, child.files.tokenizer)
        child.files.save_pretrained(policy.state_dict(), {"step": step + cfg.steps})
        feedback = {
            "method": "dpo",
            "parent": parent.id,
            "beta": cfg.beta,
            "steps": cfg.steps,
            "lr": cfg.lr,
            "pairs": len(enc),
            **(details or {}),
            "margin_before": round(float(ref_margin.mean()), 4),
            "margin_after": round(float(after.mean()), 4),
            "implicit_reward_accuracy": round(float((after - ref_margin > 0).float().mean()), 4),
            "loss_first": round(losses[0], 4),
            "loss_last": round(losses[-1], 4),
        }
        store.update(
            child,
            status="finished",
            step=step + cfg.steps,
            parent=parent.id,
            feedback=feedback,
            timings={"train_seconds": round(time.perf_counter() - t0, 2)},
        )
    except BaseException:
        store.update(child, status="failed")
        raise
    return {"run_id": child.id, **feedback, "seconds": round(time.perf_counter() - t0, 2)}


def preference_pairs(
    store: Any, run_id: str | None = None, job_id: str | None = None, user: str | None = None
) -> list[tuple[Prompt, str, str]]:
    """The store's text preferences as (prompt, chosen, rejected) triples; two chat replies to the same
    conversation have that conversation (their recipe's messages) as the prompt, anything else the chosen
    one's prompt text."""
    from .export import conversation

    _, prefs, gens = store.feedback_rows(run_id=run_id, job_id=job_id, user=user, modality="text")
    out: list[tuple[Prompt, str, str]] = []
    for p in prefs:
        a, b = gens[p.chosen_id], gens[p.rejected_id]
        chat = conversation(a)
        out.append((chat if chat and chat == conversation(b) else a.prompt or "", a.text or "", b.text or ""))
    return out


# --- 3. checkpoint selection ------------------------------------------------------------------------
def parse_candidate(text: str) -> tuple[str, str]:
    """``RUN`` or ``RUN@best`` / ``RUN@last`` -> (run, checkpoint)."""
    run, _, ck = text.partition("@")
    return run, ck or "last"


def select_checkpoint(
    candidates: Sequence[str],
    reward: RewardModel,
    n: int = 200,
    seed: int = 0,
    runs_dir: str | Path | None = None,
    **generate: Any,
) -> dict[str, Any]:
    """Score ``n`` samples (same seeds for every candidate) of each run or ``run@checkpoint``; the one
    with the highest mean predicted rating wins. Returns ``{"best", "table": [...]}`` (best first)."""
    from ..generation.pipelines import load_pipeline

    if not candidates:
        raise ConfigError("name at least one run (or run@best) to choose from")
    store = RunStore(runs_dir)
    table = []
    for c in candidates:
        run_id, ck = parse_candidate(c)
        run = store.get(run_id)
        pipe = load_pipeline(run.dir, checkpoint=ck)
        modality = _check_modality(pipe, reward)
        out = pipe(n=n, seed=seed, **generate)
        s = reward.score(modality.items(out))
        table.append(
            {
                "candidate": f"{run.id}@{ck}",
                "run_id": run.id,
                "checkpoint": ck,
                "step": pipe.info.get("step"),
                "mean_reward": round(float(s.mean()), 4),
                "std_reward": round(float(s.std()), 4) if n > 1 else 0.0,
                "n": n,
            }
        )
    table.sort(key=lambda r: -r["mean_reward"])
    return {"best": table[0]["candidate"], "table": table, "seed": seed, "reward_model": reward.id}
