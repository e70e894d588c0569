"""GET /database_events: every stored entry as Server-Sent Events, resumable without gaps.

Resume ordering (after Mercure): subscribe to the hub first, which fixes the
position H up to which the hub had fanned out; replay (Last-Event-ID, H] from the
database in pages; then drain the live buffer, which holds exactly the entries
after H. Replay and live never overlap and leave no hole, because H is read and
the subscription made in one synchronous step, and positions are commit-ordered
(see schema/001_init.sql). Replays read through the pool, never the hub's
connection, so one client's replay cannot stall anybody's live stream.

The handler takes the values it uses (StreamOptions), not the settings:
`endpoint(options)` builds it, `routes(handler)` registers it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Concatenate, Final, ParamSpec, TypeVar

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app import metrics
from app.codes import ErrorCode
from app.edge import connlog
from app.errors import error_response
from app.ids import parse_uuid
from app.ingest.validation import ENTRY_TYPES
from app.params import bounded_int
from app.services import Services
from app.store import store
from app.store.db import DatabaseUnavailable
from app.store.store import StreamFilter, StreamRecord
from app.stream import sse_format
from app.stream.hub import Filters, Hub, Subscriber, item_from_row
from app.stream.response import StreamResponse

REPLAY_PAGE = 2_000
MAX_TAIL = 10_000

# How long a resume keeps retrying a replay read the database cannot answer (a
# restart, a cancelled statement, an exhausted pool) before it ends the stream.
REPLAY_RETRY_SECONDS = 5.0
REPLAY_RETRY_PAUSE_SECONDS = 0.25
# A replay page normally takes milliseconds; this only bounds a silent connection.
REPLAY_QUERY_SECONDS = 30.0

log = logging.getLogger("eventservice.stream")
P = ParamSpec("P")
T = TypeVar("T")


class _Unreadable:
    """A Last-Event-ID header that is no position: the client gets a reset, not a 400."""


_UNREADABLE: Final = _Unreadable()
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


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """What every stream uses (the SSE_* settings)."""

    client_buffer: int  # messages buffered per client before it is dropped
    retry_ms: int  # the reconnect delay hinted to EventSource
    ping_seconds: float  # between keep-alive comments
    send_timeout_seconds: float  # a write blocked this long drops the client


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(options: StreamOptions) -> Endpoint:
    """GET /database_events with its options: for the route, and for app/web.py's fast path."""

    async def database_events(request: Request) -> Response:
        return await _database_events(request, options)

    return database_events


async def _database_events(request: Request, options: StreamOptions) -> Response:
    services: Services = request.app.state.services
    filters = _filters(request)
    if isinstance(filters, str):
        return error_response(400, ErrorCode.INVALID_FILTER, filters)

    resume = _resume_position(request)
    if isinstance(resume, Response):
        return resume
    tail = _tail_count(request)
    if tail is None:
        return error_response(400, ErrorCode.INVALID_TAIL, f"tail must be a whole number of entries from 0 to {MAX_TAIL:,}.")

    hub: Hub = services.hub
    subscriber = hub.subscribe(filters, options.client_buffer)
    metrics.SSE_CLIENTS.inc()

    def close() -> None:
        hub.unsubscribe(subscriber)
        metrics.SSE_CLIENTS.dec()

    # The response releases the subscription (close) however the stream ends:
    # HEAD, or a client gone before the first chunk, never starts the events.
    logged = connlog.connection(request.scope)
    return StreamResponse(
        _events(services, subscriber, resume, tail, options.retry_ms),
        wake=subscriber.wake,
        on_close=close,
        ping=options.ping_seconds,
        send_timeout=options.send_timeout_seconds,
        headers={"Cache-Control": "no-store"},
        on_written=logged.wrote if logged is not None else None,
    )


