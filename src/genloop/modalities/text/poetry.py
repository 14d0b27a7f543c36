"""Classical Chinese regulated verse: the four forms, their exact layout, and the constraint that enforces it.

The layout (the one definition every other module uses): a poem is its couplets joined by ``"\\n"``; a
couplet is two lines of 5 or 7 Chinese characters, the first ended by ``，`` and the second by ``。``.

    五言绝句 (wujue)  4 lines x 5     白日依山尽，黄河入海流。\\n欲穷千里目，更上一层楼。
    七言绝句 (qijue)  4 lines x 7
    五言律诗 (wulv)   8 lines x 5
    七言律诗 (qilv)   8 lines x 7

A poem document (training data, and what a title prompt continues) is ``title + "\\n" + poem``: the title
prompt ``"春夜\\n"`` asks for a poem on that theme. An acrostic (藏头诗) fixes the first character of each
line. With ``rhyme=True`` (the default) the constraint also closes every even line on a character of one rhyme
class in a level tone, as regulated verse rhymes (the table: :mod:`genloop.modalities.text.rhyme`, modern
Mandarin readings, the same the metrics check). That part is not a regular expression — as a union over the
thirteen classes the determinised automaton took minutes to build — but a second mask the bound constraint
applies at the rhyme positions, whose offsets the fixed layout gives. Tone elsewhere in the line is measured
by :mod:`genloop.evaluation.poetry_metrics`, never forced.

"Chinese character" here is the CJK Unified Ideographs blocks (basic, extension A, compatibility, and the
supplementary-plane extensions), so traditional and simplified text both fit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import ConfigError
from ...generation.constraints import RegexConstraint, TokenConstraint
from .rhyme import level_rhyme_classes

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

    def line_end(self, i: int) -> int:
        """The offset in the poem of line ``i``'s last character (0-based lines, punctuation counted)."""
        couplet, second = divmod(i, 2)
        return couplet * (2 * (self.chars + 1) + 1) + second * (self.chars + 1) + self.chars - 1

    @property
    def rhyme_offsets(self) -> tuple[int, ...]:
        """Where the even lines (the 2nd, 4th, ...) end: the characters that rhyme."""
        return tuple(self.line_end(i) for i in range(1, self.lines, 2))


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


RHYME_NOTE = "even lines end on one rhyme class (十三辙), level tone"


class PoemConstraint(RegexConstraint):
    """A whole poem of ``form`` (its layout as a regular expression, with the acrostic's first characters), and
    with ``rhyme`` every even line closed on a level-tone character of one rhyme class. Bound to a tokenizer it
    is a :class:`RhymedTokenConstraint` (or the plain regex one without rhyme)."""

    def __init__(self, form: str | PoemForm, acrostic: str | None = None, rhyme: bool = True) -> None:
        f = get_form(form)
        info: dict[str, Any] = {"form": f.name} | ({"acrostic": acrostic} if acrostic else {})
        if rhyme:
            info["rhyme"] = RHYME_NOTE
        super().__init__(form_pattern(f, acrostic), info=info)
        self.form, self.rhyme = f, rhyme

    def matches(self, text: str) -> bool:
        return super().matches(text) and (not self.rhyme or rhymes_level(text, self.form))

    def bind(self, tokenizer: Any) -> TokenConstraint:
        if not self.rhyme:
            return super().bind(tokenizer)
        return RhymedTokenConstraint(self, tokenizer.token_bytes(), getattr(tokenizer, "eot_id", None))

    def __repr__(self) -> str:
        return f"PoemConstraint({self.form.name!r}, acrostic={self.info.get('acrostic')!r}, rhyme={self.rhyme})"


def rhymes_level(poem: str, form: str | PoemForm) -> bool:
    """Whether the even lines of ``poem`` (in the form's layout) end on characters sharing a level-tone rhyme
    class — what the rhyme constraint guarantees."""
    f = get_form(form)
    ends = [poem[k] for k in f.rhyme_offsets if k < len(poem)]
    if len(ends) != len(f.rhyme_offsets):
        return False
    return bool(frozenset.intersection(*level_rhyme_classes(ends)))


