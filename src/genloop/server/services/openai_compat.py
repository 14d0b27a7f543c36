"""OpenAI's error envelope on the OpenAI-compatible routes, so official clients raise their typed errors.

OpenAI answers errors as ``{"error": {"message", "type", "param", "code"}}`` and bad parameters with a 400;
the ``openai`` client reads that envelope into ``openai.BadRequestError`` and friends. GenLoop's other routes
keep ``{"detail": ...}``. :func:`install` wraps whatever handlers the app already has, and only the paths in
:data:`OPENAI_PATHS` take the envelope: other routes are handled exactly as before. An unhandled exception
there is a ``500`` of type ``server_error`` in the envelope too, and the OpenAPI document drops FastAPI's
``422`` from these paths (they answer ``400``); the body-limit middleware's ``413`` uses :func:`envelope`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import GenLoopError, NotFoundError

OPENAI_PATHS = ("/v1/models", "/v1/completions", "/v1/chat/completions")
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
Handler = Callable[[Request, Any], Any]  # the app's handlers may be sync or async


class OpenAIError(HTTPException):
    """An HTTP error that names the request field at fault (``param``) and OpenAI's machine-readable ``code``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.param, self.code = param, code


def is_openai_path(path: str) -> bool:
    return path in OPENAI_PATHS


def envelope(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body. A 422 is reported as OpenAI reports invalid parameters: a 400."""
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code or CODES.get(status)}}


def openai_status(status: int) -> int:
    """GenLoop's status as OpenAI would give it: invalid parameters are a 400, and a wrong API key a 401
    (GenLoop says 403), which is what makes OpenAI clients raise their ``AuthenticationError``."""
    return {422: 400, 403: 401}.get(status, status)


def _from_http(exc: StarletteHTTPException) -> JSONResponse:
    status = openai_status(exc.status_code)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    param: str | None = getattr(exc, "param", None)
    code: str | None = getattr(exc, "code", None)
    if status == 404 and "model" in message:
        param, code = "model", "model_not_found"
    return JSONResponse(envelope(status, message, param, code), status_code=status, headers=exc.headers)


def _from_validation(exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg', 'invalid request')}" if param else str(first.get("msg", "invalid request"))
    if first.get("type") == "extra_forbidden":
        message = f"{param}: this parameter is not supported (the README lists what GenLoop's OpenAI routes take)"
    elif first.get("type") == "json_invalid":
        message = "the request body is not valid JSON"
    return JSONResponse(envelope(400, message, param), status_code=400)


def _from_library(exc: GenLoopError) -> JSONResponse:
    from ...safety.moderation import ModerationBlocked

    status = 404 if isinstance(exc, NotFoundError) else 400
    code = "content_filter" if isinstance(exc, ModerationBlocked) else None
    return JSONResponse(envelope(status, str(exc), code=code), status_code=status)


def install(app: FastAPI) -> None:
    """Give the OpenAI paths OpenAI's envelope for HTTP errors, invalid requests and library errors, and hand
    every other path to the handler the app had before (call after the app's own handlers are added)."""
    ours: dict[type[Exception], Callable[[Any], JSONResponse]] = {
        StarletteHTTPException: _from_http,
        RequestValidationError: _from_validation,
        GenLoopError: _from_library,
    }
    for cls, convert in ours.items():
        app.add_exception_handler(cls, _scoped(convert, app.exception_handlers.get(cls)))
    app.add_exception_handler(Exception, _server_error)
    _document(app)


def _document(app: FastAPI) -> None:
    """The OpenAPI document as the OpenAI paths answer: FastAPI declares a ``422`` on every route with a body,
    but there a request that breaks the schema is a ``400`` (declared by the route, with the envelope)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI's, cached after the first call
        for path in OPENAI_PATHS:
            for operation in schema.get("paths", {}).get(path, {}).values():
                operation.get("responses", {}).pop("422", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _server_error(request: Request, exc: Exception) -> Response:
    """An unhandled exception (a bug): on the OpenAI paths a ``500`` in the envelope (type ``server_error``),
    elsewhere Starlette's plain ``Internal Server Error`` as before. Never the exception's text, which may
    name the server's paths; the server's log has the traceback (the exception is re-raised after this)."""
    if is_openai_path(request.url.path):
        return JSONResponse(envelope(500, "the server failed on this request (its log has the details)"), 500)
    return PlainTextResponse("Internal Server Error", status_code=500)


def _scoped(convert: Callable[[Any], JSONResponse], before: Handler | None) -> Handler:
    async def handler(request: Request, exc: Any) -> Response:
        if is_openai_path(request.url.path):
            return convert(exc)
        if before is None:
            raise exc  # no handler of the app's own: the server's default (a 500) as before
        result = before(request, exc)
        return await result if inspect.isawaitable(result) else result

    return handler
