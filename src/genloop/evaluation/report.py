"""One self-contained HTML page that tells how a training run went.

The report is a single ``report.html``: images are embedded as base64 data URIs, the CSS is inline and
there is no JavaScript and no external reference, so the file can be mailed, attached to an issue or
opened offline years later and still look the same. Every part except the title is optional: a run
that crashed after writing only ``config.json`` and ``run.json`` still gets a (short) report, and a
file that cannot be read becomes a visible note in the report rather than an error.

The files it reads (config.json, run.json, metrics.jsonl, samples/, generated/, eval/) are named by
:class:`genloop.run_layout.RunLayout`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError, NotFoundError
from ..run_layout import RunLayout
from ..serialization import atomic_write, read_json, write_text

# Columns of metrics.jsonl that are bookkeeping, not losses: they get their own plot (lr) or none.
_NOT_LOSSES = ("step", "time", "lr", "images_per_s", "tokens_per_s", "eval/seconds")
_MAX_STRIP = 8  # earlier sample grids shown; more would bloat the file without telling more
_MAX_PLOT_POINTS = 4000  # raw points drawn per curve; the moving average still uses every point
_PLOT_DPI = 200
_PLOT_WIDTH_IN = {1: 6.0, 2: 10.3, 3: 10.3}  # figure width by number of subplot columns


# ----------------------------------------------------------------------------------------------------
# Reading the run directory


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of metrics.jsonl. Unparsable lines are skipped: a run killed mid-write leaves half a
    line at the end, and that must not cost the whole history."""
    records: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return records
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records


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


def _render_losses(records: list[dict[str, Any]]) -> bytes | None:
    """PNG bytes of one subplot per loss plus one for the learning rate; None when nothing is plottable."""
    panels: list[tuple[str, list[float], list[float], bool]] = []  # (name, xs, ys, is_lr)
    for key in _loss_keys(records):
        xs, ys = _series(records, key)
        if xs:
            panels.append((key, xs, ys, False))
    xs, ys = _series(records, "lr")
    if xs:
        panels.append(("lr", xs, ys, True))
    if not panels:
        return None

    # Lazily imported: matplotlib is slow to import and only reports need it. Figure + the Agg canvas
    # are used directly instead of pyplot, so no global backend is switched and no state is shared.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    # Sized in inches for the report's ~1030 px content width at 100 dpi, saved at _PLOT_DPI so the
    # text stays sharp on high-density screens (the <img> is shown at the 100-dpi size).
    fig = Figure(figsize=(_PLOT_WIDTH_IN[ncols], 2.9 * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, xs, ys, is_lr) in zip(axes.flat, panels):
        if is_lr:
            ax.plot(xs, ys, color="#6b7280", linewidth=1.5)
            ax.set_title("learning rate", fontsize=10)
            positive = [y for y in ys if y > 0]
            if len(positive) == len(ys) and max(ys) / min(ys) > 20:
                ax.set_yscale("log")
            else:
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
                ax.yaxis.get_offset_text().set_fontsize(8)
        else:
            tx, ty = _thin(xs, ys)
            ax.plot(tx, ty, color="#93c5fd", linewidth=0.7, label="raw")
            ex, ey = _thin(xs, _ema(ys))
            ax.plot(ex, ey, color="#1d4ed8", linewidth=1.8, label="moving avg.")
            ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, color="#e5e7eb", linewidth=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    first_loss = next((ax for ax, p in zip(axes.flat, panels) if not p[3]), None)
    if first_loss is not None:
        first_loss.legend(fontsize=7, frameon=False)
    buf = io.BytesIO()
    # Software=None keeps matplotlib's URL out of the PNG metadata.
    fig.savefig(buf, format="png", dpi=_PLOT_DPI, metadata={"Software": None})
    return buf.getvalue()


def plot_losses(metrics_path: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Draw the loss curves of a ``metrics.jsonl`` into ``out_png`` (atomically).

    One subplot per numeric column except step/time/lr/images_per_s — raw values as a thin line, an
    exponential moving average on top, since per-step GAN losses are too noisy to read raw — and one
    learning-rate subplot. Returns None (and writes nothing) when there is nothing to plot.
    """
    path = Path(metrics_path)
    if not path.is_file():
        return None
    png = _render_losses(_read_metrics(path))
    if png is None:
        return None
    out = Path(out_png)
    with atomic_write(out) as f:
        f.write(png)
    return out


# ----------------------------------------------------------------------------------------------------
# Formatting helpers


def _label(key: str) -> str:
    """``data_seconds`` -> ``Data seconds``: a JSON key as a table label."""
    text = str(key).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


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


def _table(rows: Iterable[tuple[str, str]], cls: str = "kv") -> str:
    """Two-column table; values are already-escaped HTML."""
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{body}</table>' if body else ""


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dict -> [("train.lr", 0.0002), ...]; lists stay whole (they read better inline)."""
    if isinstance(obj, dict) and obj:
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, obj)]


