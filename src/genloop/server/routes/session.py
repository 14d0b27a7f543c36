"""A browser session: trade the bearer token for an HttpOnly cookie, so media links need no token in the URL.

``<img src>``, a link opened in a new tab and ``EventSource`` cannot send an ``Authorization`` header. Putting
the token in their URLs would leave it in browser history, proxy logs and ``Referer`` headers, so the page
posts its token here once and the server answers with a cookie the page's scripts cannot read (HttpOnly),
that no other site's request carries (SameSite=Strict), and whose value is derived from the token rather
than the token itself.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..deps import SESSION_COOKIE, Context, ctx, require_token, session_value
from ..schemas import errors

router = APIRouter(tags=["session"])


@router.post("/v1/session", status_code=204, dependencies=[Depends(require_token)], responses=errors(401, 403))
def open_session(request: Request, c: Context = Depends(ctx)) -> Response:
    """Set the session cookie (send the token as ``Authorization: Bearer``); a server without a token sets none."""
    response = Response(status_code=204)
    if c.settings.token:
        response.set_cookie(
            SESSION_COOKIE,
            session_value(c.settings.token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
    return response


@router.delete("/v1/session", status_code=204)
def close_session() -> Response:
    """Forget the session cookie (the page's "forget token")."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
