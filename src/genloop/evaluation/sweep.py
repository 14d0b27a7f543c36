"""The picture of a sampler sweep: quality (FID) and cost (ms per image) against sampling steps.

One diffusion model, several samplers, the same seeds at every point: the curves show how few steps
each sampler needs before its FID stops improving, and what each step costs.
"""

from __future__ import annotations

import io
from typing import Any


def render_sweep(result: dict[str, Any]) -> bytes:
    """PNG bytes: FID vs steps per sampler (with the real-data floor), and sampling ms/image vs steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.3, 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    samplers = list(dict.fromkeys(p["sampler"] for p in result["points"]))
    for i, name in enumerate(samplers):
        pts = sorted((p for p in result["points"] if p["sampler"] == name), key=lambda p: p["steps"])
        xs = [p["steps"] for p in pts]
        ax1.plot(xs, [p["fid"] for p in pts], marker="o", color=f"C{i}", label=name)
        ax2.plot(xs, [p["ms_per_image"] for p in pts], marker="o", color=f"C{i}", label=name)
    ax1.axhline(result["fid_floor"], color="#111827", linestyle="--", linewidth=1, label="real-data floor")
    ax1.set_yscale("log")
    ax1.set_title(f"FID vs sampling steps ({result['n']} samples)", fontsize=10)
    ax1.set_ylabel("FID (lower is better)", fontsize=9)
    ax2.set_title(f"sampling time per image ({result['device']})", fontsize=10)
    ax2.set_ylabel("ms / image", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("sampling steps", fontsize=9)
        ax.grid(True, color="#e5e7eb", linewidth=0.6)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, metadata={"Software": None})
    return buf.getvalue()
