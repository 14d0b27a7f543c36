"""Generations and the feedback people give them, in the studio database.

A :class:`GenerationRow` is one generated item (one image or one completion) with the full recipe that
reproduces it: run, checkpoint and its sha256, sampler, seed, parameters. Ratings (thumbs and/or 1–5
stars) and pairwise preferences (A/B) point at generation ids and say who gave them and when. Image
files live in a media folder under ids the store makes, never under names a request chose.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, case, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column

from ..database import Base, connect, create_tables, iso, new_id, sessions, utcnow
from ..errors import ConfigError, NotFoundError
from ..paths import runs_dir

MAX_USER = 64


class GenerationRow(Base):
    __tablename__ = "generations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    run_id: Mapped[str] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16))  # a registered modality name (genloop.modalities)
    checkpoint: Mapped[str] = mapped_column(String(16), default="last")
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    recipe: Mapped[dict] = mapped_column(JSON)  # everything needed to make it again (n=1, its own seed)
    prompt: Mapped[str] = mapped_column(Text, default="")  # the text prompt, or the condition ("class 7")
    text: Mapped[str | None] = mapped_column(Text, nullable=True)  # text generations
    media: Mapped[str | None] = mapped_column(String(256), nullable=True)  # image file, relative to the media folder
    job_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    replay_of: Mapped[str | None] = mapped_column(String(32), nullable=True)
    user: Mapped[str] = mapped_column(String(MAX_USER), default="anonymous")


class RatingRow(Base):
    __tablename__ = "ratings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"), index=True)
    user: Mapped[str] = mapped_column(String(MAX_USER), default="anonymous")
    created: Mapped[dt.datetime] = mapped_column(DateTime)
    thumbs: Mapped[int | None] = mapped_column(Integer, nullable=True)  # +1 / -1
    stars: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1..5


class PreferenceRow(Base):
    __tablename__ = "preferences"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chosen_id: Mapped[str] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"), index=True)
    rejected_id: Mapped[str] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"), index=True)
    user: Mapped[str] = mapped_column(String(MAX_USER), default="anonymous")
    created: Mapped[dt.datetime] = mapped_column(DateTime)


def generation_dict(row: GenerationRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "created": iso(row.created),
        "run_id": row.run_id,
        "model": row.model,
        "modality": row.modality,
        "checkpoint": row.checkpoint,
        "checkpoint_sha256": row.checkpoint_sha256,
        "recipe": row.recipe,
        "prompt": row.prompt,
        "text": row.text,
        "has_image": row.media is not None,
        "job_id": row.job_id,
        "replay_of": row.replay_of,
        "user": row.user,
    }


def rating_dict(row: RatingRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "generation_id": row.generation_id,
        "user": row.user,
        "created": iso(row.created),
        "thumbs": row.thumbs,
        "stars": row.stars,
    }


def preference_dict(row: PreferenceRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "chosen_id": row.chosen_id,
        "rejected_id": row.rejected_id,
        "user": row.user,
        "created": iso(row.created),
    }


def _condition(recipe: dict[str, Any]) -> str:
    """What an image was asked to be, as a prompt string for preference data (its prompt, "class 7", or "")."""
    if recipe.get("prompt") is not None:
        return str(recipe["prompt"])
    return f"class {recipe['class_label']}" if recipe.get("class_label") is not None else ""


def _check_rating(thumbs: int | None, stars: int | None) -> None:
    if thumbs is None and stars is None:
        raise ConfigError("a rating needs thumbs (+1 or -1) or stars (1-5)")
    if thumbs is not None and thumbs not in (1, -1):
        raise ConfigError(f"thumbs must be +1 or -1, got {thumbs}")
    if stars is not None and not (isinstance(stars, int) and 1 <= stars <= 5):
        raise ConfigError(f"stars must be an integer from 1 to 5, got {stars}")


def _user(user: str | None) -> str:
    user = (user or "anonymous").strip() or "anonymous"
    if len(user) > MAX_USER:
        raise ConfigError(f"user names are at most {MAX_USER} characters")
    return user


class FeedbackStore:
    """Generations, ratings and preferences. ``url``: a SQLAlchemy URL (default: SQLite beside the runs);
    ``media_dir``: where image files go (default ``<runs>/media``)."""

    def __init__(
        self,
        url: str | None = None,
        media_dir: str | Path | None = None,
        runs: str | Path | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.engine = engine or connect(url, runs)
        create_tables(self.engine, GenerationRow, RatingRow, PreferenceRow)
        self.Session = sessions(self.engine)
        self.media_dir = Path(media_dir) if media_dir else runs_dir(runs) / "media"

    # --- generations --------------------------------------------------------------------------------
    def add_outputs(
        self, output: Any, *, job_id: str | None = None, user: str | None = None, replay_of: str | None = None
    ) -> list[str]:
        """Store every item of a pipeline output (one row each, in one transaction); its ``modality`` decides how."""
        from ..modalities import modalities

        modality = modalities[output.modality]
        recipe0 = output.recipe
        count = len(modality.items(output))
        rows, files = [], []
        try:
            for i in range(count):
                recipe = output.recipe_of(i)
                gid = new_id()
                row = GenerationRow(
                    id=gid,
                    created=utcnow(),
                    run_id=str(recipe0.get("run_id")),
                    model=str(recipe0.get("model")),
                    modality=modality.name,
                    checkpoint=str(recipe0.get("checkpoint", "last")),
                    checkpoint_sha256=str(recipe0.get("checkpoint_sha256", "")),
                    recipe=recipe,
                    job_id=job_id,
                    replay_of=replay_of,
                    user=_user(user),
                )
                written = modality.store_item(self, row, output, i)
                if written is not None:
                    files.append(written)
                rows.append(row)
            with self.Session.begin() as s:
                s.add_all(rows)
        except BaseException:
            for f in files:  # no orphan files for rows that never landed
                Path(f).unlink(missing_ok=True)
            raise
        return [r.id for r in rows]

    def get(self, generation_id: str) -> GenerationRow:
        with self.Session() as s:
            row = s.get(GenerationRow, str(generation_id))
        if row is None:
            raise NotFoundError(f"no generation '{generation_id}'")
        return row

    def get_many(self, generation_ids: list[str]) -> list[GenerationRow]:
        """The generations of ``generation_ids``, in that order (one query); the first unknown id is a
        :class:`NotFoundError`."""
        with self.Session() as s:
            found = {r.id: r for r in s.scalars(select(GenerationRow).where(GenerationRow.id.in_(generation_ids)))}
        missing = next((i for i in generation_ids if i not in found), None)
        if missing is not None:
            raise NotFoundError(f"no generation '{missing}'")
        return [found[i] for i in generation_ids]

    def image_path(self, row: GenerationRow) -> Path:
        if row.media is None:
            raise NotFoundError(f"generation {row.id} is text; it has no image")
        path = (self.media_dir / row.media).resolve()
        if self.media_dir.resolve() not in path.parents:  # media names are ours, but check anyway
            raise NotFoundError(f"generation {row.id} has no image")
        return path

    def _filtered(self, q: Any, run_id: str | None, job_id: str | None, modality: str | None) -> Any:
        if run_id:
            q = q.where(GenerationRow.run_id == run_id)
        if job_id:
            q = q.where(GenerationRow.job_id == job_id)
        if modality:
            q = q.where(GenerationRow.modality == modality)
        return q

    def list(
        self,
        run_id: str | None = None,
        job_id: str | None = None,
        modality: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[GenerationRow]:
        q = self._filtered(select(GenerationRow), run_id, job_id, modality)
        q = q.order_by(GenerationRow.created.desc(), GenerationRow.id).limit(limit).offset(offset)
        with self.Session() as s:
            return list(s.scalars(q))

    def count(self, run_id: str | None = None, job_id: str | None = None, modality: str | None = None) -> int:
        """How many generations match (all of them by default)."""
        q = self._filtered(select(func.count()).select_from(GenerationRow), run_id, job_id, modality)
        with self.Session() as s:
            return int(s.scalar(q) or 0)

    # --- feedback -----------------------------------------------------------------------------------
    def rate(
        self, generation_id: str, thumbs: int | None = None, stars: int | None = None, user: str | None = None
    ) -> RatingRow:
        """Record a rating: thumbs (+1 up, -1 down) and/or stars (1–5). Each call is a new rating."""
        _check_rating(thumbs, stars)
        self.get(generation_id)
        row = RatingRow(
            generation_id=str(generation_id), user=_user(user), created=utcnow(), thumbs=thumbs, stars=stars
        )
        with self.Session.begin() as s:
            s.add(row)
        return row

    def prefer(self, chosen_id: str, rejected_id: str, user: str | None = None) -> PreferenceRow:
        """Record that ``chosen_id`` was preferred over ``rejected_id`` (an A/B choice)."""
        if chosen_id == rejected_id:
            raise ConfigError("a preference needs two different generations")
        a, b = self.get(chosen_id), self.get(rejected_id)
        if a.modality != b.modality:
            raise ConfigError(f"cannot compare a {a.modality} generation with a {b.modality} one")
        row = PreferenceRow(chosen_id=a.id, rejected_id=b.id, user=_user(user), created=utcnow())
        with self.Session.begin() as s:
            s.add(row)
        return row

    def ratings(self, generation_id: str | None = None, run_id: str | None = None) -> list[RatingRow]:
        q = select(RatingRow).order_by(RatingRow.id)
        if generation_id:
            q = q.where(RatingRow.generation_id == generation_id)
        if run_id:
            q = q.join(GenerationRow, GenerationRow.id == RatingRow.generation_id).where(GenerationRow.run_id == run_id)
        with self.Session() as s:
            return list(s.scalars(q))

    def preferences(self, run_id: str | None = None) -> list[PreferenceRow]:
        q = select(PreferenceRow).order_by(PreferenceRow.id)
        if run_id:
            q = q.join(GenerationRow, GenerationRow.id == PreferenceRow.chosen_id).where(GenerationRow.run_id == run_id)
        with self.Session() as s:
            return list(s.scalars(q))

    def summary(self, generation_id: str) -> dict[str, Any]:
        """Up/down counts and mean stars of one generation."""
        return self.summaries([generation_id])[generation_id]

    def summaries(self, generation_ids: list[str]) -> dict[str, dict[str, Any]]:
        """:meth:`summary` for many generations in one query (a gallery page)."""
        empty = {"up": 0, "down": 0, "stars": None, "ratings": 0}
        out = {g: dict(empty) for g in generation_ids}
        if not generation_ids:
            return out
        q = (
            select(
                RatingRow.generation_id,
                func.sum(case((RatingRow.thumbs == 1, 1), else_=0)),
                func.sum(case((RatingRow.thumbs == -1, 1), else_=0)),
                func.avg(RatingRow.stars),
                func.count(),
            )
            .where(RatingRow.generation_id.in_(list(generation_ids)))
            .group_by(RatingRow.generation_id)
        )
        with self.Session() as s:
            for gid, up, down, stars, n in s.execute(q):
                out[gid] = {
                    "up": int(up or 0),
                    "down": int(down or 0),
                    "stars": None if stars is None else round(float(stars), 3),
                    "ratings": int(n),
                }
        return out

    # --- bulk feedback and training data (the reward model, exports, simulated raters) -----------------
    def add_feedback(
        self, ratings: list[dict[str, Any]] = (), preferences: list[tuple[str, str]] = (), user: str | None = None
    ) -> tuple[int, int]:
        """Many ratings (``{"generation_id", "stars"?, "thumbs"?}``) and preferences (``(chosen, rejected)``) in
        one transaction: a scripted rater gives hundreds at once, and one commit each would dominate."""
        user = _user(user)
        rows: list[Any] = []
        ids = {r["generation_id"] for r in ratings} | {i for p in preferences for i in p}
        with self.Session() as s:
            found = set(s.scalars(select(GenerationRow.id).where(GenerationRow.id.in_(ids)))) if ids else set()
        missing = sorted(ids - found)
        if missing:
            raise NotFoundError(
                f"no generation '{missing[0]}'" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        for r in ratings:
            thumbs, stars = r.get("thumbs"), r.get("stars")
            _check_rating(thumbs, stars)
            rows.append(
                RatingRow(
                    generation_id=str(r["generation_id"]), user=user, created=utcnow(), thumbs=thumbs, stars=stars
                )
            )
        for chosen, rejected in preferences:
            if chosen == rejected:
                raise ConfigError("a preference needs two different generations")
            rows.append(PreferenceRow(chosen_id=str(chosen), rejected_id=str(rejected), user=user, created=utcnow()))
        with self.Session.begin() as s:
            s.add_all(rows)
        return len(ratings), len(preferences)

    def feedback_rows(
        self, run_id: str | None = None, job_id: str | None = None, user: str | None = None, modality: str | None = None
    ) -> tuple[list[RatingRow], list[PreferenceRow], dict[str, GenerationRow]]:
        """Ratings, preferences and the generations they point at, filtered by the generations' run, job and
        modality and by who gave the feedback. A preference counts when its chosen generation matches."""

        def gen_filter(q: Any, col: Any) -> Any:
            if run_id or job_id or modality:
                q = self._filtered(q.join(GenerationRow, GenerationRow.id == col), run_id, job_id, modality)
            return q

        qr = gen_filter(select(RatingRow), RatingRow.generation_id).order_by(RatingRow.id)
        qp = gen_filter(select(PreferenceRow), PreferenceRow.chosen_id).order_by(PreferenceRow.id)
        if user:
            qr, qp = qr.where(RatingRow.user == user), qp.where(PreferenceRow.user == user)
        with self.Session() as s:
            ratings, prefs = list(s.scalars(qr)), list(s.scalars(qp))
            ids = {r.generation_id for r in ratings} | {i for p in prefs for i in (p.chosen_id, p.rejected_id)}
            gens: dict[str, GenerationRow] = {}
            id_list = sorted(ids)
            for i in range(0, len(id_list), 500):  # IN lists stay well under every backend's parameter limit
                gens.update(
                    {
                        g.id: g
                        for g in s.scalars(select(GenerationRow).where(GenerationRow.id.in_(id_list[i : i + 500])))
                    }
                )
        return ratings, prefs, gens
