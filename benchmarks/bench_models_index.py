"""``GET /v1/models`` on a large run store: the scan it used to make on every call against the studio's index.

One tiny VAE is trained and copied ``--runs`` times into a fresh store (as runs copied in or made on another
machine arrive: the run store's SQLite index has not seen them). Timed, each once: the old listing
(``RunStore.list`` — which syncs its SQLite index with every ``run.json`` — plus each run's description) on
its first call, on a new process's first call (index up to date, descriptions not cached) and on a later call;
then :class:`genloop.server.services.models.ModelIndex` on its first and later calls.

    python benchmarks/bench_models_index.py --runs 300
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import genloop
from genloop.run_layout import RunLayout
from genloop.runs import RunStore
from genloop.server.services.models import ModelIndex, describe

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "models_index.json"
TINY_VAE = ["data.image_size=8", "train.batch_size=8", "model.z_dim=4", "model.width=8", "train.tensorboard=false"]


def make_store(root: Path, n: int) -> None:
    run = genloop.train("vae", "digits", overrides=TINY_VAE, steps=1, runs_dir=root, progress=False)
    for i in range(n - 1):
        dst = root / f"20260101-{i:06d}-vae-{i:04x}"
        shutil.copytree(root / run.id, dst, ignore=shutil.ignore_patterns("checkpoints", "samples", "tensorboard"))
        info = json.loads((dst / "run.json").read_text())
        (dst / "run.json").write_text(json.dumps({**info, "id": dst.name}))


def old_listing(root: Path) -> list[dict[str, Any]]:
    """What /v1/models did on every call before the index."""
    store = RunStore(root)
    out = []
    for row in store.list():
        files = RunLayout(store.root / row.id)
        if files.weights.is_file() and files.config.is_file():
            out.append(describe(str(files.config), files.config.stat().st_mtime_ns))
    return out


def timed(f: Callable[[], list]) -> float:
    t = time.perf_counter()
    f()
    return round(time.perf_counter() - t, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="genloop-models-")) / "runs"
    try:
        make_store(root, args.runs)
        describe.cache_clear()
        r = {"runs": args.runs, "old_first_call_unindexed_store": timed(lambda: old_listing(root))}
        r["old_later_call"] = timed(lambda: old_listing(root))
        describe.cache_clear()
        r["old_first_call_new_process"] = timed(lambda: old_listing(root))
        describe.cache_clear()
        index = ModelIndex(root)
        r["index_first_call"] = timed(index.models)
        r["index_later_call"] = timed(index.models)
        assert len(index.models()) == args.runs
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(r, indent=2) + "\n")
    for k, v in r.items():
        print(f"{k:34s} {v}")


if __name__ == "__main__":
    main()
