"""Scripted raters, so the feedback loop can be measured without people.

A rater has a stated preference and applies it consistently: it gives each output a value in [0, 1],
stars from it (``1 + round(4·value)``), and in an A/B pair prefers the higher value. Whether an output is
*preferred* (the yes/no the loop is measured by) is a separate, stricter test:

- ``class:K`` — prefers images the reference classifier calls class K ("prefers the digit 7"):
  value = the classifier's probability of K; preferred = K is its top class.
- ``thick`` — prefers more ink (thicker, bolder strokes): value = mean brightness scaled between the 10th
  and 90th percentile of real training images; preferred = more ink than 75% of real images.
- ``contains:STRING`` (text) — prefers completions containing STRING: value and preferred = it does.
- ``short`` / ``short:N`` (text) — prefers completions of at most N characters (default 40): value falls
  linearly from 1 at 0 characters to 0 at 2N.
- a modality's own raters (:meth:`~genloop.modalities.Modality.make_rater`), e.g. music's ``in-key:C``
  (share of notes in the key's scale) and ``range:60-72`` (share of notes in that pitch range): value = the
  share; preferred = a share of at least the rater's ``threshold``.

:func:`simulate` runs the whole loop for one run: generate → store → rate → train the reward model →
best-of-n, fine-tuning (images: reward-filtered; text and music: DPO) and checkpoint selection → the preferred
share before and after each, with FID beside it (images) and the seconds each took.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..modalities import modalities
from .store import FeedbackStore


@dataclass
class Rater:
    spec: str  # e.g. "class:7"
    modality: str  # a registered modality name (genloop.modalities)
    preference: str  # in words
    extractor: Any = None  # images: the reference net of the run's dataset
    params: dict[str, Any] = field(default_factory=dict)

    def value(self, items: Any) -> np.ndarray:
        """How much the rater likes each item, in [0, 1]."""
        if "score" in self.params:  # a modality's own rater: a function of one item
            return np.array([float(self.params["score"](it)) for it in items])
        kind = self.spec.split(":")[0]
        if kind == "class":
            return self.extractor.probs(items)[:, self.params["k"]].numpy()
        if kind == "thick":
            ink = _ink(items)
            lo, hi = self.params["lo"], self.params["hi"]
            return np.clip((ink - lo) / max(hi - lo, 1e-9), 0, 1)
        if kind == "contains":
            return np.array([float(self.params["s"] in t) for t in items])
        if kind == "short":
            return np.array([max(0.0, 1 - len(t) / (2 * self.params["n"])) for t in items])
        raise AssertionError(kind)

    def preferred(self, items: Any) -> np.ndarray:
        """Whether each item is what the rater wants (the share of these is what the loop should raise)."""
        if "score" in self.params:
            return self.value(items) >= self.params["threshold"]
        kind = self.spec.split(":")[0]
        if kind == "class":
            return (self.extractor.probs(items).argmax(1) == self.params["k"]).numpy()
        if kind == "thick":
            return _ink(items) > self.params["q75"]
        if kind == "contains":
            return np.array([self.params["s"] in t for t in items])
        return np.array([len(t) <= self.params["n"] for t in items])

    def stars(self, items: Any) -> list[int]:
        return [int(1 + round(4 * float(v))) for v in self.value(items)]


def _ink(images: torch.Tensor) -> np.ndarray:
    return ((images.float() + 1) / 2).mean(dim=(1, 2, 3)).numpy()


SEED_STRIDE = 100_000  # sample seeds per simulation seed: stages and seeds never share a sample
RATERS = "class:K, thick (images); contains:STRING, short[:N] (text); in-key:KEY, range:LOW-HIGH (music)"


def make_rater(spec: str, dataset: Any = None) -> Rater:
    """A rater from its spec; image raters need the run's dataset (for its reference net or real images)."""
    kind, _, arg = spec.partition(":")
    if kind == "class":
        from ..evaluation import get_feature_extractor

        if dataset is None:
            raise ConfigError(
                f"rater '{spec}' rates images; this run makes text (text raters: contains:STRING, short[:N])"
            )
        if not arg.isdigit() or int(arg) >= max(dataset.num_classes, 1):
            k = dataset.num_classes
            raise ConfigError(
                f"rater class:K needs a class number from 0 to {k - 1} (dataset {dataset.name}), got '{arg}'"
                if k
                else f"rater class:K needs a labelled dataset; {dataset.name} has no classes (try thick)"
            )
        extractor = get_feature_extractor(dataset)
        name = dataset.class_names[int(arg)] if dataset.class_names else arg
        return Rater(spec, "image", f"prefers images of class {name}", extractor, {"k": int(arg)})
    if kind == "thick":
        if dataset is None:
            raise ConfigError(
                f"rater '{spec}' rates images; this run makes text (text raters: contains:STRING, short[:N])"
            )
        ink = _ink(dataset.float_images("train"))
        lo, hi, q75 = np.quantile(ink, [0.1, 0.9, 0.75])
        return Rater(
            spec,
            "image",
            "prefers thicker strokes (more ink)",
            None,
            {"lo": float(lo), "hi": float(hi), "q75": float(q75)},
        )
    if kind in ("contains", "short") and dataset is not None:
        raise ConfigError(f"rater '{spec}' rates text; this run makes images (image raters: class:K, thick)")
    if kind == "contains":
        if not arg:
            raise ConfigError("rater contains:STRING needs a string, e.g. contains:the")
        return Rater(spec, "text", f"prefers completions containing {arg!r}", params={"s": arg})
    if kind == "short":
        if arg and not arg.isdigit():
            raise ConfigError(f"rater short:N needs a number of characters, got '{arg}'")
        n = int(arg or 40)
        return Rater(spec, "text", f"prefers completions of at most {n} characters", params={"n": n})
    raise ConfigError(f"unknown rater '{spec}'; valid: {RATERS}")


