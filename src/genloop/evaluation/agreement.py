"""Which metric agrees with people on this data: ``genloop eval --agreement [RUN ...]``.

Why: FID on one feature net can disagree with what people see (a model whose samples visibly improve may
score worse), and which metric to trust depends on the data. The studio already stores what people think —
star/thumb ratings and A/B choices of generations, each generation tied to the run and checkpoint that made
it — and ``genloop eval`` stores each run's metrics. This module joins the two and says, per metric, how
well it orders the generation sources the way people do.

A *source* is one run at one checkpoint (``run_id`` + ``checkpoint_sha256``: a run that trained further is
a new source). Per source:

- people's **rating score**: the mean over rated generations of each generation's mean rating, stars mapped
  to [0, 1] as (stars - 1) / 4 and thumbs as up = 1, down = 0 (stars win when a rating has both);
- people's **A/B score**: the Bradley–Terry strength (log scale) fitted to the A/B choices *between*
  sources (choices within one source say nothing about sources), with half a win and half a loss against a
  fixed reference so a source that always wins stays finite (MM algorithm, Hunter 2004);
- every catalogued metric of that checkpoint's evaluations (``eval/metrics*.json`` and the per-checkpoint
  copies in ``eval/by_checkpoint/``), oriented so that larger is better (``-badness``: FID is negated,
  ``closer`` metrics use minus their distance to the floor). Metrics of other feature nets are named
  ``fid [inception]``, ``fid [hf-dinov2-small-…]``.

Agreement is Kendall's τ-b (``scipy.stats.kendalltau``) between the oriented metric and people's score over
the sources that have both: +1 = the metric ranks the sources exactly as people do, 0 = unrelated, -1 =
reversed. Its 95 % interval comes from a seeded bootstrap of the rated items (generations resampled within
each source; A/B choices resampled as a whole), so it says how much people's scores are pinned down by the
feedback given — not how the metric would do on other runs. With fewer than 3 sources there is no ranking
to speak of, and that is said in one line.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from . import catalog

MIN_SOURCES = 3
PRIOR = 0.5  # virtual wins (and losses) of each source against the reference strength 1
KINDS = ("ratings", "preferences")
SPEED = frozenset({"sampling_ms_per_image", "generation_tokens_per_s"})  # how fast, not how good: people rate outputs


@dataclass
class Source:
    """One run at one checkpoint, with the feedback people gave its generations and its metrics."""

    run_id: str
    checkpoint: str
    checkpoint_sha256: str
    item_values: dict[str, list[float]] = field(default_factory=dict)  # generation id -> rating values in [0, 1]
    wins: int = 0
    losses: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # oriented: larger is better
    raw: dict[str, float] = field(default_factory=dict)  # the values as the evaluation wrote them

    @property
    def label(self) -> str:
        return f"{self.run_id}@{self.checkpoint}:{self.checkpoint_sha256[:8]}"


def rating_value(thumbs: int | None, stars: int | None) -> float | None:
    """One rating on [0, 1]: stars (1-5) -> (stars - 1) / 4, else thumbs up -> 1, down -> 0."""
    if stars is not None:
        return (stars - 1) / 4
    if thumbs is not None:
        return 1.0 if thumbs > 0 else 0.0
    return None


def rating_scores(sources: Sequence[Source], rng: np.random.Generator | None = None) -> np.ndarray:
    """Mean over each source's rated items of the item's mean rating (NaN without ratings).

    ``rng``: resample the items of each source with replacement (one bootstrap replicate)."""
    out = np.full(len(sources), np.nan)
    for i, s in enumerate(sources):
        means = np.array([np.mean(v) for v in s.item_values.values()])
        if len(means) == 0:
            continue
        if rng is not None:
            means = means[rng.integers(0, len(means), len(means))]
        out[i] = means.mean()
    return out


def bradley_terry(n_sources: int, pairs: np.ndarray, iters: int = 500) -> np.ndarray:
    """Log Bradley–Terry strengths from (winner, loser) index pairs; NaN for sources in no pair.

    ``pairs`` is (P, 2), or (B, P, 2) for B bootstrap replicates fitted at once (result (B, n)). Each source
    also plays PRIOR wins and PRIOR losses against a reference of strength 1, which anchors the scale and
    keeps unbeaten sources finite. Fitted by Hunter's (2004) MM iteration, all replicates together.
    """
    batch = pairs.reshape(-1, pairs.shape[-2], 2) if pairs.ndim == 3 else pairs.reshape(1, -1, 2)
    b, n = batch.shape[0], n_sources
    if batch.shape[1] == 0:
        out = np.full((b, n), np.nan)
        return out if pairs.ndim == 3 else out[0]
    rows = np.repeat(np.arange(b), batch.shape[1])
    wins = np.zeros((b, n))
    np.add.at(wins, (rows, batch[..., 0].ravel()), 1)
    games = np.zeros((b, n, n))
    np.add.at(games, (rows, batch[..., 0].ravel(), batch[..., 1].ravel()), 1)
    games = games + games.transpose(0, 2, 1)
    played = games.sum(2) > 0
    p = np.ones((b, n))
    for _ in range(iters):
        denom = (games / (p[:, :, None] + p[:, None, :])).sum(2) + 2 * PRIOR / (p + 1)
        new = (wins + PRIOR) / denom
        done = np.abs(np.log(new) - np.log(p)).max() < 1e-10
        p = new
        if done:
            break
    out = np.where(played, np.log(p), np.nan)
    return out if pairs.ndim == 3 else out[0]


def _kendall(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Kendall's τ-b and its p-value (scipy) over the entries finite in both; NaN with < 3 or a constant side."""
    from scipy.stats import kendalltau

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < MIN_SOURCES or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan, math.nan
    r = kendalltau(x[ok], y[ok])
    return float(r.statistic), float(r.pvalue)


