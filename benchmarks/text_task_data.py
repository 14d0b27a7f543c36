"""A synthetic, offline evaluation set for summarisation and data-to-text: football match reports.

How it is made (seeded, no download): each match is a record of nine fields — two teams drawn from 24 made-up
town names, the goals (0–4 each), a ground (16 names), a weekday, the scorer of the deciding (or, in a draw,
the first) goal (40 made-up names), the minute (2–90) and the attendance (1,200–48,000).

- **Summarisation.** The *document* is a six-to-eight-sentence article: the facts spread over several
  sentences (the meeting and the ground, the crowd, the goal and its minute, the final score), mixed in random
  order with filler sentences drawn from a pool of 14 (weather, line-ups, possession, ...). The opening is
  usually the meeting sentence, sometimes filler — as in real reports, the lead carries some of the facts but
  rarely the score. The *summary* is one sentence in one of three phrasings that states the winner, the
  score, the ground, and the goal's scorer and minute.
- **Data-to-text.** The *data* is the nine fields; the *text* a two-sentence report in one of four phrasings.

Made-up names keep a pretrained model's world knowledge out of it, and the facts must be read from the input:
every reference is consistent with its input by construction. It is easy next to real news (a small, closed
vocabulary and fixed phrasings): a model that reaches a high score here has learnt to copy and order facts,
not to write news.
"""

from __future__ import annotations

import random
from typing import Any

TEAMS = (
    "Ashford Ashbury Brill Calder Dunmore Elmstead Fenwick Garrow Harlow Ilford Jarrow Kelso Lindley Marden "
    "Norley Oakham Penrith Quarley Redcar Selby Thirsk Upton Wrexby Yarrow"
).split()
GROUNDS = (
    "Mill Lane|Castle Park|the Riverside|Eastfield|Kings Road|the Old Quarry|Station Park|Church Meadow|"
    "the Dell|Highfield|Brook Lane|the Hollow|Victoria Park|Ferry Road|the Moor|Abbey Field"
).split("|")
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
FIRST = "Tom Sam Joe Dan Ben Max Leo Ali Ian Rob".split()
LAST = "Hale Crane Moss Pryce Dunn Vale".split() + "Kerr Lowe Finch Wade Booth Rudd".split()
FILLER = (
    "Both managers named unchanged sides.",
    "Rain fell for most of the second half.",
    "The visitors had more of the ball early on.",
    "A minute's applause was held before kick-off.",
    "The pitch had been passed fit that morning.",
    "Neither goalkeeper was tested much in the first half.",
    "The referee showed four yellow cards.",
    "There was a long stoppage after a clash of heads.",
    "Several regulars were missing through injury.",
    "The home side switched to three at the back after the break.",
    "A late substitution changed the shape of the game.",
    "Chances were few and far between.",
    "The wind made long passing difficult.",
    "The away fans sang throughout.",
)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def match(rng: random.Random) -> dict[str, Any]:
    home, away = rng.sample(TEAMS, 2)
    return {
        "home": home,
        "away": away,
        "home_goals": rng.randint(0, 4),
        "away_goals": rng.randint(0, 4),
        "ground": rng.choice(GROUNDS),
        "day": rng.choice(DAYS),
        "scorer": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "minute": rng.randint(2, 90),
        "attendance": rng.randrange(1200, 48000, 10),
    }


def _result(m: dict[str, Any]) -> tuple[str, str, int, int] | None:
    """(winner, loser, winner's goals, loser's goals), or None for a draw."""
    h, a = m["home_goals"], m["away_goals"]
    if h == a:
        return None
    return (m["home"], m["away"], h, a) if h > a else (m["away"], m["home"], a, h)


def article(m: dict[str, Any], rng: random.Random) -> str:
    facts = [
        f"{m['scorer']} scored in the {ordinal(m['minute'])} minute.",
        f"A crowd of {m['attendance']:,} watched on.",
        f"It finished {m['home']} {m['home_goals']}, {m['away']} {m['away_goals']}.",
    ]
    opener = f"{m['home']} welcomed {m['away']} to {m['ground']} on {m['day']}."
    filler = rng.sample(FILLER, rng.randint(3, 5))
    body = facts + filler
    rng.shuffle(body)
    if rng.random() < 0.8:
        return " ".join([opener, *body])
    return " ".join([body[0], opener, *body[1:]])


def summary(m: dict[str, Any], rng: random.Random) -> str:
    r = _result(m)
    at, goal = m["ground"], f"{m['scorer']} scoring in the {ordinal(m['minute'])} minute"
    if r is None:
        return rng.choice(
            (
                f"{m['home']} and {m['away']} drew {m['home_goals']}-{m['away_goals']} at {at}, with {goal}.",
                f"A {m['home_goals']}-{m['away_goals']} draw between {m['home']} and {m['away']} at {at}, {goal}.",
            )
        )
    w, lo, wg, lg = r
    return rng.choice(
        (
            f"{w} beat {lo} {wg}-{lg} at {at}, with {goal}.",
            f"{w} won {wg}-{lg} against {lo} at {at}, {goal}.",
            f"At {at}, {w} beat {lo} {wg}-{lg} with {goal}.",
        )
    )


def report(m: dict[str, Any], rng: random.Random) -> str:
    r = _result(m)
    crowd, minute = f"{m['attendance']:,}", f"in the {ordinal(m['minute'])} minute"
    if r is None:
        head = f"{m['home']} drew {m['home_goals']}-{m['away_goals']} with {m['away']} at {m['ground']} on {m['day']}."
    else:
        w, lo, wg, lg = r
        head = rng.choice(
            (
                f"{w} beat {lo} {wg}-{lg} at {m['ground']} on {m['day']}.",
                f"On {m['day']}, {w} defeated {lo} {wg}-{lg} at {m['ground']}.",
            )
        )
    tail = rng.choice(
        (
            f"{m['scorer']} scored {minute} in front of {crowd} fans.",
            f"A crowd of {crowd} saw {m['scorer']} score {minute}.",
        )
    )
    return f"{head} {tail}"


def records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` summarisation records then ``n`` data-to-text records, each task's matches drawn independently."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for _ in range(n):
        m = match(rng)
        out.append({"document": article(m, rng), "summary": summary(m, rng)})
    for _ in range(n):
        m = match(rng)
        out.append({"data": m, "text": report(m, rng)})
    return out
