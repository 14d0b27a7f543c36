"""The app factory: ``create_app(settings)`` wires the routers, the database and the studio page.

Nothing happens at import time; every app has its own context (settings, job store, feedback store), so
tests can make as many as they like. The server is a client of the library: it queues jobs and reads
results; the worker process (:mod:`.worker`) does the heavy work.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import compile_path

from .. import __version__
from ..database import connect
from ..errors import GenLoopError, NotFoundError
from ..feedback.store import FeedbackStore
from .bodylimit import BodyLimit
from .deps import Context
from .jobs import JobStore
from .liveness import WorkerRegistry
from .presets import PresetStore
from .routes import chat, completions, generations, jobs, presets, runs, session, system, uploads, verify
from .services import openai_compat
from .services.models import ModelIndex
from .settings import Settings

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    engine = connect(settings.db_url, settings.runs)
    app = FastAPI(
        title="GenLoop Studio",
        version=__version__,
        description="Train, generate, evaluate, rate: the GenLoop loop over HTTP. Jobs are durable; "
        "every generation keeps the recipe that reproduces it.",
    )
    app.state.ctx = Context(
        settings,
        JobStore(engine, settings.max_queued, settings.max_attempts),
        FeedbackStore(engine=engine, media_dir=settings.media),
        WorkerRegistry(engine),
        ModelIndex(settings.runs),
        PresetStore(engine, settings.limits.max_presets),
    )

    limits = settings.limits
    caps = {"/v1/uploads": limits.max_upload_bytes, "/v1/verify": 2 * limits.max_verify_bytes + (64 << 10)}
    app.add_middleware(BodyLimit, limit_for=lambda path: caps.get(path, limits.max_body_bytes))

    @app.exception_handler(405)
    async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        """Starlette's 405 lists only the methods of the first route that matched the path (``GET /v1/jobs``
        and ``POST /v1/jobs`` are two routes); ``Allow`` must list every method the path serves."""
        methods = allowed_methods(app, request.scope["path"])
        allow = ", ".join(methods) if methods else (getattr(exc, "headers", None) or {}).get("Allow", "")
        return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": allow})

    @app.exception_handler(GenLoopError)
    async def library_error(request: Request, exc: GenLoopError) -> JSONResponse:
        from ..safety.moderation import ModerationBlocked

        if isinstance(exc, ModerationBlocked):  # a refused request, not a malformed one
            return JSONResponse({"detail": str(exc), "code": "content_filter"}, status_code=400)
        return JSONResponse({"detail": str(exc)}, status_code=404 if isinstance(exc, NotFoundError) else 422)

    openai_compat.install(app)  # after the app's own handlers: OpenAI's error envelope on the OpenAI routes only

    for module in (system, session, jobs, generations, completions, chat, uploads, verify, runs, presets):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def studio() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document declares for ``path`` (plus HEAD beside GET, which Starlette answers);
    empty for paths outside the document (the page, static files). A path the document names literally
    (``/v1/runs/compare``) is that path alone, not also an instance of a templated one (``/v1/runs/{run_id}``),
    and a template counts only where the path's parameters fit their declared patterns
    (``/v1/generations/archive`` is no ``/v1/generations/{gid}``)."""
    paths = app.openapi()["paths"]
    matching = {path: paths[path]} if path in paths else paths
    methods: set[str] = set()
    for template, operations in matching.items():
        match = compile_path(template)[0].match(path)
        if match is None:
            continue
        for method, op in operations.items():
            patterns = {
                p["name"]: p.get("schema", {}).get("pattern") for p in op.get("parameters", []) if p.get("in") == "path"
            }
            if all(not rx or re.search(rx, match.group(name)) for name, rx in patterns.items()):
                methods.add(method.upper())
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))
