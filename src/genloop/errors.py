"""User-facing errors.

Anything a user can cause (a bad path, a corrupt image, an unknown name, a wrong config value) raises a
:class:`GenLoopError` whose message is one line saying what is wrong and what is valid. The CLI prints
that line and exits with code 2, without a traceback. Bugs stay ordinary exceptions, so they keep theirs.
"""

from __future__ import annotations

from typing import Any


class GenLoopError(Exception):
    """An error the user can fix; ``str(err)`` is the one-line message shown to them."""

    exit_code = 2


class ConfigError(GenLoopError):
    """A config file, key or value is wrong."""


class DataError(GenLoopError):
    """A dataset is missing, empty, corrupt or of an unsupported kind."""


class NotFoundError(GenLoopError):
    """A named thing (run, model, dataset, file) does not exist."""


class StorageError(GenLoopError, OSError):
    """A file could not be written (disk full, no permission, read-only disk); nothing half-written is left.

    Also an ``OSError`` (with the original ``errno``), so code that handles I/O errors still catches it.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])


class ModerationBlocked(GenLoopError):
    """Moderation (:mod:`genloop.safety.moderation`) blocked a prompt: ``str(err)`` names the rule, its category
    and what matched; ``err.decision`` is the whole :class:`~genloop.safety.moderation.Decision`."""

    def __init__(self, decision: Any) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class TrainingDiverged(GenLoopError):
    """A loss became NaN or infinite; training stopped without overwriting the last good checkpoint."""

    exit_code = 3