# ----------------------------------------------------------------------------------------------------
# Report sections


_CSS = """
:root { --fg:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f9fafb; --accent:#1d4ed8; }
pre.text { white-space:pre-wrap; background:#fff; border:1px solid var(--line); padding:10px; font-size:13px; max-height:420px; overflow:auto; }
p.note { color:var(--muted); font-size:13px; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 28px 24px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; word-break: break-all; }
header .sub { color: var(--muted); font-size: 15px; }
.badge { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12.5px; font-weight:600;
  vertical-align: 2px; margin-left: 6px; background:#e5e7eb; color:#374151; }
.badge.ok { background:#dcfce7; color:#166534; } .badge.bad { background:#fee2e2; color:#991b1b; }
.badge.run { background:#dbeafe; color:#1e40af; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 22px;
  margin-top: 20px; }
h2 { font-size: 17px; margin: 0 0 12px; font-weight: 650; }
h3.first { margin-top: 0; }
h3 { font-size: 14px; margin: 18px 0 8px; color: var(--muted); font-weight: 600;
  text-transform: uppercase; letter-spacing: .04em; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 5px 10px; text-align: left; vertical-align: top; }
thead th { background: var(--bg); font-weight: 600; }
table.kv th { background: var(--bg); font-weight: 500; color: #374151; white-space: nowrap; }
table.metrics td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.config td { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px;
  word-break: break-word; }
.grid2 { display:flex; flex-wrap:wrap; gap: 24px; align-items:flex-start; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
img.px { image-rendering: pixelated; image-rendering: crisp-edges; max-width: 100%; height: auto;
  border: 1px solid var(--line); background: #fff; }
img.plot { max-width: 100%; height: auto; }
.strip { display:flex; flex-wrap:wrap; gap: 12px; }
.strip figure { text-align:center; flex: 1 1 0; min-width: 84px; max-width: 160px; }
.strip img.px { width: 100%; }
.note { color: var(--muted); font-size: 13.5px; }
.note ul { margin: 6px 0 0; padding-left: 20px; }
.warn { background:#fffbeb; border:1px solid #fde68a; color:#92400e; border-radius:8px; padding:8px 12px;
  margin-top: 16px; font-size: 14px; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 24px; text-align: center; }
"""


def _status_badge(status: Any) -> str:
    s = str(status or "unknown")
    low = s.lower()
    cls = (
        "ok" if low in {"finished", "completed", "done", "success", "succeeded"}
        else "bad" if low in {"failed", "diverged", "error", "crashed", "killed"}
        else "run" if low in {"running", "started", "training", "resumed"}
        else ""
    )
    return f'<span class="badge {cls}">{_esc(s)}</span>'


