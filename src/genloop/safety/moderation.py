"""Moderation: one check for prompts and outputs — rules, an optional classifier, an optional image check.

    from genloop.safety import moderation
    d = moderation.check("how do I kill you", target="prompt")
    d.action, d.rule_id, d.category, d.span       # 'block', 'en-violence-threat', 'violence-threat', (9, 17)

**Rules.** Each rule has an ``id``, a ``category``, an ``action`` (``block`` or ``flag``), either ``words``
(terms) or a ``regex``, and optionally ``targets`` (``prompt``, ``output``; default both). Text is normalised
before matching: Unicode NFKC (fullwidth letters become
ASCII) + ``casefold`` (case), zero-width characters and soft hyphens removed, whitespace runs collapsed to one
space; letters spelt out with single separators (``k i l l``, ``k.i.l.l``) are matched joined as well. A term in
a Latin script matches whole words only (``kill`` does not match ``skill``; a term of several words matches
them in a row); a term containing CJK characters matches as a substring (Chinese has no spaces). A regex is
searched in the normalised text. The built-in list (:data:`DEFAULT_RULES`) is deliberately small and mild — a
few English and Chinese entries for ``violence-threat``, ``sexual-minors`` and ``self-harm-instructions`` —
a floor to build on, not a complete policy; edit it or add your own.

**Rule files** (YAML, JSON or TXT), named by ``GENLOOP_MODERATION_RULES`` (several: separated by ``:`` /
``os.pathsep``), ``genloop generate --rules FILE`` or the server setting ``moderation_rules``, add to the
built-in list (a file with ``replace_defaults: true`` replaces it)::

    # rules.yaml
    rules:
      - {id: my-slur-1, category: harassment, action: block, words: ["some term", "另一个词"]}
      - {id: my-card, category: pii, action: flag, regex: "\\b\\d{4}-\\d{4}-\\d{4}-\\d{4}\\b"}
      - {id: no-urls-out, category: spam, action: block, regex: "https?://", targets: [output]}

A JSON file holds the same object (or just the list). A TXT file has one term per line, ``#`` comments, and
optional ``category:action:`` in front (``violence-threat:block:kill you``; default ``custom:block``); a line
``re:PATTERN`` is a regex. A bad file (unreadable, a bad regex, an unknown action, a rule without terms) is
one :class:`~genloop.errors.ConfigError` line naming the file and the rule.

**Hooks.** ``register_text_classifier(fn, threshold=0.5, action="block")`` adds a callable
``text -> [(category, score), ...]``; a score at or above the threshold gives the action (rule id
``classifier:<category>``). ``register_image_check(fn)`` adds a callable ``image -> decision`` (the image
as a ``(C, H, W)`` tensor in [-1, 1]; returning ``"allow"``/``"flag"``/``"block"``, ``None``, a
:class:`Decision`, or ``(action, category)``); image pipelines run it on every image, and a blocked image
is replaced by a black one with ``moderation`` in its recipe. None is registered by default (nothing is
downloaded). A local Hugging Face classifier, for example::

    from transformers import pipeline
    clf = pipeline("text-classification", model="/path/to/a/local/toxicity-model", top_k=None)
    moderation.register_text_classifier(lambda t: [(r["label"], r["score"]) for r in clf(t[:2000])[0]],
                                        threshold=0.8)

**Decisions** are ``allow``, ``flag`` (passes, logged, and the output's recipe gets
``moderation: {action: flag, rule: {...}}``) or ``block`` (a prompt: :class:`ModerationBlocked`, a 400 on the
server with code ``content_filter``; an output: its text withheld, ``finish_reason`` ``content_filter``; a
stream is cut before the piece that completes a match, so the text before it, already sent, stays sent). Each
decision is one JSON line in ``<runs>/moderation.jsonl`` (``time``, ``request_id`` — the job id on the server,
``target``, ``action``, ``rule``, ``sha256`` of the text and, by default, an ``excerpt``: its first 40
characters, never more than half of it; ``GENLOOP_MODERATION_LOG_TEXT`` = ``hash`` stores no text, ``full`` the
whole text), each line written with one ``O_APPEND`` write so concurrent writers never interleave.

**Off switch**: ``GENLOOP_MODERATION=off`` (or the server setting ``moderation: false``) lets everything
through, unchecked and unlogged. Default: on, with the built-in list.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModerationBlocked

ACTIONS = ("allow", "flag", "block")
RULE_ACTIONS = ("flag", "block")
LOG_NAME = "moderation.jsonl"
EXCERPT_CHARS = 40
LOG_TEXT_MODES = ("excerpt", "hash", "full")

# The built-in rules. Mild and factual on purpose: phrases that state a threat, ask for sexual content involving
# children, or ask for self-harm methods. Extend them with a rule file rather than here.
DEFAULT_RULES: list[dict[str, Any]] = [
    {
        "id": "en-violence-threat",
        "category": "violence-threat",
        "action": "block",
        "words": ["i will kill you", "kill you", "going to kill you", "i will shoot you", "bomb threat"],
    },
    {"id": "en-violence-murder", "category": "violence-threat", "action": "flag", "words": ["murder", "murdered"]},
    {
        "id": "zh-violence-threat",
        "category": "violence-threat",
        "action": "block",
        "words": ["我要杀了你", "杀了你", "炸死你"],
    },
    {"id": "zh-violence-murder", "category": "violence-threat", "action": "flag", "words": ["杀人", "谋杀"]},
    {
        "id": "en-sexual-minors",
        "category": "sexual-minors",
        "action": "block",
        "words": ["child sexual abuse material", "child porn", "sexual content involving minors"],
    },
    {"id": "zh-sexual-minors", "category": "sexual-minors", "action": "block", "words": ["儿童色情", "幼女色情"]},
    {
        "id": "en-self-harm-instructions",
        "category": "self-harm-instructions",
        "action": "block",
        "words": ["how to kill myself", "ways to kill myself", "how to commit suicide", "best way to self harm"],
    },
    {
        "id": "zh-self-harm-instructions",
        "category": "self-harm-instructions",
        "action": "block",
        "words": ["怎么自杀", "自杀方法", "如何自残"],
    },
]

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
# letters spelt out with one separator each: "k i l l", "k.i.l.l", "k-i-l-l" (three letters or more)
_SPELT = re.compile(r"(?<!\w)(?:[^\W\d_][ .\-_*]){2,}[^\W\d_](?!\w)")
_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]")


def normalise(text: str) -> str:
    """What rules are matched against: NFKC, casefolded, without zero-width characters, single-spaced."""
    text = unicodedata.normalize("NFKC", text.translate(_ZERO_WIDTH)).casefold()
    return _SPACES.sub(" ", text)


def _despaced(norm: str) -> str | None:
    """``norm`` with spelt-out letters joined ("k i l l" -> "kill"), or None when there are none."""
    if not _SPELT.search(norm):
        return None
    return _SPELT.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), norm)


def tail(text: str, chars: int = 256) -> str:
    """The end of a growing text worth re-checking as a stream adds to it: its last ``chars`` characters, from
    the first whitespace in them on (so no word is cut into a shorter one: "skill" never becomes "kill")."""
    if len(text) <= chars:
        return text
    end = text[-chars:]
    cut = next((i for i, ch in enumerate(end) if ch.isspace()), None)
    return end if cut is None else end[cut:]


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    action: str  # flag | block
    words: tuple[str, ...] = ()
    regex: str | None = None
    source: str = "built-in"
    targets: tuple[str, ...] = ("prompt", "output")  # what it checks

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "category": self.category}


@dataclass
class Decision:
    """The outcome of one check: ``action`` and, unless allowed, the rule that fired and where it matched."""

    action: str = "allow"
    target: str = "prompt"
    rule_id: str | None = None
    category: str | None = None
    span: tuple[int, int] | None = None  # in the normalised text (see :func:`normalise`)
    match: str | None = None
    score: float | None = None  # a classifier's
    request_id: str | None = None
    others: list[dict[str, Any]] = field(default_factory=list)  # further rules that fired

    @property
    def allowed(self) -> bool:
        return self.action != "block"

    @property
    def rule(self) -> dict[str, Any] | None:
        if self.rule_id is None:
            return None
        r: dict[str, Any] = {"id": self.rule_id, "category": self.category}
        if self.span is not None:
            r["span"] = list(self.span)
        if self.match is not None:
            r["match"] = self.match
        if self.score is not None:
            r["score"] = round(self.score, 4)
        return r

    @property
    def reason(self) -> str:
        if self.action == "allow":
            return "allowed"
        what = "the prompt" if self.target == "prompt" else f"the {self.target}"
        verb = "blocked" if self.action == "block" else "flagged"
        how = f"matched '{self.match}'" if self.match is not None else f"score {self.score:.2f}"
        return f"moderation {verb} {what}: rule {self.rule_id} (category {self.category}) {how}"

    def recipe(self) -> dict[str, Any]:
        """What an output's recipe carries: ``{"action": ..., "rule": {...}}``."""
        return {
            "action": self.action,
            "rule": self.rule,
            **({"request_id": self.request_id} if self.request_id else {}),
        }


