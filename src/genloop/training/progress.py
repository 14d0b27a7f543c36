"""The training progress display: a rich bar with live losses on a terminal, a periodic plain line otherwise.

What it promises (issue 16: with ``--time-budget`` the bar showed no ETA and stopped at ~47 %, and showed
nothing until the first logging step):

- it is updated after every step, with the step counter and the losses from step 1 on (the running mean since
  the last logged step, so a noisy step does not flicker the numbers);
- with a step budget it counts steps (``12/500``) and rich estimates the time left from their pace;
- with a time budget the bar is time itself: its fraction is elapsed / budget and the time left is the budget
  minus the elapsed training time, exact rather than estimated;
- when training ends by reaching its budget the bar ends full (100 %), whatever the last update said.

The engine passes its own training clock (paused during quick evaluations), so the bar and the budget agree.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.text import Text

from .config import TrainConfig


class _TimeLeft(ProgressColumn):
    """A time budget's exact time left (budget minus elapsed training time), as rich's own columns show time."""

    def render(self, task: Task) -> Text:
        left = max(0.0, (task.total or 0.0) - task.completed)
        m, s = divmod(int(round(left)), 60)
        h, m = divmod(m, 60)
        return Text(f"{h}:{m:02d}:{s:02d} left", style="progress.remaining")


class TrainProgress:
    """Use as a context manager; call :meth:`update` after each step and :meth:`finish` when the budget is met."""

    PLAIN_EVERY = 15.0  # seconds between plain lines when not on a terminal

    def __init__(self, enabled: bool, cfg: TrainConfig, start_step: int, console: Console | None = None) -> None:
        self.enabled, self.cfg = enabled, cfg
        self.console = console or Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.by_steps = cfg.steps is not None
        self.start_step = start_step
        self._bar: Any = None
        self._task: Any = None
        self._last_line: float | None = None

    def __enter__(self) -> TrainProgress:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            counter = MofNCompleteColumn() if self.by_steps else TextColumn("step {task.fields[step]}")
            self._bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TaskProgressColumn(),
                counter,
                TimeElapsedColumn(),
                TimeRemainingColumn() if self.by_steps else _TimeLeft(),
                TextColumn("{task.fields[losses]}"),
                console=self.console,
            )
            total = self.cfg.steps if self.by_steps else self.cfg.time_budget
            self._task = self._bar.add_task(
                "train",
                total=total,
                completed=self.start_step if self.by_steps else 0,
                losses="",
                step=self.start_step,
            )
            self._bar.__enter__()
        return self

    @staticmethod
    def format_losses(losses: dict[str, float]) -> str:
        return "  ".join(f"{k} {v:.4g}" for k, v in losses.items())

    def update(self, step: int, elapsed: float, losses: dict[str, float]) -> None:
        """After a step: ``elapsed`` is the training time of this session (what a time budget counts)."""
        text = self.format_losses(losses)
        if self._bar is not None:
            completed = step if self.by_steps else min(elapsed, self.cfg.time_budget or elapsed)
            self._bar.update(self._task, completed=completed, losses=text, step=step)
            return
        now = time.perf_counter()
        if self.enabled and (self._last_line is None or now - self._last_line >= self.PLAIN_EVERY):
            self._last_line = now  # the first step is always shown, then one line every PLAIN_EVERY seconds
            self.console.print(self.plain_line(step, elapsed, text), highlight=False, markup=False)

    def plain_line(self, step: int, elapsed: float, losses: str) -> str:
        if self.by_steps:
            where = f"step {step}/{self.cfg.steps} ({100 * step / max(self.cfg.steps or 1, 1):.0f}%)"
        else:
            budget = self.cfg.time_budget or 0.0
            where = f"step {step} ({100 * min(elapsed / budget, 1.0):.0f}% of {budget:.0f}s)"
        return f"{where}  {elapsed:.0f}s  {losses}".rstrip()

    def finish(self, stopped_by: str) -> None:
        """Training met its budget (``steps`` or ``time``): the bar ends full. Other stops (Ctrl-C, early stop)
        leave it where training got to."""
        if self._bar is not None and stopped_by in ("steps", "time"):
            total = self.cfg.steps if self.by_steps else self.cfg.time_budget
            self._bar.update(self._task, completed=total)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
