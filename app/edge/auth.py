"""Access control at the edge: tokens per endpoint kind, and Origins for WebSockets.

A pure-ASGI middleware rather than checks in each route, so the rule is decided
by the path alone, before any route code runs: a route added later under a read
path is covered without anyone remembering to call a check, and a refused
request costs no database work.

Endpoint kinds (by the first path segment):

- ingest: `/ws` and `/batch` need an ingest token when INGEST_TOKENS is set;
- read: `/session/…`, `/sessions`, `/database_events`, `/stats/…`, `/metrics` need a read
  token when READ_TOKENS is set;
- open: everything else (`/healthcheck`, `/readyz`, `/`, `/static/…`,
  `/openapi.json`): load balancers and the page's own files need no secret.

Each kind is governed by its own list only: an ingest token never reads and a
read token never ingests (a leaked browser-side ingest token must not expose
everybody's events), and a kind whose list is empty is open. A deployment that
sets only one list therefore leaves the other kind open on purpose; the service
logs a warning at start-up saying so.

A token is taken from `Authorization: Bearer <token>` or, when that header is
absent, from `?token=` (browsers cannot set headers on WebSocket or EventSource).
A present Authorization header wins, even if a query token is also given.
Tokens are compared as SHA-256 digests with hmac.compare_digest against every
configured token, so the time taken reveals neither a token's content, its
length, nor which one matched.

Origins (ingest only: WebSocket handshakes and POST /batch; CORS headers for HTTP
are Starlette's CORSMiddleware, see app/edge/security.py): a request with no Origin
header (a backend, a mobile app, a CLI) is allowed; one from the service's own host (Origin's host equals
the Host header) is allowed; otherwise the Origin must be listed in
ALLOWED_ORIGINS (`*` allows any). Anything else gets a 403 before the socket
opens or the body is read: a page on another site cannot hijack a visitor's
network position or cookies to write events (cross-site WebSocket hijacking; and
a text/plain POST is a CORS-simple request that no preflight stops).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from app import metrics
from app.codes import ErrorCode
from app.errors import deny_websocket, error_response

log = logging.getLogger("eventservice.auth")

# The scope key under which an authenticated request carries its principal, e.g.
# "ingest#2": the kind and the 1-based index of the matching token in its list.
# Logs and per-token rate limits use it; the token itself never leaves this module.
PRINCIPAL_KEY = "eventservice.principal"


class Kind(enum.Enum):
    OPEN = "open"
    INGEST = "ingest"
    READ = "read"


_READ_SEGMENTS = frozenset({"session", "sessions", "database_events", "metrics", "stats"})
_INGEST_SEGMENTS = frozenset({"ws", "batch"})
_DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}


def classify(path: str) -> Kind:
    """The kind of an endpoint, from the first segment of its path."""
    first = path.lstrip("/").split("/", 1)[0]
    if first in _INGEST_SEGMENTS:
        return Kind.INGEST
    if first in _READ_SEGMENTS:
        return Kind.READ
    return Kind.OPEN


class TokenSet:
    """The configured tokens of one kind; an empty set means the kind is open."""

    def __init__(self, kind: Kind, tokens: Iterable[str]) -> None:
        self.kind = kind
        self._digests = [hashlib.sha256(t.encode()).digest() for t in tokens]

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def match(self, presented: str) -> int | None:
        """1-based index of the matching token, or None. Constant time in the token."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: int | None = None
        for index, known in enumerate(self._digests, start=1):
            # No early exit: every configured token is compared every time.
            if hmac.compare_digest(digest, known) and found is None:
                found = index
        return found


def presented_token(scope: Scope) -> str | None:
    """The credential a request carries: the Authorization header first, then ?token=.

    An Authorization header that is not `Bearer <token>` yields "" (present but
    unusable), so it is refused rather than silently ignored in favour of a query token.
    """
    authorization = Headers(scope=scope).get("authorization")
    if authorization is not None:
        scheme, _, credential = authorization.strip().partition(" ")
        return credential.strip() if scheme.lower() == "bearer" else ""
    query: bytes = scope.get("query_string", b"")
    if b"token=" in query:
        for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if key == "token":
                return value
    return None


def _netloc(scheme: str, netloc: str) -> str:
    """host[:port] in lower case, without the scheme's default port."""
    netloc = netloc.lower().rstrip(".")
    default = _DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(":" + default):
        netloc = netloc[: -len(default) - 1]
    return netloc


