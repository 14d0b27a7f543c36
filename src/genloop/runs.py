"""The run store: one directory per run, and a SQLite index so that listing runs is fast.

``runs/<id>/`` is the source of truth (its files are named in :mod:`genloop.run_layout`).
``runs/index.sqlite`` (SQLAlchemy) mirrors each run's ``run.json`` for quick, filterable listings; it is
rebuilt from the directories whenever they disagree, so losing it loses nothing. A run directory appears
whole or not at all: it is assembled under a hidden temporary name and renamed into place.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, create_engine, delete, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from . import __version__
from .errors import ConfigError, GenLoopError, NotFoundError
from .paths import runs_dir
from .run_layout import RunLayout
from .serialization import read_json, remove_strays, write_json

ACTIVE = ("created", "running")  # statuses that say a process has the run: 'killed' once that process is gone


class _Base(DeclarativeBase):
    pass


class RunRow(_Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String, primary_key=True)
    model: Mapped[str] = mapped_column(String, index=True)
    dataset: Mapped[str] = mapped_column(String, index=True)
    status: Mapped[str] = mapped_column(String, index=True)
    created: Mapped[str] = mapped_column(String, index=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    train_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)  # headline eval numbers (fid, floor, ...)


def _alive(info: dict[str, Any]) -> bool:
    """Is the process that marked this run 'running' still alive? (Only knowable on the same host.)"""
    pid, host = info.get("pid"), info.get("host")
    if not pid or host != socket.gethostname():
        return True  # another machine's run, or no pid recorded: assume it is
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Run:
    """A handle on one run directory and its ``run.json``."""

    dir: Path
    info: dict[str, Any]

    @property
    def id(self) -> str:
        return self.info["id"]

    @property
    def files(self) -> RunLayout:
        """Where each of this run's files lives."""
        return RunLayout(self.dir)

    @property
    def config(self) -> dict[str, Any]:
        return read_json(self.files.config)

    @property
    def last_checkpoint(self) -> Path:
        return self.files.last_checkpoint

    @property
    def weights(self) -> Path:
        return self.files.weights

    def discard_progress(self) -> None:
        """Remove what training wrote before its first checkpoint (a killed run restarting from step 0).

        Its metric lines, TensorBoard events, sample previews and best weights belong to steps that are
        about to be trained again; kept, the restarted run would log every early step twice.
        """
        for path in (self.files.metrics, self.files.best_weights):
            path.unlink(missing_ok=True)
        for folder in (self.files.tensorboard, self.files.samples):
            shutil.rmtree(folder, ignore_errors=True)


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = runs_dir(root)
        self._engine = None
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"the run store {self.root} is a file, not a folder; pass another --runs-dir")

    # --- index ------------------------------------------------------------------------------------
    @property
    def engine(self):
        if self._engine is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._engine = create_engine(f"sqlite:///{self.root / 'index.sqlite'}")
            try:
                _Base.metadata.create_all(self._engine)
            except OperationalError:  # another process (a second worker, a rank) created it at the same moment
                _Base.metadata.create_all(self._engine)  # checks first, so now it finds the table and creates nothing
        return self._engine

    def _index(self, info: dict[str, Any]) -> None:
        row = RunRow(
            id=info["id"],
            model=info.get("model", "?"),
            dataset=info.get("dataset", "?"),
            status=info.get("status", "?"),
            created=info.get("created", ""),
            step=int(info.get("step", 0)),
            train_seconds=float(info.get("timings", {}).get("train_seconds", 0.0)),
            summary=info.get("summary", {}),
        )
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            s.merge(row)

    def _sync(self) -> None:
        """Make the index agree with the run directories (added, changed or removed by hand)."""
        on_disk = {}
        for d in self.root.iterdir() if self.root.is_dir() else []:
            if d.is_dir() and not d.name.startswith(".") and RunLayout(d).run_info.is_file():
                try:
                    on_disk[d.name] = self._checked(Run(d, read_json(RunLayout(d).run_info))).info
                except GenLoopError:
                    continue
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            indexed = {r.id: r for r in s.scalars(select(RunRow))}
            gone = [i for i in indexed if i not in on_disk]
            if gone:
                s.execute(delete(RunRow).where(RunRow.id.in_(gone)))
        for rid, info in on_disk.items():
            row = indexed.get(rid)
            if (
                row is None
                or row.status != info.get("status")
                or row.step != int(info.get("step", 0))
                or row.summary != info.get("summary", {})
            ):
                self._index(info)

    # --- runs -------------------------------------------------------------------------------------
    def new_id(self, model: str) -> str:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{model}-{secrets.token_hex(2)}"

    def create(
        self, model: str, dataset: str, config: dict[str, Any], seed: int, extra: dict[str, Any] | None = None
    ) -> Run:
        """Make a new run directory holding its config; it appears in one rename. ``extra``: more ``run.json``
        fields (the recipe that chose the settings)."""
        self.root.mkdir(parents=True, exist_ok=True)
        run_id = self.new_id(model)
        tmp = self.root / f".tmp-{run_id}"
        info = {
            "id": run_id,
            "model": model,
            "dataset": dataset,
            "status": "created",
            "created": now_iso(),
            "updated": now_iso(),
            "step": 0,
            "seed": seed,
            "genloop_version": __version__,
            "timings": {},
            "summary": {},
            # who is about to train it: a creator that dies before its first step leaves a run seen as killed
            "pid": os.getpid(),
            "host": socket.gethostname(),
            **(extra or {}),
        }
        try:
            tmp.mkdir()
            write_json(RunLayout(tmp).config, config)
            write_json(RunLayout(tmp).run_info, info)
            os.rename(tmp, self.root / run_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        run = Run(self.root / run_id, info)
        self._index(info)
        return run

    def get(self, run_id: str, paths: bool = True) -> Run:
        """A run by id, by unique id prefix, or (with ``paths``, for the CLI) by the path of its directory.

        The server passes ``paths=False``: a run id must name a run *in the store*, never a folder that
        happens to exist in the server's working directory.
        """
        path = Path(run_id)
        if paths and RunLayout(path).run_info.is_file():
            return self._checked(Run(path, read_json(RunLayout(path).run_info)))
        if run_id and "/" not in run_id and RunLayout(self.root / run_id).run_info.is_file():
            return self._checked(Run(self.root / run_id, read_json(RunLayout(self.root / run_id).run_info)))
        ids = [d.name for d in self.root.iterdir() if RunLayout(d).run_info.is_file()] if self.root.is_dir() else []
        matches = [i for i in ids if i.startswith(run_id)] if run_id else []
        if len(matches) == 1:
            return self.get(matches[0], paths)
        if len(matches) > 1:
            raise NotFoundError(f"run id '{run_id}' is ambiguous: matches {', '.join(sorted(matches)[:5])}")
        recent = ", ".join(sorted(ids)[-3:]) or "none yet"
        raise NotFoundError(f"no run '{run_id}' in {self.root}; recent runs: {recent} (see `genloop runs list`)")

    def _checked(self, run: Run) -> Run:
        """A run 'created' or 'running' whose process is gone was killed: say so (resuming continues it)."""
        if run.info.get("status") in ACTIVE and not _alive(run.info):
            self.update(run, status="killed")
        return run

    def ensure_free(self, run: Run) -> None:
        """Refuse a run that another live process is starting or training."""
        if run.info.get("status") in ACTIVE and _alive(run.info) and run.info.get("pid") != os.getpid():
            raise ConfigError(f"run {run.id} is being trained by process {run.info.get('pid')}; stop it first")

    def mark_running(self, run: Run, **fields: Any) -> Run:
        """Claim a run for this process (refused if another live process has it), and clear what a killed
        process left half-written in it: temporaries of interrupted saves, which nothing else would remove."""
        self.ensure_free(run)
        for folder in (run.dir, run.files.checkpoints, run.files.samples):
            remove_strays(folder)
        run.info.pop("error", None)  # the error of an earlier attempt no longer describes the run
        return self.update(run, status="running", pid=os.getpid(), host=socket.gethostname(), **fields)

    def update(self, run: Run, **fields: Any) -> Run:
        """Change fields of ``run.json`` (nested dicts ``timings``/``summary`` are merged) and the index."""
        for k, v in fields.items():
            if k in ("timings", "summary") and isinstance(v, dict):
                run.info.setdefault(k, {}).update(v)
            else:
                run.info[k] = v
        run.info["updated"] = now_iso()
        write_json(run.files.run_info, run.info)
        self._index(run.info)
        return run

    def list(
        self, model: str | None = None, status: str | None = None, dataset: str | None = None, limit: int | None = None
    ) -> list[RunRow]:
        if not self.root.is_dir():
            return []
        self._sync()
        q = select(RunRow).order_by(RunRow.created.desc(), RunRow.id.desc())
        if model:
            q = q.where(RunRow.model == model)
        if status:
            q = q.where(RunRow.status == status)
        if dataset:
            q = q.where(RunRow.dataset == dataset)
        if limit:
            q = q.limit(limit)
        with Session(self.engine) as s:
            rows = list(s.scalars(q))
            s.expunge_all()
        return rows

    def remove(self, run_id: str) -> str:
        run = self.get(run_id)
        # Rename first so a crash mid-delete never leaves a half-deleted run that looks whole.
        trash = run.dir.parent / f".trash-{run.id}-{secrets.token_hex(2)}"
        os.rename(run.dir, trash)
        shutil.rmtree(trash, ignore_errors=True)
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            s.execute(delete(RunRow).where(RunRow.id == run.id))
        return run.id


def dumps(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2, default=str)