# --- rule sets ------------------------------------------------------------------------------------------
def _rule(raw: Any, where: str, index: int) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: rule {index + 1} must be a mapping with id, category, action and words/regex")
    rid = str(raw.get("id") or f"{Path(where).stem}-{index + 1}")
    action = str(raw.get("action", "block")).lower()
    if action not in RULE_ACTIONS:
        raise ConfigError(f"{where}: rule {rid}: unknown action '{raw.get('action')}' (valid: block, flag)")
    unknown = set(raw) - {"id", "category", "action", "words", "word", "regex", "targets", "lang", "note"}
    if unknown:
        raise ConfigError(
            f"{where}: rule {rid}: unknown keys {sorted(unknown)} (valid: id, category, action, words, regex, targets)"
        )
    targets = raw.get("targets", ("prompt", "output"))
    targets = (targets,) if isinstance(targets, str) else tuple(str(t) for t in targets)
    if not targets or set(targets) - {"prompt", "output"}:
        raise ConfigError(f"{where}: rule {rid}: targets must be prompt and/or output, got {raw.get('targets')!r}")
    words = raw.get("words", raw.get("word", ()))
    words = (words,) if isinstance(words, str) else tuple(str(w) for w in words or ())
    regex = raw.get("regex")
    if not words and not regex:
        raise ConfigError(f"{where}: rule {rid} has neither words nor a regex")
    if regex is not None:
        try:
            re.compile(str(regex))
        except re.error as e:
            raise ConfigError(f"{where}: rule {rid}: bad regex {regex!r}: {e}") from None
    empty = [w for w in words if not normalise(w).strip()]
    if empty:
        raise ConfigError(f"{where}: rule {rid} has an empty term")
    return Rule(rid, str(raw.get("category", "custom")), action, words, str(regex) if regex else None, where, targets)


