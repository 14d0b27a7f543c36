"""Do distinct-n and self-BLEU rank degraded text as worse? Repetition: yes. Word shuffling: no (documented).

Held-out "samples" are varied English sentences; degradations at increasing strength replace them with
repeats. Diversity metrics are blind to word order by construction (distinct-1 and self-BLEU-1 count a
bag of words), so shuffling the words of each sample is checked and recorded as a known blind spot: it
*raises* distinct-2 (random word pairs are rarer than real ones). Fluency is the job of the loss metrics.
"""

from __future__ import annotations

import random

import pytest

from genloop.evaluation.text_metrics import distinct_n, self_bleu

SUBJECTS = ["the old fisherman", "a young painter", "my neighbour", "the tired doctor", "our teacher", "a quiet child"]
VERBS = ["carried", "painted", "found", "watched", "repaired", "described"]
OBJECTS = ["a red boat", "the broken clock", "an empty garden", "the winter sky", "a paper kite", "the long road"]
PLACES = ["near the harbour", "after the storm", "before breakfast", "in the old town", "under the bridge", "at dusk"]


SYLLABLES = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "du", "ny", "or"]


def _held_out(n: int = 40, seed: int = 0) -> list[str]:
    """Templated sentences with a long tail of names, as real text has (a closed vocabulary would saturate
    distinct-1 and hide the very collapse it should show)."""
    rng = random.Random(seed)

    def name() -> str:
        return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()

    return [
        f"{name()} and {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)} while "
        f"{name()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)} ."
        for _ in range(n)
    ]


def _repeated(texts: list[str], level: int) -> list[str]:
    """Level 1-4: the samples collapse onto ever fewer distinct ones (mode collapse)."""
    keep = max(1, len(texts) // (3**level))
    return [texts[i % keep] for i in range(len(texts))]


def _looping(texts: list[str], level: int) -> list[str]:
    """Level 1-4: the first 1/(level+1) of each sample's words, repeated to its length (a degenerate loop)."""
    out = []
    for t in texts:
        w = t.split()
        head = w[: max(1, len(w) // (level + 1))]
        out.append(" ".join((head * len(w))[: len(w)]))
    return out


@pytest.mark.parametrize("degrade", [_repeated, _looping], ids=["repeated-samples", "looping-within-samples"])
def test_repetition_ranks_monotonically_worse(degrade) -> None:
    real = _held_out()
    levels = [real] + [degrade(real, k) for k in range(1, 5)]
    for n in (1, 2, 3):
        d = [distinct_n(t, n) for t in levels]
        assert all(a >= b for a, b in zip(d, d[1:])) and d[0] > d[-1], (n, d)
    if degrade is _repeated:  # self-BLEU compares samples with each other: blind to loops inside one sample
        s = [self_bleu(t) for t in levels]
        assert all(a <= b for a, b in zip(s, s[1:])) and s[0] < s[-1], s


def test_word_shuffling_is_a_known_blind_spot() -> None:
    """Recorded, not hidden: shuffled text looks *as or more* diverse to these metrics."""
    real = _held_out()
    rng = random.Random(1)
    shuffled = [" ".join(rng.sample(t.split(), len(t.split()))) for t in real]
    assert distinct_n(shuffled, 1) == pytest.approx(distinct_n(real, 1))  # same bag of words
    assert distinct_n(shuffled, 2) >= distinct_n(real, 2)  # random pairs are rarer: "better"
    assert self_bleu(shuffled) <= self_bleu(real) + 1e-9  # fewer shared n-grams: "more diverse"
