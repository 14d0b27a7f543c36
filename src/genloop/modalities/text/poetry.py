"""Classical Chinese regulated verse: the four forms, their exact layout, and the constraint that enforces it.

The layout (the one definition every other module uses): a poem is its couplets joined by ``"\\n"``; a
couplet is two lines of 5 or 7 Chinese characters, the first ended by ``，`` and the second by ``。``.

    五言绝句 (wujue)  4 lines x 5     白日依山尽，黄河入海流。\\n欲穷千里目，更上一层楼。
    七言绝句 (qijue)  4 lines x 7
    五言律诗 (wulv)   8 lines x 5
    七言律诗 (qilv)   8 lines x 7

A poem document (training data, and what a title prompt continues) is ``title + "\\n" + poem``: the title
prompt ``"春夜\\n"`` asks for a poem on that theme. An acrostic (藏头诗) fixes the first character of each
line. The constraint enforces the form only: rhyme and tone are *not* forced (a regular language could
not express "these characters rhyme" without listing rhyme groups, and a modern-reading table would force
the wrong answer for many Tang rhymes); they are measured by :mod:`genloop.evaluation.poetry_metrics`.

"Chinese character" here is the CJK Unified Ideographs blocks (basic, extension A, compatibility, and the
supplementary-plane extensions), so traditional and simplified text both fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import ConfigError
from ...generation.constraints import RegexConstraint

HAN_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))
COMMA, PERIOD, NEWLINE = "，", "。", "\n"
HAN = "[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in HAN_RANGES) + "]"  # a class both regex engines read


@dataclass(frozen=True)
class PoemForm:
    name: str  # the --form value
    chinese: str
    lines: int
    chars: int  # characters per line

    @property
    def couplets(self) -> int:
        return self.lines // 2

    @property
    def length(self) -> int:
        """Characters in a poem of this form, punctuation and newlines included."""
        return self.lines * (self.chars + 1) + self.couplets - 1


FORMS: dict[str, PoemForm] = {
    f.name: f
    for f in (
        PoemForm("wujue", "五言绝句", 4, 5),
        PoemForm("qijue", "七言绝句", 4, 7),
        PoemForm("wulv", "五言律诗", 8, 5),
        PoemForm("qilv", "七言律诗", 8, 7),
    )
}


def get_form(name: str | PoemForm) -> PoemForm:
    if isinstance(name, PoemForm):
        return name
    if name not in FORMS:
        raise ConfigError(f"unknown poem form {name!r}; valid: {', '.join(FORMS)}")
    return FORMS[name]


def is_han(ch: str) -> bool:
    return len(ch) == 1 and any(lo <= ord(ch) <= hi for lo, hi in HAN_RANGES)


def check_acrostic(form: PoemForm, acrostic: str | None) -> str | None:
    if acrostic is None or acrostic == "":
        return None
    if len(acrostic) != form.lines or not all(is_han(c) for c in acrostic):
        raise ConfigError(
            f"--acrostic needs {form.lines} Chinese characters for a {form.chinese} ({form.name}), "
            f"one per line; got {acrostic!r}"
        )
    return acrostic


def form_pattern(form: str | PoemForm, acrostic: str | None = None) -> str:
    """The regular expression of a whole poem of ``form`` (Python ``re`` syntax, also the constraint's)."""
    f = get_form(form)
    heads = check_acrostic(f, acrostic) or None
    lines = []
    for i in range(f.lines):
        first = re.escape(heads[i]) if heads else HAN
        rest = HAN + (f"{{{f.chars - 1}}}" if f.chars > 2 else "")
        lines.append(first + rest + (COMMA if i % 2 == 0 else PERIOD))
    return NEWLINE.join(a + b for a, b in zip(lines[::2], lines[1::2]))


def poem_constraint(form: str | PoemForm, acrostic: str | None = None) -> RegexConstraint:
    """The constraint for ``pipe(prompt=title + "\\n", constraint=poem_constraint("wujue"))``; its recipe
    names the form (and the acrostic) beside the pattern."""
    f = get_form(form)
    info = {"form": f.name} | ({"acrostic": acrostic} if acrostic else {})
    return RegexConstraint(form_pattern(f, acrostic), info=info)


def title_prompt(title: str | None) -> str:
    """What a title (or theme) becomes as a prompt: its own line, as poem documents begin."""
    if not title:
        return ""
    return title if title.endswith(NEWLINE) else title + NEWLINE


def is_form(text: str, form: str | PoemForm, acrostic: str | None = None) -> bool:
    """Whether ``text`` is exactly a poem of ``form`` (with the acrostic, if given)."""
    return re.fullmatch(form_pattern(form, acrostic), text) is not None


def poem_lines(text: str) -> list[str]:
    """The lines of a poem without punctuation (for a text that is not in any form: its pieces between
    punctuation and newlines, which the metrics then find irregular)."""
    return [p for p in re.split(r"[，。\n]", text) if p]


def form_of(text: str) -> PoemForm | None:
    """The form ``text`` is in, or None."""
    return next((f for f in FORMS.values() if is_form(text, f)), None)


def regular_poem(paragraphs: list[str]) -> tuple[PoemForm, str] | None:
    """A corpus poem's paragraphs (``"白日依山盡，黃河入海流。"`` each, as the chinese-poetry collection
    stores couplets; a paragraph of two couplets is split at its ``。``) joined in the layout, with its form,
    if it is in one of the forms; else None."""
    joined = "".join(p.strip() for p in paragraphs)
    couplets = re.findall(f"[^{PERIOD}]*{PERIOD}", joined)
    if "".join(couplets) != joined:
        return None
    text = NEWLINE.join(couplets)
    f = form_of(text)
    return None if f is None else (f, text)


def poem_document(title: str, poem: str) -> str:
    return title_prompt(title.strip()) + poem


__all__ = [
    "FORMS",
    "PoemForm",
    "HAN",
    "get_form",
    "form_pattern",
    "poem_constraint",
    "title_prompt",
    "is_form",
    "poem_lines",
    "form_of",
    "regular_poem",
    "poem_document",
]
