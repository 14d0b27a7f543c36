"""Typed server settings: command-line flags override ``GENLOOP_*`` environment variables override defaults."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..paths import runs_dir


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


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


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    db_url: str | None = None  # default: sqlite:///<runs>/studio.sqlite
    token: str | None = None  # required for any non-loopback bind
    runs: Path = field(default_factory=runs_dir)
    media_dir: Path | None = None  # default: <runs>/media
    uploads_dir: Path | None = None  # default: <runs>/uploads
    max_queued: int = 32  # queued jobs before 429
    max_attempts: int = 3  # a job whose worker died this many times is failed, not retried
    workers: int = 1  # worker processes started by `genloop serve`
    stale_after: float = 30.0  # seconds without a heartbeat before a running job counts as orphaned
    poll_interval: float = 0.05  # how often the event stream and idle workers look for news
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self.runs = Path(self.runs)

    @classmethod
    def from_env(cls, **overrides: object) -> "Settings":
        s = cls(
            host=os.environ.get("GENLOOP_HOST", "127.0.0.1"),
            port=_env_int("GENLOOP_PORT", 8000),
            db_url=os.environ.get("GENLOOP_DB_URL") or None,
            token=os.environ.get("GENLOOP_API_TOKEN") or None,
            runs=runs_dir(),
            max_queued=_env_int("GENLOOP_MAX_QUEUED", 32),
            workers=_env_int("GENLOOP_WORKERS", 1),
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(s, key, value)
        s.runs = Path(s.runs)
        return s

    @property
    def media(self) -> Path:
        return Path(self.media_dir) if self.media_dir else self.runs / "media"

    @property
    def uploads(self) -> Path:
        return Path(self.uploads_dir) if self.uploads_dir else self.runs / "uploads"

    def is_loopback(self) -> bool:
        if self.host in ("localhost", ""):
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

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
