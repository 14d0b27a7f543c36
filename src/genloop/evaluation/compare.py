"""Side by side: runs of any families, one table and one picture, from their ``eval/metrics.json``.

Distances are shown as multiples of their real-data floor as well as raw, because runs evaluated with
different sample counts or datasets have different floors and only the ratio compares fairly.

Runs scored by different reference networks (a 16 px and a 32 px reference net, GenLoop's net and Inception)
live in different feature spaces: their FIDs are not on one scale, not even as multiples of the floor. The
table then shows each run's feature net, and :func:`best_runs` ranks no metric across them.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NotFoundError
from ..runs import Run
from ..serialization import atomic_write, read_json, write_json
from . import catalog


@dataclass(frozen=True)
class Column:
    """One column of the comparison table: the key in a comparison row, its title and its format."""

    key: str
    title: str
    fmt: str


# Who and how fast: the columns before the metrics (which come from the catalogue, in its order).
_RUN_COLUMNS = (
    Column("run_id", "run", "{}"),
    Column("model", "model", "{}"),
    Column("dataset", "data", "{}"),
    Column("step", "steps", "{}"),
    Column("train_seconds", "train s", "{:.0f}"),
    Column("images_per_s", "img/s", "{:.0f}"),
    Column("tokens_per_s", "tok/s", "{:.0f}"),
)
# Keys of eval/metrics.json kept in a row beside the catalogued metrics and their floors and spreads.
_CONTEXT = ("n_generated", "n", "sampler", "steps")


def feature_nets(rows: list[dict[str, Any]]) -> list[str]:
    """The distinct reference networks that scored ``rows``, in row order (rows without one, e.g. text, add none)."""
    return list(dict.fromkeys(r["feature_net"] for r in rows if r.get("feature_net")))


def mixed_features_note(rows: list[dict[str, Any]]) -> str | None:
    """One line when ``rows`` were scored by more than one reference network, else None."""
    nets = feature_nets(rows)
    if len(nets) < 2:
        return None
    return (
        f"these runs were scored by {len(nets)} different reference networks ({', '.join(nets)}): their metrics are "
        "on different scales, so no run is ranked above another; evaluate them with the same --features (and "
        "the same data and image size) to compare"
    )


def columns(rows: list[dict[str, Any]]) -> list[Column]:
    """The columns worth showing for ``rows``: run facts (and each run's feature net when they differ), then every
    catalogued metric some row has (FID followed by its multiple of the floor, the number that compares fairly
    across sample sizes)."""
    cols = list(_RUN_COLUMNS)
    if len(feature_nets(rows)) > 1:
        cols.append(Column("feature_net", "features", "{}"))
    for m in catalog.CATALOG.values():
        cols.append(Column(m.key, m.title, m.fmt))
        if m.key == "fid":
            cols.append(Column("fid_x_floor", "FID/floor", "{:.1f}x"))
    return [c for c in cols if any(r.get(c.key) is not None for r in rows)]


def comparison_row(run: Run) -> dict[str, Any]:
    """The run's headline numbers; a NotFoundError names the command that produces what is missing."""
    path = run.files.eval_metrics()
    if not path.is_file():
        raise NotFoundError(f"run {run.id} has not been evaluated yet; run `genloop eval {run.id}` first")
    m = read_json(path)
    timings = run.info.get("timings") or {}
    row: dict[str, Any] = {
        "run_id": run.id,
        "model": run.info.get("model"),
        "dataset": run.info.get("dataset"),
        "step": m.get("step"),
        "train_seconds": timings.get("train_seconds"),
        "images_per_s": timings.get("images_per_s"),
        "tokens_per_s": timings.get("tokens_per_s"),
    }
    for key in (*catalog.CATALOG, *sorted(catalog.companions()), *_CONTEXT):
        if key in m:
            row[key] = m[key]
    if m.get("fid") is not None and m.get("fid_floor"):
        row["fid_x_floor"] = m["fid"] / m["fid_floor"]
    row["feature_net"] = (m.get("feature_net") or {}).get("id")
    return row


def best_runs(rows: list[dict[str, Any]]) -> dict[str, str]:
    """For each catalogued metric that two or more rows have, the id of the run it ranks best.

    "Best" is the catalogue's direction (:meth:`catalog.Metric.badness`): lowest FID, highest precision,
    diversity statistics closest to their own real-data floor. Metrics without a better side (the VAE's
    KL), or a ``closer`` metric whose floor a row lacks, are not ranked: a wrong winner is worse than none. Nor
    is a metric whose rows were scored by different reference networks (:func:`mixed_features_note`).
    """
    best: dict[str, str] = {}
    for m in catalog.CATALOG.values():
        if len(feature_nets([r for r in rows if r.get(m.key) is not None])) > 1:
            continue
        scored = []
        for r in rows:
            value = r.get(m.key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                continue
            try:
                scored.append((m.badness(value, r.get(m.floor) if m.floor else None), r["run_id"]))
            except ValueError:
                scored = []
                break
        if len(scored) >= 2:
            best[m.key] = min(scored)[1]
    return best


def format_cell(row: dict[str, Any], col: Column) -> str:
    """A table cell: ``-`` for a missing or NaN value, so every row has every column."""
    v = row.get(col.key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return col.fmt.format(v)


def render_plot(rows: list[dict[str, Any]]) -> bytes:
    """Two panels: FID as a multiple of its floor (log scale, lower is better), and precision vs recall."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.3, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    names = [f"{r['model']}\n{r['run_id'][-4:]}" for r in rows]
    ratios = [r.get("fid_x_floor") or float("nan") for r in rows]
    colors = [f"C{i % 10}" for i in range(len(rows))]
    ax1.bar(range(len(rows)), ratios, color=colors)
    ax1.axhline(1.0, color="#111827", linewidth=1, linestyle="--", label="real-data floor")
    ax1.set_xticks(range(len(rows)), names, fontsize=8)
    if any(math.isfinite(v) and v > 0 for v in ratios):
        ax1.set_yscale("log")
    ax1.set_title(f"FID / real-data floor ({catalog.get('fid').better_word} is better)", fontsize=10)
    ax1.legend(fontsize=8, frameon=False)
    for i, r in enumerate(rows):
        if r.get("precision") is not None and r.get("recall") is not None:
            ax2.scatter(r["recall"], r["precision"], color=colors[i], s=40, zorder=3)
            ax2.annotate(
                names[i].replace("\n", " "),
                (r["recall"], r["precision"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    floors = [(r["recall_floor"], r["precision_floor"]) for r in rows if "recall_floor" in r and "precision_floor" in r]
    if floors:
        ax2.scatter([f[0] for f in floors], [f[1] for f in floors], marker="x", color="#111827", label="real data")
        ax2.legend(fontsize=8, frameon=False)
    ax2.set_xlim(0, 1.02)
    ax2.set_ylim(0, 1.02)
    ax2.set_xlabel("recall (diversity)", fontsize=9)
    ax2.set_ylabel("precision (fidelity)", fontsize=9)
    ax2.set_title("precision vs recall (top right is better)", fontsize=10)
    for ax in (ax1, ax2):
        ax.grid(True, color="#e5e7eb", linewidth=0.6)
        ax.tick_params(labelsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, metadata={"Software": None})
    return buf.getvalue()


def compare_runs(runs: list[Run], out_dir: Path) -> tuple[list[dict[str, Any]], Path, Path]:
    """Rows for ``runs`` plus ``compare.json`` (the rows, and the best run per metric) and ``compare.png``
    in ``out_dir``. Rows keep the order the runs were named in."""
    rows = [comparison_row(r) for r in runs]
    json_path, png_path = out_dir / "compare.json", out_dir / "compare.png"
    mixed = mixed_features_note(rows)
    written: dict[str, Any] = {"runs": rows, "best": best_runs(rows), "feature_nets": feature_nets(rows)}
    if mixed:
        written["unranked"] = mixed
    write_json(json_path, written)
    with atomic_write(png_path) as f:
        f.write(render_plot(rows))
    return rows, json_path, png_path


def metric_entry(metric: catalog.Metric, row: dict[str, Any]) -> dict[str, Any]:
    """One metric of a comparison row beside its real-data floor, raw and formatted, with which way is better and
    (where both are positive numbers) the value as a multiple of the floor."""
    value = row.get(metric.key)
    floor = row.get(metric.floor) if metric.floor else None
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (value, floor))
    return {
        "key": metric.key,
        "label": metric.label,
        "better": metric.better_word,
        "value": value,
        "floor": floor,
        "text": metric.format(value),
        "floor_text": None if floor is None else metric.format(floor),
        "x_floor": value / floor if numbers and floor > 0 and value >= 0 else None,
    }


def headline(row: dict[str, Any], modality: str) -> dict[str, Any] | None:
    """The one number that sums a run up beside its floor: the first catalogued metric of ``modality`` (the
    catalogue's order: FID for images) that the row has together with its floor, else the first it has at all;
    None for a row with no catalogued metric of that modality."""
    present = [m for m in catalog.for_modality(modality) if row.get(m.key) is not None]
    with_floor = [m for m in present if m.floor and row.get(m.floor) is not None]
    chosen = (with_floor or present or [None])[0]
    return None if chosen is None else metric_entry(chosen, row)
