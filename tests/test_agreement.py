"""``genloop eval --agreement``: Kendall τ between each stored metric and people's ratings / A/B choices.

Four generation sources — three tiny runs, one of them at two checkpoints — are evaluated and their samples
stored in the studio database; scripted raters then prefer the sources in a known order, so τ's sign is
known: +1 for a rater that likes what FID likes, -1 for one that likes the opposite.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli, tiny

import genloop
from genloop.errors import DataError
from genloop.evaluation.agreement import agreement, bradley_terry, rating_value
from genloop.feedback.store import FeedbackStore

N_ITEMS = 6


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    """Runs dir with 4 evaluated + rated sources; raters "fan" (agrees with FID) and "contrarian" (reverses it)."""
    root = tmp_path_factory.mktemp("agreement")
    mp = pytest.MonkeyPatch()
    mp.setenv("GENLOOP_CACHE_DIR", str(root / "cache"))
    mp.setenv("GENLOOP_RUNS_DIR", str(root / "runs"))
    try:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 255, (60, 8, 8, 3), dtype=np.uint8)
        np.savez(root / "rgb.npz", images=images, labels=np.arange(60) % 2)
        store = FeedbackStore()
        sources = []  # (run id, fid, generation ids)

        def evaluate_and_store(run_id: str) -> None:
            r = genloop.evaluate(run_id, n=12)
            ids = store.add_outputs(genloop.load(run_id)(n=N_ITEMS, seed=len(sources)))
            sources.append((run_id, r["fid"], ids))

        for seed in (0, 1, 2):
            run = genloop.train(
                "dcgan", data=str(root / "rgb.npz"), overrides=tiny("dcgan"), steps=2, seed=seed, progress=False
            )
            evaluate_and_store(run.id)
        genloop.resume(sources[0][0], steps=4, progress=False)  # a second checkpoint of the first run
        evaluate_and_store(sources[0][0])
        order = sorted(range(len(sources)), key=lambda i: sources[i][1])  # best FID first
        # the contrarian rates fewer items, so that everyone's feedback pooled still follows the fan
        for user, ranked, items in (("fan", order, N_ITEMS), ("contrarian", order[::-1], 2)):
            ratings, prefs = [], []
            for rank, i in enumerate(ranked):
                for j, gid in enumerate(
                    sources[i][2][:items]
                ):  # 5 stars for the favourite ... 2 for the last, +-1 noise
                    ratings.append({"generation_id": gid, "stars": int(np.clip(5 - rank + (j % 3 == 0) * -1, 1, 5))})
            for a in range(len(ranked)):
                for b in range(a + 1, len(ranked)):
                    for k in range(items if user == "fan" else 1):  # the better-ranked source wins 2 of 3
                        win, lose = sources[ranked[a]][2][k], sources[ranked[b]][2][k]
                        prefs.append((lose, win) if k % 3 == 2 else (win, lose))
            store.add_feedback(ratings, prefs, user=user)
        yield {"root": root, "sources": sources}
    finally:
        mp.undo()


def test_tau_sign_follows_the_raters_preference(rated, monkeypatch) -> None:
    root = rated["root"]
    monkeypatch.setenv("GENLOOP_RUNS_DIR", str(root / "runs"))
    fan = agreement(user="fan", seed=0, n_boot=200)
    assert len(fan["sources"]) == 4  # three runs, the first at two checkpoints
    assert len({s["run_id"] for s in fan["sources"]}) == 3
    row = next(r for r in fan["rows"] if r["metric"] == "fid")
    assert row["better"] == "lower" and row["n_sources"] == 4
    for kind in ("ratings", "preferences"):
        t = row[kind]
        assert t["tau"] == pytest.approx(1.0)  # lower FID = preferred: perfect agreement
        lo, hi = t["ci95"]
        assert -1 <= lo <= t["tau"] <= hi <= 1 and t["n_boot_valid"] > 0
    contrarian = agreement(user="contrarian", seed=0, n_boot=200)
    row = next(r for r in contrarian["rows"] if r["metric"] == "fid")
    assert row["ratings"]["tau"] == pytest.approx(-1.0) and row["preferences"]["tau"] == pytest.approx(-1.0)
    # the same seed gives the same intervals; the JSON on disk is the result
    again = agreement(user="contrarian", seed=0, n_boot=200)
    assert again["rows"] == contrarian["rows"]
    on_disk = json.loads((root / "runs" / "agreement.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(contrarian["rows"]))
    # people's scores: the fan's favourite source has the highest mean rating and BT strength
    best = min(fan["sources"], key=lambda s: s["metrics"]["fid"])
    assert best["rating_score"] == max(s["rating_score"] for s in fan["sources"])
    assert best["bt_score"] == max(s["bt_score"] for s in fan["sources"])


def test_cli_agreement_table_and_too_few_sources(rated, capsys, monkeypatch) -> None:
    root = rated["root"]
    monkeypatch.setenv("GENLOOP_RUNS_DIR", str(root / "runs"))
    code, out, err = cli(capsys, "eval", "--agreement")
    assert code == 0, err
    assert "tau ratings" in out and "tau A/B" in out and "fid (lower)" in out and "agreement.json" in out
    assert "sampling_ms_per_image" not in out  # speed is not what people rate
    # one run has only 2 sources (its two checkpoints): one line saying so
    first = rated["sources"][0][0]
    code, out, err = cli(capsys, "eval", "--agreement", first)
    assert code == 2 and "at least 3" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(DataError, match="found 2 of 2"):
        agreement([first], n_boot=10)
    code, out, err = cli(capsys, "eval")  # eval without --agreement still needs its one run
    assert code == 2 and "one run id" in err


def test_people_scores() -> None:
    assert rating_value(None, 5) == 1.0 and rating_value(None, 1) == 0.0 and rating_value(1, 3) == 0.5
    assert rating_value(-1, None) == 0.0 and rating_value(1, None) == 1.0
    # source 0 beats 1 beats 2; source 3 never played
    pairs = np.array([(0, 1)] * 3 + [(1, 0)] + [(1, 2)] * 3 + [(2, 1)] + [(0, 2)] * 2)
    s = bradley_terry(4, pairs)
    assert s[0] > s[1] > s[2] and np.isnan(s[3])
    assert np.isfinite(bradley_terry(2, np.array([(0, 1)] * 5))).all()  # unbeaten stays finite
