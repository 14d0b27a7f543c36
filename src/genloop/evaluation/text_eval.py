"""The text evaluation protocol: how ``genloop eval`` scores a language-model run.

The metrics themselves live in :mod:`genloop.evaluation.text_metrics`; this module fixes *how* they are
applied — which split, which window and stride, how samples are drawn (:data:`TEXT_EVAL`), and which floor
each statistic sits beside — and records all of it in the result, so two results are comparable only when
their protocols say they are.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from .. import __version__, distributed
from ..config import from_dict
from ..generation import sharding
from ..modalities.text import TextDataConfig, load_text_dataset
from ..progress import Listener, Phases
from ..runs import Run, RunStore
from ..serialization import write_json, write_text
from ..systems import models
from . import text_metrics as tm


def _val_documents(dataset: Any) -> list[str]:
    """The held-out documents as text (decoded from the cached validation tokens)."""
    eot = dataset.tokenizer.eot_id
    docs: list[str] = []
    cur: list[int] = []
    for t in dataset.val.tolist():
        if t == eot:
            if cur:
                docs.append(dataset.tokenizer.decode(cur))
            cur = []
        else:
            cur.append(t)
    if cur:
        docs.append(dataset.tokenizer.decode(cur))
    return docs


# How `genloop eval` scores a text model (recorded in each result): samples are plain ancestral samples
# (temperature 1, no top-k/top-p), so diversity and memorisation describe the model, not a sampler's filter.
# A run trained on task records (summaries, data-to-text) is also scored on up to `task_examples` held-out
# records per task, greedily, beside the task's baseline (genloop.evaluation.text_tasks).
TEXT_EVAL = {"max_tokens": 256, "temperature": 1.0, "top_p": 1.0, "eval_tokens": 200_000, "task_examples": 50}


def _sample_settings() -> dict[str, Any]:
    return {k: TEXT_EVAL[k] for k in ("max_tokens", "temperature", "top_p")}


def evaluate_text(
    store: RunStore, run: Run, pipe: Any, n: int, seed: int, t0: float, listener: Listener | None = None
) -> dict[str, Any]:
    """Validation loss / perplexity / bits per character and byte, then ``n`` samples scored for diversity
    (distinct-1/2/3, self-BLEU) and memorisation (longest verbatim span in the training text), each beside
    the same statistic of held-out real text (the floor).

    Under torchrun the ranks share the sampling (:func:`~genloop.generation.sharding.sample_texts`, the
    single-process texts) while rank 0 alone scores the validation loss (one pass, no sampling: it overlaps
    the other ranks' sampling), then scores the gathered texts with the same code, so every metric equals
    the single-process one; only rank 0 writes, the other ranks return an empty dict. ``listener`` hears each
    phase as it starts (:class:`~genloop.progress.Phases`: the studio's evaluation jobs)."""
    if not distributed.is_main():
        sharding.sample_texts(pipe, "", n, 1_000_000 + seed, **_sample_settings())
        return {}
    phase = Phases(False, listener=listener)
    phase("the validation loss")
    cfg = run.config
    cls = models[cfg["model"]["name"]]
    model_cfg = from_dict(cls.Config, cfg["model"], "model.")
    dataset = load_text_dataset(
        from_dict(TextDataConfig, cfg["data"], "data."), tokenizer=cls.tokenizer_source(model_cfg)
    )
    lm = pipe.system.causal_lm()
    block = lm.block_size
    stride = max(1, block // 2)
    loss = tm.sliding_window_loss(
        lambda idx: lm(idx), dataset.val, block, stride=stride, max_tokens=TEXT_EVAL["eval_tokens"], device=pipe.device
    )
    share = loss["tokens_scored"] / max(len(dataset.val) - 1, 1)  # < 1 when eval_tokens capped the scoring
    scored = loss["tokens_scored"]
    result: dict[str, Any] = {
        "run_id": run.id,
        "model": pipe.info["model"],
        "step": pipe.info["step"],
        "checkpoint": pipe.info["checkpoint"],
        "checkpoint_sha256": pipe.info["checkpoint_sha256"],
        "tokenizer": pipe.tokenizer.kind,
        "val_loss": loss["loss"],
        "perplexity": loss["perplexity"],
        "bits_per_char": tm.bits_per_unit(loss["loss"], scored, max(1, round(dataset.val_chars * share))),
        "bits_per_byte": tm.bits_per_unit(loss["loss"], scored, max(1, round(dataset.val_bytes * share))),
        "loss_protocol": {
            "split": "val",
            "block_size": block,
            "stride": stride,
            "tokens_scored": scored,
            "val_tokens": int(len(dataset.val)),
            "max_tokens": TEXT_EVAL["eval_tokens"],
        },
    }
    if getattr(dataset, "chat", None) is not None:  # a chat run: the loss on the held-out assistant replies
        from ..modalities.text.chat import ChatTemplate, assistant_loss

        dataset.chat.template = ChatTemplate(pipe.tokenizer)  # the run's own tokenizer and template
        chat = assistant_loss(lm, dataset.chat, pipe.tokenizer.eot_id, block, device=pipe.device)
        result["assistant_loss"] = chat["loss"]
        result["assistant_perplexity"] = chat["perplexity"]
        result["assistant_protocol"] = {
            "split": "val",
            "conversations": chat["conversations"],
            "tokens_scored": chat["tokens_scored"],
            "truncated": chat["truncated"],
            "dropped": chat["dropped"],
            "template": dataset.chat.template.kind,
        }
        from .text_tasks import evaluate_task, held_out_task_records

        phase("the held-out chat tasks")

        for task, records in held_out_task_records(dataset.chat.val, TEXT_EVAL["task_examples"]).items():
            result.setdefault("tasks", {})[task] = evaluate_task(pipe, task, records, seed=seed)
    phase(f"sampling {n} texts")
    t_sample = time.perf_counter()
    out = sharding.sample_texts(pipe, "", n, 1_000_000 + seed, **_sample_settings())
    sample_seconds = time.perf_counter() - t_sample
    texts = out.texts
    n_tokens = sum(len(pipe.tokenizer.encode(t)) for t in texts)
    mean_chars = max(1, round(sum(len(t) for t in texts) / len(texts)))
    phase(f"scoring {n} samples against held-out text")
    corpus = tm.CorpusIndex(dataset.train_text)
    with warnings.catch_warnings(record=True) as caught:  # kept with the result: a floor can be weak
        warnings.simplefilter("always")
        real = tm.text_floor("\n".join(_val_documents(dataset)), corpus, mean_chars, n, seed=seed)
    for name, fn in (
        ("distinct_1", lambda t: tm.distinct_n(t, 1)),
        ("distinct_2", lambda t: tm.distinct_n(t, 2)),
        ("distinct_3", lambda t: tm.distinct_n(t, 3)),
        ("self_bleu", lambda t: tm.self_bleu(t, seed=seed)),
    ):
        result[name], result[f"{name}_floor"] = fn(texts), fn(real)
    mem, mem_floor = tm.memorization(texts, corpus), tm.memorization(real, corpus)
    result["memorization"] = mem
    result["copy_rate"], result["copy_rate_floor"] = mem["copy_rate"], mem_floor["copy_rate"]
    result["longest_span_mean"] = mem["longest_span_mean"]
    result["longest_span_mean_floor"] = mem_floor["longest_span_mean"]
    result.update(
        {
            "n": n,
            "sample_settings": {k: TEXT_EVAL[k] for k in ("max_tokens", "temperature", "top_p")},
            "sample_seed": 1_000_000 + seed,
            "mean_sample_chars": mean_chars,
            "generation_tokens_per_s": round(n_tokens / max(sample_seconds, 1e-9), 1),
            "sampling_device": str(pipe.device),
            "seconds": round(time.perf_counter() - t0, 2),
            "warnings": [str(w.message) for w in caught],
            "genloop_version": __version__,
        }
    )
    write_json(run.files.eval_metrics(), result)
    write_text(run.files.eval_samples, "\n\n-----\n\n".join(texts[:20]) + "\n")
    keys = ("val_loss", "perplexity", "bits_per_char", "distinct_2", "self_bleu", "copy_rate", "assistant_loss")
    summary = {k: result[k] for k in keys if k in result}
    for task, r in result.get("tasks", {}).items():
        summary[f"{task}_{r['headline']}"] = r["model"][r["headline"]]
    store.update(run, summary=summary)
    return result