def _txt_rules(text: str, where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        category, action = "custom", "block"
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[1].strip().lower() in ("block", "flag", "allow", "warn") and parts[0] != "re":
            category, action, line = parts[0].strip(), parts[1].strip(), parts[2].strip()
        if line.startswith("re:"):
            out.append({"id": f"{Path(where).stem}-{n}", "category": category, "action": action, "regex": line[3:]})
        else:
            out.append({"id": f"{Path(where).stem}-{n}", "category": category, "action": action, "words": [line]})
    return out


def load_rules(path: str | Path) -> tuple[list[Rule], bool]:
    """The rules of one file (YAML, JSON or TXT by suffix) and whether it replaces the built-in list."""
    p = Path(path)
    where = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"moderation rules {where}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    replace = False
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml", ".json"):
        try:
            if suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as e:  # noqa: BLE001 - any parser error is the file's fault
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"moderation rules {where}: not valid {suffix[1:].upper()}: {first}") from None
        if isinstance(data, dict):
            replace = bool(data.get("replace_defaults", False))
            data = data.get("rules")
        if not isinstance(data, list):
            raise ConfigError(f"moderation rules {where}: expected a list of rules (or {{rules: [...]}})")
        raws = data
    elif suffix in (".txt", ".text", ""):
        raws = _txt_rules(text, where)
    else:
        raise ConfigError(f"moderation rules {where}: unknown file type '{suffix}' (use .yaml, .json or .txt)")
    return [_rule(r, where, i) for i, r in enumerate(raws)], replace


