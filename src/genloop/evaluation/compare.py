"""Side by side: runs of any families, one table and one picture, from their ``eval/metrics.json``.

Distances are shown as multiples of their real-data floor as well as raw, because runs evaluated with
different sample counts or datasets have different floors and only the ratio compares fairly.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from ..errors import NotFoundError
from ..runs import Run
from ..serialization import atomic_write, read_json, write_json

# (key in the comparison row, column title, format)
COLUMNS: list[tuple[str, str, str]] = [
    ("run_id", "run", "{}"),
    ("model", "model", "{}"),
    ("dataset", "data", "{}"),
    ("step", "steps", "{}"),
    ("train_seconds", "train s", "{:.0f}"),
    ("images_per_s", "img/s", "{:.0f}"),
    ("fid", "FID", "{:.2f}"),
    ("fid_x_floor", "FID/floor", "{:.1f}x"),
    ("kid", "KID", "{:.4f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("density", "density", "{:.3f}"),
    ("coverage", "coverage", "{:.3f}"),
    ("class_accuracy", "class acc", "{:.3f}"),
    ("copy_rate", "copies", "{:.3f}"),
    ("sampling_ms_per_image", "ms/img", "{:.1f}"),
]


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
    }
    for key in ("fid", "fid_floor", "kid", "kid_floor", "precision", "precision_floor", "recall", "recall_floor",
                "density", "density_floor", "coverage", "coverage_floor", "class_accuracy", "class_accuracy_floor",
                "copy_rate", "copy_rate_floor", "sampling_ms_per_image", "n_generated", "sampler", "steps"):
        if key in m:
            row[key] = m[key]
    if m.get("fid") is not None and m.get("fid_floor"):
        row["fid_x_floor"] = m["fid"] / m["fid_floor"]
    row["feature_net"] = (m.get("feature_net") or {}).get("id")
    return row


def format_cell(row: dict[str, Any], key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return fmt.format(v)


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
    ax1.set_title("FID / real-data floor (lower is better)", fontsize=10)
    ax1.legend(fontsize=8, frameon=False)
    for i, r in enumerate(rows):
        if r.get("precision") is not None and r.get("recall") is not None:
            ax2.scatter(r["recall"], r["precision"], color=colors[i], s=40, zorder=3)
            ax2.annotate(names[i].replace("\n", " "), (r["recall"], r["precision"]), fontsize=7,
                         xytext=(4, 4), textcoords="offset points")
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
    """Rows for ``runs`` plus ``compare.json`` and ``compare.png`` in ``out_dir``."""
    rows = [comparison_row(r) for r in runs]
    json_path, png_path = out_dir / "compare.json", out_dir / "compare.png"
    write_json(json_path, {"runs": rows})
    with atomic_write(png_path) as f:
        f.write(render_plot(rows))
    return rows, json_path, png_path
