"""What every route needs: the app's context (settings, database, stores) and the token check."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request

from ..feedback.store import FeedbackStore
from .jobs import JobStore
from .liveness import WorkerRegistry
from .presets import PresetStore
from .services.models import ModelIndex
from .settings import Settings


@dataclass
class Context:
    settings: Settings
    jobs: JobStore
    feedback: FeedbackStore
    workers: WorkerRegistry
    models: ModelIndex
    presets: PresetStore


def ctx(request: Request) -> Context:
    return request.app.state.ctx


SESSION_COOKIE = "genloop_session"


def session_value(token: str) -> str:
    """The session cookie's value: derived from the token (HMAC), so the cookie never holds the token itself."""
    return hmac.new(token.encode(), b"genloop studio session", hashlib.sha256).hexdigest()


def require_token(request: Request) -> None:
    """With a token configured: no credentials → 401, a wrong token → 403.

    Credentials are, in order: ``Authorization: Bearer <token>``; the HttpOnly session cookie that
    ``POST /v1/session`` sets (so ``<img>`` and links work without the token in any URL); ``?token=``,
    kept for clients such as ``EventSource`` that can send neither (it ends up in URLs: prefer the others).
    """
    token = request.app.state.ctx.settings.token
    if not token:
        return
    header = request.headers.get("authorization", "")
    cookie = request.cookies.get(SESSION_COOKIE)
    if not header and cookie and hmac.compare_digest(cookie.encode(), session_value(token).encode()):
        return
    given = header[7:].strip() if header.lower().startswith("bearer ") else request.query_params.get("token")
    if not given:
        raise HTTPException(
            status_code=401,
            detail="an API token is required: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(status_code=403, detail="the API token is not valid")
