"""Constrained decoding: the sampler may only write text of a regular language.

    c = RegexConstraint(r"[0-9]{3}-[0-9]{4}")
    out = pipe(prompt="Call ", constraint=c)          # every text is a whole match of the pattern

A pattern (a small subset of Python's ``re`` syntax, listed in :func:`parse`) is compiled once to a DFA over
Unicode code points. Bound to a tokenizer (:meth:`RegexConstraint.bind`) it becomes a logits processor
``(logits (B, V), generated (B, G)) -> logits`` that, at every step, sets to -inf each token whose text would
take the generated text out of the language, and allows end-of-text only where the text so far is a whole
match. The sampler applies it before temperature, top-k and top-p (so those choose among allowed tokens), and
in beam search, so it composes with every other control and with streaming.

Why a DFA of our own rather than a library (``interegular`` is on PyPI): byte-level BPE tokens can end in the
middle of a UTF-8 character, and deciding whether such a half character can still become an allowed one needs
"does this state have a transition anywhere in code points lo..hi" (the characters sharing a UTF-8 prefix are
one contiguous range). A DFA whose transitions are sorted code-point ranges answers that with one bisection;
the compiler is about 350 lines and adds no dependency.

Guarantees: a text sampled under the constraint until end-of-text is a whole match of the pattern (tests check
it against Python's ``re.fullmatch``). When the tokenizer's vocabulary cannot write any whole match (a
character it lacks, say), binding raises one :class:`ConfigError` line instead of sampling forever; tokens that
would lead only to dead ends are never offered. A text cut by ``max_tokens`` or a stop string is a prefix of a
match, not a match: give the constraint room.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

MAX_CODE = 0x10FFFF
MAX_REPEAT = 1000  # the largest {n,m} bound: each repeat is a copy of the sub-pattern in the automaton
MAX_DFA_STATES = 20_000
MAX_TOKEN_STATES = 50_000  # (DFA state, pending bytes of a half character) pairs explored when binding

Ranges = list[tuple[int, int]]  # sorted, disjoint, inclusive code-point ranges


# --- character sets ----------------------------------------------------------------------------------------
def _normalise(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _negate(ranges: Ranges) -> Ranges:
    out, nxt = [], 0
    for lo, hi in _normalise(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODE:
        out.append((nxt, MAX_CODE))
    return out


_CLASS_ESCAPES = {  # ASCII meanings, as re.ASCII gives them
    "d": [(48, 57)],
    "s": [(9, 13), (32, 32)],
    "w": [(48, 57), (65, 90), (95, 95), (97, 122)],
}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\0"}


# --- the parser: pattern -> syntax tree -------------------------------------------------------------------
# nodes: ("set", ranges) | ("cat", [nodes]) | ("alt", [nodes]) | ("rep", node, min, max or None)
class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p, self.i = pattern, 0

    def fail(self, what: str) -> ConfigError:
        return ConfigError(f"constraint pattern {self.p!r}: {what} at position {self.i}")

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def take(self) -> str:
        if self.i >= len(self.p):
            raise self.fail("unexpected end")
        c = self.p[self.i]
        self.i += 1
        return c

    def parse(self) -> tuple:
        node = self.alt()
        if self.i != len(self.p):
            raise self.fail(f"unbalanced {self.p[self.i]!r}")
        return node

    def alt(self) -> tuple:
        options = [self.cat()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.cat())
        return options[0] if len(options) == 1 else ("alt", options)

    def cat(self) -> tuple:
        items = []
        while self.peek() not in (None, "|", ")"):
            items.append(self.repeat())
        return ("cat", items)

    def repeat(self) -> tuple:
        node = self.atom()
        while True:
            c = self.peek()
            if c == "*":
                lo, hi = 0, None
            elif c == "+":
                lo, hi = 1, None
            elif c == "?":
                lo, hi = 0, 1
            elif c == "{" and self._looks_counted():
                self.i += 1
                lo, hi = self._bounds()
                node = ("rep", node, lo, hi)
                continue
            else:
                return node
            self.i += 1
            node = ("rep", node, lo, hi)  # a lazy `*?` is `(x*)?`: the same language

    def _looks_counted(self) -> bool:
        end = self.p.find("}", self.i)
        body = self.p[self.i + 1 : end] if end > 0 else ""
        return bool(body) and all(part.isdigit() or part == "" for part in body.split(",")) and body.count(",") <= 1

    def _bounds(self) -> tuple[int, int | None]:
        end = self.p.index("}", self.i)
        body, self.i = self.p[self.i : end], end + 1
        if "," not in body:
            lo = hi = int(body)
        else:
            a, b = body.split(",")
            lo, hi = int(a or 0), (int(b) if b else None)
        if (hi is not None and hi < lo) or max(lo, hi or 0) > MAX_REPEAT:
            raise self.fail(f"repeat bounds {{{body}}} must be 0 <= min <= max <= {MAX_REPEAT}")
        return lo, hi

    def atom(self) -> tuple:
        c = self.take()
        if c == "(":
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.fail("only plain and (?:...) groups are supported")
            node = self.alt()
            if self.peek() != ")":
                raise self.fail("missing ')'")
            self.i += 1
            return node
        if c == "[":
            return ("set", self.char_class())
        if c == ".":
            return ("set", _negate([(10, 10)]))
        if c == "\\":
            return ("set", self.escape())
        if c in "^$":
            raise self.fail(f"anchors are implicit (the whole text must match); drop {c!r}")
        if c in "*+?":
            raise self.fail(f"nothing to repeat before {c!r}")
        if c == ")":
            raise self.fail("unbalanced ')'")
        return ("set", [(ord(c), ord(c))])

    def escape(self) -> Ranges:
        c = self.take()
        if c in _CLASS_ESCAPES:
            return list(_CLASS_ESCAPES[c])
        if c.isupper() and c.lower() in _CLASS_ESCAPES:
            return _negate(_CLASS_ESCAPES[c.lower()])
        if c in _CHAR_ESCAPES:
            return [(ord(_CHAR_ESCAPES[c]),) * 2]  # type: ignore[list-item]
        width = {"x": 2, "u": 4, "U": 8}.get(c)
        if width:
            digits = self.p[self.i : self.i + width]
            self.i += width
            try:
                code = int(digits, 16)
            except ValueError:
                raise self.fail(f"\\{c} needs {width} hex digits") from None
            if len(digits) != width or code > MAX_CODE:
                raise self.fail(f"\\{c} needs {width} hex digits")
            return [(code, code)]
        if c.isalnum():
            raise self.fail(f"unsupported escape \\{c} (supported: \\d \\s \\w \\D \\S \\W \\n \\t \\xHH \\uHHHH)")
        return [(ord(c), ord(c))]

    def char_class(self) -> Ranges:
        negate = self.peek() == "^"
        self.i += negate
        ranges: Ranges = []
        first = True
        while True:
            c = self.take()
            if c == "]" and not first:
                break
            first = False
            lo_set = self.escape() if c == "\\" else [(ord(c), ord(c))]
            if self.peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.i += 1
                d = self.take()
                hi_set = self.escape() if d == "\\" else [(ord(d), ord(d))]
                if len(lo_set) != 1 or len(hi_set) != 1 or lo_set[0][0] != lo_set[0][1] or hi_set[0][0] > hi_set[0][1]:
                    raise self.fail("a range needs single characters at both ends")
                lo, hi = lo_set[0][0], hi_set[0][0]
                if hi < lo:
                    raise self.fail(f"bad range {chr(lo)}-{chr(hi)}")
                ranges.append((lo, hi))
            else:
                ranges.extend(lo_set)
        ranges = _normalise(ranges)
        return _negate(ranges) if negate else ranges


def parse(pattern: str) -> tuple:
    """The syntax tree of ``pattern``. Supported (Python ``re`` syntax, whole-text match): literals, ``.`` (any
    character but newline), classes ``[a-z]`` ``[^...]``, escapes ``\\d \\s \\w`` (ASCII) and their negations,
    ``\\n \\t \\xHH \\uHHHH \\UHHHHHHHH``, groups ``(...)`` ``(?:...)``, ``|``, and ``* + ? {n} {n,} {n,m}``.
    Anything else (anchors, backreferences, look-around, flags) is one :class:`ConfigError` line."""
    if not isinstance(pattern, str):
        raise ConfigError(f"a constraint pattern must be a string, got {type(pattern).__name__}")
    return _Parser(pattern).parse()


# --- Thompson NFA, then subset construction ---------------------------------------------------------------
class _NFA:
    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[Ranges, int]]] = []

    def state(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def build(self, node: tuple) -> tuple[int, int]:
        kind = node[0]
        if kind == "set":
            s, e = self.state(), self.state()
            if node[1]:
                self.edges[s].append((node[1], e))
            return s, e
        if kind == "cat":
            s = e = self.state()
            for child in node[1]:
                cs, ce = self.build(child)
                self.eps[e].append(cs)
                e = ce
            return s, e
        if kind == "alt":
            s, e = self.state(), self.state()
            for child in node[1]:
                cs, ce = self.build(child)
                self.eps[s].append(cs)
                self.eps[ce].append(e)
            return s, e
        _, child, lo, hi = node
        s = e = self.state()
        for _ in range(lo):
            cs, ce = self.build(child)
            self.eps[e].append(cs)
            e = ce
        if hi is None:
            cs, ce = self.build(child)
            end = self.state()
            self.eps[e] += [cs, end]
            self.eps[ce] += [cs, end]
            return s, end
        end = self.state()
        for _ in range(hi - lo):
            cs, ce = self.build(child)
            self.eps[e] += [cs, end]
            e = ce
        self.eps[e].append(end)
        return s, end

    def closure(self, states: set[int]) -> frozenset[int]:
        stack, seen = list(states), set(states)
        while stack:
            for t in self.eps[stack.pop()]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)


@dataclass
class DFA:
    """A deterministic automaton over code points: per state, sorted ranges ``lo[i]..hi[i] -> target[i]``.

    Only live states are kept (an accepting state is reachable from each), so a step that returns a state
    means the text can still become a match; ``None`` means it cannot."""

    lo: list[list[int]] = field(default_factory=list)
    hi: list[list[int]] = field(default_factory=list)
    target: list[list[int]] = field(default_factory=list)
    accepting: list[bool] = field(default_factory=list)

    def step(self, state: int, code: int) -> int | None:
        i = bisect.bisect_right(self.lo[state], code) - 1
        return self.target[state][i] if i >= 0 and code <= self.hi[state][i] else None

    def any_in(self, state: int, lo: int, hi: int) -> bool:
        """Whether some character in ``lo..hi`` continues from ``state``."""
        i = bisect.bisect_right(self.lo[state], hi) - 1
        return i >= 0 and self.hi[state][i] >= lo

    def walk(self, state: int | None, text: str) -> int | None:
        for ch in text:
            if state is None:
                return None
            state = self.step(state, ord(ch))
        return state

    def matches(self, text: str) -> bool:
        state = self.walk(0, text)
        return state is not None and self.accepting[state]


def compile_dfa(pattern: str) -> DFA:
    """``pattern`` (see :func:`parse`) as a minimal-enough :class:`DFA` whose state 0 is the start."""
    nfa = _NFA()
    start, final = nfa.build(parse(pattern))
    sets = [nfa.closure({start})]
    index = {sets[0]: 0}
    trans: list[list[tuple[int, int, int]]] = []
    k = 0
    while k < len(sets):
        bounds: set[int] = set()
        moves: list[tuple[Ranges, int]] = [m for s in sets[k] for m in nfa.edges[s]]
        for ranges, _ in moves:
            for lo, hi in ranges:
                bounds.update((lo, hi + 1))
        cuts = sorted(bounds)
        row: list[tuple[int, int, int]] = []
        for a, b in zip(cuts, cuts[1:]):
            hit = {t for ranges, t in moves if any(lo <= a and b - 1 <= hi for lo, hi in ranges)}
            if not hit:
                continue
            key = nfa.closure(hit)
            if key not in index:
                if len(sets) >= MAX_DFA_STATES:
                    raise ConfigError(f"constraint pattern {pattern!r} needs more than {MAX_DFA_STATES} DFA states")
                index[key] = len(sets)
                sets.append(key)
            t = index[key]
            if row and row[-1][2] == t and row[-1][1] == a - 1:
                row[-1] = (row[-1][0], b - 1, t)
            else:
                row.append((a, b - 1, t))
        trans.append(row)
        k += 1
    accepting = [final in s for s in sets]
    live = _co_reachable(len(sets), [{t for _, _, t in row} for row in trans], accepting)
    if not live[0]:
        raise ConfigError(f"constraint pattern {pattern!r} matches no text at all")
    renum = {old: new for new, old in enumerate(i for i in range(len(sets)) if live[i])}
    dfa = DFA()
    for old in renum:
        row = [(lo, hi, renum[t]) for lo, hi, t in trans[old] if live[t]]
        dfa.lo.append([r[0] for r in row])
        dfa.hi.append([r[1] for r in row])
        dfa.target.append([r[2] for r in row])
        dfa.accepting.append(accepting[old])
    return dfa


def _co_reachable(n: int, succ: Sequence[set[Any]] | dict[Any, set[Any]], accepting: Any) -> Any:
    """For a graph given by successor sets: which nodes reach an accepting node (list or dict, like ``succ``)."""
    keys = range(n) if isinstance(succ, list) else list(succ)
    pred: dict[Any, list[Any]] = {k: [] for k in keys}
    for k in keys:
        for t in succ[k]:
            pred[t].append(k)
    live = {k: bool(accepting[k]) for k in keys}
    stack = [k for k in keys if live[k]]
    while stack:
        for p in pred[stack.pop()]:
            if not live[p]:
                live[p] = True
                stack.append(p)
    return [live[k] for k in keys] if isinstance(succ, list) else live


# --- UTF-8 bytes of tokens, walked through the DFA --------------------------------------------------------
def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0  # a continuation byte or an invalid lead


_MIN_CODE = {1: 0, 2: 0x80, 3: 0x800, 4: 0x10000}


def _prefix_range(prefix: bytes) -> tuple[int, int] | None:
    """The code points whose UTF-8 encoding starts with ``prefix`` (an incomplete character), or None."""
    n = _utf8_length(prefix[0])
    if not n or len(prefix) >= n or any(not 0x80 <= b <= 0xBF for b in prefix[1:]):
        return None
    lo = int.from_bytes(prefix + b"\x80" * (n - len(prefix)), "big")
    hi = int.from_bytes(prefix + b"\xbf" * (n - len(prefix)), "big")
    lo_cp, hi_cp = (_decode_one(x.to_bytes(n, "big")) for x in (lo, hi))
    lo_cp, hi_cp = max(lo_cp, _MIN_CODE[n]), min(hi_cp, MAX_CODE)
    return (lo_cp, hi_cp) if lo_cp <= hi_cp else None


def _decode_one(b: bytes) -> int:
    n = len(b)
    code = b[0] & (0x7F, 0x1F, 0x0F, 0x07)[n - 1]
    for x in b[1:]:
        code = (code << 6) | (x & 0x3F)
    return code


TokenState = tuple[int, bytes]  # (DFA state, the bytes of a character begun but not finished)


def _walk_bytes(dfa: DFA, state: TokenState, data: bytes) -> TokenState | None:
    q, buf = state[0], state[1] + data
    i = 0
    while i < len(buf):
        n = _utf8_length(buf[i])
        if not n:
            return None
        if i + n > len(buf):
            span = _prefix_range(buf[i:])
            return (q, buf[i:]) if span is not None and dfa.any_in(q, *span) else None
        chunk = buf[i : i + n]
        if any(not 0x80 <= b <= 0xBF for b in chunk[1:]):
            return None
        code = _decode_one(chunk)
        if code < _MIN_CODE[n]:
            return None
        nq = dfa.step(q, code)
        if nq is None:
            return None
        q, i = nq, i + n
    return (q, b"")


# --- the constraint and its binding to a tokenizer ---------------------------------------------------------
class RegexConstraint:
    """Text must be a whole match of ``pattern``; independent of any tokenizer until :meth:`bind`.

    ``info`` is recorded with the pattern in each output's recipe (a poetry form puts its name there)."""

    def __init__(self, pattern: str, info: dict[str, Any] | None = None) -> None:
        self.pattern = pattern
        self.info = dict(info or {})
        self.dfa = compile_dfa(pattern)

    def matches(self, text: str) -> bool:
        return self.dfa.matches(text)

    def recipe(self) -> dict[str, Any]:
        return {"kind": "regex", "pattern": self.pattern, **self.info}

    def bind(self, tokenizer: Any) -> TokenConstraint:
        """The logits processor for this tokenizer's vocabulary (its ``token_bytes()`` and ``eot_id``)."""
        return TokenConstraint(self, tokenizer.token_bytes(), getattr(tokenizer, "eot_id", None))

    def __repr__(self) -> str:
        return f"RegexConstraint({self.pattern!r})"


