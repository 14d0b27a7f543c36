"""The studio database: one SQLAlchemy engine for jobs, generations, ratings and preferences.

SQLite (a file beside the runs, the default) or any SQLAlchemy URL (``postgresql+psycopg://...``).
Tables are declared next to the code that owns them (``server/jobs.py``, ``feedback/store.py``) on the
one :class:`Base` here, and each store creates its own tables with :func:`create_tables` when it is
opened (this module imports none of them: a store that is never used adds no table). SQLite is opened in WAL mode with
a busy timeout so that the server, the worker and the CLI can share the file.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, create_engine, event
from sqlalchemy.engine import Engine, make_url
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
    return (
        None
        if t is None
        else t.replace(tzinfo=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


_ENGINES: dict[str, Engine] = {}


def connect(url: str | None = None, runs: str | Path | None = None) -> Engine:
    """An engine for ``url`` (default: :func:`default_url`), checked to be reachable.

    Engines are cached per URL (one pool per process). A bad URL or an unreachable database is a one-line
    :class:`ConfigError`. Tables are the stores' business (:func:`create_tables`).
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

    try:
        with engine.connect():
            pass
    except Exception as e:  # noqa: BLE001 - server down, bad credentials
        raise _unopenable(url, e) from None
    _ENGINES[url] = engine
    return engine


def create_tables(engine: Engine, *models: type[Base]) -> None:
    """Create whichever tables of ``models`` are missing (a check per table; stores open once per process).

    Each store calls this for its own tables when it opens, so ``database`` needs to know no store.
    """
    try:
        Base.metadata.create_all(engine, tables=[cast(Table, m.__table__) for m in models])
    except Exception as e:  # noqa: BLE001 - server down, bad credentials, no CREATE permission
        raise _unopenable(engine.url.render_as_string(hide_password=False), e) from None


def _unopenable(url: str, e: Exception) -> ConfigError:
    return ConfigError(f"cannot open database {_redact(url)}: {type(e).__name__}: {str(e).splitlines()[0]}")


def sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False, future=True)


def _redact(url: str) -> str:
    """The URL without its password, for error messages (SQLAlchemy's own rendering, ``***``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse: show only its scheme
        return url.split("://", 1)[0] + "://..." if "://" in url else "<unparseable URL>"
