"""The request-body cap, counted as the bytes arrive.

A ``Content-Length`` header is only a claim: a chunked body has none, and a client may send more than it
declared. So this ASGI middleware refuses a declared size over the cap at once and, for every body,
counts the bytes of each ``http.request`` message as the app pulls it; the moment the count passes the
cap the app's read fails with a 413, before the rest is received or parsed. (A plain HTTP middleware
cannot do this: it sees the request before the body is read.)
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .services.openai_compat import envelope, is_openai_path


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` inside the app: FastAPI passes HTTP exceptions through its body parsing."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large (limit {limit} bytes)")


class BodyLimit:
    """Cap request bodies at ``limit_for(path)`` bytes, whatever the framing (413 beyond it)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(limit, scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:  # raised where no exception handler caught it (outside a route)
            if started:
                raise
            await _refuse(limit, scope, receive, send)


async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    """The 413, in the error format of the path: OpenAI's envelope on the OpenAI routes, ``{"detail"}`` elsewhere."""
    message = BodyTooLarge(limit).detail
    body = envelope(413, message) if is_openai_path(scope["path"]) else {"detail": message}
    await JSONResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)