class TokenConstraint:
    """A :class:`RegexConstraint` over one vocabulary: the logits processor ``(logits, generated) -> logits``.

    A token is allowed when every character it completes keeps the DFA alive, a half character it leaves
    pending can still become an allowed one, and the state it leads to can still reach a whole match with
    this vocabulary (found once, when binding, by a search over the reachable (state, pending bytes) pairs;
    a byte-level vocabulary with all 256 bytes can spell anything, so there every live DFA state qualifies).
    End-of-text is allowed only in an accepting state with nothing pending. Rows whose generated tokens
    already hold end-of-text are finished and left alone (the sampler fills them with end-of-text).
    """

    def __init__(self, constraint: RegexConstraint, token_bytes: Sequence[bytes | None], eot_id: int | None) -> None:
        self.constraint, self.dfa = constraint, constraint.dfa
        self.vocab_size, self.eot_id = len(token_bytes), eot_id
        self.tokens = list(token_bytes)
        single = np.full(len(token_bytes), -1, dtype=np.int64)  # the code point of one-character tokens
        self.multi: list[int] = []  # ids of every other token with bytes (several characters, half characters)
        for i, b in enumerate(token_bytes):
            if not b:
                continue
            try:
                text = b.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            if len(text) == 1:
                single[i] = ord(text)
            else:
                self.multi.append(i)
        self.single = single
        self._succ: dict[TokenState, dict[int, TokenState]] = {}  # multi-token moves found per state
        self._masks: dict[TokenState, torch.Tensor] = {}
        self._memo: dict[tuple[int, ...], TokenState | None] = {}
        # a byte-level vocabulary holding every single byte can spell every character, so every state of the
        # (pruned) DFA can still reach a match as long as there is an end-of-text token: no search needed
        spelled = {b for b in token_bytes if b is not None and len(b) == 1}
        self.every_byte = len(spelled) == 256
        self.live: dict[TokenState, bool] | None = None if self.every_byte else self._search()
        if not self._live((0, b"")) or eot_id is None:
            raise ConfigError(
                f"no text this tokenizer can write matches the constraint {constraint.pattern!r} "
                "(its vocabulary lacks characters the pattern needs, or has no end-of-text token)"
            )

    def recipe(self) -> dict[str, Any]:
        return self.constraint.recipe()

    def _live(self, s: TokenState) -> bool:
        return self.live is None or self.live.get(s, False)

    # the search, run once: which token states can still end in a whole match
    def _moves(self, s: TokenState) -> tuple[set[TokenState], dict[int, TokenState]]:
        """The states one token leads to from ``s``: single-character tokens through the DFA's ranges
        (vectorised), the others walked byte by byte (remembered per token)."""
        q, pending = s
        targets: set[TokenState] = set()
        if not pending:
            cps = self.single[self.single >= 0]
            for lo, hi, t in zip(self.dfa.lo[q], self.dfa.hi[q], self.dfa.target[q]):
                if (t, b"") not in targets and bool(((cps >= lo) & (cps <= hi)).any()):
                    targets.add((t, b""))
        multi = {}
        for i in self.multi:  # a one-character token cannot finish a pending half character
            nxt = _walk_bytes(self.dfa, s, self.tokens[i])  # type: ignore[arg-type]
            if nxt is not None:
                multi[i] = nxt
                targets.add(nxt)
        return targets, multi

    def _search(self) -> dict[TokenState, bool]:
        start: TokenState = (0, b"")
        succ: dict[TokenState, set[TokenState]] = {}
        stack = [start]
        while stack:
            s = stack.pop()
            if s in succ:
                continue
            if len(succ) >= MAX_TOKEN_STATES:
                raise ConfigError(
                    f"the constraint {self.constraint.pattern!r} has more than {MAX_TOKEN_STATES} token-level "
                    "states with this vocabulary; use a simpler pattern or a character tokenizer"
                )
            targets, self._succ[s] = self._moves(s)
            succ[s] = targets
            stack.extend(t for t in targets if t not in succ)
        eot_ok = self.eot_id is not None
        accepting = {s: eot_ok and not s[1] and self.dfa.accepting[s[0]] for s in succ}
        return _co_reachable(0, succ, accepting)

    # stepping
    def start(self) -> TokenState:
        return (0, b"")

    def advance(self, state: TokenState, token: int) -> TokenState | None:
        """The state after ``token`` (None: the text has left the language)."""
        if token == self.eot_id or not 0 <= token < self.vocab_size or not self.tokens[token]:
            return None
        cp = int(self.single[token])
        if cp >= 0 and not state[1]:
            q = self.dfa.step(state[0], cp)
            return None if q is None else (q, b"")
        return _walk_bytes(self.dfa, state, self.tokens[token])  # type: ignore[arg-type]

    def allowed(self, state: TokenState) -> torch.Tensor:
        """(V,) bool: the tokens that keep the text on its way to a whole match (end-of-text when it is one)."""
        mask = self._masks.get(state)
        if mask is not None:
            return mask
        q, pending = state
        out = np.zeros(self.vocab_size, dtype=bool)
        if not pending:
            for lo, hi, t in zip(self.dfa.lo[q], self.dfa.hi[q], self.dfa.target[q]):
                if self._live((t, b"")):
                    out |= (self.single >= lo) & (self.single <= hi)
        moves = self._succ.get(state)
        if moves is None:
            moves = self._moves(state)[1]
        for i, nxt in moves.items():
            if self._live(nxt):
                out[i] = True
        if self.eot_id is not None and not pending and self.dfa.accepting[q] and self.eot_id < self.vocab_size:
            out[self.eot_id] = True
        mask = torch.from_numpy(out)
        self._masks[state] = mask
        return mask

    def state_of(self, generated: Sequence[int]) -> TokenState | None:
        """The state after the generated tokens (the previous step's states are remembered, so a step costs
        one token's walk per row; a row not seen before is walked from the start). Keys are the whole generated
        tuples, so a step costs O(generated length) per row: fine for poems and forms, slow past many thousand
        tokens."""
        key = tuple(int(t) for t in generated)
        if not key:
            return self.start()
        if key in self._memo:
            return self._memo[key]
        if key[:-1] in self._memo:
            parent = self._memo[key[:-1]]
        else:
            parent = self.start()
            for t in key[:-1]:
                parent = None if parent is None else self.advance(parent, t)
        return None if parent is None else self.advance(parent, key[-1])

    def __call__(self, logits: torch.Tensor, generated: torch.Tensor | None) -> torch.Tensor:
        rows = generated.tolist() if generated is not None else [[] for _ in range(logits.shape[0])]
        memo: dict[tuple[int, ...], TokenState | None] = {}
        masks = []
        for row in rows:
            if self.eot_id is not None and self.eot_id in row:  # finished: the sampler writes end-of-text
                masks.append(torch.ones(self.vocab_size, dtype=torch.bool))
                continue
            key = tuple(row)
            state = self.state_of(key)
            memo[key] = state
            if state is None:
                raise ConfigError(
                    f"generated text {self._text(row)!r} has left the constraint {self.constraint.pattern!r}"
                )
            mask = self.allowed(state)
            if not bool(mask.any()):
                raise ConfigError(
                    f"the constraint {self.constraint.pattern!r} cannot be continued with this vocabulary after "
                    f"{self._text(row)!r}"
                )
            masks.append(mask)
        self._memo = memo
        allowed = torch.stack(masks).to(logits.device)
        if logits.shape[-1] > self.vocab_size:  # a model padded past the tokenizer's vocabulary
            pad = torch.zeros(allowed.shape[0], logits.shape[-1] - self.vocab_size, dtype=torch.bool)
            allowed = torch.cat([allowed, pad.to(logits.device)], dim=1)
        return logits.masked_fill(~allowed[:, : logits.shape[-1]], float("-inf"))

    def _text(self, row: Sequence[int]) -> str:
        return b"".join(self.tokens[t] or b"" for t in row if 0 <= t < self.vocab_size).decode("utf-8", "replace")


def as_constraint(value: Any) -> RegexConstraint | None:
    """What a call's ``constraint=`` may be: None, a pattern string, or a :class:`RegexConstraint`."""
    if value is None or isinstance(value, RegexConstraint):
        return value
    if isinstance(value, str):
        return RegexConstraint(value)
    raise ConfigError(f"constraint must be a regex pattern or a RegexConstraint, got {type(value).__name__}")


__all__ = ["RegexConstraint", "TokenConstraint", "DFA", "compile_dfa", "parse", "as_constraint"]