def _summary_section(run: dict[str, Any], records: list[dict[str, Any]]) -> str:
    timings = run.get("timings") if isinstance(run.get("timings"), dict) else {}
    last = records[-1] if records else {}
    step = run.get("step", last.get("step"))
    train_s = timings.get("train_seconds", last.get("time"))
    unit = "tokens" if "tokens_per_s" in timings or any("tokens_per_s" in r for r in records[:5]) else "images"
    ips = timings.get(f"{unit}_per_s")
    if not _finite(ips):
        # Median over the logged rates: robust to the slow first steps (compilation, warm-up).
        rates = sorted(float(r[f"{unit}_per_s"]) for r in records if _finite(r.get(f"{unit}_per_s")))
        ips = rates[len(rates) // 2] if rates else None
    rows: list[tuple[str, str]] = []
    if step is not None:
        rows.append(("Steps", _esc(_fmt(step))))
    if train_s is not None:
        rows.append(("Train time", _esc(_duration(train_s))))
    if ips is not None:
        rows.append((f"{unit.capitalize()} / s", _esc(_fmt(ips, 3))))
    for key, label in (("seed", "Seed"), ("genloop_version", "GenLoop version"), ("created", "Created"),
                       ("finished", "Finished")):
        if run.get(key) is not None:
            rows.append((label, _esc(_fmt(run[key]))))
    shown = {"id", "model", "dataset", "status", "step", "seed", "genloop_version", "created", "finished",
             "timings"}
    # Anything else run.json records (device, parent run, resumed from...) is shown too, if it is simple.
    for key, value in run.items():
        if key not in shown and (value is None or isinstance(value, (str, int, float, bool))):
            rows.append((_label(key), _esc(_fmt(value))))
    timing_rows = _timing_rows(timings)
    if not rows and not timing_rows:
        return ""
    parts = [f"<div>{_table(rows)}</div>"] if rows else []
    if timing_rows:
        # Timings sit beside the summary: both are short tables and read together.
        parts.append(f"<div><h3 class='first'>Timings</h3>{_table(timing_rows)}</div>")
    return '<section><h2>Summary</h2><div class="grid2">' + "".join(parts) + "</div></section>"


def _sample_files(run_dir: Path) -> list[tuple[int, Path]]:
    return RunLayout(run_dir).training_samples("png")


def _samples_section(run_dir: Path, warnings: list[str]) -> str:
    samples = _sample_files(run_dir)
    generated = RunLayout(run_dir).generated_grid
    main: tuple[Path, str] | None = None
    earlier = samples
    if generated.is_file():
        main = (generated, "generated/grid.png — from <code>genloop generate</code>")
    elif samples:
        step, path = samples[-1]
        main = (path, f"training samples at step {step:,}")
        earlier = samples[:-1]
    if main is None:
        return ""
    parts = ["<section><h2>Samples</h2>"]
    info = _image_info(main[0])
    if info is None:
        warnings.append(f"{main[0].relative_to(run_dir)} could not be read as an image.")
    else:
        data, width = info
        shown = _display_width(width, 360, 720)
        parts.append(
            f'<figure><img class="px" src="{_data_uri(data)}" width="{shown}" alt="sample grid">'
            f"<figcaption>{main[1]}</figcaption></figure>"
        )
    if earlier:
        # Evenly spaced picks, always including the first and the last, so the strip shows progress.
        if len(earlier) > _MAX_STRIP:
            idx = sorted({round(i * (len(earlier) - 1) / (_MAX_STRIP - 1)) for i in range(_MAX_STRIP)})
            earlier = [earlier[i] for i in idx]
        figs = []
        for step, path in earlier:
            info = _image_info(path)
            if info is None:
                warnings.append(f"{path.relative_to(run_dir)} could not be read as an image.")
                continue
            data, width = info
            figs.append(
                f'<figure><img class="px" src="{_data_uri(data)}" width="{_display_width(width, 140, 180)}"'
                f' alt="samples at step {step}"><figcaption>step {step:,}</figcaption></figure>'
            )
        if figs:
            parts.append('<h3>During training</h3><div class="strip">' + "".join(figs) + "</div>")
    pairs = RunLayout(run_dir).closest_pairs
    info = _image_info(pairs) if pairs.is_file() else None
    if info is not None:
        data, width = info
        parts.append(
            f'<h3>Closest to the training set</h3><figure><img class="px" src="{_data_uri(data)}" '
            f'width="{_display_width(width, 360, 720)}" alt="closest pairs"><figcaption>each sample beside its '
            "nearest training image, most copy-like first (eval/closest_pairs.png)</figcaption></figure>"
        )
    parts.append("</section>")
    return "".join(parts)


def _losses_section(records: list[dict[str, Any]]) -> str:
    png = _render_losses(records) if records else None
    if png is None:
        return ""
    info = _image_info_bytes(png)
    width = f' width="{round(info * 100 / _PLOT_DPI)}"' if info else ""
    note = "Thin light line: the value logged at each step. Dark line: its exponential moving average."
    if {"d_loss", "g_loss"} & set(_loss_keys(records)):
        note += (" GAN losses do not fall steadily the way a classifier's does; look for them to stay "
                 "bounded rather than to reach zero.")
    return (
        "<section><h2>Training curves</h2>"
        f'<img class="plot" src="{_data_uri(png)}"{width} alt="loss curves">'
        f'<p class="note">{_esc(note)}</p></section>'
    )


def _image_info_bytes(png: bytes) -> int | None:
    """Pixel width of PNG bytes (None if unreadable)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(png)) as im:
            return im.width
    except (OSError, SyntaxError):
        return None


def _ratio(value: Any, floor: Any) -> str:
    if _finite(value) and _finite(floor) and floor > 0:
        return f"{value / floor:.1f}× floor"
    return ""


# Extra numbers eval/metrics.json may hold, with a label and how to read them.
_EXTRA_METRICS = {
    "elbo_nats": ("ELBO (nats / image)", "the variational bound on the log-likelihood of held-out images"),
    "elbo_bits_per_dim": ("Bits per dimension", "lower is better: the negative ELBO expressed per pixel channel"),
    "recon_nats": ("Reconstruction (nats / image)", "lower is better: the decoder's negative log-likelihood"),
    "kl_nats": ("KL (nats / image)", "how much the encoder's posterior departs from the prior"),
    "bits_per_dim": ("Bits per dimension", "lower is better: the bound expressed per pixel channel"),
    "precision": ("Precision", "higher is better: share of generated images inside the real images' k-NN manifold"),
    "recall": ("Recall", "higher is better: share of real images inside the generated images' k-NN manifold"),
    "density": ("Density", "higher is better (about 1 for real data): how many real neighbourhoods hold each sample"),
    "coverage": ("Coverage", "higher is better: share of real images with a sample in their neighbourhood"),
    "class_accuracy": ("Class accuracy", "higher is better: samples the reference classifier puts in their requested class"),
    "per_class_fid_mean": ("Per-class FID (mean)", "lower is better: FID within each class, averaged"),
    "copy_rate": ("Near-copies", "lower is better: share of samples that are near copies of a training image"),
    "iwae_nats": ("IWAE bound (nats / image)", "a tighter log-likelihood bound than the ELBO (k importance samples)"),
    "iwae_bits_per_dim": ("IWAE bits per dimension", "lower is better: the IWAE bound per pixel channel"),
    "sampling_ms_per_image": ("Sampling time (ms / image)", "wall time to generate one image on the evaluation device"),
}
_EVAL_KNOWN = {"fid", "fid_floor", "kid", "kid_std", "kid_floor", "is", "is_std", "is_real", "is_real_std",
               "n_generated", "n_reference", "n_floor", "reference_split", "feature_net",
               # bookkeeping, not metrics: what was scored and how long it took
               "step", "seed", "seconds", "run_id", "model", "checkpoint_sha256", "genloop_version",
               "floor_split", "family_metrics_split", "kid_floor_std", "checkpoint", "sampler", "steps", "guidance",
               "eta", "sampling_device", "prdc_k", "memorization", "per_class_fid", "per_class_fid_floor"}


def _text_section(run_dir: Path, ev: dict[str, Any]) -> str:
    """A language model's report: its samples as text, and its metrics beside held-out real text."""
    parts: list[str] = []
    if _is_number(ev.get("val_loss")):
        p = ev.get("loss_protocol", {})
        rows = [("Validation loss (nats / token)", _fmt(ev["val_loss"], 4), ""),
                ("Perplexity", _fmt(ev.get("perplexity"), 4), ""),
                ("Bits per character", _fmt(ev.get("bits_per_char"), 4), ""),
                ("Bits per byte", _fmt(ev.get("bits_per_byte"), 4), "")]
        for key, label in (("distinct_1", "Distinct-1"), ("distinct_2", "Distinct-2"), ("distinct_3", "Distinct-3"),
                           ("self_bleu", "Self-BLEU"), ("longest_span_mean", "Longest verbatim span (mean chars)"),
                           ("copy_rate", "Samples with a copied span ≥ 50 chars")):
            if key in ev:
                rows.append((label, _fmt(ev[key], 4), _fmt(ev.get(f"{key}_floor"), 4)))
        body = "".join(f"<tr><th>{_esc(a)}</th><td class='num'>{_esc(b)}</td><td class='num'>{_esc(c)}</td></tr>"
                       for a, b, c in rows)
        parts.append(
            "<h3>Text metrics</h3><table class='metrics'><tr><th>metric</th><th>model</th><th>held-out real text</th></tr>"
            f"{body}</table><p class='note'>Loss on the {_esc(p.get('split', 'val'))} split in windows of "
            f"{_esc(p.get('block_size'))} tokens every {_esc(p.get('stride'))} ({_esc(p.get('tokens_scored'))} tokens "
            f"scored). Diversity and memorisation of {_esc(ev.get('n'))} samples at temperature "
            f"{_esc(ev.get('sample_settings', {}).get('temperature'))}, beside the same statistics of held-out "
            "real text of the same length: closer to real is better; copied spans are measured against the training text.</p>")
    texts: list[tuple[str, str]] = []
    gen = RunLayout(run_dir).generated_texts
    if gen.is_file():
        for line in gen.read_text(encoding="utf-8").splitlines()[-5:]:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            r = item.get("recipe", {})
            texts.append((f"generated (seed {r.get('seed')}, temperature {r.get('temperature')})",
                          (r.get("prompt") or "") + item.get("text", "")))
    samples = RunLayout(run_dir).training_samples("txt")
    if samples:
        step, path = samples[-1]
        texts.append((f"training samples at step {step:,}", path.read_text(encoding="utf-8")))
    if RunLayout(run_dir).eval_samples.is_file():
        texts.append(("evaluation samples (eval/samples.txt)", RunLayout(run_dir).eval_samples.read_text(encoding="utf-8")))
    for caption, text in texts:
        parts.append(f"<h3>{_esc(caption)}</h3><pre class='text'>{_esc(text[:4000])}</pre>")
    if not parts:
        return ""
    return "<section><h2>Text</h2>" + "".join(parts) + "</section>"


def _eval_section(ev: dict[str, Any]) -> str:
    if _is_number(ev.get("val_loss")) and "fid" not in ev:
        return ""  # a language model's metrics are in the text section
    rows: list[str] = []

    def row(name: str, value: str, floor: str, ratio: str) -> None:
        rows.append(
            f'<tr><th>{_esc(name)}</th><td class="num">{value}</td><td class="num">{floor}</td>'
            f'<td class="num">{ratio}</td></tr>'
        )

    if _is_number(ev.get("fid")):
        floor = ev.get("fid_floor")
        row("FID", _esc(_fmt(ev["fid"], 4)), _esc(_fmt(floor, 4)) if floor is not None else "",
            _esc(_ratio(ev["fid"], floor)))
    if _is_number(ev.get("kid")):
        value = _fmt(ev["kid"], 3) + (f" ± {_fmt(ev['kid_std'], 2)}" if _is_number(ev.get("kid_std")) else "")
        floor = ev.get("kid_floor")
        row("KID", _esc(value), _esc(_fmt(floor, 3)) if floor is not None else "", _esc(_ratio(ev["kid"], floor)))
    if _is_number(ev.get("is")):
        value = _fmt(ev["is"], 3) + (f" ± {_fmt(ev['is_std'], 2)}" if _is_number(ev.get("is_std")) else "")
        real = ev.get("is_real")
        share = f"{100 * ev['is'] / real:.0f}% of real" if _finite(real) and real > 0 and _finite(ev["is"]) else ""
        row("IS", _esc(value), (_esc(_fmt(real, 3)) + " (real)") if real is not None else "", _esc(share))
    extra_notes: list[str] = []
    for key, value in ev.items():
        if key in _EVAL_KNOWN or key.endswith("_floor") or not _is_number(value):
            continue
        label, how = _EXTRA_METRICS.get(key, (key.replace("_", " "), ""))
        floor = ev.get(f"{key}_floor")
        row(label, _esc(_fmt(value, 4)), _esc(_fmt(floor, 4)) if _is_number(floor) else "", "")
        if how:
            extra_notes.append(f"<li><b>{_esc(label)}</b>: {_esc(how)}.</li>")
    if not rows:
        return ""
    # How to read the table, only for the metrics it actually shows.
    notes: list[str] = []
    if _is_number(ev.get("fid")) or _is_number(ev.get("kid")):
        notes.append(
            "<li><b>FID</b> and <b>KID</b>: distance between generated and real images in a feature "
            "network's space — <b>lower is better</b>. The <b>floor</b> is what real held-out images score "
            "against the real training images: the best a model can hope to reach with this many images. "
            "A ratio near 1× means samples are about as close to the data as real images are.</li>"
        )
    if _is_number(ev.get("is")):
        notes.append(
            "<li><b>IS</b> (Inception Score): how confidently and how variously the feature network "
            "classifies the samples — <b>higher is better</b>; the real images' IS is the reference.</li>"
        )
    notes.extend(extra_notes)
    parts = [
        "<section><h2>Evaluation</h2>",
        '<table class="metrics"><thead><tr><th>Metric</th><th>Model</th><th>Real-data floor</th>'
        "<th>Ratio</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>",
        '<div class="note"><ul>' + "".join(notes) + "</ul></div>",
    ]
    counts = [
        (label, _esc(_fmt(ev[key])))
        for key, label in (("n_generated", "Generated images"), ("n_reference", "Reference images"),
                           ("n_floor", "Images for the floor"), ("reference_split", "Reference split"))
        if ev.get(key) is not None
    ]
    net = ev.get("feature_net") if isinstance(ev.get("feature_net"), dict) else None
    side = []
    if counts:
        side.append(f"<div><h3>Sample sizes</h3>{_table(counts)}</div>")
    if net:
        net_rows = []
        for key, label in (("id", "Id"), ("kind", "Kind"), ("accuracy", "Accuracy"),
                           ("feature_dim", "Feature dim"), ("sha256", "sha256")):
            if net.get(key) is None:
                continue
            v = net[key]
            if key == "accuracy" and _finite(v) and 0 <= v <= 1:
                text = f"{100 * v:.1f}%"
            elif key == "sha256":
                text = str(v)[:16] + ("…" if len(str(v)) > 16 else "")
            else:
                text = _fmt(v)
            net_rows.append((label, _esc(text)))
        side.append(f"<div><h3>Feature network</h3>{_table(net_rows)}</div>")
    if side:
        parts.append('<div class="grid2">' + "".join(side) + "</div>")
    parts.append("</section>")
    return "".join(parts)


def _timing_rows(timings: dict[str, Any]) -> list[tuple[str, str]]:
    """run.json timings: ``*_seconds`` keys as durations ("train" -> "6 min 04 s"), others as numbers."""
    rows = []
    for key, value in timings.items():
        if key.endswith("_seconds") and _is_number(value):
            rows.append((_label(key[: -len("_seconds")]), _esc(_duration(value))))
        else:
            rows.append((_label(key), _esc(_fmt(value))))
    return rows


def _config_section(config: dict[str, Any]) -> str:
    if not config:
        return ""
    groups = []
    for section, body in config.items():
        items = _flatten(body) if isinstance(body, dict) else [("", body)]
        # Strings unquoted (they read as names); everything else as JSON, so null/true/lists stay exact.
        rows = [
            (k or section, _esc(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)))
            for k, v in items
        ]
        groups.append(f'<div><h3>{_esc(section)}</h3>{_table(rows, "kv config")}</div>')
    return '<section><h2>Resolved config</h2><div class="grid2">' + "".join(groups) + "</div></section>"


