"""A sampler sweep, run and drawn: quality (FID) and cost (ms per image) against sampling steps.

One diffusion model, several samplers, the same seeds at every point: the curves show how few steps
each sampler needs before its FID stops improving, and what each step costs.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import from_dict
from ..data import DataConfig, load_dataset
from ..errors import ConfigError
from ..generation.pipelines import load_pipeline
from ..runs import RunStore
from ..serialization import atomic_write, write_json
from .protocol import feature_extractor
from .suite import evaluate_images


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


def sweep_run(
    run_id: str,
    samplers: list[str] | tuple[str, ...] = ("ddim", "dpmpp-2m", "ddpm"),
    steps: list[int] | tuple[int, ...] = (5, 10, 20, 50),
    n: int = 500,
    seed: int = 0,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    checkpoint: str = "last",
    progress: bool = False,
) -> dict[str, Any]:
    """Steps-vs-FID across samplers for a diffusion run, with sampling time per image.

    Writes ``eval/sampler_sweep.json`` and ``eval/sampler_sweep.png``. Every point uses the same seeds, so
    the curves differ only by sampler and step count.
    """
    run = RunStore(runs_dir).get(run_id)
    pipe = load_pipeline(run.dir, device, checkpoint)
    if not pipe.system.diffusion:
        raise ConfigError(f"model '{pipe.info['model']}' samples in one step; a sampler sweep needs a diffusion run")
    if n < 10 or n > 100_000:
        raise ConfigError(f"--n must be between 10 and 100000, got {n}")
    if not steps or any(s < 1 or s > 10_000 for s in steps):
        raise ConfigError(f"sweep steps must be between 1 and 10000, got {list(steps)}")
    for name in samplers:
        pipe.system.make_scheduler(name)  # a one-line error for an unknown sampler, before any sampling
    dataset = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
    extractor = feature_extractor(dataset, "ref", None, device, progress)
    points = []
    for name in samplers:
        for k in steps:
            t0 = time.perf_counter()
            out = pipe(n=n, seed=1_000_000 + seed, sampler=name, steps=k)
            ms = 1000 * (time.perf_counter() - t0) / n
            r = evaluate_images(out.tensors, dataset, extractor, seed=seed, labels=out.labels, metrics=("fid", "kid"))
            points.append({"sampler": name, "steps": k, "fid": r["fid"], "kid": r["kid"], "ms_per_image": ms})
            if progress:
                print(
                    f"{name:>9} {k:>4} steps: FID {r['fid']:.3f} (floor {r['fid_floor']:.3f}), {ms:.1f} ms/image",
                    file=sys.stderr,
                )
    result = {
        "run_id": run.id,
        "step": pipe.info["step"],
        "checkpoint_sha256": pipe.info["checkpoint_sha256"],
        "n": n,
        "seed": seed,
        "fid_floor": r["fid_floor"],
        "feature_net": r["feature_net"],
        "device": str(pipe.device),
        "points": points,
        "genloop_version": __version__,
    }
    write_json(run.files.sampler_sweep_json, result)
    with atomic_write(run.files.sampler_sweep_png) as f:
        f.write(render_sweep(result))
    return result
