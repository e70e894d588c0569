"""Bounds on long-lived connections: a cap and an idle timeout.

Why here, as one ASGI middleware around the routes, and not in each route: the
cap must count WebSockets and SSE streams together (they compete for the same
file descriptors and memory), and a refusal must cost nothing (no database, no
hub subscription).

- Cap: at most MAX_CONNECTIONS concurrent `/ws` + `/database_events` + `POST /batch`
  requests per process. A batch request counts while its body is read and its
  batch committed: a body can take up to HANDSHAKE_TIMEOUT_SECONDS to arrive and
  holds up to MAX_FRAME_BYTES, so a flood of slow bodies is bounded like a flood of
  idle sockets. The next WebSocket is accepted and closed at once with 1013 "try
  again later" and a reason (a browser's WebSocket API cannot see an HTTP status,
  but it does see a close code); the next SSE or batch request gets a 503 JSON
  error with Retry-After (nothing of the request was read: a client resends after
  the delay). Open connections are never touched.
- Idle: a WebSocket that sends no frame for IDLE_TIMEOUT_SECONDS is closed with
  1001 and the reason "idle timeout". The route sees the end as a disconnect, so
  it stops reading, still sends the answers of frames it already received, and
  then closes; this middleware turns that close into 1001 with the reason.
  Protocol pings do not count as frames. SSE streams are not idle-limited:
  their keep-alive comments are the traffic.

Both are per process: N workers or hosts allow N times the cap. The ingest rate
limits are per frame, so the /ws route checks them (app/ingest/rate.py).
Nothing here knows the flows: the middleware takes its values as arguments and
refuses with a Response, like Starlette's TrustedHostMiddleware.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from app import metrics
from app.codes import ErrorCode
from app.errors import error_response

log = logging.getLogger("eventservice.limits")

COUNTED_PATHS = frozenset({"/ws", "/database_events", "/batch"})
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_GOING_AWAY = 1001
MAX_CONNECTIONS = 20_000  # per process, /ws, /database_events and POST /batch together
IDLE_TIMEOUT_SECONDS = 300.0  # without a frame; 0: never


class ConnectionLimits:
    """The ASGI middleware: cap on /ws + /database_events + /batch, idle timeout for /ws."""

    def __init__(
        self,
        app: ASGIApp,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout_seconds: float = IDLE_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout_seconds
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] not in COUNTED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_connections:
            metrics.CONNECTIONS_REFUSED.labels("capacity").inc()
            await self._refuse(scope, receive, send)
            return
        self.active += 1
        try:
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            self.active -= 1

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = f"The server is at its connection limit ({self.max_connections}); try again later."
        if scope["type"] == "http":
            response = error_response(503, ErrorCode.OVER_CAPACITY, reason, {"Retry-After": "5"})
            await response(scope, receive, send)
            return
        websocket = WebSocket(scope, receive, send)
        await websocket.accept()
        await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason="over capacity: too many connections, try again later")

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        idle = self.idle_timeout
        reason = f"idle timeout: no frame in {idle:g} s"
        accepted = False
        timed_out = False
        closed = False

        async def receive_within() -> Message:
            nonlocal timed_out
            if timed_out:
                return {"type": "websocket.disconnect", "code": CLOSE_GOING_AWAY, "reason": reason}
            if not accepted or idle <= 0:
                return await receive()
            try:
                async with asyncio.timeout(idle):
                    return await receive()
            except TimeoutError:
                timed_out = True
                metrics.CONNECTIONS_TIMED_OUT.labels("idle").inc()
                return {"type": "websocket.disconnect", "code": CLOSE_GOING_AWAY, "reason": reason}

        async def send_closing_idle(message: Message) -> None:
            nonlocal accepted, closed
            if message["type"] == "websocket.accept":
                accepted = True
            elif message["type"] == "websocket.close":
                closed = True
                if timed_out:
                    message = {"type": "websocket.close", "code": CLOSE_GOING_AWAY, "reason": reason}
            await send(message)

        await self.app(scope, receive_within, send_closing_idle)
        if timed_out and not closed:
            # The route ended without closing: close for it, with the reason.
            try:
                await send({"type": "websocket.close", "code": CLOSE_GOING_AWAY, "reason": reason})
            except (OSError, RuntimeError) as exc:
                log.debug("idle close after the route ended failed: %r", exc)


__all__ = ["ConnectionLimits"]