class RuleSet:
    """Compiled rules: Latin terms looked up as word n-grams in a dict, CJK terms by their first character,
    regexes searched one by one. Checking costs about the text's length, not the number of term rules."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        ids = [r.id for r in self.rules]
        dup = {i for i in ids if ids.count(i) > 1} if len(ids) < 5000 else set()
        if dup:
            raise ConfigError(f"moderation rules: duplicate rule ids {sorted(dup)[:5]}")
        self.phrases: dict[tuple[str, ...], Rule] = {}
        self.cjk: dict[str, list[tuple[str, Rule]]] = {}
        self.regexes: list[tuple[re.Pattern[str], Rule]] = []
        self.max_words = 1
        for r in self.rules:
            for w in r.words:
                norm = normalise(w).strip()
                if _CJK.search(norm):
                    self.cjk.setdefault(norm[0], []).append((norm, r))
                else:
                    key = tuple(_WORD.findall(norm))
                    if key and _stronger(r, self.phrases.get(key)):
                        self.phrases[key] = r
                        self.max_words = max(self.max_words, len(key))
            if r.regex:
                self.regexes.append((re.compile(r.regex), r))

    def matches(self, norm: str, target: str = "prompt") -> list[tuple[Rule, tuple[int, int], str]]:
        """Every rule for ``target`` that fires on the normalised text (at most once each), with its span."""
        found: dict[str, tuple[Rule, tuple[int, int], str]] = {}
        self._matches(norm, found)
        return [f for f in found.values() if target in f[0].targets]

    def _matches(self, norm: str, found: dict[str, tuple[Rule, tuple[int, int], str]]) -> None:
        if self.phrases:
            words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(norm)]
            texts = [w[0] for w in words]
            for i in range(len(words)):
                for k in range(1, min(self.max_words, len(words) - i) + 1):
                    r = self.phrases.get(tuple(texts[i : i + k]))
                    if r is not None and r.id not in found:
                        s, e = words[i][1], words[i + k - 1][2]
                        found[r.id] = (r, (s, e), norm[s:e])
        if self.cjk:
            for i, ch in enumerate(norm):
                for term, r in self.cjk.get(ch, ()):
                    if r.id not in found and norm.startswith(term, i):
                        found[r.id] = (r, (i, i + len(term)), term)
        for rx, r in self.regexes:
            if r.id not in found:
                m = rx.search(norm)
                if m:
                    found[r.id] = (r, m.span(), m.group(0))


def _stronger(new: Rule, old: Rule | None) -> bool:
    return old is None or (new.action == "block" and old.action != "block")


# --- hooks ----------------------------------------------------------------------------------------------
TextClassifier = Callable[[str], Sequence[tuple[str, float]]]
ImageCheck = Callable[[Any], Any]


@dataclass
class _Classifier:
    fn: TextClassifier
    threshold: float
    action: str
    categories: frozenset[str] | None


_classifiers: list[_Classifier] = []
_image_checks: list[ImageCheck] = []


def register_text_classifier(
    fn: TextClassifier, threshold: float = 0.5, action: str = "block", categories: Iterable[str] | None = None
) -> TextClassifier:
    """Add a classifier ``text -> [(category, score), ...]``: a score ≥ ``threshold`` (for one of ``categories``,
    default any) gives ``action``. Run on every prompt and output after the rules. Returns ``fn``."""
    if action not in RULE_ACTIONS:
        raise ConfigError(f"classifier action must be block or flag, got {action!r}")
    _classifiers.append(_Classifier(fn, float(threshold), action, frozenset(categories) if categories else None))
    return fn


def register_image_check(fn: ImageCheck) -> ImageCheck:
    """Add a check ``image tensor (C, H, W) in [-1, 1] -> decision`` run on every generated image."""
    _image_checks.append(fn)
    return fn


def clear_hooks() -> None:
    """Remove every registered classifier and image check."""
    _classifiers.clear()
    _image_checks.clear()


def has_image_checks() -> bool:
    return bool(_image_checks)


# --- the moderator --------------------------------------------------------------------------------------
class Moderator:
    """Rules + hooks + log. ``enabled=False`` allows everything without looking or logging."""

    def __init__(
        self,
        rules: Iterable[Rule] | None = None,
        enabled: bool = True,
        log_text: str = "excerpt",
        rule_files: Sequence[str | Path] = (),
    ) -> None:
        if log_text not in LOG_TEXT_MODES:
            raise ConfigError(
                f"GENLOOP_MODERATION_LOG_TEXT must be one of {', '.join(LOG_TEXT_MODES)}, got {log_text!r}"
            )
        base = list(rules) if rules is not None else [_rule(r, "built-in", i) for i, r in enumerate(DEFAULT_RULES)]
        for f in rule_files:
            extra, replace = load_rules(f)
            base = extra if replace else [*base, *extra]
        self.rules = RuleSet(base)
        self.enabled = enabled
        self.log_text = log_text

    def check(
        self,
        text: str,
        target: str = "prompt",
        request_id: str | None = None,
        store: str | Path | None = None,
        log: bool | str = True,
    ) -> Decision:
        """The decision for ``text``; logged to ``<store>/moderation.jsonl`` when ``store`` is given and ``log``
        (``log="unless-allowed"`` logs only flags and blocks)."""
        if not self.enabled or not text:
            return Decision("allow", target, request_id=request_id)
        d = self.decide(text, target, request_id)
        if store is not None and log and (log is True or d.action != "allow"):
            write_log(store, d, text, self.log_text)
        return d

    def decide(self, text: str, target: str = "prompt", request_id: str | None = None) -> Decision:
        norm = normalise(text)
        hits = self.rules.matches(norm, target)
        joined = _despaced(norm)
        if joined is not None:
            seen = {h[0].id for h in hits}
            hits += [h for h in self.rules.matches(joined, target) if h[0].id not in seen]
        decisions = [Decision(r.action, target, r.id, r.category, span, m, None, request_id) for r, span, m in hits]
        for c in _classifiers:
            for category, score in c.fn(text) or ():
                if score >= c.threshold and (c.categories is None or category in c.categories):
                    decisions.append(
                        Decision(
                            c.action, target, f"classifier:{category}", category, None, None, float(score), request_id
                        )
                    )
        if not decisions:
            return Decision("allow", target, request_id=request_id)
        decisions.sort(key=lambda d: 0 if d.action == "block" else 1)
        first = decisions[0]
        first.others = [d.rule for d in decisions[1:] if d.rule is not None]
        return first

    def check_image(self, image: Any, request_id: str | None = None, store: str | Path | None = None) -> Decision:
        if not self.enabled or not _image_checks:
            return Decision("allow", "image", request_id=request_id)
        decision = Decision("allow", "image", request_id=request_id)
        for i, fn in enumerate(_image_checks):
            d = _as_decision(fn(image), f"image-check-{i}", request_id)
            if d.action == "block" or (d.action == "flag" and decision.action == "allow"):
                decision = d
            if d.action == "block":
                break
        if store is not None:
            write_log(store, decision, None, self.log_text)
        return decision


def _as_decision(out: Any, default_id: str, request_id: str | None) -> Decision:
    if isinstance(out, Decision):
        out.target, out.request_id = "image", request_id
        return out
    if out is None or out is True:
        return Decision("allow", "image", request_id=request_id)
    category = "image"
    if isinstance(out, tuple):
        out, category = out[0], str(out[1])
    action = "block" if out is False else str(out)
    if action not in ACTIONS:
        raise ConfigError(f"an image check returned {out!r}; expected allow, flag, block, None or a Decision")
    if action == "allow":
        return Decision("allow", "image", request_id=request_id)
    return Decision(action, "image", default_id, category, None, None, None, request_id)


_log_lock = threading.Lock()


def write_log(store: str | Path, d: Decision, text: str | None, mode: str = "excerpt") -> None:
    """Append the decision as one JSON line to ``<store>/moderation.jsonl`` (one ``O_APPEND`` write)."""
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "request_id": d.request_id,
        "target": d.target,
        "action": d.action,
        "rule": d.rule,
    }
    if d.others:
        record["other_rules"] = d.others
    if text is not None:
        record["sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        record["chars"] = len(text)
        if mode == "full":
            record["text"] = text
        elif mode == "excerpt":  # the start only: at most EXCERPT_CHARS and never more than half the text
            keep = min(EXCERPT_CHARS, len(text) // 2)
            record["excerpt"] = text[:keep] + "…"
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    path = Path(store) / LOG_NAME
    with _log_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def read_log(store: str | Path) -> list[dict[str, Any]]:
    path = Path(store) / LOG_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the process's moderator ----------------------------------------------------------------------------
_OFF = {"off", "0", "false", "no", "disabled"}
_cache: dict[tuple, Moderator] = {}


def enabled_from(value: str | bool | None) -> bool:
    if isinstance(value, bool):
        return value
    return (value or "on").strip().lower() not in _OFF


def _files(value: str | Path | Sequence[str | Path] | None) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, (str, Path)):
        return tuple(p for p in str(value).split(os.pathsep) if p)
    return tuple(str(p) for p in value)


def get(
    enabled: bool | str | None = None,
    rules: str | Path | Sequence[str | Path] | None = None,
    log_text: str | None = None,
) -> Moderator:
    """The moderator for these settings (``None``: from ``GENLOOP_MODERATION``, ``GENLOOP_MODERATION_RULES``,
    ``GENLOOP_MODERATION_LOG_TEXT``), built once per settings and rule-file modification time."""
    on = enabled_from(os.environ.get("GENLOOP_MODERATION") if enabled is None else enabled)
    files = _files(os.environ.get("GENLOOP_MODERATION_RULES") if rules is None else rules)
    mode = (log_text or os.environ.get("GENLOOP_MODERATION_LOG_TEXT") or "excerpt").strip().lower()
    stamps = tuple(os.stat(f).st_mtime_ns if os.path.exists(f) else 0 for f in files) if on else ()
    key = (on, files if on else (), stamps, mode)
    m = _cache.get(key)
    if m is None:
        m = Moderator(enabled=on, log_text=mode, rule_files=files if on else ())
        if len(_cache) > 16:
            _cache.clear()
        _cache[key] = m
    return m


def check(
    text: str,
    target: str = "prompt",
    request_id: str | None = None,
    store: str | Path | None = None,
    moderator: Moderator | None = None,
) -> Decision:
    """:meth:`Moderator.check` with the process's moderator (:func:`get`)."""
    return (moderator or get()).check(text, target, request_id, store)


def new_request_id() -> str:
    return "req-" + os.urandom(8).hex()


__all__ = [
    "DEFAULT_RULES",
    "Decision",
    "ModerationBlocked",
    "Moderator",
    "Rule",
    "RuleSet",
    "check",
    "clear_hooks",
    "get",
    "load_rules",
    "normalise",
    "read_log",
    "register_image_check",
    "register_text_classifier",
]
