"""Which workers are alive: each worker process beats a row in ``workers``; ``/v1/health`` reads them.

A queue with no live worker is a server that accepts jobs and never runs them, so health must say so. A
worker registers when its loop starts, refreshes ``heartbeat`` from a thread every :data:`BEAT_SECONDS`
(also while a long job runs), and removes its row when it stops cleanly. A SIGKILLed worker leaves its
row behind: it counts as dead once its pid is gone (same host) or its heartbeat is older than
``stale_after``, and the next worker to register on that host prunes it.

Workers may run on other machines against one PostgreSQL database (README, "Workers on several
machines"), so each row also says what the worker computes on (``device``) and health reports how long ago
each heartbeat was, measured on the server's clock (keep the machines' clocks in sync, e.g. with NTP).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from typing import Any

from sqlalchemy import DateTime, Integer, String, delete, inspect, select, text, update
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
    device: Mapped[str | None] = mapped_column(String(128), nullable=True)  # added later: see _add_columns
    lane: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the jobs it takes (added later too)


def device_name() -> str:
    """What this worker trains on, as an operator reads it: ``NVIDIA H200`` (``2 x NVIDIA H200``) or
    ``cpu (16 cores)``. Never raises: a worker without a working torch still registers."""
    try:
        import torch

        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            name = torch.cuda.get_device_name(0)
            return name if n == 1 else f"{n} x {name}"
    except Exception:  # noqa: BLE001 - a broken driver: report the CPU
        pass
    return f"cpu ({os.cpu_count() or 1} cores)"


_LATER_COLUMNS = {"device": "VARCHAR(128)", "lane": "VARCHAR(16)"}


def _add_columns(engine: Engine) -> None:
    """Databases made before workers reported their device (and lane) lack those columns: add them (nullable,
    so old rows stay valid). Two workers may race to add one; the loser's error is the column already there."""
    for name, kind in _LATER_COLUMNS.items():
        if name in {c["name"] for c in inspect(engine).get_columns(WorkerRow.__tablename__)}:
            continue
        try:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {WorkerRow.__tablename__} ADD COLUMN {name} {kind}"))
        except Exception:  # noqa: BLE001 - someone else added it meanwhile; anything else fails below
            if name not in {c["name"] for c in inspect(engine).get_columns(WorkerRow.__tablename__)}:
                raise


class WorkerRegistry:
    """The ``workers`` table: register, beat, leave (workers) and who is alive (health)."""

    def __init__(self, engine: Engine) -> None:
        create_tables(engine, WorkerRow)
        _add_columns(engine)
        self.Session = sessions(engine)

    def register(self, name: str, device: str | None = None, lane: str | None = None) -> None:
        """Add ``name`` (``host:pid``); forget the dead: same-host pids that are gone, long-silent others."""
        host, _, pid = name.rpartition(":")
        now = utcnow()
        with self.Session.begin() as s:
            for row in s.scalars(select(WorkerRow)):
                if row.id != name and (pid_dead(row.id) or row.heartbeat < now - FORGET_AFTER):
                    s.delete(row)
            pid_n = int(pid) if pid.isdigit() else 0
            s.merge(WorkerRow(id=name, host=host, pid=pid_n, started=now, heartbeat=now, device=device, lane=lane))

    def beat(self, name: str) -> None:
        with self.Session.begin() as s:
            s.execute(update(WorkerRow).where(WorkerRow.id == name).values(heartbeat=utcnow()))

    def leave(self, name: str) -> None:
        with self.Session.begin() as s:
            s.execute(delete(WorkerRow).where(WorkerRow.id == name))

    def workers(self, stale_after: float, jobs: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Every registered worker with ``alive``: its heartbeat is fresh and, on this host, its pid exists.

        ``heartbeat_age`` is seconds since the last beat on this (the server's) clock, so a page need not
        trust its own; ``job`` is the running job it holds (from ``jobs``, :meth:`JobStore.running_jobs`)."""
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=stale_after)
        with self.Session() as s:
            rows = list(s.scalars(select(WorkerRow).order_by(WorkerRow.started)))
        return [
            {
                "id": r.id,
                "host": r.host,
                "pid": r.pid,
                "device": r.device,
                "lane": r.lane or "all",
                "alive": r.heartbeat >= cutoff and not pid_dead(r.id),
                "started": iso(r.started),
                "last_heartbeat": iso(r.heartbeat),
                "heartbeat_age": round(max((now - r.heartbeat).total_seconds(), 0.0), 1),
                "job": (jobs or {}).get(r.id),
            }
            for r in rows
        ]


class Beating(threading.Thread):
    """Registers ``name`` and beats its row every :data:`BEAT_SECONDS` until :meth:`stop` (which leaves)."""

    def __init__(self, registry: WorkerRegistry, name: str, device: str | None = None, lane: str | None = None) -> None:
        super().__init__(daemon=True, name=f"liveness-{name}")
        self.registry, self.worker, self.device, self.lane = registry, name, device, lane
        self.done = threading.Event()

    def start(self) -> None:
        self.registry.register(self.worker, self.device, self.lane)
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
