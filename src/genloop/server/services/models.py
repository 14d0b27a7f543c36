"""The model list (``GET /v1/models``) from an index kept in memory, not a scan of every run on every call.

Listing a store of many runs through :meth:`genloop.runs.RunStore.list` parses every ``run.json`` and then each
run's config, on every call: the page's first load waited for all of it. :class:`ModelIndex` keeps one entry
per run folder instead. A call lists the store's folder names only when the store folder itself changed (a
run added or removed renames a folder in it, which changes its mtime), and rebuilds a run's entry only when
one of that run's files changed (``run.json``, ``config.json``, its weights: a ``stat`` each, no reading).
``genloop serve`` fills the index in the background as it starts, so the page's first call finds it warm.

``builds`` and ``listings`` count the entries built and the folder listings made (what the tests watch).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...run_layout import RunLayout
from ...runs import ACTIVE

Stamp = tuple[tuple[int, int] | None, ...]


@lru_cache(maxsize=1024)
def describe(config_path: str, mtime: int) -> dict[str, Any]:
    """What the studio needs of a run's family: its modality and the controls it takes (cached by mtime)."""
    from ...modalities import modalities
    from ...systems import models

    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    name = config["model"]["name"]
    cls = models[name]
    return {"model": name, "modality": cls.modality, **modalities[cls.modality].describe(config, cls)}


def _epoch(iso: str) -> int:
    """OpenAI's ``created`` is Unix seconds; a run records an ISO time (0 if it has none)."""
    try:
        return int(dt.datetime.fromisoformat(iso).timestamp())
    except (TypeError, ValueError):
        return 0


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class ModelIndex:
    """The runs of one store that the studio can sample from, each as its ``/v1/models`` entry."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.lock = threading.Lock()
        self._root_stamp: tuple[int, int] | None = None
        self._names: list[str] = []
        self._entries: dict[str, tuple[Stamp, dict[str, Any] | None]] = {}
        self.builds = 0
        self.listings = 0

    def models(self) -> list[dict[str, Any]]:
        """The entries of runs with trained weights, newest first (as ``RunStore.list`` orders runs)."""
        with self.lock:
            names = self._current_names()
            out = []
            for name in names:
                files = RunLayout(self.root / name)
                watched = (files.run_info, files.config, files.weights, files.best_weights)
                stamp: Stamp = tuple(_stat(f) for f in watched)
                cached = self._entries.get(name)
                if cached is None or cached[0] != stamp:
                    cached = (stamp, self._build(name, files))
                if cached[1] is not None and cached[1]["status"] in ACTIVE:
                    self._check_alive(name)  # a run whose trainer died is recorded as killed: its run.json changes
                    stamp = tuple(_stat(f) for f in watched)
                    if stamp != cached[0]:
                        cached = (stamp, self._build(name, files))
                self._entries[name] = cached
                if cached[1] is not None:
                    out.append(cached[1])
            for gone in set(self._entries) - set(names):
                del self._entries[gone]
        return sorted(out, key=lambda m: (m["created_at"] or "", m["id"]), reverse=True)

    def _current_names(self) -> list[str]:
        stamp = _stat(self.root)
        if stamp is None:
            self._root_stamp, self._names = None, []
        elif stamp != self._root_stamp:
            self.listings += 1
            self._names = sorted(d.name for d in self.root.iterdir() if not d.name.startswith(".") and d.is_dir())
            self._root_stamp = stamp
        return self._names

    def _check_alive(self, name: str) -> None:
        """The run store's own check of a run marked created or running: if its process is gone, the store
        records it as killed. Only runs in those states pay for it (a read of their ``run.json``)."""
        from ...errors import GenLoopError
        from ...runs import RunStore

        try:
            RunStore(self.root).get(name, paths=False)
        except GenLoopError:
            pass

    def _build(self, name: str, files: RunLayout) -> dict[str, Any] | None:
        """The entry of one run, or None for a run without weights or of a family this version does not know."""
        self.builds += 1
        if not (files.run_info.is_file() and files.config.is_file() and files.weights.is_file()):
            return None
        try:
            info = json.loads(files.run_info.read_text(encoding="utf-8"))
            d = describe(str(files.config), files.config.stat().st_mtime_ns)
        except Exception:  # noqa: BLE001 - a half-written or foreign run: not offered (as RunStore.list skips it)
            return None
        created = str(info.get("created", ""))
        return {
            "id": name,
            "object": "model",
            "created": _epoch(created),
            "owned_by": "genloop",
            "run_id": name,
            "dataset": info.get("dataset", "?"),
            "status": info.get("status", "?"),
            "step": int(info.get("step", 0)),
            "created_at": created,
            "has_best": files.best_weights.is_file(),
            **d,
        }