class RhymedTokenConstraint(TokenConstraint):
    """The form's token constraint plus the rhyme mask: at a rhyme offset only tokens whose character there has
    a level-tone reading in a rhyme class every earlier rhyme character shares are allowed (at the first rhyme
    offset, any character with a level-tone rhyme class). The offset of the next character is the length of the
    text generated so far, which the form's fixed layout makes exact.

    Tokens are read as text: a token several characters long is checked at every rhyme offset it covers; a
    token that is not whole UTF-8 (a byte-level piece of a character) is never allowed to start a rhyme
    character, since the character it begins cannot be known yet."""

    def __init__(self, constraint: PoemConstraint, token_bytes: Sequence[bytes | None], eot_id: int | None) -> None:
        super().__init__(constraint, token_bytes, eot_id)
        self.form = constraint.form
        self.offsets = constraint.form.rhyme_offsets
        texts: list[str | None] = []
        for b in token_bytes:
            try:
                texts.append(b.decode("utf-8") if b else "")
            except UnicodeDecodeError:
                texts.append(None)
        self.texts = texts
        self.longest = max((len(t) for t in texts if t), default=1)  # the most characters one token adds
        chars = sorted({c for t in texts if t for c in t})
        self.classes_of = dict(zip(chars, level_rhyme_classes(chars)))
        self._rhyme_masks: dict[tuple[int, frozenset[str] | None], torch.Tensor] = {}
        if not any(self.classes_of.values()):
            raise ConfigError(
                "rhyme needs characters with a level-tone reading in the vocabulary, and this tokenizer has none; "
                "sample without rhyme (rhyme=False, --no-rhyme)"
            )

    def rhyme_mask(self, k: int, classes: frozenset[str] | None) -> torch.Tensor:
        """(V,) bool: tokens allowed when the rhyme character is the token's ``k``-th character; ``classes`` the
        rhyme classes still open (None: the first rhyme, any class)."""
        key = (k, classes)
        mask = self._rhyme_masks.get(key)
        if mask is not None:
            return mask
        out = np.zeros(self.vocab_size, dtype=bool)
        for i, t in enumerate(self.texts):
            if t is None:
                out[i] = k > 0  # a byte piece starts the character at offset 0 of this step, never a later one
            elif len(t) <= k:
                out[i] = True  # ends before the rhyme character
            else:
                own = self.classes_of.get(t[k], frozenset())
                out[i] = bool(own if classes is None else own & classes)
        mask = self._rhyme_masks[key] = torch.from_numpy(out)
        return mask

    def __call__(self, logits: torch.Tensor, generated: torch.Tensor | None) -> torch.Tensor:
        logits = super().__call__(logits, generated)
        rows = generated.tolist() if generated is not None else [[] for _ in range(logits.shape[0])]
        for b, row in enumerate(rows):
            if self.eot_id is not None and self.eot_id in row:
                continue
            text = self._text(row)
            p = len(text)
            open_classes: frozenset[str] | None = None
            for r in self.offsets:
                if r < p:
                    own = self.classes_of.get(text[r]) or frozenset(level_rhyme_classes([text[r]])[0])
                    open_classes = own if open_classes is None else open_classes & own
            for r in self.offsets:
                if p <= r < p + self.longest:
                    mask = self.rhyme_mask(r - p, open_classes).to(logits.device)
                    n = min(logits.shape[-1], self.vocab_size)
                    logits[b, :n] = logits[b, :n].masked_fill(~mask[:n], float("-inf"))
            if not bool(torch.isfinite(logits[b]).any()):
                raise ConfigError(f"no token of this vocabulary rhymes with {text!r}; sample without rhyme")
        return logits


def poem_constraint(form: str | PoemForm, acrostic: str | None = None, rhyme: bool = True) -> PoemConstraint:
    """The constraint for ``pipe(prompt=title + "\\n", constraint=poem_constraint("wujue"))``; its recipe
    names the form (the acrostic, and the rhyme rule) beside the pattern."""
    return PoemConstraint(form, acrostic, rhyme)


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
    "PoemConstraint",
    "RhymedTokenConstraint",
    "rhymes_level",
    "title_prompt",
    "is_form",
    "poem_lines",
    "form_of",
    "regular_poem",
    "poem_document",
]
