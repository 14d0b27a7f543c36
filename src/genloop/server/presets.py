"""Named presets: generate-form settings saved under a name for one model (run), in the studio database.

A preset is ``(run_id, name) -> params``: the generate-job params it sets (sampler, steps, guidance, prompt,
temperature, ...), checked as a generate job's are when it is saved, so applying one never fills the form with
something the server would refuse. Names are unique per run (a second one with the same name is a
:class:`DuplicatePreset`, HTTP 409); a run holds at most ``limit`` presets. They live server-side so that they
follow the user across browsers, and on every database the studio runs on (SQLite, PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Any

from sqlalchemy import JSON, DateTime, String, UniqueConstraint, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ..database import Base, create_tables, iso, new_id, sessions, utcnow
from ..errors import ConfigError, GenLoopError, NotFoundError

MAX_NAME = 64


class DuplicatePreset(GenLoopError):
    """A preset of that name already exists for that run (HTTP 409)."""


class PresetRow(Base):
    __tablename__ = "presets"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_presets_run_name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME))
    params: Mapped[dict] = mapped_column(JSON)  # generate-job params, without run_id
    user: Mapped[str] = mapped_column(String(64), default="anonymous")
    created: Mapped[dt.datetime] = mapped_column(DateTime)


def preset_dict(row: PresetRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "run_id": row.run_id,
        "name": row.name,
        "params": row.params,
        "user": row.user,
        "created": iso(row.created),
    }


def check_name(name: str) -> str:
    """The name, stripped; empty, too long or holding control characters is a one-line :class:`ConfigError`."""
    name = name.strip()
    if not name:
        raise ConfigError("a preset needs a name")
    if len(name) > MAX_NAME:
        raise ConfigError(f"a preset name is at most {MAX_NAME} characters, got {len(name)}")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ConfigError("a preset name cannot hold control characters (tabs, new lines, ...)")
    return name


class PresetStore:
    """The presets table. ``limit``: presets per run."""

    def __init__(self, engine: Engine, limit: int = 100) -> None:
        self.engine = engine
        self.limit = limit
        create_tables(engine, PresetRow)
        self.Session = sessions(engine)

    def add(self, run_id: str, name: str, params: dict[str, Any], user: str | None = None) -> PresetRow:
        """Save ``params`` as preset ``name`` of ``run_id`` (the caller has checked the params)."""
        name = check_name(name)
        row = PresetRow(
            id=new_id(), run_id=run_id, name=name, params=dict(params), user=user or "anonymous", created=utcnow()
        )
        duplicate = DuplicatePreset(
            f"model {run_id} already has a preset named '{name}': delete it or pick another name"
        )
        with self.Session() as s:
            if s.scalar(select(PresetRow.id).where(PresetRow.run_id == run_id, PresetRow.name == name)):
                raise duplicate
            count = s.scalar(select(func.count()).select_from(PresetRow).where(PresetRow.run_id == run_id)) or 0
            if count >= self.limit:
                raise ConfigError(f"model {run_id} already has {count} presets, the most one model may keep")
            s.add(row)
            try:
                s.commit()
            except IntegrityError:  # saved by another request between the check and the insert
                raise duplicate from None
        return row

    def list(self, run_id: str | None = None) -> list[PresetRow]:
        q = select(PresetRow).order_by(PresetRow.run_id, PresetRow.name)
        if run_id:
            q = q.where(PresetRow.run_id == run_id)
        with self.Session() as s:
            return list(s.scalars(q))

    def get(self, preset_id: str) -> PresetRow:
        with self.Session() as s:
            row = s.get(PresetRow, preset_id)
        if row is None:
            raise NotFoundError(f"no preset '{preset_id}'")
        return row

    def delete(self, preset_id: str) -> None:
        with self.Session.begin() as s:
            row = s.get(PresetRow, preset_id)
            if row is None:
                raise NotFoundError(f"no preset '{preset_id}'")
            s.delete(row)