def rate(
    store: FeedbackStore,
    rater: Rater,
    ids: Sequence[str],
    items: Any,
    n_pairs: int,
    seed: int = 0,
    user: str | None = None,
) -> dict[str, int]:
    """Give every item stars, and ``n_pairs`` A/B choices between random items the rater tells apart."""
    values, stars = rater.value(items), rater.stars(items)
    g = np.random.default_rng(seed)
    pairs: list[tuple[str, str]] = []
    tries = 0
    while len(pairs) < n_pairs and tries < 20 * n_pairs and len(ids) > 1:
        i, j = g.choice(len(ids), 2, replace=False)
        tries += 1
        if abs(values[i] - values[j]) < 1e-3:
            continue  # a tie: a person would skip it
        pairs.append((ids[i], ids[j]) if values[i] > values[j] else (ids[j], ids[i]))
    ratings = [{"generation_id": gid, "stars": s} for gid, s in zip(ids, stars)]
    store.add_feedback(ratings, pairs, user=user or f"sim:{rater.spec}"[:64])
    return {"ratings": len(ratings), "preferences": len(pairs)}


def simulate(
    run_id: str,
    rater: str,
    n_rate: int = 200,
    n_pairs: int | None = None,
    n_eval: int = 500,
    k: int = 4,
    seed: int = 0,
    store: FeedbackStore | None = None,
    runs_dir: str | Path | None = None,
    out: str | Path | None = None,
    uses: Sequence[str] = ("best_of_n", "finetune", "select"),
    finetune: Any = None,
    dpo: Any = None,
    reward_cfg: Any = None,
    text_options: dict[str, Any] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Measure the loop for one run and one scripted rater; returns the result and writes it as JSON.

    ``n_rate`` outputs are stored and rated; the reward model learns from them; every measurement uses
    ``n_eval`` fresh samples (the same sample seeds before and after, so only the method differs). Each
    image or text ``i`` of a call with seed ``s`` is drawn from seed ``s + i``, so the stages start
    ``SEED_STRIDE`` apart per ``seed`` (and apart from each other): two seeds never share a sample.
    ``out``: the JSON file (default ``<run>/eval/feedback_<rater>.json``).
    """
    from .. import __version__
    from ..database import new_id
    from ..generation.pipelines import load_pipeline
    from ..runs import RunStore
    from ..serialization import write_json
    from .optimize import best_of_n, select_checkpoint
    from .reward import train_reward

    unknown = set(uses) - {"best_of_n", "finetune", "select"}
    if unknown:
        raise ConfigError(f"unknown uses {sorted(unknown)}; valid: best_of_n, finetune, select")
    if n_rate * k > SEED_STRIDE or n_eval * k > SEED_STRIDE:
        raise ConfigError(f"simulate draws at most {SEED_STRIDE} samples per stage; lower --n-rate/--n-eval/--k")
    if n_rate < 10 or n_eval < 10 or k < 1:
        raise ConfigError(f"simulate needs --n-rate >= 10, --n-eval >= 10 and --k >= 1 (got {n_rate}, {n_eval}, {k})")
    say = progress or (lambda _msg: None)
    t_all = time.perf_counter()
    runs = RunStore(runs_dir)
    run = runs.get(run_id)
    store = store or FeedbackStore(runs=runs_dir)
    pipe = load_pipeline(run.dir)
    kind = modalities[pipe.modality]
    modality = kind.name
    dataset = kind.load_run_data(run)
    r = kind.make_rater(rater, dataset) or make_rater(rater, dataset)
    if r.modality != modality:
        raise ConfigError(f"rater '{rater}' rates {r.modality}; run {run.id} makes {kind.noun}s (valid: {RATERS})")
    if "finetune" in uses and not kind.can_finetune:
        uses = tuple(u for u in uses if u != "finetune")
        say(f"fine-tuning on feedback is not available for {kind.noun}s; measuring best-of-n and selection")
    text_options = {"max_tokens": 64, "temperature": 1.0, **(text_options or {})}
    gen_opts = kind.simulation_options(text_options)
    seconds: dict[str, float] = {}
    items_of = kind.items
    probe = kind.quality_probe(dataset, seed)

    def measure(items: Any) -> dict[str, Any]:
        # the rater's mean value beside the yes/no share: it moves before the stricter share does (music's
        # in-key:C value is the share of notes in C major's scale)
        return {
            "preferred_share": round(float(np.mean(r.preferred(items))), 4),
            "rater_value": round(float(np.mean(r.value(items))), 4),
            **probe(items),
        }

    # 1. generate, store and rate
    t = time.perf_counter()
    job = f"sim-{new_id()[:12]}"
    rated = pipe(n=n_rate, seed=SEED_STRIDE * seed, **gen_opts)
    ids = store.add_outputs(rated, job_id=job, user=f"sim:{rater}"[:64])
    counts = rate(store, r, ids, items_of(rated), n_pairs if n_pairs is not None else n_rate, seed=seed)
    seconds["generate_and_rate"] = round(time.perf_counter() - t, 2)
    say(f"rated {counts['ratings']} outputs and {counts['preferences']} pairs ({r.preference})")

    # 2. the reward model, on this simulation's feedback only
    t = time.perf_counter()
    reward, reward_report = train_reward(
        store, job_id=job, cfg=reward_cfg, runs_dir=runs_dir, out=run.files.reward_model(job)
    )
    seconds["train_reward"] = round(time.perf_counter() - t, 2)
    say(f"reward model: held-out pairwise accuracy {reward_report.get('heldout_pair_accuracy')}")

    # 3. baseline, then each use
    eval_seed = 10_000_000 + SEED_STRIDE * seed
    t = time.perf_counter()
    base = pipe(n=n_eval, seed=eval_seed, **gen_opts)
    results: dict[str, Any] = {
        "baseline": {**measure(items_of(base)), "mean_reward": round(float(reward.score(items_of(base)).mean()), 4)}
    }
    seconds["baseline"] = round(time.perf_counter() - t, 2)
    say(f"baseline: {results['baseline']}")
    if "best_of_n" in uses:
        t = time.perf_counter()
        best = best_of_n(pipe, reward, n=n_eval, k=k, seed=eval_seed, **gen_opts)
        chosen = kind.items(best)
        results["best_of_n"] = {
            **measure(chosen),
            "k": k,
            "mean_reward": round(float(best.scores.mean()), 4),
            "seconds": round(time.perf_counter() - t, 2),
        }
        say(f"best-of-{k}: {results['best_of_n']}")
    child = None
    if "finetune" in uses:
        t = time.perf_counter()
        ft = kind.finetune(run.id, reward, store, job, {"finetune": finetune, "dpo": dpo}, runs_dir)
        child = ft["run_id"]
        tuned = load_pipeline(runs.get(child).dir)(n=n_eval, seed=eval_seed, **gen_opts)
        results["finetune"] = {
            **measure(items_of(tuned)),
            "mean_reward": round(float(reward.score(items_of(tuned)).mean()), 4),
            **{k_: v for k_, v in ft.items() if k_ != "seconds"},
            "seconds": round(time.perf_counter() - t, 2),
        }
        say(f"fine-tuned ({ft['method']}): {results['finetune']}")
    if "select" in uses:
        t = time.perf_counter()
        candidates = (
            [run.id] + ([child] if child else []) + ([f"{run.id}@best"] if run.files.best_weights.is_file() else [])
        )
        sel = select_checkpoint(
            candidates, reward, n=min(n_eval, 200), seed=20_000_000 + SEED_STRIDE * seed, runs_dir=runs_dir, **gen_opts
        )
        truth = {run.id: results["baseline"]["preferred_share"]}
        if child:
            truth[child] = results["finetune"]["preferred_share"]
        best_run = sel["best"].split("@")[0]
        results["select"] = {
            "chosen": sel["best"],
            "table": sel["table"],
            "preferred_share": truth.get(best_run),
            "picked_truly_best": truth.get(best_run) == max(truth.values()) if len(truth) > 1 else None,
            "seconds": round(time.perf_counter() - t, 2),
        }
        say(f"selected {sel['best']}")
    result = {
        "run_id": run.id,
        "model": pipe.info["model"],
        "modality": modality,
        "rater": rater,
        "preference": r.preference,
        "n_rate": n_rate,
        "feedback": counts,
        "n_eval": n_eval,
        "k": k,
        "seed": seed,
        "eval_seed": eval_seed,
        "job_id": job,
        "reward": reward_report,
        "results": results,
        "seconds": {**seconds, "total": round(time.perf_counter() - t_all, 2)},
        "genloop_version": __version__,
    }
    path = Path(out) if out else run.files.eval_feedback(rater.replace(":", "_").replace("/", "_")[:40])
    write_json(path, result)
    result["path"] = str(path)
    return result
