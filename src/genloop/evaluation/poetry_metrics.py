"""Metrics for classical Chinese regulated verse, each meant to sit beside the same measure on real poems.

- **form rate**: the share of texts that are exactly a poem of the form (:mod:`genloop.modalities.text.poetry`).
- **rhyme rate**: the share of poems whose even lines (2, 4, ...) all end in the same rhyme class. Finals come
  from ``pypinyin`` (the reading in the context of the line, or any other reading of a polyphone) and
  are grouped into the thirteen rhyme classes of modern Mandarin (十三辙; the table is
  :mod:`genloop.modalities.text.rhyme`, shared with the rhyme constraint). These are *modern* readings: Tang
  poets rhymed by Middle Chinese (the 平水韵 tradition), and some of their rhymes no longer rhyme today, so
  real Tang poems score below 100 %. No historical rhyme table ships offline with a maintained package, so
  the real poems' rate is the floor to compare with, not 100 %.
- **tone agreement**: level/oblique (平仄) agreement with the form's standard patterns. A character is level
  (平) when its modern tone is 1 or 2 and oblique (仄) for 3 or 4 — the modern-tone simplification: the Middle
  Chinese entering tone (入声) has merged into all four modern tones, so some oblique characters read level
  today. Counted at the positions the rule "一三五不论，二四六分明" fixes (the 2nd, 4th and, in 7-character
  lines, 6th character) and the last character of each line; a poem's agreement is its best over the four
  standard patterns (仄起/平起 × first line rhyming or not); characters without a tone are not counted.

The form constraint forces the layout; with ``rhyme=True`` (the default of ``--form``) it also closes every even line
on a level-tone character of one rhyme class (:func:`genloop.modalities.text.poetry.poem_constraint`). Tone
elsewhere in the line is measured, never forced.
"""

from __future__ import annotations

from typing import Any

from ..errors import DataError
from ..modalities.text.poetry import PoemForm, get_form, is_form, poem_lines
from ..modalities.text.rhyme import RHYME_CLASSES, rhyme_class, rhyme_classes
from ..modalities.text.rhyme import readings as _readings
from . import text_metrics as tm

# the four line patterns of 5-character regulated verse (平 level, 仄 oblique); 7-character lines put the
# opposite pair in front (仄仄平平仄 -> 平平仄仄平平仄)
LINE_TYPES = {"A": "仄仄平平仄", "B": "平平仄仄平", "C": "平平平仄仄", "D": "仄仄仄平平"}
# the four standard poems: 仄起仄收, 仄起平收, 平起仄收, 平起平收 (a regulated 8-line poem goes on with the
# alternation of the first four lines, its 5th line being the non-rhyming type)
QUATRAINS = ("ABCD", "DBCD", "CDAB", "BDAB")


def line_pattern(kind: str, chars: int) -> str:
    five = LINE_TYPES[kind]
    if chars == 5:
        return five
    return ("平平" if five[0] == "仄" else "仄仄") + five


def form_templates(form: str | PoemForm) -> list[str]:
    """The form's standard tone patterns, each a list of lines joined (one string per template)."""
    f = get_form(form)
    out = []
    for q in QUATRAINS:
        kinds = q if f.lines == 4 else q + ("ABCD" if q[1] == "B" else "CDAB")
        out.append("".join(line_pattern(k, f.chars) for k in kinds))
    return out


def rhymes(poem: str) -> bool:
    """Whether all even lines of ``poem`` end in one rhyme class (by some reading of each end character)."""
    even = poem_lines(poem)[1::2]
    return len(even) >= 2 and bool(frozenset.intersection(*(rhyme_classes(line) for line in even)))


def tone_agreement(poem: str, form: str | PoemForm) -> float | None:
    """The best share, over the form's standard patterns, of checked positions whose level/oblique tone matches
    (None when the poem is not in the form or no checked character has a known tone)."""
    f = get_form(form)
    lines = poem_lines(poem)
    if len(lines) != f.lines or any(len(line) != f.chars for line in lines):
        return None
    checked = [1, 3, 5, f.chars - 1] if f.chars == 7 else [1, 3, f.chars - 1]
    tones = []
    for i, line in enumerate(lines):
        reading = _readings(line)
        for j in checked:
            tone = reading[j][1]
            if tone:
                tones.append((i * f.chars + j, "平" if tone in (1, 2) else "仄"))
    if not tones:
        return None
    return max(sum(t[k] == level for k, level in tones) / len(tones) for t in form_templates(f))