def normalize_origin(origin: str) -> str:
    """`scheme://host[:port]`, lower case, no default port, no trailing slash."""
    origin = origin.strip().rstrip("/")
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return origin.lower()  # "null", or something that is not an origin at all
    scheme = parts.scheme.lower()
    return f"{scheme}://{_netloc(scheme, parts.netloc)}"


class OriginPolicy:
    """Which browser Origins may open a WebSocket (see the module docstring)."""

    def __init__(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        self.any = "*" in allowed
        self.listed = frozenset(normalize_origin(o) for o in allowed if o != "*")

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None:
            return True  # not a browser: Origin is a browser's promise, absent elsewhere
        normalized = normalize_origin(origin)
        if self.any or normalized in self.listed:
            return True
        parts = urlsplit(normalized)
        return bool(host) and bool(parts.netloc) and _netloc(parts.scheme, host or "") == parts.netloc


class AccessControl:
    """The ASGI middleware: Origin check for WebSockets, then the token check per kind.

    An empty token list leaves its kind open; an empty origin list allows only
    handshakes without Origin and those from the service's own host.
    """

    def __init__(
        self,
        app: ASGIApp,
        ingest_tokens: Sequence[str] = (),
        read_tokens: Sequence[str] = (),
        allowed_origins: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.origins = OriginPolicy(allowed_origins)
        self.tokens = {
            Kind.INGEST: TokenSet(Kind.INGEST, ingest_tokens),
            Kind.READ: TokenSet(Kind.READ, read_tokens),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        kind = classify(scope["path"])
        if scope["type"] == "websocket" or kind is Kind.INGEST:
            headers = Headers(scope=scope)
            if not self.origins.allows(headers.get("origin"), headers.get("host")):
                metrics.CONNECTIONS_REFUSED.labels("origin").inc()
                message = "This Origin may not send events here; the service's ALLOWED_ORIGINS does not list it."
                await _deny(scope, receive, send, error_response(403, ErrorCode.FORBIDDEN_ORIGIN, message))
                return
        tokens = self.tokens.get(kind)
        if tokens is None or not tokens.required:
            await self.app(scope, receive, send)
            return
        presented = presented_token(scope)
        index = tokens.match(presented) if presented else None
        if index is None:
            metrics.CONNECTIONS_REFUSED.labels("unauthorized").inc()
            await _deny(scope, receive, send, _unauthorized(kind, presented is None))
            return
        scope[PRINCIPAL_KEY] = f"{kind.value}#{index}"
        await self.app(scope, receive, send)


def _unauthorized(kind: Kind, missing: bool) -> Response:
    if missing:
        message = (
            f"This endpoint needs {'an' if kind is Kind.INGEST else 'a'} {kind.value} token: "
            "send Authorization: Bearer <token> or ?token=<token>."
        )
        challenge = 'Bearer realm="eventservice"'
    else:
        message = f"The token given is not a valid {kind.value} token for this endpoint."
        challenge = 'Bearer realm="eventservice", error="invalid_token"'
    return error_response(401, ErrorCode.UNAUTHORIZED, message, {"WWW-Authenticate": challenge})


async def _deny(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    """An HTTP error; for a WebSocket, the same as the handshake's answer where the
    server supports denial responses (uvicorn does), else close 1008 before accept."""
    if scope["type"] == "http":
        await response(scope, receive, send)
        return
    await deny_websocket(WebSocket(scope, receive, send), response, bytes(response.body).decode())


def warn_about_open_kinds(ingest_tokens: Sequence[str], read_tokens: Sequence[str]) -> None:
    """A deployment with one token list set leaves the other kind open: say so once."""
    if ingest_tokens and not read_tokens:
        log.warning("READ_TOKENS is empty: /session, /sessions, /database_events, /stats and /metrics are open to anyone")
    elif read_tokens and not ingest_tokens:
        log.warning("INGEST_TOKENS is empty: anyone who reaches /ws can write events")


__all__ = [
    "PRINCIPAL_KEY",
    "AccessControl",
    "Kind",
    "OriginPolicy",
    "TokenSet",
    "classify",
    "normalize_origin",
    "presented_token",
    "warn_about_open_kinds",
]