def _signs(v: np.ndarray) -> np.ndarray:
    """sign(v_i - v_j) over the pairs i < j, along the last axis (NaN where either is missing)."""
    i, j = np.triu_indices(v.shape[-1], 1)
    return np.sign(v[..., i] - v[..., j])


def _tau_b_many(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """τ-b of ``x`` against each row of ``ys`` (B, n) at once: the bootstrap's thousands of τs in one step.

    Same statistic as :func:`scipy.stats.kendalltau` (variant b), restricted to the pairs of sources that
    are finite in both; scipy is kept for the reported τ and p-value, this is only for the replicates.
    """
    dx, dy = _signs(x)[None, :], _signs(ys)
    both = np.isfinite(dx) & np.isfinite(dy)
    dx, dy = np.where(both, dx, 0.0), np.where(both, dy, 0.0)
    s = (dx * dy).sum(1)
    nx, ny = (dx != 0).sum(1), (dy != 0).sum(1)  # pairs not tied in x (in y), among the usable ones
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = s / np.sqrt(nx.astype(float) * ny)
    n_ok = (np.isfinite(x)[None, :] & np.isfinite(ys)).sum(1)
    tau[(n_ok < MIN_SOURCES) | (nx == 0) | (ny == 0)] = np.nan
    return tau


def _oriented(key: str, value: Any, result: dict[str, Any]) -> float | None:
    """``value`` as "larger is better" by the catalogue (None for non-metrics, diagnostics and non-numbers)."""
    if key not in catalog.CATALOG or key in catalog.companions() or key in SPEED:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    m = catalog.CATALOG[key]
    floor = result.get(m.floor) if m.floor else None
    try:
        return -m.badness(float(value), float(floor) if isinstance(floor, (int, float)) else None)
    except ValueError:  # "none" metrics, or "closer" without a floor: no better side
        return None


def _eval_results(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(features tag, result) for every stored evaluation of a run: ``metrics*.json`` and per-checkpoint copies."""
    found: list[tuple[str, dict[str, Any]]] = []
    ev = run_dir / "eval"
    files = [(p, "ref" if p.stem == "metrics" else p.stem[len("metrics_") :]) for p in sorted(ev.glob("metrics*.json"))]
    files += [(p, p.stem.rsplit("-", 1)[0]) for p in sorted((ev / "by_checkpoint").glob("*.json"))]
    for path, tag in files:
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a half-written or foreign file is not a result
        if isinstance(result, dict) and result.get("checkpoint_sha256"):
            found.append((tag, result))
    return found


def collect_sources(
    store: Any, runs: Any, run_ids: Sequence[str] | None = None, user: str | None = None
) -> tuple[list[Source], np.ndarray]:
    """Sources with feedback (in ``run_ids`` if given), their metrics, and the cross-source A/B pairs."""
    ratings, prefs, gens = store.feedback_rows(user=user)
    wanted = set(run_ids) if run_ids else None
    by_key: dict[tuple[str, str], Source] = {}

    def source_of(gid: str) -> Source | None:
        g = gens.get(gid)
        if g is None or (wanted is not None and g.run_id not in wanted):
            return None
        key = (g.run_id, g.checkpoint_sha256)
        if key not in by_key:
            by_key[key] = Source(g.run_id, g.checkpoint, g.checkpoint_sha256)
        return by_key[key]

    for r in ratings:
        s, v = source_of(r.generation_id), rating_value(r.thumbs, r.stars)
        if s is not None and v is not None:
            s.item_values.setdefault(r.generation_id, []).append(v)
    raw_pairs = []
    for p in prefs:
        a, b = source_of(p.chosen_id), source_of(p.rejected_id)
        if a is not None and b is not None and a is not b:
            raw_pairs.append((a, b))
    sources = sorted(by_key.values(), key=lambda s: (s.run_id, s.checkpoint, s.checkpoint_sha256))
    index = {id(s): i for i, s in enumerate(sources)}
    pairs = np.array([(index[id(a)], index[id(b)]) for a, b in raw_pairs], dtype=int).reshape(-1, 2)
    for i, j in pairs:
        sources[i].wins += 1
        sources[j].losses += 1
    results_by_run: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for run_id in {s.run_id for s in sources}:
        try:
            results_by_run[run_id] = _eval_results(runs.get(run_id).dir)
        except Exception:  # noqa: BLE001 - a rated run since deleted has no metrics; it is listed as such
            results_by_run[run_id] = []
    for s in sources:
        for tag, result in results_by_run[s.run_id]:
            if result["checkpoint_sha256"] != s.checkpoint_sha256:
                continue
            for key, value in result.items():
                v = _oriented(key, value, result)
                if v is not None:
                    name = key if tag == "ref" else f"{key} [{tag}]"
                    s.metrics[name], s.raw[name] = v, float(value)
    return sources, pairs


def _interval(values: list[float]) -> tuple[float | None, float | None, int]:
    ok = np.array([v for v in values if math.isfinite(v)])
    if len(ok) == 0:
        return None, None, 0
    lo, hi = np.percentile(ok, [2.5, 97.5])
    return float(lo), float(hi), int(len(ok))


def agreement(
    run_ids: Sequence[str] | None = None,
    *,
    runs_dir: str | Path | None = None,
    db_url: str | None = None,
    user: str | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Kendall τ (with a bootstrap 95 % interval) between each metric and people's scores, over sources.

    Reads the studio database (``db_url``, default SQLite beside the runs) and the runs' stored evaluations;
    writes the result as JSON to ``out`` (default ``<runs>/agreement.json``) and returns it. Raises a
    one-line DataError when fewer than 3 sources are both rated and evaluated.
    """
    from ..feedback.store import FeedbackStore
    from ..paths import runs_dir as default_runs_dir
    from ..runs import RunStore
    from ..serialization import write_json

    if n_boot < 0:
        raise DataError(f"the bootstrap needs a non-negative number of replicates, got {n_boot}")
    runs = RunStore(runs_dir)
    if run_ids:
        for r in run_ids:
            runs.get(r)  # an unknown run is a NotFoundError, not a silent empty selection
    sources, pairs = collect_sources(FeedbackStore(url=db_url, runs=runs_dir), runs, run_ids, user)
    people = {"ratings": rating_scores(sources), "preferences": bradley_terry(len(sources), pairs)}
    usable = [i for i, s in enumerate(sources) if s.metrics and any(math.isfinite(people[k][i]) for k in KINDS)]
    if len(usable) < MIN_SOURCES:
        listed = "; ".join(
            f"{s.label} ({len(s.item_values)} rated items, {s.wins + s.losses} A/B choices, "
            f"{'evaluated' if s.metrics else 'not evaluated at this checkpoint'})"
            for s in sources
        )
        raise DataError(
            f"agreement needs at least {MIN_SOURCES} generation sources (run + checkpoint) that people rated and "
            f"`genloop eval` scored; found {len(usable)}" + (f" of {len(sources)}: {listed}" if sources else "")
        )
    sel = [sources[i] for i in usable]
    people = {k: v[usable] for k, v in people.items()}
    pair_idx = {j: n for n, j in enumerate(usable)}
    pairs = np.array(
        [(pair_idx[a], pair_idx[b]) for a, b in pairs if a in pair_idx and b in pair_idx], dtype=int
    ).reshape(-1, 2)
    names = sorted({m for s in sel for m in s.metrics})
    metric_values = {m: np.array([s.metrics.get(m, math.nan) for s in sel]) for m in names}

    rng = np.random.default_rng(seed)
    has = {k: bool(np.isfinite(people[k]).sum() >= MIN_SOURCES) for k in KINDS}
    replicates: dict[str, np.ndarray] = {}
    if has["ratings"]:
        replicates["ratings"] = np.array([rating_scores(sel, rng) for _ in range(n_boot)]).reshape(n_boot, len(sel))
    if has["preferences"]:
        resampled = pairs[rng.integers(0, len(pairs), (n_boot, len(pairs)))]  # (n_boot, P, 2)
        replicates["preferences"] = bradley_terry(len(sel), resampled).reshape(n_boot, len(sel))
    boot = {k: {m: _tau_b_many(metric_values[m], v).tolist() for m in names} for k, v in replicates.items()}

    rows = []
    for m in names:
        key = m.split(" [")[0]
        row: dict[str, Any] = {
            "metric": m,
            "key": key,
            "features": m[len(key) + 2 : -1] if m != key else "ref",
            "better": catalog.CATALOG[key].better_word,
            "n_sources": int(np.isfinite(metric_values[m]).sum()),
        }
        for k in KINDS:
            tau, p = _kendall(metric_values[m], people[k]) if has[k] else (math.nan, math.nan)
            lo, hi, valid = _interval(boot[k][m]) if has[k] else (None, None, 0)
            row[k] = {
                "tau": None if math.isnan(tau) else tau,
                "p_value": None if math.isnan(p) else p,
                "ci95": None if lo is None else [lo, hi],
                "n_boot_valid": valid,
            }
        rows.append(row)
    primary = "ratings" if has["ratings"] else "preferences"
    rows.sort(key=lambda r: -(r[primary]["tau"] if r[primary]["tau"] is not None else -2))
    result: dict[str, Any] = {
        "interpretation": "Kendall tau-b between each metric (oriented: larger = better) and people's score over "
        "sources (run + checkpoint); +1: the metric ranks sources as people do. ci95: bootstrap over rated items.",
        "people_score": {
            "ratings": "mean over rated generations of their mean rating; stars (s-1)/4, thumbs up 1 / down 0",
            "preferences": "log Bradley-Terry strength from A/B choices between sources",
        },
        "primary": primary,
        "seed": int(seed),
        "n_boot": int(n_boot),
        "user": user,
        "sources": [
            {
                "source": s.label,
                "run_id": s.run_id,
                "checkpoint": s.checkpoint,
                "checkpoint_sha256": s.checkpoint_sha256,
                "rated_items": len(s.item_values),
                "ratings": sum(len(v) for v in s.item_values.values()),
                "rating_score": None if math.isnan(people["ratings"][i]) else float(people["ratings"][i]),
                "ab_wins": s.wins,
                "ab_losses": s.losses,
                "bt_score": None if math.isnan(people["preferences"][i]) else float(people["preferences"][i]),
                "metrics": s.raw,
            }
            for i, s in enumerate(sel)
        ],
        "left_out": [s.label for i, s in enumerate(sources) if i not in pair_idx],
        "rows": rows,
    }
    path = Path(out) if out is not None else default_runs_dir(runs_dir) / "agreement.json"
    write_json(path, result)
    result["path"] = str(path)
    return result


__all__ = ["MIN_SOURCES", "Source", "agreement", "bradley_terry", "collect_sources", "rating_scores", "rating_value"]
