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
4. ConnectionLimits (app/edge/limits.py): the cap and the WebSocket idle timeout --
   after authentication, so an unauthenticated client can never take a slot of
   the cap. (The ingest rate limits are per frame: the /ws route checks them.)

Each middleware gets the values it uses, and so does this function: nothing in
app/edge reads the settings or imports a flow.

The request-head deadline (slowloris) lives below ASGI, in app/edge/protocol.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from app.codes import ErrorCode
from app.edge.auth import AccessControl, normalize_origin, warn_about_open_kinds
from app.edge.connlog import ConnectionLog
from app.edge.limits import IDLE_TIMEOUT_SECONDS, MAX_CONNECTIONS, ConnectionLimits
from app.errors import error_response


class _CORS(CORSMiddleware):
    """Starlette's CORS, with its refused preflights in the JSON shape of every other error.

    Starlette answers them itself, before AccessControl runs, as a text/plain 400:
    an Origin that is not listed is the same refusal as on the request itself
    (403 forbidden_origin); a method or header it does not allow is a 400.
    """

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
        if not self.is_allowed_origin(origin=request_headers["origin"]):
            message = "This Origin may not send events or read here; the service's ALLOWED_ORIGINS does not list it."
            return error_response(403, ErrorCode.FORBIDDEN_ORIGIN, message, headers)
        asked = request_headers.get("access-control-request-headers", "")
        message = (
            f"This preflight asks for {request_headers['access-control-request-method']!r} with headers {asked!r}; "
            "allowed: GET, HEAD, POST with Authorization, Content-Type, Last-Event-ID."
        )
        return error_response(400, ErrorCode.INVALID_PREFLIGHT, message, headers)


def middleware(
    *,
    ingest_tokens: Sequence[str] = (),
    read_tokens: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
    max_connections: int = MAX_CONNECTIONS,
    idle_timeout_seconds: float = IDLE_TIMEOUT_SECONDS,
) -> list[Middleware]:
    warn_about_open_kinds(ingest_tokens, read_tokens)
    stack: list[Middleware] = []
    if allowed_origins:
        origins = ["*"] if "*" in allowed_origins else [normalize_origin(o) for o in allowed_origins]
        stack.append(
            Middleware(
                _CORS,
                allow_origins=origins,
                allow_methods=["GET", "HEAD", "POST"],  # POST: /batch
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                allow_credentials=False,  # tokens travel in headers or the URL, never in cookies
                # A listed site's pages may reach a service on a private address (Chromium's
                # Private Network Access preflight): listing the origin is that consent.
                allow_private_network=True,
                max_age=600,
            )
        )
    stack += [
        Middleware(ConnectionLog),
        Middleware(
            AccessControl,
            ingest_tokens=ingest_tokens,
            read_tokens=read_tokens,
            allowed_origins=allowed_origins,
        ),
        Middleware(ConnectionLimits, max_connections=max_connections, idle_timeout_seconds=idle_timeout_seconds),
    ]
    return stack


__all__ = ["middleware"]
