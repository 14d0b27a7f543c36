"""Where GenLoop keeps things on disk: runs, and caches of prepared data and feature networks."""

from __future__ import annotations

import os
from pathlib import Path


def runs_dir(override: str | os.PathLike | None = None) -> Path:
    """The run store: ``override``, else ``$GENLOOP_RUNS_DIR``, else ``./runs``."""
    return Path(override or os.environ.get("GENLOOP_RUNS_DIR") or "runs")


def cache_dir(*parts: str) -> Path:
    """A folder under the cache: ``$GENLOOP_CACHE_DIR``, else ``~/.cache/genloop``; created on demand."""
    root = Path(os.environ.get("GENLOOP_CACHE_DIR") or Path.home() / ".cache" / "genloop")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
