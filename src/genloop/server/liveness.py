"""Which workers are alive: each worker process beats a row in ``workers``; ``/v1/health`` reads them.

A queue with no live worker is a server that accepts jobs and never runs them, so health must say so. A
worker registers when its loop starts, refreshes ``heartbeat`` from a thread every :data:`BEAT_SECONDS`
(also while a long job runs), and removes its row when it stops cleanly. A SIGKILLed worker leaves its
row behind: it counts as dead once its pid is gone (same host) or its heartbeat is older than
``stale_after``, and the next worker to register on that host prunes it.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy import DateTime, Integer, String, delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column

from ..database import Base, create_tables, iso, sessions, utcnow
from .jobs import pid_dead

BEAT_SECONDS = 2.0
FORGET_AFTER = dt.timedelta(hours=1)  # rows of workers silent this long are dropped (other hosts included)


class WorkerRow(Base):
    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid, as in jobs.worker
    host: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    started: Mapped[dt.datetime] = mapped_column(DateTime)
    heartbeat: Mapped[dt.datetime] = mapped_column(DateTime)


class WorkerRegistry:
    """The ``workers`` table: register, beat, leave (workers) and who is alive (health)."""

    def __init__(self, engine: Engine) -> None:
        create_tables(engine, WorkerRow)
        self.Session = sessions(engine)

    def register(self, name: str) -> None:
        """Add ``name`` (``host:pid``); forget the dead: same-host pids that are gone, long-silent others."""
        host, _, pid = name.rpartition(":")
        now = utcnow()
        with self.Session.begin() as s:
            for row in s.scalars(select(WorkerRow)):
                if row.id != name and (pid_dead(row.id) or row.heartbeat < now - FORGET_AFTER):
                    s.delete(row)
            s.merge(WorkerRow(id=name, host=host, pid=int(pid) if pid.isdigit() else 0, started=now, heartbeat=now))

    def beat(self, name: str) -> None:
        with self.Session.begin() as s:
            s.execute(update(WorkerRow).where(WorkerRow.id == name).values(heartbeat=utcnow()))

    def leave(self, name: str) -> None:
        with self.Session.begin() as s:
            s.execute(delete(WorkerRow).where(WorkerRow.id == name))

    def workers(self, stale_after: float) -> list[dict[str, Any]]:
        """Every registered worker with ``alive``: its heartbeat is fresh and, on this host, its pid exists."""
        cutoff = utcnow() - dt.timedelta(seconds=stale_after)
        with self.Session() as s:
            rows = list(s.scalars(select(WorkerRow).order_by(WorkerRow.started)))
        return [
            {
                "id": r.id,
                "host": r.host,
                "pid": r.pid,
                "alive": r.heartbeat >= cutoff and not pid_dead(r.id),
                "started": iso(r.started),
                "last_heartbeat": iso(r.heartbeat),
            }
            for r in rows
        ]


class Beating(threading.Thread):
    """Registers ``name`` and beats its row every :data:`BEAT_SECONDS` until :meth:`stop` (which leaves)."""

    def __init__(self, registry: WorkerRegistry, name: str) -> None:
        super().__init__(daemon=True, name=f"liveness-{name}")
        self.registry, self.worker = registry, name
        self.done = threading.Event()

    def start(self) -> None:
        self.registry.register(self.worker)
        super().start()

    def run(self) -> None:
        while not self.done.wait(BEAT_SECONDS):
            try:
                self.registry.beat(self.worker)
            except Exception:  # noqa: BLE001 - a busy database: the next beat retries
                pass

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)
        try:
            self.registry.leave(self.worker)
        except Exception:  # noqa: BLE001 - the row then goes stale and is pruned
            pass
