"""Chat data for language models: conversations in, token ids with an assistant-only loss mask out.

**Formats** (a ``.jsonl`` file, one conversation per line; ``data.format=auto`` picks chat when the first
record has ``messages`` or ``prompt``/``response``):

- ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`` — the OpenAI / Hugging
  Face chat format, multi-turn, the system message optional (first when present);
- ``{"prompt": "...", "response": "..."}`` (optionally ``"system": "..."``) — one exchange;
- the task records of :mod:`.tasks` — ``{"document", "summary"}`` and ``{"data": {...}, "text"}`` — which
  become one exchange through the task's prompt template.

A bad role, an empty turn, a misplaced system message, or (for training) a conversation that does not end
with an assistant turn is a one-line :class:`~genloop.errors.ConfigError` naming the file and line.

**Templates.** A Hugging Face tokenizer that has a chat template renders conversations with it
(``apply_chat_template``); every other tokenizer (char, GenLoop's BPE, an HF tokenizer without one) uses
GenLoop's own template, plain text markers that every tokenizer can spell::

    <|system|>
    You are helpful.<|end|>
    <|user|>
    Hi<|end|>
    <|assistant|>
    Hello!<|end|>

A reply is generated after ``<|assistant|>\\n`` and stops at ``<|end|>`` (:data:`END`).

**Masking.** Each message is tokenised as its own segment, so the mask is exact: the assistant's content and
the marker that ends it (what the model must learn to write) are targets; the headers, the system and user
turns and the padding are not (their targets become ``-1``, which every text family's loss ignores).

**Truncation.** A conversation longer than the context loses whole exchanges (a user turn with the assistant
turns after it), oldest first; the system message stays. One whose last exchange alone does not fit is
dropped. Both are counted (:class:`ChatBatches` reports them).

**Packing.** Conversations (each followed by the end-of-text token) are packed greedily, in a seeded order,
into rows of ``block_size + 1`` tokens; a conversation never straddles two rows, and the rest of a row is
end-of-text padding outside the mask. Attention is not blocked between the conversations of a row (as
between documents in pre-training); each one starts after an end-of-text token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ConfigError, DataError
from .tasks import TASKS, task_of

ROLES = ("system", "user", "assistant")
SYSTEM, USER, ASSISTANT, END = "<|system|>\n", "<|user|>\n", "<|assistant|>\n", "<|end|>"
CHAT_FORMATS = ("auto", "text", "chat")

Message = dict[str, str]

# ------------------------------------------------------------------------------------------- parsing


def _content(value: Any, where: str, k: int, role: str) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        value = "".join(str(p.get("text", "")) for p in value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: turn {k} ({role}) has content of type {type(value).__name__}, expected a string")
    if not value.strip():
        raise ConfigError(f"{where}: turn {k} ({role}) is empty")
    return value.replace("\r\n", "\n")


def check_messages(messages: Any, where: str = "messages", need_reply: bool = True) -> list[Message]:
    """``messages`` checked and normalised to ``[{"role", "content"}]``; every problem is one ConfigError line.

    ``need_reply``: the last turn must be the assistant's (training); otherwise (generation) it must not be.
    """
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    out: list[Message] = []
    for k, m in enumerate(messages, 1):
        if not isinstance(m, dict):
            raise ConfigError(f"{where}: turn {k} is a {type(m).__name__}, expected an object with role and content")
        role = m.get("role")
        if role not in ROLES:
            raise ConfigError(f"{where}: turn {k} has role {role!r}; valid roles: {', '.join(ROLES)}")
        if role == "system" and k != 1:
            raise ConfigError(f"{where}: turn {k} is a system message; only the first turn may be one")
        out.append({"role": role, "content": _content(m.get("content"), where, k, role)})
    if need_reply and out[-1]["role"] != "assistant":
        raise ConfigError(
            f"{where}: the conversation ends with a {out[-1]['role']} turn; training needs it to end with an "
            "assistant reply"
        )
    if not need_reply and out[-1]["role"] == "assistant":
        raise ConfigError(f"{where}: the conversation ends with an assistant turn; the last turn must be the user's")
    if not need_reply and all(m["role"] == "system" for m in out):
        raise ConfigError(f"{where}: there is no user turn to reply to")
    return out


def record_messages(record: Any, where: str, need_reply: bool = True) -> list[Message]:
    """The conversation of one JSONL record in either format."""
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: a JSON {type(record).__name__}, expected an object with 'messages'")
    if "messages" in record:
        return check_messages(record["messages"], where, need_reply)
    if "prompt" in record and "response" in record:
        turns = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["response"]}]
        if record.get("system") is not None:
            turns.insert(0, {"role": "system", "content": record["system"]})
        return check_messages(turns, where, need_reply)
    task = task_of(record)
    if task is not None:
        return check_messages(task.to_messages(record, where), where, need_reply)
    present = ", ".join(map(str, record)) or "none"
    raise ConfigError(
        f"{where}: no 'messages', no 'prompt'/'response' pair and no task fields "
        f"({'; '.join(f'{t.source_key}/{t.target_key}' for t in TASKS.values())}); fields present: {present}"
    )


def is_chat_record(record: Any) -> bool:
    return isinstance(record, dict) and (
        "messages" in record or ("prompt" in record and "response" in record) or task_of(record) is not None
    )


def detect_format(path: Path) -> str:
    """``"chat"`` when ``path`` is a ``.jsonl`` file whose first record is a conversation, else ``"text"``."""
    if not (path.is_file() and path.suffix.lower() == ".jsonl"):
        return "text"
    try:
        with open(path, encoding="utf-8-sig") as f:
            for line in f:
                if line.strip():
                    return "chat" if is_chat_record(json.loads(line)) else "text"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "text"  # the text reader reports what is wrong with the file
    return "text"


def read_conversations(text: str, where: str) -> list[list[Message]]:
    """Every conversation of a chat JSONL file's text (one per non-blank line)."""
    out = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        out.append(record_messages(record, f"{where}:{lineno}"))
    if not out:
        raise DataError(f"{where}: no conversations")
    return out


