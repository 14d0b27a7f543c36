"""Retrieval for chat (``genloop chat RUN --knowledge FOLDER``): the user's documents cut into passages and
indexed with BM25 (the ``bm25s`` library, offline); the passages most relevant to a message go into the
system message, numbered, and the reply's citations ``[n]`` name the passages it used.

    kb = KnowledgeBase.from_folder("docs/", k=3)
    messages = kb.augment([{"role": "user", "content": "How long do refunds take?"}])
    reply = pipe.chat(messages)
    kb.cited(reply)   # the passages the reply cites, or (when it cites none) the ones it was given

Documents are the text files of a folder (as a text corpus reads them: :data:`~.sources.TEXT_SUFFIXES`,
UTF-8); each is cut at blank lines into paragraphs, and short neighbouring paragraphs are joined up to
:data:`PASSAGE_CHARS` characters. A passage is named ``path#n`` (its file, its number in that file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError, DataError, NotFoundError

PASSAGE_CHARS = 600
CITE = re.compile(r"\[(\d+)\]")
INSTRUCTION = "Answer from these passages; cite the ones you use as [1], [2], ...:"


@dataclass
class Passage:
    source: str  # the file, relative to the folder
    number: int  # the passage's place in its file, from 1
    text: str

    @property
    def name(self) -> str:
        return f"{self.source}#{self.number}"


def passages_of(text: str, source: str, size: int = PASSAGE_CHARS) -> list[Passage]:
    """``text`` cut at blank lines, short neighbouring paragraphs joined up to ``size`` characters."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    out: list[str] = []
    for p in paragraphs:
        if out and len(out[-1]) + len(p) + 2 <= size:
            out[-1] += "\n\n" + p
        else:
            out.append(p)
    return [Passage(source, i, t) for i, t in enumerate(out, 1)]


class KnowledgeBase:
    """A BM25 index over passages; :meth:`search` gives the ``k`` best for a query (those with any match)."""

    def __init__(self, passages: list[Passage], k: int = 3, where: str = "") -> None:
        if not passages:
            raise DataError(f"{where or 'knowledge'}: no text to index")
        if k < 1:
            raise ConfigError(f"--passages must be at least 1, got {k}")
        try:
            import bm25s
        except ImportError:
            raise ConfigError("--knowledge needs the bm25s package (pip install bm25s)") from None
        self.passages, self.k, self.where = passages, int(k), where
        self._bm25s = bm25s
        self.index = bm25s.BM25()
        corpus = [f"{p.source}\n{p.text}" for p in passages]
        self.index.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)

    @classmethod
    def from_folder(cls, folder: str | Path, k: int = 3, size: int = PASSAGE_CHARS) -> KnowledgeBase:
        """The passages of the text files under ``folder`` (paragraphs joined up to ``size`` characters)."""
        from .sources import _decode, _folder_files

        root = Path(folder).expanduser()
        if not root.is_dir():
            raise NotFoundError(f"--knowledge {root}: no such folder")
        files, _ = _folder_files(root)
        passages = []
        for rel, path in files:
            passages += passages_of(_decode(path.read_bytes(), str(path)), rel, size)
        return cls(passages, k, str(root))

    def describe(self) -> str:
        files = len({p.source for p in self.passages})
        return f"{len(self.passages)} passages from {files} file(s) in {self.where}, top {self.k} per message (BM25)"

    def search(self, query: str) -> list[Passage]:
        tokens = self._bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)
        if not tokens or not tokens[0]:
            return []
        k = min(self.k, len(self.passages))
        docs, scores = self.index.retrieve(tokens, k=k, show_progress=False)
        return [self.passages[int(d)] for d, s in zip(docs[0], scores[0]) if float(s) > 0]

    def system_message(self, query: str, system: str | None = None) -> str | None:
        """``system`` with the passages found for ``query`` after it, numbered for citation (unchanged if none)."""
        found = self.search(query)
        self.last = found
        if not found:
            return system
        listing = "\n".join(f"[{i}] ({p.name}) {p.text}" for i, p in enumerate(found, 1))
        return f"{system}\n\n{INSTRUCTION}\n{listing}" if system else f"{INSTRUCTION}\n{listing}"

    def augment(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``messages`` with the passages for the last user turn in the system message (added if missing)."""
        query = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        has_system = bool(messages) and messages[0].get("role") == "system"
        system = self.system_message(query, messages[0]["content"] if has_system else None)
        rest = messages[1:] if has_system else messages
        return ([{"role": "system", "content": system}] if system else []) + list(rest)

    def cited(self, reply: str) -> list[Passage]:
        """The passages of the last search that ``reply`` cites (``[n]``); all of them when it cites none."""
        given = getattr(self, "last", [])
        numbers = sorted({int(n) for n in CITE.findall(reply) if 1 <= int(n) <= len(given)})
        return [given[n - 1] for n in numbers] if numbers else list(given)


__all__ = ["KnowledgeBase", "Passage", "passages_of"]
