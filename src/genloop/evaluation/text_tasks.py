"""Task metrics for summarisation and data-to-text, each beside a classical baseline on the same examples.

- **ROUGE-1/2/L** F-measures (Lin 2004) through Google's ``rouge-score`` package (the reference Python port of
  ROUGE-1.5.5, with its Porter stemmer on), averaged over examples. Its tokenizer keeps ``[a-z0-9]`` runs,
  so these numbers are for text in Latin script.
- **Field accuracy** (data-to-text): for each field of the input, whether the generated text states its value
  — the value's text found in the output as a whole word (case-insensitive; a whole number also matches
  written with thousands separators or as an ordinal, ``80th``). The share of fields stated, over all
  examples. It checks that a fact is there, not that the sentence around it is right (a goal count of 1 is
  "stated" by any score with a 1 in it); ROUGE-L against the human reference covers the wording.
- **Length control** (summaries): the words asked for vs the words written (mean absolute difference).

Baselines: **lead-k** for summaries (the document's first k sentences; k is the one whose mean length is
closest to the references', chosen on the same examples and reported, which flatters the baseline), and a
**template** for data-to-text (one ``"The <field> is <value>."`` sentence per field: every field stated by
construction, so its field accuracy is 1.0 — the question is whether a model gets close while reading like
the references).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, DataError
from ..modalities.text.tasks import TextTask, length_hint, word_count

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure of ``predictions`` against ``references`` (same length, paired)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references) or not predictions:
        raise DataError(f"rouge needs paired, non-empty lists, got {len(predictions)} and {len(references)}")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    total = dict.fromkeys(ROUGE_TYPES, 0.0)
    for p, r in zip(predictions, references):
        for k, s in scorer.score(r, p).items():
            total[k] += s.fmeasure
    return {k: v / len(predictions) for k, v in total.items()}


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text.strip()) if s]


def lead_k(document: str, k: int) -> str:
    """The document's first ``k`` sentences."""
    return " ".join(sentences(document)[:k])


def _stated(value: Any, low_text: str) -> bool:
    """Whether ``value`` is written in ``low_text`` (lower-cased) as a whole word; a whole number may also be
    written with thousands separators or as an ordinal (``80th``)."""
    text = str(value).strip().lower()
    if re.fullmatch(r"-?\d+", text):
        forms = "|".join(re.escape(f) for f in {text, f"{int(text):,}"})
        return re.search(rf"(?<![\w,])(?:{forms})(?:st|nd|rd|th)?(?![\w])", low_text) is not None
    return re.search(rf"(?<!\w){re.escape(text)}(?!\w)", low_text) is not None


def fields_stated(data: dict[str, Any], text: str) -> tuple[int, int]:
    """(fields whose value appears in ``text``, fields) — see the module docstring."""
    low = text.lower()
    return sum(_stated(v, low) for v in data.values()), len(data)


def template_text(data: dict[str, Any]) -> str:
    """The template baseline: one sentence per field."""
    return " ".join(f"The {k.replace('_', ' ')} is {v}." for k, v in data.items())


