"""Bounds on long-lived connections: a cap, an idle timeout, and ingest rate limits.

Why here, as one ASGI middleware around the routes, and not in each route: the
cap must count WebSockets and SSE streams together (they compete for the same
file descriptors and memory), and a refusal must cost nothing (no database, no
hub subscription).

- Cap: at most MAX_CONNECTIONS concurrent `/ws` + `/database_events` per process.
  The next WebSocket is accepted and closed at once with 1013 "try again later"
  and a reason (a browser's WebSocket API cannot see an HTTP status, but it does
  see a close code); the next SSE request gets a 503 JSON error with Retry-After.
  Open connections are never touched.
- Idle: a WebSocket that sends no frame for IDLE_TIMEOUT_SECONDS is closed with
  1001 and the reason "idle timeout". The route sees the end as a disconnect, so
  it stops reading, still sends the answers of frames it already received, and
  then closes; this middleware turns that close into 1001 with the reason.
  Protocol pings do not count as frames. SSE streams are not idle-limited:
  their keep-alive comments are the traffic.
- Rate: token buckets on batches (frames), one per connection
  (INGEST_RATE_PER_CONNECTION / _BURST_) and one per ingest token shared by all
  its connections in this process (INGEST_RATE_PER_TOKEN / _BURST_; only when
  INGEST_TOKENS is set). A frame over either limit is not parsed or stored: it
  gets an ERROR `rate_limited` with `retry_after_ms`, in order like every other
  answer, and the connection stays open. Off (0) by default.

All of it is per process: N workers or hosts allow N times the cap and rates.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from app import metrics
from app.codes import ErrorCode
from app.config import Settings
from app.edge.auth import PRINCIPAL_KEY
from app.errors import error_response
from app.ingest.validation import Rejection

log = logging.getLogger("eventservice.limits")

RATE_KEY = "eventservice.rate"
STREAM_PATHS = frozenset({"/ws", "/database_events"})
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_GOING_AWAY = 1001


class TokenBucket:
    """`burst` batches at once, refilled at `rate` per second."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()

    def wait_ms(self, now: float) -> int:
        """0 when a batch may go now, else milliseconds until it may."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            return 0
        return max(1, math.ceil((1 - self.tokens) / self.rate * 1000))

    def take(self) -> None:
        self.tokens -= 1


class ConnectionRate:
    """The buckets one WebSocket draws from: its own and its token's."""

    __slots__ = ("buckets",)

    def __init__(self, buckets: list[TokenBucket]) -> None:
        self.buckets = buckets

    def admit(self) -> int:
        """0: go (one batch taken from every bucket); else the retry hint in ms."""
        now = time.monotonic()
        wait = max(bucket.wait_ms(now) for bucket in self.buckets)
        if wait == 0:
            for bucket in self.buckets:
                bucket.take()
        return wait


class IngestRateLimiter:
    """Creates each connection's buckets; holds the per-token ones (one per configured token)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._per_token: dict[str, TokenBucket] = {}

    def for_connection(self, principal: str | None) -> ConnectionRate | None:
        s = self._settings
        buckets: list[TokenBucket] = []
        if s.ingest_rate_per_connection > 0:
            buckets.append(TokenBucket(s.ingest_rate_per_connection, s.ingest_burst_per_connection))
        if s.ingest_rate_per_token > 0 and principal is not None:
            bucket = self._per_token.get(principal)
            if bucket is None:
                # Keys are "ingest#<index>": bounded by the number of configured tokens.
                bucket = self._per_token[principal] = TokenBucket(s.ingest_rate_per_token, s.ingest_burst_per_token)
            buckets.append(bucket)
        return ConnectionRate(buckets) if buckets else None


@dataclass(slots=True)
class RateLimited(Rejection):
    """A frame refused by a rate limit; its ERROR carries retry_after_ms."""

    retry_after_ms: int = 0


def admit_batch(scope: Scope, number: int) -> RateLimited | None:
    """For the /ws reader, before parsing a frame: None to go on, or the rejection to answer."""
    rate: ConnectionRate | None = scope.get(RATE_KEY)
    if rate is None:
        return None
    wait = rate.admit()
    if wait == 0:
        return None
    message = f"Too many batches: this connection or its token is over its rate limit; send again in {wait} ms."
    return RateLimited(number, None, ErrorCode.RATE_LIMITED, message, retry_after_ms=wait)


class ConnectionLimits:
    """The ASGI middleware: cap on /ws + /database_events, idle timeout and rate buckets for /ws."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_connections = settings.max_connections
        self.idle_timeout = settings.idle_timeout_seconds
        self.rates = IngestRateLimiter(settings)
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] not in STREAM_PATHS:
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_connections:
            metrics.CONNECTIONS_REFUSED.labels("capacity").inc()
            await self._refuse(scope, receive, send)
            return
        self.active += 1
        try:
            if scope["type"] == "websocket":
                scope[RATE_KEY] = self.rates.for_connection(scope.get(PRINCIPAL_KEY))
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


__all__ = [
    "RATE_KEY",
    "ConnectionLimits",
    "ConnectionRate",
    "IngestRateLimiter",
    "RateLimited",
    "TokenBucket",
    "admit_batch",
]