def _resume_position(request: Request) -> int | _Unreadable | Response | None:
    """Where a resuming client left off: None for a fresh client, or the 400 for a bad parameter.

    The header wins: an EventSource opened with ?last_event_id=N sends the newer
    position in the header when it reconnects by itself. The header comes from
    EventSource, and a 400 would stop it for good, so a position we cannot read
    gets a reset (_UNREADABLE); the query parameter is typed by a person: malformed is a 400.
    """
    header = request.headers.get("last-event-id", "").strip()
    if header:
        position = bounded_int(header, 0, _MAX_POSITION)
        return _UNREADABLE if position is None else position
    if "last_event_id" in request.query_params:
        position = bounded_int(request.query_params["last_event_id"], 0, _MAX_POSITION)
        if position is None:
            message = "last_event_id must be a stream position (a decimal integer)."
            return error_response(400, ErrorCode.INVALID_LAST_EVENT_ID, message)
        return position
    return None


async def _events(
    services: Services, subscriber: Subscriber, resume: int | _Unreadable | None, tail: int, retry_ms: int
) -> AsyncIterator[bytes]:
    """The stream: the retry hint, then a resume's replay, a tail or a reset, then live."""
    hub = services.hub
    yield sse_format.retry(retry_ms)
    floor = subscriber.start_position
    if resume is _UNREADABLE:
        metrics.SSE_DROPPED.labels("reset_position").inc()
        yield sse_format.reset(subscriber.start_position, "unknown_position")
    elif isinstance(resume, int):
        outcome = ["failed"]
        async for chunk in _replay(services.pool, hub, subscriber, resume, outcome):
            yield chunk
        if outcome[0] == "failed":
            return  # never live past a range that was not replayed
        if outcome[0] == "done":
            # A client resuming from another process may be ahead of this hub:
            # what it already has must not come again from the live buffer.
            floor = max(floor, resume)
    elif tail:
        latest = await _tail(services.pool, hub, subscriber, tail)
        if latest is None:
            return  # database unavailable: EventSource retries the same URL, tail included
        payload, floor = latest
        if payload:
            yield payload
    async for chunk in _live(hub, subscriber, floor):
        yield chunk


def _only(filters: Filters) -> StreamFilter:
    """A subscriber's filters as the database reads them."""
    return StreamFilter(
        list(filters.session_ids) if filters.session_ids else None,
        list(filters.names) if filters.names else None,
        list(filters.types) if filters.types else None,
    )


async def _replay(pool: asyncpg.Pool, hub: Hub, subscriber: Subscriber, resume: int, outcome: list[str]) -> AsyncIterator[bytes]:
    """Replays (resume, H]; outcome[0] says how it ended: "done", "reset" or "failed".

    "failed" (the database could not be read for REPLAY_RETRY_SECONDS) must end the
    stream: going live would skip what was not replayed. The client reconnects
    with the last id it got, which is still exact.
    """
    upper = subscriber.start_position
    after = hub.base - 1 if resume == 0 else resume
    deadline = time.monotonic() + REPLAY_RETRY_SECONDS
    outcome[0] = "failed"
    bounds = await _read(pool, hub, deadline, store.stream_bounds, REPLAY_QUERY_SECONDS)
    if bounds is None:
        metrics.SSE_DROPPED.labels("replay_failed").inc()
        return
    if after < hub.base - 1 or after > max(bounds.allocated or 0, upper):
        # From another database (positions start at a random base per database)
        # or ahead of this one: nothing to replay honestly.
        metrics.SSE_DROPPED.labels("reset_position").inc()
        outcome[0] = "reset"
        yield sse_format.reset(upper, "unknown_position")
        return
    only = _only(subscriber.filters)
    while after < upper and not subscriber.overflowed:
        rows = await _read(pool, hub, deadline, store.stream_replay, after, upper, only, REPLAY_PAGE, REPLAY_QUERY_SECONDS)
        # Retention moves removed_through before it detaches a piece, so a page read
        # before this check that missed removed entries shows here (schema/007).
        removed = await _read(pool, hub, deadline, store.stream_removed_through, REPLAY_QUERY_SECONDS)
        if rows is None or removed is None:
            metrics.SSE_DROPPED.labels("replay_failed").inc()
            return  # ends the stream: EventSource reconnects with its last id
        if after < removed:
            # Entries after the client's position were removed by retention.
            metrics.SSE_DROPPED.labels("reset_removed").inc()
            outcome[0] = "reset"
            yield sse_format.reset(upper, "removed")
            return
        # Each page that arrives earns the next one a fresh retry budget.
        deadline = time.monotonic() + REPLAY_RETRY_SECONDS
        if not rows:
            break
        yield _from_database(rows)
        after = rows[-1].position
        if len(rows) < REPLAY_PAGE:
            break
    outcome[0] = "done"