# ------------------------------------------------------------------------------------------ templates


class ChatTemplate:
    """How a tokenizer's conversations become text and token ids (see the module docstring).

    ``kind`` is ``"hf"`` (the HF tokenizer's own chat template) or ``"genloop"``; ``stops`` are the strings a
    reply ends at (GenLoop's :data:`END`; for an HF template its end-of-turn token, which usually is eos).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        hf = getattr(tokenizer, "hf_tokenizer", None)
        self.hf = hf if hf is not None and getattr(hf, "chat_template", None) else None
        self.kind = "hf" if self.hf is not None else "genloop"
        if self.hf is not None:
            eos = getattr(self.hf, "eos_token", None)
            found = [eos, getattr(tokenizer, "eot_token", None), self._end_of_turn()]
            self.stops = sorted({s for s in found if isinstance(s, str) and s})
        else:
            self.stops = [END]

    def _end_of_turn(self) -> str | None:
        """What the HF template writes after an assistant reply (ChatML's ``<|im_end|>``), which may not be the
        tokenizer's eos token; None if the template will not render a probe conversation."""
        probe = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "R"}]
        try:
            span = self.segments(probe)[1][0]
        except (ConfigError, IndexError):
            return None
        tail = span[span.rfind("R") + 1 :].strip() if "R" in span else ""
        return tail or None

    # --- text -------------------------------------------------------------------------------------
    def _hf_render(self, messages: Sequence[Message], generation_prompt: bool) -> str:
        try:
            return str(
                self.hf.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)
            )
        except Exception as e:  # jinja's own errors (e.g. a template that refuses a system message)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ConfigError(f"the tokenizer's chat template cannot render this conversation ({first})") from None

    def segments(self, messages: Sequence[Message], generation_prompt: bool = False) -> list[tuple[str, bool]]:
        """The conversation as ``(text, is_target)`` pieces whose concatenation is the rendered text."""
        if self.hf is None:
            out: list[tuple[str, bool]] = []
            for m in messages:
                if m["role"] == "assistant":
                    out += [(ASSISTANT, False), (m["content"] + END, True), ("\n", False)]
                else:
                    out.append(({"system": SYSTEM, "user": USER}[m["role"]] + m["content"] + END + "\n", False))
            if generation_prompt:
                out.append((ASSISTANT, False))
            return out
        out, done = [], ""
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self._hf_render(messages[:i], True)
            upto = self._hf_render(messages[: i + 1], False)
            if not (before.startswith(done) and upto.startswith(before)):
                raise ConfigError(
                    "the tokenizer's chat template does not render a conversation as the prefix of a longer one; "
                    "GenLoop cannot tell the assistant's tokens apart with it"
                )
            out += [(before[len(done) :], False), (upto[len(before) :], True)]
            done = upto
        full = self._hf_render(messages, generation_prompt)
        if not full.startswith(done):
            raise ConfigError("the tokenizer's chat template renders a conversation inconsistently")
        if full[len(done) :]:
            out.append((full[len(done) :], False))
        return out

    def render(self, messages: Sequence[Message], generation_prompt: bool = False) -> str:
        return "".join(t for t, _ in self.segments(messages, generation_prompt))

    # --- tokens -----------------------------------------------------------------------------------
    def encode(self, messages: Sequence[Message]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of a whole conversation and its mask (1 on the tokens the loss is taken on)."""
        ids, mask = [], []
        for text, target in self.segments(messages):
            if not text:
                continue
            part = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
            ids.append(part)
            mask.append(np.full(len(part), int(target), dtype=np.uint8))
        if not ids:
            return np.zeros(0, np.int64), np.zeros(0, np.uint8)
        return np.concatenate(ids), np.concatenate(mask)

    def fit(
        self, messages: list[Message], limit: int, measure: Callable[[list[Message]], int] | None = None
    ) -> tuple[list[Message] | None, int]:
        """``messages`` with the oldest exchanges removed until ``measure`` (default: the token count) is at most
        ``limit``; the system message stays. Returns (the messages or None if even the last exchange is too long,
        the number of turns removed)."""
        measure = measure or (lambda ms: len(self.encode(ms)[0]))
        head = messages[:1] if messages[0]["role"] == "system" else []
        body = messages[len(head) :]
        removed = 0
        while measure(head + body) > limit:
            starts = [i for i, m in enumerate(body) if m["role"] == "user" and i > 0]
            if not starts:
                return None, removed + len(body)
            removed += starts[0]
            body = body[starts[0] :]
        return head + body, removed


def chat_prompt(
    template: ChatTemplate, messages: Any, block_size: int | None, max_tokens: int = 200
) -> tuple[str, list[str], int]:
    """The prompt a reply to ``messages`` continues (the conversation rendered, then the assistant's header), the
    stop strings that end a reply, and how many of the oldest turns were left out so that the prompt leaves room
    in a context of ``block_size`` tokens (None: no limit) for the reply (a quarter of it, or ``max_tokens`` if
    less). The system message and the last user turn always stay (the sampler keeps the end of a prompt that is
    still too long)."""
    msgs = check_messages(messages, "messages", need_reply=False)
    removed = 0
    if block_size:
        room = max(1, block_size - min(int(max_tokens), block_size // 4))
        kept, removed = template.fit(msgs, room, lambda ms: len(template.tokenizer.encode(template.render(ms, True))))
        if kept is None:
            kept = (msgs[:1] if msgs[0]["role"] == "system" else []) + [msgs[-1]]
            removed = len(msgs) - len(kept)
        msgs = kept
    return template.render(msgs, True), list(template.stops), removed


# ------------------------------------------------------------------------------------------- dataset


@dataclass
class ChatData:
    """The conversations of a chat data set, by split, with the template that tokenises them."""

    template: ChatTemplate
    train: list[list[Message]]
    val: list[list[Message]]
    stats: dict[str, Any] = field(default_factory=dict)

    def encoded(self, split: str, block_size: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, int]]:
        """The split's conversations tokenised and truncated to fit ``block_size`` tokens (the end-of-text token
        after each one completes a row of ``block_size + 1``), and what truncation did."""
        out, truncated, removed, dropped = [], 0, 0, 0
        for messages in getattr(self, split):
            kept, n = self.template.fit(messages, block_size)
            if kept is None:
                dropped += 1
                continue
            if n:
                truncated, removed = truncated + 1, removed + n
            out.append(self.template.encode(kept))
        stats = {"conversations": len(out), "truncated": truncated, "turns_removed": removed, "dropped": dropped}
        if not out:
            raise DataError(
                f"no {split} conversation fits the model's context of {block_size} tokens, even cut to its last "
                "exchange; use a larger model.block_size"
            )
        return out, stats


def split_conversations(
    convs: list[list[Message]], val_fraction: float, seed: int
) -> tuple[list[list[Message]], list[list[Message]]]:
    """By conversation, as :func:`~.sources.split_documents` splits documents (same seeded permutation)."""
    n = len(convs)
    if n < 2:
        raise DataError(f"a chat data set needs at least 2 conversations (one is held out), got {n}")
    n_val = min(max(round(n * val_fraction), 1), n - 1)
    perm = np.random.default_rng(seed & 0xFFFFFFFFFFFFFFFF).permutation(n)
    val_set = set(perm[:n_val].tolist())
    return [c for i, c in enumerate(convs) if i not in val_set], [c for i, c in enumerate(convs) if i in val_set]


def flat(encoded: list[tuple[np.ndarray, np.ndarray]], eot_id: int) -> tuple[np.ndarray, np.ndarray]:
    """One stream of ids (end-of-text after each conversation) and its mask, as text corpora are stored."""
    ids, mask = [], []
    for a, m in encoded:
        ids += [a, np.array([eot_id], np.int64)]
        mask += [m, np.zeros(1, np.uint8)]
    return np.concatenate(ids), np.concatenate(mask)


# ------------------------------------------------------------------------------------------- packing


def pack(
    encoded: list[tuple[np.ndarray, np.ndarray]], length: int, pad_id: int, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``length`` tokens holding whole conversations (each followed by ``pad_id``, the end-of-text
    token), greedily in a seeded order (``seed=None``: the given order); returns ``(ids, mask)`` (R, length)."""
    order = list(range(len(encoded)))
    if seed is not None:
        order = np.random.default_rng(seed & 0xFFFFFFFFFFFFFFFF).permutation(len(encoded)).tolist()
    rows: list[list[int]] = []
    fill = length
    for i in order:
        n = len(encoded[i][0]) + 1
        if n > length:
            raise DataError(f"a conversation of {n} tokens does not fit rows of {length}")
        if fill + n > length:
            rows.append([])
            fill = 0
        rows[-1].append(i)
        fill += n
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.uint8)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            a, m = encoded[i]
            ids[r, at : at + len(a)], mask[r, at : at + len(a)] = a, m
            at += len(a) + 1  # the end-of-text after it is already pad_id, outside the mask
    return ids, mask


