"""Durable jobs: the queue lives in the database, so a crash loses nothing.

A job moves ``queued → running → succeeded | failed | cancelled``. A worker claims the oldest queued job
with a conditional UPDATE (``... WHERE status = 'queued'``): only one worker's update can match, on
SQLite and PostgreSQL alike, so no job runs twice at once. A running job carries its worker's id and a
heartbeat; :meth:`JobStore.recover` finds running jobs whose worker is gone (dead pid on this host, or
no heartbeat for ``stale_after`` seconds) and puts them back in the queue (a training job then resumes
its run from the last checkpoint) or, after ``max_attempts``, marks them failed with the reason.
Events (status changes, progress, streamed text) are rows in ``job_events`` with a per-job sequence
number, which is what the server's server-sent-event stream reads.

Jobs run in *lanes*: long jobs (training, evaluation) in the ``batch`` lane, everything else (generations and
any other short kind) in the ``interactive`` lane. A worker serves one lane (or both), so a generation never
waits behind a training job: ``genloop serve`` starts workers for each lane.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column

from ..database import Base, create_tables, iso, new_id, sessions, utcnow
from ..errors import GenLoopError, NotFoundError

KINDS = ("train", "generate", "evaluate", "edit")
BATCH_KINDS = ("train", "evaluate")  # long jobs; every other kind is interactive
LANES = ("interactive", "batch")


def lane_of(kind: str) -> str:
    """The lane a job kind runs in: ``batch`` for the long kinds, ``interactive`` for the rest."""
    return "batch" if kind in BATCH_KINDS else "interactive"


def lane_kinds(lane: str | None) -> tuple[str, ...]:
    """The job kinds a worker of ``lane`` takes (every kind for None or ``all``)."""
    if lane in (None, "all"):
        return KINDS
    if lane not in LANES:
        raise GenLoopError(f"unknown lane '{lane}'; valid: all, {', '.join(LANES)}")
    return tuple(k for k in KINDS if lane_of(k) == lane)


ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "cancelled")


class QueueFull(GenLoopError):
    """The queue holds its maximum of waiting jobs (HTTP 429)."""

    def __init__(self, limit: int, retry_after: int, lane: str = "") -> None:
        where = f"the {lane} lane's queue" if lane else "the job queue"
        super().__init__(f"{where} is full ({limit} jobs waiting); retry in {retry_after} s")
        self.retry_after = retry_after


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    params: Mapped[dict] = mapped_column(JSON)
    user: Mapped[str] = mapped_column(String(64), default="anonymous")
    created: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    started: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    run_id: Mapped[str | None] = mapped_column(String(128), nullable=True)  # train jobs: the run they train
    progress: Mapped[dict] = mapped_column(JSON, default=dict)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # How many events the job has, which is also the last event's sequence number. The column keeps its
    # old name "events" so that existing databases open unchanged (no migration needed).
    event_count: Mapped[int] = mapped_column("events", Integer, default=0)


class JobEventRow(Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    created: Mapped[dt.datetime] = mapped_column(DateTime)
    type: Mapped[str] = mapped_column(String(16))  # status | progress | metrics | text | log
    data: Mapped[dict] = mapped_column(JSON)


def job_dict(row: JobRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "lane": lane_of(row.kind),
        "status": row.status,
        "params": row.params,
        "user": row.user,
        "created": iso(row.created),
        "started": iso(row.started),
        "finished": iso(row.finished),
        "attempts": row.attempts,
        "cancel_requested": row.cancel_requested,
        "run_id": row.run_id,
        "progress": row.progress or {},
        "result": row.result,
        "error": row.error,
    }


def worker_id(host: str | None = None) -> str:
    """``host:pid``. ``host`` overrides the machine's name (``GENLOOP_WORKER_HOST``): in a container the
    hostname is a random id, so an operator names the machine the worker really runs on."""
    return f"{host or socket.gethostname()}:{os.getpid()}"


def pid_dead(worker: str | None) -> bool:
    """True when ``worker`` ran on this host and its process no longer exists.

    Only a worker named after this machine's real hostname is checked: one with an overridden host name may
    run in another container or machine whose pids mean nothing here, so only its heartbeat can tell."""
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class JobStore:
    def __init__(self, engine: Engine, max_queued: int = 32, max_attempts: int = 3) -> None:
        create_tables(engine, JobRow, JobEventRow)
        self.engine, self.Session = engine, sessions(engine)
        self.max_queued, self.max_attempts = max_queued, max_attempts

    # --- clients ------------------------------------------------------------------------------------
    def enqueue(self, kind: str, params: dict[str, Any], user: str = "anonymous") -> JobRow:
        if kind not in KINDS:
            raise GenLoopError(f"unknown job kind '{kind}'; valid: {', '.join(KINDS)}")
        lane = lane_of(kind)  # each lane has its own limit: queued training never turns a generation away
        with self.Session.begin() as s:
            q = select(func.count()).select_from(JobRow)
            waiting = s.scalar(q.where(JobRow.status == "queued", JobRow.kind.in_(lane_kinds(lane)))) or 0
            if waiting >= self.max_queued:
                raise QueueFull(self.max_queued, retry_after=5, lane=lane)
            row = JobRow(
                id=new_id(),
                kind=kind,
                status="queued",
                params=params,
                user=user,
                created=utcnow(),
                attempts=0,
                cancel_requested=False,
                progress={},
                event_count=0,
            )
            s.add(row)
            s.flush()
            self._event(s, row, "status", {"status": "queued"})
        return row

    def get(self, job_id: str) -> JobRow:
        with self.Session() as s:
            row = s.get(JobRow, str(job_id))
        if row is None:
            raise NotFoundError(f"no job '{job_id}'")
        return row

    def list(
        self, status: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[JobRow]:
        q = select(JobRow)
        if status:
            q = q.where(JobRow.status == status)
        if kind:
            q = q.where(JobRow.kind == kind)
        with self.Session() as s:
            return list(s.scalars(q.order_by(JobRow.created.desc(), JobRow.id).limit(limit).offset(offset)))

    def counts(self) -> dict[str, int]:
        with self.Session() as s:
            rows = s.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).all()
        return {status: int(n) for status, n in rows}

    def lane_counts(self) -> dict[str, dict[str, int]]:
        """``{lane: {"queued": n, "running": n}}`` of the active jobs."""
        out = {lane: {"queued": 0, "running": 0} for lane in LANES}
        with self.Session() as s:
            q = select(JobRow.kind, JobRow.status, func.count()).where(JobRow.status.in_(ACTIVE))
            for kind, status, n in s.execute(q.group_by(JobRow.kind, JobRow.status)).all():
                out[lane_of(kind)][status] += int(n)
        return out

    def cancel(self, job_id: str) -> JobRow:
        """A queued job is cancelled at once; a running one is asked to stop (training checkpoints first)."""
        with self.Session.begin() as s:
            row = s.get(JobRow, str(job_id), with_for_update=True)
            if row is None:
                raise NotFoundError(f"no job '{job_id}'")
            if row.status == "queued":
                row.status, row.finished = "cancelled", utcnow()
                self._event(s, row, "status", {"status": "cancelled"})
            elif row.status == "running":
                row.cancel_requested = True
        return self.get(job_id)

    def events(self, job_id: str, after: int = 0, limit: int = 500) -> list[JobEventRow]:
        q = (
            select(JobEventRow)
            .where(JobEventRow.job_id == str(job_id), JobEventRow.seq > after)
            .order_by(JobEventRow.seq)
            .limit(limit)
        )
        with self.Session() as s:
            return list(s.scalars(q))

    # --- workers ------------------------------------------------------------------------------------
    def claim(self, worker: str, lane: str | None = None) -> JobRow | None:
        """Take the oldest queued job of ``lane`` (any lane for None or ``all``) for ``worker``, or None. Safe
        with any number of workers, in any number of processes and machines: the UPDATE only matches while the
        row still says ``queued``. On PostgreSQL a second worker's UPDATE of the same row waits for the first
        to commit and then re-checks the condition against the committed row (READ COMMITTED), so it matches
        nothing and looks again."""
        kinds = lane_kinds(lane)
        while True:
            with self.Session() as s:
                job_id = s.scalar(
                    select(JobRow.id)
                    .where(JobRow.status == "queued", JobRow.kind.in_(kinds))
                    .order_by(JobRow.created, JobRow.id)
                    .limit(1)
                )
            if job_id is None:
                return None
            now = utcnow()
            with self.Session.begin() as s:
                taken = s.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.status == "queued")
                    .values(status="running", worker=worker, started=now, heartbeat=now, attempts=JobRow.attempts + 1)
                ).rowcount
                if taken:
                    row = s.get(JobRow, job_id)
                    self._event(s, row, "status", {"status": "running", "attempt": row.attempts})
                    return row
            # another worker won the race for that job: look again

    def running_jobs(self) -> dict[str, dict[str, Any]]:
        """``{worker id: {"id", "kind"}}`` of the running jobs: what each worker is busy with (health)."""
        with self.Session() as s:
            rows = s.execute(select(JobRow.worker, JobRow.id, JobRow.kind).where(JobRow.status == "running")).all()
        return {worker: {"id": job_id, "kind": kind} for worker, job_id, kind in rows if worker}

    def heartbeat(self, job_id: str, worker: str, progress: dict[str, Any] | None = None) -> bool:
        """Refresh the heartbeat (and progress); returns whether cancellation was requested."""
        values: dict[str, Any] = {"heartbeat": utcnow()}
        if progress is not None:
            values["progress"] = progress
        with self.Session.begin() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.worker == worker, JobRow.status == "running")
                .values(**values)
            )
            return bool(s.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    def set_run(self, job_id: str, run_id: str) -> None:
        with self.Session.begin() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(run_id=run_id))

    def add_event(self, job_id: str, type: str, data: dict[str, Any]) -> int:
        with self.Session.begin() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            return self._event(s, row, type, data)

    def finish(
        self, job_id: str, worker: str, status: str, result: dict[str, Any] | None = None, error: str | None = None
    ) -> bool:
        """Record the outcome; False if this worker no longer owns the job (it was recovered elsewhere)."""
        assert status in FINAL
        with self.Session.begin() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status != "running" or row.worker != worker:
                return False
            row.status, row.finished, row.result, row.error = status, utcnow(), result, error
            self._event(s, row, "status", {"status": status, **({"error": error} if error else {})})
        return True

    def requeue(self, job_id: str, worker: str, reason: str) -> bool:
        """Give a running job back to the queue (a worker shutting down mid-training)."""
        with self.Session.begin() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status != "running" or row.worker != worker:
                return False
            row.status, row.worker = "queued", None
            self._event(s, row, "status", {"status": "queued", "reason": reason})
        return True

    def recover(self, stale_after: float = 30.0, exclude: str | None = None) -> list[tuple[str, str]]:
        """Requeue (or fail, after ``max_attempts``) running jobs whose worker is gone.

        Returns ``[(job_id, new_status), ...]``. A job whose cancellation was requested becomes cancelled.
        """
        cutoff = utcnow() - dt.timedelta(seconds=stale_after)
        out = []
        with self.Session.begin() as s:
            for row in s.scalars(select(JobRow).where(JobRow.status == "running").with_for_update()):
                if row.worker == exclude:
                    continue
                if not (pid_dead(row.worker) or (row.heartbeat or row.created) < cutoff):
                    continue
                reason = f"worker {row.worker} stopped during attempt {row.attempts}"
                if row.cancel_requested:
                    row.status, row.finished = "cancelled", utcnow()
                elif row.attempts >= self.max_attempts:
                    row.status, row.finished = "failed", utcnow()
                    row.error = f"{reason}; gave up after {row.attempts} attempts"
                else:
                    row.status, row.worker = "queued", None
                self._event(s, row, "status", {"status": row.status, "reason": reason})
                out.append((row.id, row.status))
        return out

    def _event(self, s: Any, row: JobRow, type: str, data: dict[str, Any]) -> int:
        # an atomic increment in the database (not row.event_count + 1 in Python): two writers never share a seq
        seq = s.execute(
            update(JobRow)
            .where(JobRow.id == row.id)
            .values(event_count=JobRow.event_count + 1)
            .returning(JobRow.event_count)
        ).scalar_one()
        s.add(JobEventRow(job_id=row.id, seq=seq, created=utcnow(), type=type, data=data))
        return seq