async def _read(
    pool: asyncpg.Pool,
    hub: Hub,
    deadline: float,
    operation: Callable[Concatenate[asyncpg.Connection, P], Awaitable[T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T | None:
    """One replay read, retried while the database is unavailable until deadline; None then.

    Waiting for a replay slot is queueing, not failure, and has no deadline: the
    slots (fewer than the pool's connections) keep resuming crowds from starving
    ingest. Waiting for a pool connection and the database's answers does.
    """
    while True:
        try:
            async with hub.replay_slots, store.connection(pool, timeout=max(deadline - time.monotonic(), 0.1)) as conn:
                return await operation(conn, *args, **kwargs)
        except DatabaseUnavailable:
            pass  # a cancelled statement (57014), a restart, an exhausted pool: retry
        except Exception:
            # Anything else is a bug and ends the stream the same way, loudly.
            log.exception("replay read failed")
            return None
        if time.monotonic() + REPLAY_RETRY_PAUSE_SECONDS >= deadline:
            return None
        await asyncio.sleep(REPLAY_RETRY_PAUSE_SECONDS)


def _tail_count(request: Request) -> int | None:
    """?tail=N, 0 when absent; None for a malformed value (checked even when a resume wins)."""
    raw = request.query_params.get("tail")
    return 0 if raw is None else bounded_int(raw, 0, MAX_TAIL)


async def _tail(pool: asyncpg.Pool, hub: Hub, subscriber: Subscriber, count: int) -> tuple[bytes, int] | None:
    """The last `count` matching entries, oldest first, and the position they end at.

    They are read up to the head committed when the read starts, which may be past
    the subscriber's start position H (the hub has not fanned out a fresh commit
    yet): the live stream then resumes after that head, as a resume replay does
    after a position ahead of the hub. Positions are commit-ordered, so whatever
    commits later lies above it. None when the database is unavailable.
    """
    try:
        async with hub.replay_slots, store.snapshot(pool) as conn:
            head = await store.stream_head(conn)
            upper = max(subscriber.start_position, head or 0)
            rows = await store.stream_tail(conn, upper, _only(subscriber.filters), count)
    except DatabaseUnavailable:
        return None
    return _from_database(rows), upper


def _from_database(rows: Sequence[StreamRecord]) -> bytes:
    """Rows a client reads from the database (a replay page, a tail), counted and framed in one write."""
    metrics.REPLAY_ROWS.inc(len(rows))
    metrics.SSE_MESSAGES.inc(len(rows))
    return b"".join(item_from_row(row).payload for row in rows)


async def _live(hub: Hub, subscriber: Subscriber, floor: int) -> AsyncIterator[bytes]:
    while True:
        await subscriber.wake.wait()
        if subscriber.overflowed:
            yield sse_format.reset(hub.position, subscriber.reset_reason)
            return
        items = subscriber.drain()
        if items and items[0].position <= floor:
            items = [item for item in items if item.position > floor]
        # Everything queued for this client goes out in one write. A wake-up with
        # nothing queued (a ping due, the client gone, shutdown) yields b"" so the
        # response can act (app/stream/response.py).
        yield items[0].payload if len(items) == 1 else b"".join([item.payload for item in items])


def routes(database_events: Endpoint) -> list[BaseRoute]:
    return [Route("/database_events", database_events, methods=["GET"])]