def poem_scores(texts: list[str], form: str | PoemForm, acrostic: str | None = None) -> dict[str, Any]:
    """Form rate over all texts; rhyme rate and mean tone agreement over the texts that are in the form."""
    f = get_form(form)
    if not texts:
        raise DataError("poetry metrics need at least one text")
    good = [t for t in texts if is_form(t, f, acrostic)]
    tones = [a for a in (tone_agreement(t, f) for t in good) if a is not None]
    return {
        "n": len(texts),
        "form_rate": len(good) / len(texts),
        "n_in_form": len(good),
        "rhyme_rate": sum(rhymes(t) for t in good) / len(good) if good else None,
        "tone_agreement": sum(tones) / len(tones) if tones else None,
    }


def chance_rhyme_rate(poems: list[str]) -> float | None:
    """The rhyme rate of poems whose even lines come from different poems (poem ``i``'s line 2 with poem
    ``i + 1``'s line 4, ...): what ending lines on unrelated characters scores, the floor below which a model has
    learned no rhyme at all."""
    if len(poems) < 2:
        return None
    lines = [poem_lines(p) for p in poems]
    n, hits = len(lines), []
    for i, own in enumerate(lines):
        ends = [lines[(i + k) % n][j] for k, j in enumerate(range(1, len(own), 2)) if j < len(lines[(i + k) % n])]
        hits.append(len(ends) >= 2 and bool(frozenset.intersection(*(rhyme_classes(x) for x in ends))))
    return sum(hits) / len(hits)


def poetry_report(
    samples: list[str], real: list[str], train_text: str, form: str | PoemForm, acrostic: str | None = None
) -> dict[str, Any]:
    """Every poetry metric of ``samples`` beside the same measure of ``real`` held-out poems (the floor):
    form, rhyme and tone (:func:`poem_scores`), character distinct-1/2 and memorisation — the longest span of
    each text found verbatim in ``train_text``, and the share with a whole couplet's length or more copied."""
    f = get_form(form)
    if not real:
        raise DataError(f"no real {f.chinese} ({f.name}) poems to compare with")
    mine, floor = poem_scores(samples, f, acrostic), poem_scores(real, f)
    out: dict[str, Any] = {"form": f.name, "acrostic": acrostic, "n": len(samples), "n_real": len(real)}
    for k in ("form_rate", "rhyme_rate", "tone_agreement"):
        out[k], out[f"{k}_floor"] = mine[k], floor[k]
    out["n_in_form"] = mine["n_in_form"]
    out["rhyme_rate_chance"] = chance_rhyme_rate(real)
    for n in (1, 2):
        out[f"distinct_{n}"] = tm.distinct_n(samples, n, unit="char")
        out[f"distinct_{n}_floor"] = tm.distinct_n(real, n, unit="char")
    corpus = tm.CorpusIndex(train_text)
    couplet = 2 * (f.chars + 1)
    mem, mem_floor = tm.memorization(samples, corpus, couplet), tm.memorization(real, corpus, couplet)
    out["longest_span_mean"], out["longest_span_mean_floor"] = mem["longest_span_mean"], mem_floor["longest_span_mean"]
    out["copy_rate"], out["copy_rate_floor"] = mem["copy_rate"], mem_floor["copy_rate"]
    out["copy_threshold_chars"] = couplet
    out["memorization_worst"] = mem["worst"][:3]
    out["readings"] = "modern Mandarin (pypinyin): 13 rhyme classes; tones 1,2 level, 3,4 oblique"
    return out


__all__ = [
    "RHYME_CLASSES",
    "LINE_TYPES",
    "form_templates",
    "rhyme_class",
    "rhyme_classes",
    "rhymes",
    "chance_rhyme_rate",
    "tone_agreement",
    "poem_scores",
    "poetry_report",
]
