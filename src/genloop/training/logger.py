"""Metrics out of the engine: ``metrics.jsonl`` (one JSON object per line) and TensorBoard events."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..run_layout import RunLayout


class MetricsLogger:
    def __init__(self, run_dir: Path | None, tensorboard: bool = True, resume_step: int | None = None) -> None:
        self.path = RunLayout(run_dir).metrics if run_dir else None
        self._tb = None
        if self.path is not None and resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        if run_dir is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dependency, but a trimmed install still trains
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(RunLayout(run_dir).tensorboard), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint being resumed (they will be logged again)."""
        from ..serialization import write_text

        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        write_text(self.path, "".join(k + "\n" for k in kept))

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
