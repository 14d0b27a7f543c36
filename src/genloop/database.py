"""The studio database: one SQLAlchemy engine for jobs, generations, ratings and preferences.

SQLite (a file beside the runs, the default) or any SQLAlchemy URL (``postgresql+psycopg://...``).
Tables are declared next to the code that owns them (``server/jobs.py``, ``feedback/store.py``) on the
one :class:`Base` here; :func:`connect` creates whichever are missing. SQLite is opened in WAL mode with
a busy timeout so that the server, the worker and the CLI can share the file.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, sessionmaker

from .errors import ConfigError
from .paths import runs_dir


class Base(DeclarativeBase):
    pass


def default_url(runs: str | Path | None = None) -> str:
    """``sqlite:///<runs dir>/studio.sqlite`` — the studio lives beside the runs it serves."""
    path = runs_dir(runs).resolve() / "studio.sqlite"
    return f"sqlite:///{path}"


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.replace(tzinfo=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_ENGINES: dict[str, Engine] = {}


def connect(url: str | None = None, runs: str | Path | None = None) -> Engine:
    """An engine for ``url`` (default: :func:`default_url`) with every GenLoop table created.

    Engines are cached per URL (one pool per process). A bad URL is a one-line :class:`ConfigError`.
    """
    url = url or default_url(runs)
    if url in _ENGINES:
        return _ENGINES[url]
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except Exception as e:  # noqa: BLE001 - unknown dialect, missing driver, malformed URL
        raise ConfigError(f"cannot use database URL {_redact(url)}: {e}") from None
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    from .feedback import store as _feedback  # noqa: F401 - registers the tables on Base
    from .server import jobs as _jobs  # noqa: F401

    try:
        Base.metadata.create_all(engine)
    except Exception as e:  # noqa: BLE001 - server down, bad credentials
        raise ConfigError(f"cannot open database {_redact(url)}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    _ENGINES[url] = engine
    return engine


def sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False, future=True)


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