def _load(path: Path, warnings: list[str], run_dir: Path) -> Any:
    """JSON of an optional file; a missing file gives None silently, a broken one a visible warning."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except DataError as e:
        warnings.append(f"{path.relative_to(run_dir)} could not be read: {e}")
        return None


# ----------------------------------------------------------------------------------------------------
# Entry point


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the self-contained ``report.html`` of one run (default: inside the run directory).

    Raises NotFoundError when ``run_dir`` has neither ``config.json`` nor ``run.json`` — it is then not
    a run directory, and an empty report would only hide the mistake.
    """
    run_dir = Path(run_dir)
    if not RunLayout(run_dir).config.is_file() and not RunLayout(run_dir).run_info.is_file():
        raise NotFoundError(f"{run_dir}: not a run directory (no config.json or run.json)")
    warnings: list[str] = []
    run = _load(RunLayout(run_dir).run_info, warnings, run_dir)
    run = run if isinstance(run, dict) else {}
    config = _load(RunLayout(run_dir).config, warnings, run_dir)
    config = config if isinstance(config, dict) else {}
    ev = _load(RunLayout(run_dir).eval_metrics(), warnings, run_dir)
    ev = ev if isinstance(ev, dict) else {}
    records = _read_metrics(RunLayout(run_dir).metrics) if RunLayout(run_dir).metrics.is_file() else []

    model_cfg = config.get("model") if isinstance(config.get("model"), dict) else {}
    data_cfg = config.get("data") if isinstance(config.get("data"), dict) else {}
    run_id = run.get("id") or run_dir.resolve().name
    model = run.get("model") or model_cfg.get("name") or "unknown model"
    dataset = run.get("dataset") or data_cfg.get("name") or "unknown data"

    body = [
        f"<header><h1>Run {_esc(run_id)}</h1>"
        f'<div class="sub">{_esc(model)} on {_esc(dataset)} {_status_badge(run.get("status"))}</div></header>',
        _summary_section(run, records),
        _samples_section(run_dir, warnings),
        _text_section(run_dir, ev),
        _eval_section(ev),
        _losses_section(records),
        _config_section(config),
    ]
    if warnings:
        body.insert(1, '<div class="warn">' + "<br>".join(_esc(w) for w in warnings) + "</div>")
    from .. import __version__

    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>GenLoop run {_esc(run_id)}</title><style>{_CSS}</style></head>"
        "<body><main>" + "".join(part for part in body if part)
        + f"<footer>Report written by GenLoop {_esc(__version__)} on {_esc(now)}</footer>"
        "</main></body></html>\n"
    )
    target = Path(out) if out is not None else RunLayout(run_dir).report
    write_text(target, page)
    return target
