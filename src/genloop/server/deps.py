"""What every route needs: the app's context (settings, database, stores) and the token check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request

from ..feedback.store import FeedbackStore
from .jobs import JobStore
from .liveness import WorkerRegistry
from .settings import Settings


@dataclass
class Context:
    settings: Settings
    jobs: JobStore
    feedback: FeedbackStore
    workers: WorkerRegistry


def ctx(request: Request) -> Context:
    return request.app.state.ctx


def require_token(request: Request) -> None:
    """With a token configured: no ``Authorization`` header → 401, a wrong token → 403.

    ``?token=`` is accepted too, for links and ``EventSource`` (which cannot set headers).
    """
    token = request.app.state.ctx.settings.token
    if not token:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else request.query_params.get("token")
    if not given:
        raise HTTPException(status_code=401, detail="an API token is required: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(status_code=403, detail="the API token is not valid")
