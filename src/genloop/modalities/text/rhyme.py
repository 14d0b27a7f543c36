"""Rhyme and tone of Chinese characters in modern Mandarin: the one table the poetry constraint and the poetry
metrics share (so what the constraint asks for is exactly what the metric checks).

Finals come from ``pypinyin`` and are grouped into the thirteen rhyme classes of modern Mandarin (十三辙);
tones 1 and 2 are level (平), 3 and 4 oblique (仄). These are *modern* readings: Tang poets rhymed by Middle
Chinese (the 平水韵 tradition), so some of their rhymes no longer rhyme today. No historical rhyme table ships
offline with a maintained package.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ...errors import DataError

# the thirteen rhyme classes (十三辙) of modern Mandarin, by pypinyin's strict finals (v is ü)
RHYME_CLASSES = {
    "发花": ("a", "ia", "ua"),
    "梭波": ("o", "uo", "e"),
    "乜斜": ("ie", "ve", "ue"),
    "一七": ("i", "v", "er"),
    "姑苏": ("u",),
    "怀来": ("ai", "uai"),
    "灰堆": ("ei", "uei", "ui"),
    "遥条": ("ao", "iao"),
    "油求": ("ou", "iou", "iu"),
    "言前": ("an", "ian", "uan", "van"),
    "人辰": ("en", "in", "uen", "un", "vn"),
    "江阳": ("ang", "iang", "uang"),
    "中东": ("eng", "ing", "ong", "iong", "ueng"),
}
CLASS_OF = {final: name for name, finals in RHYME_CLASSES.items() for final in finals}
LEVEL_TONES = (1, 2)


def _pypinyin() -> Any:
    try:
        import pypinyin
    except ImportError:
        raise DataError("poetry rhyme and tone need pypinyin (pip install pypinyin)") from None
    return pypinyin


@lru_cache(maxsize=65536)
def readings(line: str) -> tuple[tuple[str, int], ...]:
    """(strict final, tone 1-4 or 0 when unknown) of each character of a line, read in the line's context."""
    p = _pypinyin()
    finals = p.lazy_pinyin(line, style=p.Style.FINALS, strict=True, errors=lambda x: [""] * len(x))
    tones = p.lazy_pinyin(line, style=p.Style.TONE3, neutral_tone_with_five=True, errors=lambda x: [""] * len(x))
    if len(finals) != len(line) or len(tones) != len(line):  # read characters one at a time instead
        return tuple(r for ch in line for r in readings(ch))
    return tuple((f, int(t[-1]) if t and t[-1] in "1234" else 0) for f, t in zip(finals, tones))


def rhyme_class(line: str) -> str | None:
    """The rhyme class (十三辙) of a line's last character as read in the line, or None when it has no known
    final."""
    if not line:
        return None
    return CLASS_OF.get(readings(line)[-1][0])


@lru_cache(maxsize=65536)
def rhyme_classes(line: str) -> frozenset[str]:
    """Every rhyme class the line's last character can have: its reading in the line and all its other
    readings (a polyphone such as 还 huán/hái rhymes by whichever reading the poem needs)."""
    if not line:
        return frozenset()
    p = _pypinyin()
    others = p.pinyin(line[-1], style=p.Style.FINALS, strict=True, heteronym=True, errors=lambda x: [[""]])[0]
    found = {CLASS_OF.get(f) for f in others} | {rhyme_class(line)}
    return frozenset(c for c in found if c is not None)


def level_rhyme_classes(chars: list[str]) -> list[frozenset[str]]:
    """For each character, the rhyme classes of its *level-tone* readings (any reading of a polyphone): the
    classes it can close a rhyming line in, as regulated verse rhymes on level tones. Empty for characters
    without a level reading or without a known final (punctuation, Latin letters). One ``pypinyin`` call for the
    lot: a whole vocabulary takes about a second."""
    p = _pypinyin()
    style = p.Style.FINALS_TONE3
    out: list[frozenset[str]] = []
    for c in chars:
        found = set()
        if len(c) == 1 and not c.isascii():  # one character at a time: a run of them would be read as words
            for r in p.pinyin(c, style=style, strict=True, heteronym=True, errors=lambda x: [[""]])[0]:
                if r and r[-1].isdigit() and int(r[-1]) in LEVEL_TONES and r[:-1] in CLASS_OF:
                    found.add(CLASS_OF[r[:-1]])
        out.append(frozenset(found))
    return out


__all__ = ["RHYME_CLASSES", "CLASS_OF", "readings", "rhyme_class", "rhyme_classes", "level_rhyme_classes"]
