"""Progress for long CLI work that is not training: diffusion sampling, the phases of ``genloop eval``.

Why its own module: the training engine owns its bar (:mod:`genloop.training.progress`); the rest of the CLI
needs one shape of feedback, "what phase, how far, how long", on standard error so standard output stays
clean for scripts. On a terminal it is a rich bar; piped (logs, CI) a plain line when a phase starts and then
at most every ``every`` seconds, so a log shows it is alive without thousands of lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console


class StepProgress:
    """``tick(done, total)`` callbacks for one labelled job; use as a context manager."""

    def __init__(self, label: str, console: Console | None = None, every: float = 15.0) -> None:
        self.label = label
        self.console = console or Console(stderr=True, highlight=False)
        self.every = every
        self._bar: Any = None
        self._task: Any = None
        self._last_line = 0.0
        self.done, self.total = 0, 0

    def __enter__(self) -> StepProgress:
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=None)
        return self

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
            return
        now = time.perf_counter()
        if done == 1 or done == total or now - self._last_line >= self.every:
            self._last_line = now
            print(f"{self.label}: {done}/{total}", file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


@contextmanager
def phases(console: Console | None = None) -> Iterator[Callable[[str], None]]:
    """``phase("training the reference net")`` prints which phase long work is in, with the time the previous
    phase took: a spinner line on a terminal, one plain line each when piped."""
    console = console or Console(stderr=True, highlight=False)
    state: dict[str, Any] = {"name": None, "t0": time.perf_counter()}
    status = console.status("") if console.is_terminal else None
    if status is not None:
        status.start()

    def finish() -> None:
        if state["name"] is not None:
            took = time.perf_counter() - state["t0"]
            console.print(f"{state['name']}: done in {took:.1f}s", highlight=False, markup=False)

    def phase(name: str) -> None:
        finish()
        state["name"], state["t0"] = name, time.perf_counter()
        if status is not None:
            status.update(f"{name}...")
        else:
            console.print(f"{name}...", highlight=False, markup=False)

    try:
        yield phase
        finish()
    finally:
        if status is not None:
            status.stop()
