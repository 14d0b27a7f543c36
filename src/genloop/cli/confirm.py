"""Asking before something that cannot be undone (``genloop runs rm``).

On a terminal the user is asked; a script passes ``--yes``. Without a terminal and without ``--yes`` nothing
happens and one line says why: a pipe or a cron job that forgot ``--yes`` must never delete, and must never
hang waiting for an answer nobody will type.
"""

from __future__ import annotations

import sys

from ..errors import ConfigError


def confirm(question: str, yes: bool, flag: str = "--yes") -> bool:
    """True to go ahead: ``yes`` given, or the user answered y/yes on the terminal. False: they said no.
    A ConfigError when standard input is not a terminal and ``yes`` was not given."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(f"not deleting: standard input is not a terminal, so nobody can confirm; pass {flag}")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
