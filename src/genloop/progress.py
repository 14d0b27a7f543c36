"""Progress for long work that is not training: diffusion sampling, the phases of ``genloop eval``.

Why its own module: the training engine owns its bar (:mod:`genloop.training.progress`); the rest (the CLI's
``generate``, the evaluation protocol) needs one shape of feedback, "what phase, how far, how long", on
standard error so standard output stays clean for scripts. On a terminal a step count is a rich bar; piped
(logs, CI) it is a plain line at the first and last step and at most every ``every`` seconds between, so a
log shows the work is alive without thousands of lines.

Besides a terminal, the same feedback can go to a *listener*: a callable given one dict per change,
``{"phase", "step", "total", "unit"}`` (the studio's worker turns them into a job's ``progress`` events), so a
caller that is not a terminal sees the same phases and steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

Listener = Callable[[dict[str, Any]], None]  # receives {"phase", "step", "total", "unit"} as work advances


class StepProgress:
    """``tick(done, total)`` callbacks for one labelled job; use as a context manager. With a ``listener`` each
    tick is also passed on as ``{"phase": phase, "step", "total", "unit": "steps"}``; ``quiet``: the listener only,
    nothing on standard error."""

    def __init__(
        self,
        label: str,
        console: Console | None = None,
        every: float = 15.0,
        listener: Listener | None = None,
        phase: str | None = None,
        quiet: bool = False,
    ) -> None:
        self.label = label
        self.console = console or Console(stderr=True, highlight=False)
        self.every = every
        self.listener, self.phase, self.quiet = listener, phase or label, quiet
        self._bar: Any = None
        self._task: Any = None
        self._last_line = 0.0
        self.done, self.total = 0, 0

    def __enter__(self) -> StepProgress:
        if not self.quiet and self.console.is_terminal:
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
        if self.listener is not None:
            self.listener({"phase": self.phase, "step": done, "total": total, "unit": "steps"})
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
            return
        now = time.perf_counter()
        if done == 1 or done == total or now - self._last_line >= self.every:
            self._last_line = now
            self.console.print(f"{self.label}: {done}/{total}", highlight=False, markup=False)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


class Phases:
    """The phases of long work (``genloop eval``: data, reference net, sampling, scoring), each announced as it
    starts and timed when it ends, as plain lines on standard error; silent when not ``enabled``.

    ``phases.steps(label)`` is a :class:`StepProgress` for a phase that counts steps (sampling), or None when
    silent, so a caller passes it straight on as a ``progress`` callback. A ``listener`` hears each phase as it
    starts (``{"phase": name}``) and each step of a counted one, whether or not the lines are printed."""

    def __init__(
        self, enabled: bool, prefix: str = "eval", console: Console | None = None, listener: Listener | None = None
    ) -> None:
        self.enabled, self.prefix, self.listener = enabled, prefix, listener
        self.console = console or Console(stderr=True, highlight=False)
        self._name: str | None = None
        self._said = True  # whether the running phase was announced on standard error
        self._t0 = time.perf_counter()

    def _line(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"{self.prefix}: {text}", highlight=False, markup=False, soft_wrap=True)

    def __call__(self, name: str, say: bool = True) -> None:
        """``name`` starts (the previous phase ends). ``say=False``: the listener hears of it, standard error does
        not (a phase whose own code prints when it has something to say)."""
        self.end()
        self._name, self._t0, self._said = name, time.perf_counter(), say
        if say:
            self._line(f"{name}...")
        if self.listener is not None:
            self.listener({"phase": name})

    def end(self) -> None:
        if self._name is not None:
            took = time.perf_counter() - self._t0
            if took >= 1.0 and self._said:  # a quick phase needs no second line
                self._line(f"{self._name}: done in {took:.1f}s")
            self._name = None

    def steps(self, label: str) -> StepProgress | None:
        if not self.enabled and self.listener is None:
            return None
        return StepProgress(
            f"{self.prefix}: {label}",
            self.console,
            listener=self.listener,
            phase=self._name or label,
            quiet=not self.enabled,
        )
