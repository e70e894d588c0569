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

from collections.abc import AsyncIterator

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import metrics, queries, sse_format
from app.db import is_unavailable
from app.errors import error_response
from app.hub import Filters, Hub, Subscriber, item_from_row
from app.ingest import ENTRY_TYPES, parse_uuid
from app.params import bounded_int
from app.services import Services
from app.sse_response import StreamResponse

REPLAY_PAGE = 2_000
_MAX_POSITION = 2**63 - 1


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

    def close() -> None:
        hub.unsubscribe(subscriber)
        metrics.SSE_CLIENTS.dec()

    async def events() -> AsyncIterator[bytes]:
        yield sse_format.retry(settings.sse_retry_ms)
        floor = subscriber.start_position
        if unreadable:
            metrics.SSE_DROPPED.labels("reset_position").inc()
            yield sse_format.reset(subscriber.start_position, "unknown_position")
        elif resume is not None:
            honoured = [False]
            async for chunk in _replay(services.pool, hub, subscriber, resume, honoured):
                yield chunk
            if honoured[0]:
                # A client resuming from another process may be ahead of this hub:
                # what it already has must not come again from the live buffer.
                floor = max(floor, resume)
        async for chunk in _live(hub, subscriber, floor):
            yield chunk

    # The response releases the subscription (close) however the stream ends:
    # HEAD, or a client gone before the first chunk, never starts events().
    return StreamResponse(
        events(),
        wake=subscriber.wake,
        on_close=close,
        ping=settings.sse_ping_seconds,
        send_timeout=settings.sse_send_timeout_seconds,
        headers={"Cache-Control": "no-store"},
    )


async def _replay(
    pool: asyncpg.Pool, hub: Hub, subscriber: Subscriber, resume: int, honoured: list[bool]
) -> AsyncIterator[bytes]:
    """Replays (resume, H]; sets honoured[0] unless the position got a reset instead."""
    upper = subscriber.start_position
    after = hub.base - 1 if resume == 0 else resume
    try:
        async with hub.replay_slots, pool.acquire(timeout=10) as conn:
            bounds = await conn.fetchrow(queries.STREAM_BOUNDS)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        return
    if after < hub.base - 1 or after > max(bounds["allocated"] or 0, upper):
        # From another database (positions start at a random base per database)
        # or ahead of this one: nothing to replay honestly.
        metrics.SSE_DROPPED.labels("reset_position").inc()
        yield sse_format.reset(upper, "unknown_position")
        return
    honoured[0] = True
    f = subscriber.filters
    args = (
        list(f.session_ids) if f.session_ids else None,
        list(f.names) if f.names else None,
        list(f.types) if f.types else None,
    )
    while after < upper and not subscriber.overflowed:
        try:
            # Bounded below the pool size, so resuming crowds cannot starve ingest.
            async with hub.replay_slots, pool.acquire(timeout=10) as conn:
                rows = await conn.fetch(queries.STREAM_REPLAY, after, upper, *args, REPLAY_PAGE)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            return  # ends the stream: EventSource reconnects with its last id
        if not rows:
            break
        metrics.REPLAY_ROWS.inc(len(rows))
        metrics.SSE_MESSAGES.inc(len(rows))
        yield b"".join(item_from_row(row).payload for row in rows)
        after = rows[-1]["position"]
        if len(rows) < REPLAY_PAGE:
            break


async def _live(hub: Hub, subscriber: Subscriber, floor: int) -> AsyncIterator[bytes]:
    while True:
        await subscriber.wake.wait()
        if subscriber.overflowed:
            yield sse_format.reset(hub.position, "slow_client")
            return
        items = subscriber.drain()
        if items and items[0].position <= floor:
            items = [item for item in items if item.position > floor]
        # Everything queued for this client goes out in one write. A wake-up with
        # nothing queued (a ping due, the client gone, shutdown) yields b"" so the
        # response can act (app/sse_response.py).
        yield items[0].payload if len(items) == 1 else b"".join([item.payload for item in items])


routes = [Route("/database_events", database_events, methods=["GET"])]
