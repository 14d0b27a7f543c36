"""Moderation speed: texts per second through :mod:`genloop.safety.moderation` on one CPU thread.

1,000 prompts of about 50 words each (English words drawn from a fixed list with a seeded generator; every
tenth prompt is Chinese, about 100 characters; 2 % contain a blocked phrase, 2 % a flagged word) are checked:

- with the built-in list (``DEFAULT_RULES``, 8 rules, ~30 terms);
- with a 1,000-rule list: the built-in rules plus 800 English word/phrase rules, 150 Chinese terms and
  42 regex rules (regexes are searched one by one, so they dominate its cost);

each as ``decide`` (the decision only) and ``check`` with the JSON-line log written to a temporary run store
(what every prompt and output pays in the pipelines and the server). Best of ``--repeat`` passes.

    python benchmarks/bench_moderation.py        # ~10 s; writes benchmarks/results/moderation.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from genloop.safety import moderation
from genloop.safety.moderation import DEFAULT_RULES, Moderator, _rule

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_flags, cpu_name  # noqa: E402

WORDS = (
    "the of and to in is that it was for on are as with his they at be this from have or by one had not but what "
    "all were when we there can an your which their said if do will each about how up out them then she many some "
    "so these would other into has more her two like him see time could no make than first been its who now people "
    "my made over did down only way find use may water long little very after words called just where most know "
    "model image train sample noise layer token prompt output garden river mountain music piano quiet bright story"
).split()
ZH = "今天天气很好我们去公园散步看到许多孩子在草地上玩耍老人在树下下棋鸟儿在枝头唱歌河水静静地流向远方"


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 10 == 9:
            start = rng.randrange(len(ZH) - 20)
            text = "".join(ZH[(start + k) % len(ZH)] for k in range(100))
        else:
            text = " ".join(rng.choice(WORDS) for _ in range(50)).capitalize() + "."
        if i % 50 == 7:
            text = text[:120] + " I will kill you " + text[120:]
        elif i % 50 == 23:
            text = text[:60] + " a murder " + text[60:]
        out.append(text)
    return out


def big_rules(seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    rules = list(DEFAULT_RULES)
    for i in range(800):
        k = 1 + (i % 3 == 0) + (i % 7 == 0)  # one to three words
        words = [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(4, 9))) for _ in range(k))]
        rules.append({"id": f"en-{i}", "category": "custom", "action": "block" if i % 2 else "flag", "words": words})
    for i in range(150):
        term = "".join(chr(0x4E00 + rng.randrange(0x5000)) for _ in range(rng.randint(2, 4)))
        rules.append({"id": f"zh-{i}", "category": "custom", "action": "block", "words": [term]})
    for i in range(1000 - len(rules)):
        stem = "".join(rng.choice(letters) for _ in range(5))
        rules.append({"id": f"re-{i}", "category": "custom", "action": "flag", "regex": rf"\b{stem}\w*\d+\b"})
    return rules


def rate(fn, texts: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for t in texts:
            fn(t)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "moderation.json")
    args = ap.parse_args()
    texts = prompts(args.n)
    words = sum(len(t.split()) for t in texts if t.isascii()) / max(1, sum(t.isascii() for t in texts))
    lists = {
        "default": Moderator(),
        "1000_rules": Moderator(rules=[_rule(r, "bench", i) for i, r in enumerate(big_rules())]),
    }
    results: dict = {}
    with tempfile.TemporaryDirectory() as store:
        for name, m in lists.items():
            actions = [m.decide(t).action for t in texts]
            results[name] = {
                "rules": len(m.rules.rules),
                "regex_rules": len(m.rules.regexes),
                "decide_texts_per_s": round(rate(m.decide, texts, args.repeat)),
                "check_and_log_texts_per_s": round(
                    rate(lambda t, m=m: m.check(t, "prompt", "bench", store), texts, args.repeat)
                ),
                "blocked": actions.count("block"),
                "flagged": actions.count("flag"),
            }
            print(name, results[name], flush=True)
    report = {
        "benchmark": "moderation",
        "texts": args.n,
        "mean_words_english": round(words, 1),
        "chinese_texts": sum(not t.isascii() for t in texts),
        "results": results,
        "threads": 1,
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    moderation.clear_hooks()
    main()
