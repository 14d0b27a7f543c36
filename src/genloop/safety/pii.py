"""PII scrubbing for text corpora: personal data found by pattern (and checksum where one exists) is replaced
by a placeholder before a language model ever sees it.

    text, counts = scrub("mail me at li.lei@example.cn or call 138 0013 8000")
    # "mail me at <EMAIL> or call <PHONE>", {"email": 1, "phone": 1}

What is found, in this order (earlier kinds win where two overlap):

- ``<EMAIL>`` e-mail addresses;
- ``<IP>`` IPv6 (validated by :mod:`ipaddress`; at least three colons or one group of 3+ hex digits, so
  ``a[1::2]`` and ``std::vector`` stay) and IPv4 addresses (four octets 0–255, not part of a longer dotted
  run: ``1.2.3.4.5`` stays);
- ``<ID_CN>`` Chinese resident identity numbers: 18 characters with a valid birth date and the GB 11643
  check digit; 15-digit legacy numbers with a valid birth date;
- ``<BANK_CARD>`` 13–19 digit card numbers, contiguous or grouped by spaces or dashes, that pass the Luhn
  check;
- ``<PHONE>`` Chinese mobile numbers (``1[3-9]`` + 9 digits, optionally ``+86``), international ``+CC``
  numbers (8–15 digits), North American numbers (``(555) 234-5678``, ``555.234.5678``, ``+1 ...``) and Chinese
  landlines (``010-12345678``).

A checksum failure keeps the text: an 18-digit number with a wrong check digit or a 16-digit number
failing Luhn is not replaced. Dates and version strings are not numbers of any of these forms.
Boundaries are ASCII: a number or address directly between Chinese characters is found.
Patterns cannot be perfect: they aim at what corpora hold, and the counts say what was removed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

PII_VERSION = 1  # bump when what is found changes: it is part of the text cache key
KINDS = ("email", "ip", "id_cn", "bank_card", "phone")
PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP>", "id_cn": "<ID_CN>", "bank_card": "<BANK_CARD>", "phone": "<PHONE>"}

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
)
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?"
    r"(?![0-9A-Za-z_:]|\.\d)"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![0-9A-Za-z_.]){_OCTET}(?:\.{_OCTET}){{3}}(?![0-9A-Za-z_]|\.\d)")
_DATE8 = r"(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
_ID18 = re.compile(rf"(?<![0-9A-Za-z.])[1-9]\d{{5}}{_DATE8}\d{{3}}[0-9Xx](?![0-9A-Za-z])")
_ID15 = re.compile(r"(?<![0-9A-Za-z.])[1-9]\d{5}\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}(?![0-9A-Za-z])")
_CARD = re.compile(
    r"(?<![\d\-.])(?:\d{13,19}|\d{4}(?:[ \-]\d{4}){2,3}(?:[ \-]\d{1,3})?|\d{4}[ \-]\d{6}[ \-]\d{4,5})(?!\d|[\-.]\d)"
)
_PHONE = [
    re.compile(r"(?<![\d+.])(?:(?:\+|00)86[ \-]?)?1[3-9]\d(?:[ \-]?\d{4}){2}(?!\d)"),  # Chinese mobile
    re.compile(r"(?<![0-9A-Za-z_+])\+[1-9]\d{0,2}(?:[ .\-]?\(?\d{1,5}\)?){2,5}(?![\d])"),  # international +CC
    re.compile(
        r"(?<![0-9A-Za-z_+.])(?:1[ .\-]?)?(?:\([2-9]\d{2}\)|[2-9]\d{2})[ .\-]?[2-9]\d{2}[ .\-]?\d{4}(?![\d])"
    ),  # North American
    re.compile(r"(?<![\d\-])0\d{2,3}-\d{7,8}(?![\d\-])"),  # Chinese landline with its area code
]
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_check_digit(first17: str) -> str:
    """GB 11643-1999: the 18th character of a resident identity number from its first 17 digits."""
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS)) % 11]


def valid_id_cn(number: str) -> bool:
    return len(number) == 18 and number[:17].isdigit() and id_check_digit(number[:17]) == number[17].upper()


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _valid_ipv6(s: str) -> bool:
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return s.count(":") >= 3 or any(len(g) >= 3 for g in s.split(":"))


def _valid_card(s: str) -> bool:
    d = _digits(s)
    return 13 <= len(d) <= 19 and luhn_ok(d) and len(set(d)) > 1  # all zeros passes Luhn and is no card


def _valid_intl(s: str) -> bool:
    return 8 <= len(_digits(s)) <= 15


_RULES: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
    ("email", _EMAIL, None),
    ("ip", _IPV6, _valid_ipv6),
    ("ip", _IPV4, None),
    ("id_cn", _ID18, valid_id_cn),
    ("bank_card", _CARD, _valid_card),
    ("id_cn", _ID15, None),
    ("phone", _PHONE[0], None),
    ("phone", _PHONE[1], _valid_intl),
    ("phone", _PHONE[2], None),
    ("phone", _PHONE[3], None),
]


@dataclass
class ScrubResult:
    text: str
    counts: dict[str, int] = field(default_factory=dict)  # kind -> how many were replaced (kinds found only)

    def __iter__(self):  # text, counts = scrub(...)
        return iter((self.text, self.counts))


def scrub(text: str, kinds: Iterable[str] = KINDS) -> ScrubResult:
    """``text`` with every piece of personal data of ``kinds`` replaced by its placeholder, and the counts."""
    wanted = set(kinds)
    unknown = wanted - set(KINDS)
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"unknown PII kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    counts: dict[str, int] = {}
    for kind, pattern, valid in _RULES:
        if kind not in wanted:
            continue

        def replace(m: re.Match[str], kind: str = kind, valid: Callable[[str], bool] | None = valid) -> str:
            if valid is not None and not valid(m.group(0)):
                return m.group(0)
            counts[kind] = counts.get(kind, 0) + 1
            return PLACEHOLDERS[kind]

        text = pattern.sub(replace, text)
    return ScrubResult(text, counts)


def scrub_documents(docs: Iterable[str], kinds: Iterable[str] = KINDS) -> tuple[list[str], dict[str, int]]:
    """Every document scrubbed, and the counts over all of them (every kind listed, zeros included)."""
    kinds = tuple(kinds)
    total = {k: 0 for k in kinds}
    out = []
    for doc in docs:
        r = scrub(doc, kinds)
        out.append(r.text)
        for k, v in r.counts.items():
            total[k] += v
    return out, total


__all__ = ["scrub", "scrub_documents", "ScrubResult", "luhn_ok", "valid_id_cn", "id_check_digit", "KINDS"]