def targets(ids: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of packed rows: ``y`` is the next token where it is an assistant token, else ``-1``."""
    x = torch.from_numpy(np.ascontiguousarray(ids[:, :-1]))
    y = torch.from_numpy(np.where(mask[:, 1:] > 0, ids[:, 1:], -1).astype(np.int64))
    return x, y


class ChatBatches:
    """Seeded random batches of packed chat rows: ``x`` (B, T) and ``y`` (B, T) with ``-1`` off the assistant's
    tokens. As :class:`~.batches.TokenBatches`, batch ``n`` depends only on ``(seed, n)``, so it resumes exactly."""

    def __init__(
        self, chat: ChatData, pad_id: int, batch_size: int, block_size: int, seed: int = 0, device: Any = "cpu"
    ) -> None:
        if batch_size < 1 or block_size < 1:
            raise ConfigError(f"batch_size and block_size must be at least 1, got {batch_size} and {block_size}")
        encoded, self.stats = chat.encoded("train", block_size)
        self.ids, self.mask = pack(encoded, block_size + 1, pad_id, seed)
        self.stats["rows"] = len(self.ids)
        self.stats["target_tokens"] = int(self.mask.sum())
        self.batch_size, self.block_size, self.seed, self.step = int(batch_size), int(block_size), int(seed), 0
        self.device = device

    @property
    def device(self) -> torch.device:
        return self._device

    @device.setter
    def device(self, value: Any) -> None:
        self._device = torch.device(value)

    def rows(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFFFFFFFFFF, step])
        return rng.integers(0, len(self.ids), size=self.batch_size)

    def __iter__(self) -> ChatBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        pick = self.rows(self.step)
        self.step += 1
        x, y = targets(self.ids[pick], self.mask[pick])
        return x.to(self._device), y.to(self._device)

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


@torch.no_grad()
def assistant_loss(
    lm: Callable[[torch.Tensor], torch.Tensor],
    chat: ChatData,
    pad_id: int,
    block_size: int,
    device: Any = "cpu",
    split: str = "val",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Mean cross-entropy on the assistant's tokens of ``split``'s conversations (packed in file order), with
    how many tokens were scored and what truncation did."""
    encoded, stats = chat.encoded(split, block_size)
    ids, mask = pack(encoded, block_size + 1, pad_id, seed=None)
    total, count = 0.0, 0
    for s in range(0, len(ids), batch_size):
        x, y = targets(ids[s : s + batch_size], mask[s : s + batch_size])
        x, y = x.to(device), y.to(device)
        logits = lm(x).float()
        total += float(
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1, reduction="sum"
            )
        )
        count += int((y >= 0).sum())
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": float(np.exp(min(loss, 50.0))), "tokens_scored": count, **stats}


__all__ = [
    "CHAT_FORMATS",
    "END",
    "ROLES",
    "ChatBatches",
    "ChatData",
    "ChatTemplate",
    "assistant_loss",
    "chat_prompt",
    "check_messages",
    "detect_format",
    "pack",
    "read_conversations",
    "record_messages",
    "split_conversations",
]
