"""Typed server settings: command-line flags override ``GENLOOP_*`` environment variables override defaults.

:class:`Settings` is a pydantic-settings ``BaseSettings`` (as in the FastAPI full-stack template): every
field reads ``GENLOOP_<FIELD>`` (``GENLOOP_HOST``, ``GENLOOP_PORT``, ``GENLOOP_DB_URL``, ``GENLOOP_MAX_QUEUED``,
``GENLOOP_WORKERS``, ``GENLOOP_WORKER_HOST``, ``GENLOOP_LANE``, ...), except that the token is ``GENLOOP_API_TOKEN``
and the run store ``GENLOOP_RUNS_DIR``, the names the CLI has always used. ``GENLOOP_MODERATION=off`` turns
moderation off for the deployment (``GENLOOP_MODERATION_RULES``: extra rule files; see
:mod:`genloop.safety.moderation`). An empty variable counts as unset. A value of the wrong type is a one-line
:class:`~genloop.errors.ConfigError` naming the variable, never a traceback.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..errors import ConfigError
from ..paths import runs_dir


@dataclass
class Limits:
    """What one request may ask for; beyond these the API answers 422 with the limit in the message."""

    max_images: int = 64  # images per generate request
    max_sampling_steps: int = 1000  # diffusion sampling steps
    max_tokens: int = 2048  # tokens per completion
    max_completions: int = 8  # completions per text request
    max_train_steps: int = 100_000
    max_train_seconds: float = 6 * 3600
    max_eval_samples: int = 10_000
    max_prompt_chars: int = 20_000
    max_body_bytes: int = 1 << 20  # JSON bodies
    max_upload_bytes: int = 64 << 20  # uploaded data sets
    max_verify_bytes: int = 32 << 20  # a file sent to /v1/verify (and its sidecar, as much again)
    max_archive: int = 200  # generations in one zip (POST /v1/generations/archive)
    max_presets: int = 100  # named presets one model (run) may keep


ENV_PREFIX = "GENLOOP_"
_ALIASES = {"token": "GENLOOP_API_TOKEN", "runs": "GENLOOP_RUNS_DIR"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, populate_by_name=True, extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = 8000
    db_url: str | None = None  # default: sqlite:///<runs>/studio.sqlite
    token: str | None = Field(None, validation_alias=AliasChoices("token", _ALIASES["token"]))  # needed off loopback
    runs: Path = Field(default_factory=runs_dir, validation_alias=AliasChoices("runs", _ALIASES["runs"]))
    media_dir: Path | None = None  # default: <runs>/media
    uploads_dir: Path | None = None  # default: <runs>/uploads
    max_queued: int = 32  # queued jobs in a lane before 429 (each lane has its own)
    max_attempts: int = 3  # a job whose worker died this many times is failed, not retried
    workers: int = 1  # worker processes `genloop serve` starts for each lane (interactive and batch)
    lane: str = "all"  # the jobs a worker takes: interactive (generations), batch (training, evaluation) or all
    worker_host: str | None = None  # the host name a worker reports (default: the hostname; set it in containers)
    stale_after: float = 30.0  # seconds without a heartbeat before a running job counts as orphaned
    poll_interval: float = 0.05  # how often the event stream and idle workers look for news
    completion_timeout: float = 600.0  # seconds /v1/completions waits for its jobs before a 504 (a stream: an error)
    limits: Limits = Field(default_factory=Limits)
    # moderation (genloop.safety.moderation): GENLOOP_MODERATION=off lets every prompt and output through unchecked;
    # GENLOOP_MODERATION_RULES: rule files (YAML/JSON/TXT, several joined by ':') added to the built-in list;
    # GENLOOP_MODERATION_LOG_TEXT: what <runs>/moderation.jsonl keeps of a text (excerpt, hash or full)
    moderation: bool = True
    moderation_rules: str | None = None
    moderation_log_text: str = "excerpt"

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ConfigError(_one_line(e)) from None

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """The environment's settings with the given (non-None) overrides, e.g. command-line flags."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})

    @property
    def media(self) -> Path:
        return Path(self.media_dir) if self.media_dir else self.runs / "media"

    @property
    def uploads(self) -> Path:
        return Path(self.uploads_dir) if self.uploads_dir else self.runs / "uploads"

    def moderator(self) -> Any:
        """The :class:`~genloop.safety.moderation.Moderator` these settings ask for (built once, then cached)."""
        from ..safety import moderation

        return moderation.get(self.moderation, self.moderation_rules or "", self.moderation_log_text)

    def is_loopback(self) -> bool:
        if self.host in ("localhost", ""):
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check_lane(self) -> None:
        from .jobs import LANES

        if self.lane not in ("all", *LANES):
            raise ConfigError(f"the lane (GENLOOP_LANE, --lane) must be all, {', '.join(LANES)}; got '{self.lane}'")

    def check(self) -> None:
        """Refuse unsafe or impossible settings before anything starts (one-line errors)."""
        if not self.is_loopback() and not self.token:
            raise ConfigError(
                f"refusing to listen on {self.host} without an API token: set GENLOOP_API_TOKEN or pass --token "
                "(only loopback addresses such as 127.0.0.1 may run without one)"
            )
        if self.token is not None and len(self.token) < 16:
            raise ConfigError("the API token must be at least 16 characters")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 1 and 65535, got {self.port}")
        if self.max_queued < 1 or self.workers < 0:
            raise ConfigError("max_queued must be ≥ 1 and workers ≥ 0")
        self.check_lane()
        self.moderator()  # a bad rule file is a one-line error now, not a failed request later
        if not self.completion_timeout > 0:
            raise ConfigError(f"completion_timeout must be a positive number of seconds, got {self.completion_timeout}")


def _one_line(e: ValidationError) -> str:
    """The first problem, named as the user set it: ``GENLOOP_PORT must be an integer, got 'x'``."""
    first = e.errors()[0]
    field = str(first["loc"][0]) if first.get("loc") else "setting"
    name = _ALIASES.get(field, field if field.startswith(ENV_PREFIX) else ENV_PREFIX + field.upper())
    kinds = {"int_parsing": "an integer", "float_parsing": "a number", "bool_parsing": "true or false"}
    kind = kinds.get(first["type"])
    problem = f"must be {kind}" if kind else first["msg"]
    return f"{name} {problem}, got {first.get('input')!r}"