def _examples(task: TextTask, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    bad = [i for i, r in enumerate(records) if not task.matches(r)]
    if bad:
        raise ConfigError(
            f"record {bad[0]} is not a {task.name} record (needs '{task.source_key}' and '{task.target_key}')"
        )
    if not records:
        raise DataError(f"no {task.name} records to evaluate")
    return list(records)


def evaluate_summaries(pipe: Any, records: Sequence[dict[str, Any]], seed: int = 0, **sampling: Any) -> dict:
    """ROUGE of ``pipe.summarize`` (greedy, asked for the reference's length) and of lead-k on ``records``."""
    from ..modalities.text.tasks import get_task

    recs = _examples(get_task("summarize"), records)
    refs = [r["summary"] for r in recs]
    t0 = time.perf_counter()
    outs = [pipe.summarize(r["document"], words=word_count(r["summary"]), seed=seed, **sampling) for r in recs]
    seconds = (time.perf_counter() - t0) / len(recs)
    ref_words = sum(word_count(s) for s in refs) / len(refs)
    k = min(
        range(1, 6), key=lambda k: abs(sum(word_count(lead_k(r["document"], k)) for r in recs) / len(recs) - ref_words)
    )
    asked = [length_hint(word_count(s)) for s in refs]
    return {
        "task": "summarize",
        "headline": "rougeL",
        "examples": len(recs),
        "model": {
            **rouge(outs, refs),
            "words_mean": sum(map(word_count, outs)) / len(outs),
            "words_off_mean": sum(abs(word_count(o) - a) for o, a in zip(outs, asked)) / len(outs),
            "seconds_per_example": seconds,
        },
        "lead_k": {**rouge([lead_k(r["document"], k) for r in recs], refs), "k": k},
        "reference_words_mean": ref_words,
        "samples": [{"document": r["document"][:300], "reference": s, "model": o} for r, s, o in zip(recs, refs, outs)][
            :5
        ],
    }


def evaluate_data_to_text(pipe: Any, records: Sequence[dict[str, Any]], seed: int = 0, **sampling: Any) -> dict:
    """Field accuracy and ROUGE of ``pipe.data_to_text`` (greedy) and of the template on ``records``."""
    from ..modalities.text.tasks import get_task

    recs = _examples(get_task("data-to-text"), records)
    refs = [r["text"] for r in recs]
    t0 = time.perf_counter()
    outs = [pipe.data_to_text(r["data"], seed=seed, **sampling) for r in recs]
    seconds = (time.perf_counter() - t0) / len(recs)
    templ = [template_text(r["data"]) for r in recs]

    def accuracy(texts: list[str]) -> float:
        hits = [fields_stated(r["data"], t) for r, t in zip(recs, texts)]
        return sum(h for h, _ in hits) / max(1, sum(n for _, n in hits))

    return {
        "task": "data-to-text",
        "headline": "field_accuracy",
        "examples": len(recs),
        "model": {"field_accuracy": accuracy(outs), **rouge(outs, refs), "seconds_per_example": seconds},
        "template": {"field_accuracy": accuracy(templ), **rouge(templ, refs)},
        "reference": {"field_accuracy": accuracy(refs)},
        "samples": [{"data": r["data"], "reference": s, "model": o} for r, s, o in zip(recs, refs, outs)][:5],
    }


EVALUATORS = {"summarize": evaluate_summaries, "data-to-text": evaluate_data_to_text}


def evaluate_task(pipe: Any, task: str, records: Sequence[dict[str, Any]], seed: int = 0, **sampling: Any) -> dict:
    if task not in EVALUATORS:
        raise ConfigError(f"unknown text task '{task}'; known: {', '.join(EVALUATORS)}")
    return EVALUATORS[task](pipe, records, seed=seed, **sampling)


def held_out_task_records(conversations: Sequence[list[dict[str, str]]], limit: int) -> dict[str, list[dict]]:
    """The held-out task records of a chat data set, by task, rebuilt from their conversations (the user turn
    parsed back through its task's template; the reply is the reference), at most ``limit`` per task."""
    from ..modalities.text.tasks import task_of_prompt

    out: dict[str, list[dict]] = {}
    for conv in conversations:
        turns = [m for m in conv if m["role"] != "system"]
        if len(turns) != 2 or turns[0]["role"] != "user":
            continue
        found = task_of_prompt(turns[0]["content"])
        if found is None:
            continue
        task, source = found
        rows = out.setdefault(task.name, [])
        if len(rows) < limit:
            rows.append({task.source_key: source[task.source_key], task.target_key: turns[1]["content"]})
    return out


__all__ = [
    "EVALUATORS",
    "evaluate_data_to_text",
    "evaluate_summaries",
    "evaluate_task",
    "fields_stated",
    "held_out_task_records",
    "lead_k",
    "rouge",
    "template_text",
]
