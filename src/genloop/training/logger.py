"""Metrics out of the engine: ``metrics.jsonl`` (one JSON object per line) and TensorBoard events.

The file is written here and read in three places (the HTML report, the studio's live loss curve and
its metrics route), all while a run may still be appending to it or after a crash cut a line short:
:func:`read_metrics_from` is the one reader they share, beside the writer, so that what counts as a
whole record is decided once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..run_layout import RunLayout


def read_metrics_from(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Records of ``metrics.jsonl`` from byte ``offset`` on, and the offset to continue from.

    Only lines ending in a newline are read: :meth:`MetricsLogger.log` writes a record and its newline
    in one call, so a line without one is being written right now (or was cut by a crash) and is left
    for the next call rather than lost or misread. A whole line that still does not parse (a crash in
    the middle of a run that was later resumed) or that is not a JSON object is skipped, so one bad line
    never costs the rest of the history. A missing file reads as no records.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except (FileNotFoundError, IsADirectoryError):
        return [], offset
    end = chunk.rfind(b"\n") + 1
    records: list[dict[str, Any]] = []
    for line in chunk[:end].splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8", errors="replace"))
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, offset + end


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every whole record of a ``metrics.jsonl`` (see :func:`read_metrics_from`); [] when there is none."""
    return read_metrics_from(path)[0]


class MetricsLogger:
    def __init__(self, run_dir: Path | None, tensorboard: bool = True, resume_step: int | None = None) -> None:
        self.path = RunLayout(run_dir).metrics if run_dir else None
        self._tb = None
        if self.path is not None and resume_step is not None and self.path.exists():
            self._truncate_after(self.path, resume_step)
        if run_dir is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dependency, but a trimmed install still trains
                pass
            else:
                self._tb = SummaryWriter(log_dir=str(RunLayout(run_dir).tensorboard), purge_step=resume_step)

    def _truncate_after(self, path: Path, step: int) -> None:
        """On resume, drop lines logged after the checkpoint being resumed (they will be logged again)."""
        from ..serialization import write_text

        kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]  # a line cut by a crash goes
        write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, step: int, values: dict[str, Any]) -> None:
        record = {"step": step, **{k: (float(v) if isinstance(v, (int, float)) else v) for k, v in values.items()}}
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
