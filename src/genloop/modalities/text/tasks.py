"""Supervised text tasks on the chat path: summarisation and data-to-text.

A task record is turned into a two-turn conversation (the task's prompt template as the user turn, the
target as the assistant's reply), so it trains with everything chat data has — the loss on the target only,
packing, truncation by whole turns — and generates through the same chat prompt. The templates are plain,
documented text, so a model trained here can be prompted by hand, and any tokenizer can spell them:

- **summarise** — ``{"document": "...", "summary": "..."}``::

      Summarize in about 24 words:
      <document>

  The length hint is the reference summary's word count, rounded to the nearest multiple of
  :data:`WORD_STEP`, so the model learns what the number means; at generation ``words=N`` asks for about N
  words (the ``max_tokens`` cap still applies). ``words=None`` leaves the hint out (trained on too, for a
  share of examples, so that a hint-less prompt is in-distribution).

- **data-to-text** — ``{"data": {"field": value, ...}, "text": "..."}``::

      Write a report from this data:
      home: Ashford
      away: Brill
      ...

  Fields are written one per line, ``key: value``, in the record's order; nested values as compact JSON.

Records are recognised by their keys (:func:`task_of`); a record with a task's keys but a bad value (an empty
document, data that is not an object) is one :class:`~genloop.errors.ConfigError` line naming where.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError

WORD_STEP = 4  # length hints are multiples of this many words
HINTLESS_SHARE = 0.2  # share of training records (chosen by a hash of the record) that carry no length hint

Message = dict[str, str]


def word_count(text: str) -> int:
    return len(text.split())


def length_hint(words: int) -> int:
    """``words`` rounded to the nearest multiple of :data:`WORD_STEP` (at least one step)."""
    return max(WORD_STEP, WORD_STEP * round(words / WORD_STEP))


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ConfigError(f"{where}: '{key}' is empty")
    return value.replace("\r\n", "\n").strip()


def summarize_prompt(document: str, words: int | None = None) -> str:
    """The user turn that asks for a summary of ``document`` (of about ``words`` words, if given)."""
    if words is not None and (not isinstance(words, int) or isinstance(words, bool) or words < 1):
        raise ConfigError(f"words must be a positive whole number, got {words!r}")
    head = "Summarize:" if words is None else f"Summarize in about {length_hint(words)} words:"
    return f"{head}\n{document.strip()}"


def data_prompt(data: dict[str, Any]) -> str:
    """The user turn that asks for a report of ``data``: one ``key: value`` line per field."""
    if not isinstance(data, dict) or not data:
        raise ConfigError("data must be a non-empty JSON object of fields")
    lines = []
    for key, value in data.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        lines.append(f"{key}: {shown}")
    return "Write a report from this data:\n" + "\n".join(lines)


_SUMMARY_HEAD = re.compile(r"Summarize(?: in about (\d+) words)?:\n")
_DATA_HEAD = "Write a report from this data:\n"


def parse_summarize(prompt: str) -> dict[str, Any] | None:
    """``{"document", "words"}`` back from a :func:`summarize_prompt`, or None if ``prompt`` is not one."""
    m = _SUMMARY_HEAD.match(prompt)
    if m is None:
        return None
    return {"document": prompt[m.end() :], "words": int(m.group(1)) if m.group(1) else None}


def parse_data(prompt: str) -> dict[str, Any] | None:
    """``{"data": {field: text}}`` back from a :func:`data_prompt` (values as the text they were written as),
    or None if ``prompt`` is not one."""
    if not prompt.startswith(_DATA_HEAD):
        return None
    data = {}
    for line in prompt[len(_DATA_HEAD) :].split("\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            return None
        data[key] = value
    return {"data": data} if data else None


def _hintless(record: dict[str, Any]) -> bool:
    """Whether this training record goes without a length hint: a stable hash, not a random draw, so the same
    file always trains on the same prompts."""
    key = zlib.crc32(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return (key % 1000) / 1000 < HINTLESS_SHARE


def _summarize_messages(record: dict[str, Any], where: str) -> list[Message]:
    document = _text(record["document"], where, "document")
    summary = _text(record["summary"], where, "summary")
    words = None if _hintless(record) else word_count(summary)
    return [{"role": "user", "content": summarize_prompt(document, words)}, {"role": "assistant", "content": summary}]


def _data_messages(record: dict[str, Any], where: str) -> list[Message]:
    data = record["data"]
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: 'data' must be a non-empty object of fields, got {type(data).__name__}")
    text = _text(record["text"], where, "text")
    return [{"role": "user", "content": data_prompt(data)}, {"role": "assistant", "content": text}]


@dataclass(frozen=True)
class TextTask:
    """One supervised task: the keys that mark its records, and how a record becomes a conversation."""

    name: str
    source_key: str  # what the model reads
    target_key: str  # what it must write
    to_messages: Callable[[dict[str, Any], str], list[Message]]
    parse: Callable[[str], dict[str, Any] | None]  # the inverse of the prompt template (for evaluation)
    description: str

    def matches(self, record: Any) -> bool:
        return isinstance(record, dict) and self.source_key in record and self.target_key in record


TASKS: dict[str, TextTask] = {
    t.name: t
    for t in (
        TextTask("summarize", "document", "summary", _summarize_messages, parse_summarize, "document -> summary"),
        TextTask("data-to-text", "data", "text", _data_messages, parse_data, "fields -> a written report"),
    )
}


def task_of(record: Any) -> TextTask | None:
    """The task whose keys ``record`` has, or None (a chat record, or not a task record at all)."""
    return next((t for t in TASKS.values() if t.matches(record)), None)


def task_of_prompt(prompt: str) -> tuple[TextTask, dict[str, Any]] | None:
    """The task whose template wrote the user turn ``prompt``, and what it was written from; None otherwise."""
    for t in TASKS.values():
        parsed = t.parse(prompt)
        if parsed is not None:
            return t, parsed
    return None


def get_task(name: str) -> TextTask:
    if name not in TASKS:
        raise ConfigError(f"unknown text task '{name}'; known: {', '.join(TASKS)}")
    return TASKS[name]


__all__ = [
    "TASKS",
    "WORD_STEP",
    "TextTask",
    "data_prompt",
    "get_task",
    "length_hint",
    "parse_data",
    "parse_summarize",
    "summarize_prompt",
    "task_of",
    "task_of_prompt",
    "word_count",
]
