"""One self-contained HTML page that tells how a training run went.

The report is a single ``report.html``: images are embedded as base64 data URIs, the CSS is inline and
there is no JavaScript and no external reference, so the file can be mailed, attached to an issue or
opened offline years later and still look the same. Every part except the title is optional: a run
that crashed after writing only ``config.json`` and ``run.json`` still gets a (short) report, and a
file that cannot be read becomes a visible note in the report rather than an error.

Expected layout of a run directory::

    config.json  run.json  metrics.jsonl  samples/step-*.png  generated/grid.png  eval/metrics.json
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import jinja2

from ..errors import DataError, NotFoundError
from ..run_layout import RunLayout
from ..serialization import atomic_write, read_json, write_text
from ..training.logger import read_metrics
from . import catalog

# Columns of metrics.jsonl that are bookkeeping, not losses: they get their own plot (lr) or none.
_NOT_LOSSES = ("step", "time", "lr", "images_per_s", "tokens_per_s", "eval/seconds")
_MAX_STRIP = 8  # earlier sample grids shown; more would bloat the file without telling more
_MAX_PLOT_POINTS = 4000  # raw points drawn per curve; the moving average still uses every point
_PLOT_DPI = 200
_PLOT_COLUMNS = 2  # at most: three to a row made each panel ~340 px wide with 8 px labels, too small to read
_PLOT_WIDTH_IN = {1: 7.0, 2: 10.3}  # figure width by number of subplot columns (the page's ~1030 px at 100 dpi)
_PANEL_HEIGHT_IN = 3.3
_IDENTIFIERS = ("pid", "seed", "port")  # integers that name something: shown as written, never as "12,345"


# ----------------------------------------------------------------------------------------------------
# Reading the run directory


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` over the records that have a finite value for it."""
    xs: list[float] = []
    ys: list[float] = []
    for i, r in enumerate(records):
        v = r.get(key)
        if _finite(v):
            step = r.get("step")
            xs.append(float(step) if _finite(step) else float(i))
            ys.append(float(v))
    return xs, ys


def _loss_keys(records: list[dict[str, Any]]) -> list[str]:
    """Every numeric column except bookkeeping, in first-seen order (so d_loss stays before g_loss)."""
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in _NOT_LOSSES and _is_number(v):
                keys.setdefault(k, None)
    return list(keys)


def _ema(values: list[float]) -> list[float]:
    """Bias-corrected exponential moving average whose window grows with the run length (about 1/20
    of it, capped), so a short run is not flattened and a long one is not noise."""
    n = len(values)
    span = min(max(n / 20.0, 1.0), 200.0)
    beta = 1.0 - 2.0 / (span + 1.0)
    out: list[float] = []
    avg = 0.0
    for t, v in enumerate(values, start=1):
        avg = beta * avg + (1.0 - beta) * v
        out.append(avg / (1.0 - beta**t) if beta > 0 else v)
    return out


def _thin(xs: list[float], ys: list[float], limit: int = _MAX_PLOT_POINTS) -> tuple[list[float], list[float]]:
    if len(xs) <= limit:
        return xs, ys
    k = math.ceil(len(xs) / limit)
    return xs[::k], ys[::k]


# ----------------------------------------------------------------------------------------------------
# Loss curves


Panel = tuple[str, list[float], list[float], bool]  # (name, steps, values, is the learning rate)


def _panels(records: list[dict[str, Any]]) -> tuple[list[Panel], list[tuple[str, float]]]:
    """The curves worth a panel, and the columns that held one value throughout (a constant learning rate, a
    weight that never moved): those are said in a line, not drawn as a flat line. A column with fewer than two
    finite values has no curve and is left out."""
    panels: list[Panel] = []
    flat: list[tuple[str, float]] = []
    for key, is_lr in [*((k, False) for k in _loss_keys(records)), ("lr", True)]:
        xs, ys = _series(records, key)
        if len(xs) < 2:
            continue
        if max(ys) == min(ys):
            flat.append(("learning rate" if is_lr else key, ys[0]))
        else:
            panels.append((key, xs, ys, is_lr))
    return panels, flat


def _plot_grid(n: int) -> tuple[int, int]:
    """(columns, rows) of ``n`` panels: at most :data:`_PLOT_COLUMNS` to a row, so each stays readable."""
    ncols = min(_PLOT_COLUMNS, n)
    return ncols, math.ceil(n / ncols)


