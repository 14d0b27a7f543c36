"""Where GenLoop keeps things on disk: runs, caches of prepared data and feature networks, and the user's
configuration (the provenance signing key)."""

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


def config_dir(*parts: str) -> Path:
    """A folder under the user's GenLoop configuration (one per installation, not per run store):
    ``$GENLOOP_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/genloop``, else ``~/.config/genloop``; created on demand."""
    root = os.environ.get("GENLOOP_CONFIG_DIR")
    if not root:
        root = str(Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "genloop")
    path = Path(root).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
