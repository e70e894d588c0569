"""GET /database_events: every stored entry as Server-Sent Events, resumable without gaps.

Resume ordering (after Mercure): subscribe to the hub first, which fixes the
position H up to which the hub had fanned out; replay (Last-Event-ID, H] from the
database in pages; then drain the live buffer, which holds exactly the entries
after H. Replay and live never overlap and leave no hole, because H is read and
the subscription made in one synchronous step, and positions are commit-ordered
(see schema/001_init.sql). Replays read through the pool, never the hub's
connection, so one client's replay cannot stall anybody's live stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import asyncpg
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from app import metrics, queries, sse_format
from app.errors import error_response
from app.hub import Filters, Hub, Subscriber, item_from_row
from app.ingest import ENTRY_TYPES, parse_uuid
from app.params import bounded_int
from app.services import Services

REPLAY_PAGE = 2_000
_MAX_POSITION = 2**63 - 1


class _Stream(EventSourceResponse):
    """sse-starlette's response with a cheaper way to drop a client that stopped reading.

    Its send_timeout wraps every send in an anyio cancel scope, which profiling
    showed at ~15% of the CPU of a 1,000-client fan-out. Instead each write is
    timed by two attribute stores (see _timed) and one watchdog per stream checks
    them a few times per timeout; a write blocked longer than the timeout ends the
    response through the task group, like send_timeout did, and it is counted,
    not logged as a crash.
    """

    def __init__(self, content: AsyncIterator[bytes], progress: _Progress, timeout: float, **kwargs: object) -> None:
        self._progress = progress
        self._stall_timeout = timeout
        super().__init__(content, data_sender_callable=self._watch, **kwargs)  # type: ignore[arg-type]

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        await send(message)

    async def _watch(self) -> None:
        while True:
            await anyio.sleep(self._stall_timeout / 4)
            since = self._progress.writing_since
            if since is not None and time.monotonic() - since > self._stall_timeout:
                raise SendTimeoutError()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            metrics.SSE_DROPPED.labels("send_timeout").inc()


class _Progress:
    __slots__ = ("writing_since",)

    def __init__(self) -> None:
        self.writing_since: float | None = None


async def _timed(chunks: AsyncIterator[bytes], progress: _Progress) -> AsyncIterator[bytes]:
    """Marks when each chunk is handed to the server until the server asks for the next."""
    async for chunk in chunks:
        progress.writing_since = time.monotonic()
        yield chunk
        progress.writing_since = None


def _filters(request: Request) -> Filters | str:
    params = request.query_params
    sessions = params.getlist("session_id")
    parsed = [parse_uuid(s) for s in sessions]
    if any(p is None for p in parsed):
        return "session_id must be a UUID."
    types = params.getlist("type")
    if any(t not in ENTRY_TYPES for t in types):
        return "type must be SESSION_START, EVENT or SESSION_END."
    names = params.getlist("name")
    return Filters(
        session_ids=frozenset(p for p in parsed if p is not None) or None,
        names=frozenset(names) or None,
        types=frozenset(types) or None,
    )


async def database_events(request: Request) -> Response:
    services: Services = request.app.state.services
    filters = _filters(request)
    if isinstance(filters, str):
        return error_response(400, "invalid_filter", filters)

    # The header wins: an EventSource opened with ?last_event_id=N sends the newer
    # position in the header when it reconnects by itself. The header comes from
    # EventSource, and a 400 would stop it for good, so a position we cannot read
    # gets a reset; the query parameter is typed by a person: malformed is a 400.
    resume: int | None = None
    unreadable = False
    header = request.headers.get("last-event-id", "").strip()
    if header:
        resume = bounded_int(header, 0, _MAX_POSITION)
        unreadable = resume is None
    elif "last_event_id" in request.query_params:
        resume = bounded_int(request.query_params["last_event_id"], 0, _MAX_POSITION)
        if resume is None:
            return error_response(400, "invalid_last_event_id", "last_event_id must be a stream position (a decimal integer).")

    hub: Hub = services.hub
    settings = services.settings
    subscriber = hub.subscribe(filters, settings.sse_client_buffer)
    metrics.SSE_CLIENTS.inc()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield sse_format.retry(settings.sse_retry_ms)
            if unreadable:
                yield sse_format.reset(subscriber.start_position, "unknown_position")
            elif resume is not None:
                async for chunk in _replay(services.pool, hub, subscriber, resume):
                    yield chunk
            async for chunk in _live(hub, subscriber):
                yield chunk
        finally:
            hub.unsubscribe(subscriber)
            metrics.SSE_CLIENTS.dec()

    progress = _Progress()
    return _Stream(
        _timed(events(), progress),
        progress,
        settings.sse_send_timeout_seconds,
        ping=settings.sse_ping_seconds,
        headers={"Cache-Control": "no-store"},
    )


async def _replay(pool: asyncpg.Pool, hub: Hub, subscriber: Subscriber, resume: int) -> AsyncIterator[bytes]:
    upper = subscriber.start_position
    after = hub.base - 1 if resume == 0 else resume
    async with pool.acquire(timeout=10) as conn:
        bounds = await conn.fetchrow(queries.STREAM_BOUNDS)
    if after < hub.base - 1 or after > max(bounds["allocated"] or 0, upper):
        # From another database (positions start at a random base per database)
        # or ahead of this one: nothing to replay honestly.
        metrics.SSE_DROPPED.labels("reset_position").inc()
        yield sse_format.reset(upper, "unknown_position")
        return
    f = subscriber.filters
    args = (
        list(f.session_ids) if f.session_ids else None,
        list(f.names) if f.names else None,
        list(f.types) if f.types else None,
    )
    while after < upper:
        async with pool.acquire(timeout=10) as conn:
            rows = await conn.fetch(queries.STREAM_REPLAY, after, upper, *args, REPLAY_PAGE)
        if not rows:
            break
        metrics.REPLAY_ROWS.inc(len(rows))
        metrics.SSE_MESSAGES.inc(len(rows))
        yield b"".join(item_from_row(row).payload for row in rows)
        after = rows[-1]["position"]
        if len(rows) < REPLAY_PAGE:
            break


async def _live(hub: Hub, subscriber: Subscriber) -> AsyncIterator[bytes]:
    while True:
        await subscriber.wake.wait()
        if subscriber.overflowed:
            yield sse_format.reset(hub.position, "slow_client")
            return
        items = subscriber.drain()
        if items:
            # Everything queued for this client goes out in one write.
            yield b"".join(item.payload for item in items)


routes = [Route("/database_events", database_events, methods=["GET"])]
