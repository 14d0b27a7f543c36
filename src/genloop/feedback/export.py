"""Feedback out to the ecosystem, in the JSONL formats Hugging Face TRL trains on.

- ``trl-pairs`` (DPO/ORPO/reward trainers): one line per A/B preference,
  ``{"prompt", "chosen", "rejected"}``. Text: the two completions. Images: the two image files (absolute
  paths) and, as the prompt, what the image was asked to be ("class 7", or "" for an unconditional model).
  A chat reply (its recipe keeps the ``messages`` it answers, as ``/v1/chat/completions`` stores it) exports
  in TRL's conversational format instead: ``{"prompt": [messages], "chosen": [{"role": "assistant",
  "content": ...}], "rejected": [...]}``, so that the trainer renders it with the model's own chat template.
  A pair of a chat reply and a plain completion, or of replies to two different conversations, has no one
  prompt: it is skipped (and counted).
- ``trl-unpaired`` (KTO): one line per rating, ``{"prompt", "completion", "label"}``: thumbs up or 4–5 stars
  is ``true``, thumbs down or 1–2 stars ``false``; 3 stars says neither, so it is skipped. A rating with
  both thumbs and stars is labelled by its thumbs (the explicit yes/no).

Every rating and preference is its own line (two people agreeing is more evidence than one), and the file
is written atomically: a crash leaves the old file or the new one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..modalities import modalities
from ..serialization import atomic_write
from .store import FeedbackStore, GenerationRow

FORMATS = ("trl-pairs", "trl-unpaired")


def _completion(store: FeedbackStore, row: GenerationRow) -> str:
    return modalities[row.modality].item_ref(store, row)


def conversation(row: GenerationRow) -> list[dict[str, str]] | None:
    """The messages a chat reply answers (from its recipe), or None for a plain completion or an image."""
    messages = (row.recipe or {}).get("messages")
    return [{"role": m["role"], "content": m["content"]} for m in messages] if messages else None


def _reply(row: GenerationRow) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": row.text or ""}]


def label_of(thumbs: int | None, stars: int | None) -> bool | None:
    """A rating as a yes/no label: thumbs decide when given; else 4–5 stars yes, 1–2 no, 3 neither (None)."""
    if thumbs is not None:
        return thumbs > 0
    if stars is None or stars == 3:
        return None
    return stars >= 4


def export(
    store: FeedbackStore,
    out: str | Path,
    format: str = "trl-pairs",
    run_id: str | None = None,
    modality: str | None = None,
) -> dict[str, Any]:
    """Write the store's feedback to ``out`` as JSONL; returns ``{"path", "format", "written", "skipped"}``."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format '{format}'; valid: {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name such as feedback.jsonl")
    ratings, prefs, gens = store.feedback_rows(run_id=run_id, modality=modality)
    lines, skipped = [], 0
    if format == "trl-pairs":
        for p in prefs:
            a, b = gens[p.chosen_id], gens[p.rejected_id]
            chat_a, chat_b = conversation(a), conversation(b)
            if chat_a is None and chat_b is None:
                lines.append(
                    {"prompt": a.prompt or "", "chosen": _completion(store, a), "rejected": _completion(store, b)}
                )
            elif chat_a == chat_b:
                lines.append({"prompt": chat_a, "chosen": _reply(a), "rejected": _reply(b)})
            else:
                skipped += 1
    else:
        for r in ratings:
            label = label_of(r.thumbs, r.stars)
            if label is None:
                skipped += 1
                continue
            g = gens[r.generation_id]
            chat = conversation(g)
            if chat is None:
                lines.append({"prompt": g.prompt or "", "completion": _completion(store, g), "label": label})
            else:
                lines.append({"prompt": chat, "completion": _reply(g), "label": label})
    if not lines:
        what = "preferences (A/B choices)" if format == "trl-pairs" else "ratings other than 3 stars"
        raise DataError(f"nothing to export: the store holds no {what}" + (f" for run {run_id}" if run_id else ""))
    with atomic_write(out, "w") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return {"path": str(out), "format": format, "written": len(lines), "skipped": skipped}