def _render_losses(records: list[dict[str, Any]]) -> bytes | None:
    """PNG bytes of one subplot per loss that moved, plus one for the learning rate if it changed; None when
    nothing is worth drawing."""
    panels, _ = _panels(records)
    if not panels:
        return None

    # Lazily imported: matplotlib is slow to import and only reports need it. Figure + the Agg canvas
    # are used directly instead of pyplot, so no global backend is switched and no state is shared.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols, nrows = _plot_grid(len(panels))
    # Sized in inches for the report's ~1030 px content width at 100 dpi, saved at _PLOT_DPI so the
    # text stays sharp on high-density screens (the <img> is shown at the 100-dpi size).
    fig = Figure(figsize=(_PLOT_WIDTH_IN[ncols], _PANEL_HEIGHT_IN * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, xs, ys, is_lr) in zip(axes.flat, panels):
        if is_lr:
            ax.plot(xs, ys, color="#6b7280", linewidth=1.5)
            ax.set_title("learning rate", fontsize=12)
            positive = [y for y in ys if y > 0]
            if len(positive) == len(ys) and max(ys) / min(ys) > 20:
                ax.set_yscale("log")
            else:
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
                ax.yaxis.get_offset_text().set_fontsize(10)
        else:
            tx, ty = _thin(xs, ys)
            ax.plot(tx, ty, color="#93c5fd", linewidth=0.7, label="raw")
            ex, ey = _thin(xs, _ema(ys))
            ax.plot(ex, ey, color="#1d4ed8", linewidth=1.8, label="moving avg.")
            ax.set_title(name, fontsize=12)
        ax.set_xlabel("step", fontsize=10)
        ax.tick_params(labelsize=10)
        ax.grid(True, color="#e5e7eb", linewidth=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    first_loss = next((ax for ax, p in zip(axes.flat, panels) if not p[3]), None)
    if first_loss is not None:
        first_loss.legend(fontsize=9, frameon=False)
    buf = io.BytesIO()
    # Software=None keeps matplotlib's URL out of the PNG metadata.
    fig.savefig(buf, format="png", dpi=_PLOT_DPI, metadata={"Software": None})
    return buf.getvalue()


def plot_losses(metrics_path: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Draw the loss curves of a ``metrics.jsonl`` into ``out_png`` (atomically).

    One subplot per numeric column except step/time/lr/images_per_s — raw values as a thin line, an
    exponential moving average on top, since per-step GAN losses are too noisy to read raw — and one
    learning-rate subplot, at most two to a row; a column that never changed gets no subplot. Returns None (and
    writes nothing) when there is nothing to plot.
    """
    path = Path(metrics_path)
    if not path.is_file():
        return None
    png = _render_losses(read_metrics(path))
    if png is None:
        return None
    out = Path(out_png)
    with atomic_write(out) as f:
        f.write(png)
    return out


# ----------------------------------------------------------------------------------------------------
# Formatting helpers: numbers become text here; the template only places (and escapes) that text.


def _label(key: str) -> str:
    """``data_seconds`` -> ``Data seconds``: a JSON key as a table label."""
    text = str(key).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _fmt_field(key: str, v: Any) -> str:
    """A run.json field: an identifier (a process id, a seed, a port) exactly as written, anything else by
    :func:`_fmt`."""
    if isinstance(v, int) and not isinstance(v, bool) and key.lower().rsplit("_", 1)[-1] in _IDENTIFIERS:
        return str(v)
    return _fmt(v)


def _fmt(v: Any, digits: int = 4) -> str:
    """Numbers for people: ints with thousands separators, floats with ``digits`` significant digits."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.{max(digits - 1, 1)}e}"
        if abs(v) >= 1000:  # "1,234", never "1.23e+03": a throughput or a count of seconds reads as a number
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    if v is None:
        return "—"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _duration(seconds: Any) -> str:
    if not _finite(seconds):
        return _fmt(seconds)
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _image_info(path: Path) -> tuple[bytes, int] | None:
    """(PNG bytes, width) of an image file; None when it cannot be read. Non-PNGs are re-encoded."""
    from PIL import Image

    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            width = im.width
            if im.format != "PNG":
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                data = buf.getvalue()
    except (OSError, SyntaxError, ValueError):
        return None
    return data, width


def _display_width(width: int, target: int, cap: int) -> int:
    """Integer-multiple display width (crisp pixels) reaching at least ``target`` px, at most ``cap``."""
    if width <= 0:
        return target
    scale = max(1, math.ceil(target / width))
    while scale > 1 and width * scale > cap:
        scale -= 1
    return width * scale


def _dict(v: Any) -> dict[str, Any]:
    """``v`` if it is a JSON object, else an empty one: hand-edited or half-written files may hold anything."""
    return v if isinstance(v, dict) else {}


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dict -> [("train.lr", 0.0002), ...]; lists stay whole (they read better inline)."""
    if isinstance(obj, dict) and obj:
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, obj)]


# ----------------------------------------------------------------------------------------------------
# Report sections: each returns the plain data its part of templates/report.html.j2 shows (None or an
# empty collection when the run has nothing for it, and the template then leaves the section out).

Rows = list[tuple[str, str]]


def _status_class(status: str) -> str:
    low = status.lower()
    if low in {"finished", "completed", "done", "success", "succeeded"}:
        return "ok"
    if low in {"failed", "diverged", "error", "crashed", "killed"}:
        return "bad"
    return "run" if low in {"running", "started", "training", "resumed"} else ""


def _summary(run: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Rows]:
    timings = _dict(run.get("timings"))
    last = records[-1] if records else {}
    step = run.get("step", last.get("step"))
    train_s = timings.get("train_seconds", last.get("time"))
    unit = "tokens" if "tokens_per_s" in timings or any("tokens_per_s" in r for r in records[:5]) else "images"
    ips = timings.get(f"{unit}_per_s")
    if not _finite(ips):
        # Median over the logged rates: robust to the slow first steps (compilation, warm-up).
        rates = sorted(float(r[f"{unit}_per_s"]) for r in records if _finite(r.get(f"{unit}_per_s")))
        ips = rates[len(rates) // 2] if rates else None
    rows: Rows = []
    if step is not None:
        rows.append(("Steps", _fmt(step)))
    if train_s is not None:
        rows.append(("Train time", _duration(train_s)))
    if ips is not None:
        rows.append((f"{unit.capitalize()} / s", _fmt(ips, 3)))
    dp = _dict(run.get("dp"))  # train.dp: the privacy spent (the dp_epsilon curve comes from metrics.jsonl)
    if _finite(dp.get("epsilon")) and _finite(dp.get("delta")):
        how = ", ".join(
            f"{label} {_fmt(dp[key], 3)}"
            for key, label in (("noise_multiplier", "noise"), ("max_grad_norm", "clip"), ("updates", "updates"))
            if dp.get(key) is not None
        )
        accountant = f", {dp['accountant']}" if isinstance(dp.get("accountant"), str) else ""
        rows.append(
            ("Privacy (DP-SGD)", f"ε = {_fmt(dp['epsilon'], 3)} at δ = {_fmt(dp['delta'], 2)} ({how}{accountant})")
        )
    for key, label in (
        ("seed", "Seed"),
        ("genloop_version", "GenLoop version"),
        ("created", "Created"),
        ("finished", "Finished"),
    ):
        if run.get(key) is not None:
            rows.append((label, _fmt_field(key, run[key])))
    shown = {
        "id",
        "model",
        "dataset",
        "status",
        "step",
        "seed",
        "genloop_version",
        "created",
        "finished",
        "timings",
        "dp",
    }
    # Anything else run.json records (device, parent run, resumed from...) is shown too, if it is simple.
    for key, value in run.items():
        if key not in shown and (value is None or isinstance(value, (str, int, float, bool))):
            rows.append((_label(key), _fmt_field(key, value)))
    # what the rows above already say (the train time, the throughput) is not repeated in the Timings box
    said = {k for k in ("train_seconds", f"{unit}_per_s") if _finite(timings.get(k))}
    # run.json timings: ``*_seconds`` keys as durations ("train" -> "6 min 04 s"), others as numbers.
    timing_rows: Rows = [
        (_label(key[: -len("_seconds")]), _duration(value))
        if key.endswith("_seconds") and _is_number(value)
        else (_label(key), _fmt(value))
        for key, value in timings.items()
        if key not in said
    ]
    return {"rows": rows, "timings": timing_rows}


def _sample_files(run_dir: Path) -> list[tuple[int, Path]]:
    return RunLayout(run_dir).training_samples("png")


def _picture(
    path: Path, run_dir: Path, warnings: list[str], target: int, cap: int, step: int | None = None
) -> dict[str, Any] | None:
    """An image file as an inline picture (data URI, crisp display width); a warning when unreadable."""
    info = _image_info(path)
    if info is None:
        warnings.append(f"{path.relative_to(run_dir)} could not be read as an image.")
        return None
    data, width = info
    return {
        "uri": _data_uri(data),
        "width": _display_width(width, target, cap),
        "step": step,
        "step_text": f"{step:,}" if step is not None else "",
    }


def _samples(run_dir: Path, warnings: list[str]) -> dict[str, Any] | None:
    """The latest grid (``generated/grid.png``, else the last training grid; its ``step`` is None for the
    generated one), a strip of earlier training grids, and the closest-pairs picture of the evaluation."""
    samples = _sample_files(run_dir)
    generated = RunLayout(run_dir).generated_grid
    earlier = samples
    if generated.is_file():
        main_path, main_step = generated, None
    elif samples:
        main_step, main_path = samples[-1]
        earlier = samples[:-1]
    else:
        return None
    if len(earlier) > _MAX_STRIP:
        # Evenly spaced picks, always including the first and the last, so the strip shows progress.
        idx = sorted({round(i * (len(earlier) - 1) / (_MAX_STRIP - 1)) for i in range(_MAX_STRIP)})
        earlier = [earlier[i] for i in idx]
    strip = [_picture(path, run_dir, warnings, 140, 180, step) for step, path in earlier]
    pairs = RunLayout(run_dir).closest_pairs
    return {
        "main": _picture(main_path, run_dir, warnings, 360, 720, main_step),
        "strip": [p for p in strip if p is not None],
        "pairs": _picture(pairs, run_dir, [], 360, 720) if pairs.is_file() else None,
    }


def _losses(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    png = _render_losses(records) if records else None
    _, flat = _panels(records) if records else ([], [])
    constant = "; ".join(f"{name} {value:g}" for name, value in flat)
    if png is None:
        return {"uri": None, "width": None, "note": f"Constant throughout: {constant}."} if flat else None
    info = _image_info_bytes(png)
    note = "Thin light line: the value logged at each step. Dark line: its exponential moving average."
    if flat:
        note += f" Constant throughout (not drawn): {constant}."
    if {"d_loss", "g_loss"} & set(_loss_keys(records)):
        note += (
            " GAN losses do not fall steadily the way a classifier's does; look for them to stay "
            "bounded rather than to reach zero."
        )
    return {"uri": _data_uri(png), "width": round(info * 100 / _PLOT_DPI) if info else None, "note": note}


def _image_info_bytes(png: bytes) -> int | None:
    """Pixel width of PNG bytes (None if unreadable)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(png)) as im:
            return im.width
    except (OSError, SyntaxError):
        return None


def _ratio(metric: catalog.Metric, value: Any, floor: Any) -> str:
    """How far from its floor: a multiple for distances (lower is better), a share for scores (higher)."""
    if not (_finite(value) and _finite(floor) and floor > 0):
        return ""
    if metric.direction == "lower":
        return f"{value / floor:.1f}× floor"
    if metric.direction == "higher":
        return f"{100 * value / floor:.0f}% of real"
    return ""


def _how(metric: catalog.Metric) -> str:
    """A note line of the evaluation table: which way is better (from the catalogue), then what it is."""
    better = {
        "lower": "lower is better: ",
        "higher": "higher is better: ",
        "closer": "closer to real is better: ",
        "none": "",
    }[metric.direction]
    return better + metric.help


def _text(run_dir: Path, ev: dict[str, Any], modality: str) -> dict[str, Any] | None:
    """A language model's part: its metrics beside held-out real text, and its samples as text."""
    metrics: list[tuple[str, str, str]] = []
    if _is_number(ev.get("val_loss")):
        for m in catalog.for_modality(modality):
            if m.key in ev:
                floor = ev.get(m.floor) if m.floor else None
                metrics.append((_label(m.label), _fmt(ev[m.key], 4), _fmt(floor, 4) if m.floor else ""))
    texts: list[tuple[str, str]] = []
    files = RunLayout(run_dir)
    gen = files.generated_texts
    if gen.is_file():
        for line in gen.read_text(encoding="utf-8").splitlines()[-5:]:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            r = item.get("recipe", {})
            texts.append(
                (
                    f"generated (seed {r.get('seed')}, temperature {r.get('temperature')})",
                    (r.get("prompt") or "") + item.get("text", ""),
                )
            )
    samples = files.training_samples("txt")
    if samples:
        step, path = samples[-1]
        texts.append((f"training samples at step {step:,}", path.read_text(encoding="utf-8")))
    eval_samples = files.eval_samples
    if eval_samples.is_file():
        texts.append(("evaluation samples (eval/samples.txt)", eval_samples.read_text(encoding="utf-8")))
    if not metrics and not texts:
        return None
    p = _dict(ev.get("loss_protocol"))
    protocol = {"split": p.get("split", "val"), **{k: p.get(k) for k in ("block_size", "stride", "tokens_scored")}}
    return {
        "metrics": metrics,
        "protocol": protocol,
        "n": ev.get("n"),
        "temperature": _dict(ev.get("sample_settings")).get("temperature"),
        "samples": [(caption, text[:4000]) for caption, text in texts],
    }


def _evaluation(ev: dict[str, Any], modality: str) -> dict[str, Any] | None:
    """An image model's metrics table (catalogued metrics in catalogue order, then any others it recorded),
    how to read it, and what was scored with what."""
    if _is_number(ev.get("val_loss")) and "fid" not in ev:
        return None  # a language model's metrics are in the text section
    rows: list[dict[str, str]] = []
    notes: list[tuple[str, str]] = []
    for m in catalog.for_modality(modality):
        value = ev.get(m.key)
        if not _is_number(value):
            continue
        digits = 3 if m.spread else 4
        text = _fmt(value, digits)
        if m.spread and _is_number(ev.get(m.spread)):
            text += f" ± {_fmt(ev[m.spread], 2)}"
        floor = ev.get(m.floor) if m.floor else None
        rows.append(
            {
                "label": _label(m.label),
                "value": text,
                "floor": _fmt(floor, digits) if _is_number(floor) else "",
                "ratio": _ratio(m, value, floor),
            }
        )
        if m.key not in ("fid", "kid", "is") and m.help:
            notes.append((_label(m.label), _how(m)))
    # Numbers the catalogue does not know (a family's own metric): shown, unlabelled beyond their key.
    skip = set(catalog.CATALOG) | catalog.companions() | catalog.BOOKKEEPING
    for key, value in ev.items():
        if key not in skip and not key.endswith("_floor") and _is_number(value):
            floor = ev.get(f"{key}_floor")
            rows.append(
                {
                    "label": key.replace("_", " "),
                    "value": _fmt(value, 4),
                    "floor": _fmt(floor, 4) if _is_number(floor) else "",
                    "ratio": "",
                }
            )
    from . import sanity as sanity_mod

    sanity = _dict(ev.get("sanity"))
    if not rows and not sanity:
        return None
    counts = [
        (label, _fmt(ev[key]))
        for key, label in (
            ("n_generated", "Generated images"),
            ("n_reference", "Reference images"),
            ("n_floor", "Images for the floor"),
            ("reference_split", "Reference split"),
        )
        if ev.get(key) is not None
    ]
    net = _dict(ev.get("feature_net"))
    net_rows: Rows = []
    for key, label in (
        ("id", "Id"),
        ("kind", "Kind"),
        ("accuracy", "Accuracy"),
        ("feature_dim", "Feature dim"),
        ("sha256", "sha256"),
    ):
        v = net.get(key)
        if v is None:
            continue
        if key == "accuracy" and _finite(v) and 0 <= v <= 1:
            net_rows.append((label, f"{100 * v:.1f}%"))
        elif key == "sha256":
            net_rows.append((label, str(v)[:16] + ("…" if len(str(v)) > 16 else "")))
        else:
            net_rows.append((label, _fmt(v)))
    quality = _dict(net.get("quality"))
    for key, label in (
        ("linear_probe_accuracy", "Linear probe"),
        ("knn_accuracy", "kNN accuracy"),
        ("retrieval_top1", f"View retrieval top-1 (of {quality.get('retrieval_n')})"),
    ):
        if _finite(quality.get(key)):
            net_rows.append((label, f"{100 * quality[key]:.1f}%"))
    return {
        "rows": rows,
        "notes": notes,
        "counts": counts,
        "net": net_rows,
        "distance_note": _is_number(ev.get("fid")) or _is_number(ev.get("kid")),
        "is_note": _is_number(ev.get("is")),
        "sanity": {
            "rows": sanity_mod.rows(sanity),
            "metrics": [m.upper() if m in ("fid", "kid") else m for m in sanity_mod.METRICS],
            "warning": sanity_mod.format_warning(sanity),
            "rule": sanity_mod.RULE,
            "modes": sanity.get("modes", ""),
            "n": sanity.get("n_degraded"),
        }
        if sanity
        else None,
    }


def _modality_sections(run_dir: Path, ev: dict[str, Any]) -> dict[str, Any]:
    """Each modality's section of the page, by the name the template switches on (None: nothing to show)."""
    from ..modalities import modalities

    return dict(modalities[name].report_section(run_dir, ev) for name in modalities)


def _hidden_settings(config: dict[str, Any]) -> set[str]:
    """The dotted config keys that do not apply to this run: another modality's own settings (asked of the
    modalities; an unknown family hides nothing), and the DP knobs of a run trained without DP."""
    from ..modalities import modalities
    from ..systems import models

    hidden: set[str] = set()
    name = _dict(config.get("model")).get("name")
    if isinstance(name, str) and name in models:
        own = set(modalities[models[name].modality].own_settings)
        hidden = {k for m in modalities for k in modalities[m].own_settings} - own
    dp = _dict(_dict(config.get("train")).get("dp"))
    if dp and dp.get("epsilon") is None and dp.get("noise_multiplier") is None:
        hidden |= {f"train.dp.{k}" for k in dp}
    return hidden


def _config(config: dict[str, Any]) -> list[tuple[str, Rows]]:
    """The resolved config by section, without the settings that do not apply to the run (:func:`_hidden_settings`;
    a run without DP shows one ``dp: off`` row instead of its unused knobs)."""
    hidden = _hidden_settings(config)
    groups = []
    for section, body in config.items():
        items = _flatten(body, str(section)) if isinstance(body, dict) else [(str(section), body)]
        dp_off = any(k.startswith(f"{section}.dp.") for k, _ in items if k in hidden)
        items = [(k[len(str(section)) + 1 :], v) for k, v in items if k not in hidden]
        if dp_off:
            items.append(("dp", "off"))
        if not items:
            continue
        # Strings unquoted (they read as names); everything else as JSON, so null/true/lists stay exact.
        rows = [
            (k or section, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str))
            for k, v in items
        ]
        groups.append((str(section), rows))
    return groups


def _load(path: Path, warnings: list[str], run_dir: Path) -> Any:
    """JSON of an optional file; a missing file gives None silently, a broken one a visible warning."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except DataError as e:
        warnings.append(f"{path.relative_to(run_dir)} could not be read: {e}")
        return None


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    """The page template, loaded once. Autoescape is on for every value (the file's ``.j2`` suffix would
    turn jinja2's extension-based default off), and an undefined name is an error, not an empty string."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("genloop.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2")


# ----------------------------------------------------------------------------------------------------
# Entry point


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the self-contained ``report.html`` of one run (default: inside the run directory).

    Raises NotFoundError when ``run_dir`` has neither ``config.json`` nor ``run.json`` — it is then not
    a run directory, and an empty report would only hide the mistake.
    """
    run_dir = Path(run_dir)
    files = RunLayout(run_dir)
    if not files.config.is_file() and not files.run_info.is_file():
        raise NotFoundError(f"{run_dir}: not a run directory (no config.json or run.json)")
    warnings: list[str] = []
    run = _dict(_load(files.run_info, warnings, run_dir))
    config = _dict(_load(files.config, warnings, run_dir))
    ev = _dict(_load(files.eval_metrics(), warnings, run_dir))
    if "sanity" not in ev:  # `genloop eval RUN --sanity` alone writes eval/sanity.json
        sanity = _load(files.eval_metrics().parent / "sanity.json", warnings, run_dir)
        if isinstance(sanity, dict):
            ev["sanity"] = sanity
    records = read_metrics(files.metrics)

    model_cfg, data_cfg = _dict(config.get("model")), _dict(config.get("data"))
    status = str(run.get("status") or "unknown")
    from .. import __version__

    context = {
        "run_id": run.get("id") or run_dir.resolve().name,
        "model": run.get("model") or model_cfg.get("name") or "unknown model",
        "dataset": run.get("dataset") or data_cfg.get("name") or "unknown data",
        "status": status,
        "status_class": _status_class(status),
        "summary": _summary(run, records),
        "samples": _samples(run_dir, warnings),
        **_modality_sections(run_dir, ev),
        "losses": _losses(records),
        "config": _config(config),
        "warnings": warnings,  # last: the sections above add the images they could not read
        "version": __version__,
        "now": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }
    target = Path(out) if out is not None else files.report
    write_text(target, _template().render(context))
    return target
