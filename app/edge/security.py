"""The security middleware stack, outermost first, and why in that order.

1. CORS (Starlette's CORSMiddleware, only when ALLOWED_ORIGINS is set): answers
   preflights before anything asks for a token (a preflight carries none), and
   adds Access-Control-Allow-Origin for listed origins to every response, 401s
   included, so a page can tell "wrong token" from "network error". Origins not
   listed get no CORS headers: the browser keeps the response from the page.
   With ALLOWED_ORIGINS empty there is no CORS at all: same-origin pages only.
2. ConnectionLog (app/edge/connlog.py): sees every WebSocket/SSE connection, refused
   or not, and gives it the id the other lines use.
3. AccessControl (app/edge/auth.py): Origin for WebSockets, then tokens per endpoint kind.
4. ConnectionLimits (app/edge/limits.py): the cap, the WebSocket idle timeout and the
   ingest rate buckets -- after authentication, so an unauthenticated client
   can never take a slot of the cap.

The request-head deadline (slowloris) lives below ASGI, in app/edge/protocol.py.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from app.config import Settings
from app.edge.auth import AccessControl, normalize_origin, warn_about_open_kinds
from app.edge.connlog import ConnectionLog
from app.edge.limits import ConnectionLimits


def middleware(settings: Settings) -> list[Middleware]:
    warn_about_open_kinds(settings)
    stack: list[Middleware] = []
    if settings.allowed_origins:
        origins = ["*"] if "*" in settings.allowed_origins else [normalize_origin(o) for o in settings.allowed_origins]
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "HEAD"],
                allow_headers=["Authorization", "Last-Event-ID"],
                allow_credentials=False,  # tokens travel in headers or the URL, never in cookies
                max_age=600,
            )
        )
    stack += [
        Middleware(ConnectionLog),
        Middleware(AccessControl, settings=settings),
        Middleware(ConnectionLimits, settings=settings),
    ]
    return stack


__all__ = ["middleware"]
