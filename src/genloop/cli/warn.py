"""Library warnings as the CLI's own ``warning: ...`` lines, printed when they happen.

Why: Python's default shows ``/path/file.py:123: UserWarning: ...`` (source paths a user does not need), and
a warning raised before a long training run must be seen before it starts, not after.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Within the block, each UserWarning is one ``warning: <message>`` line on standard error, at once."""

    def show(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        yield
