"""The per-process LISTEN hub: one connection, one read per wake-up, bounded fan-out.

Life cycle (after procrastinate's listener): connect, LISTEN, then forever read
every row after the last position fanned out, and wait for a notification or a
poll timeout. A lost connection is re-established with backoff and the loop
simply reads on from the last position, so a lost notification or connection
costs latency, never data. The NOTIFY payload is only a wake-up hint.

A connection can also die silently (a network black hole: no error, no packets).
Every hub query has a timeout, the socket has TCP keepalives, and an idle poll
doubles as a liveness probe, so such a connection is replaced within
poll + timeout seconds. The idle probe and every reconnect also check the
stream's base and head: a restore from an older backup (base changed, or the
head below what was already fanned out) resets every client rather than
leaving them silent below positions that will be handed out again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Generator
from dataclasses import dataclass
from typing import Any, cast

import asyncpg

from app import metrics
from app.background import Background, Loop
from app.store import db, queries, store
from app.store.db import StoreError
from app.stream import sse_format

log = logging.getLogger("eventservice.hub")

PAGE_ROWS = 5_000
# Upper bound of the pause after a fan-out (see Hub._pace): the latency a burst may add.
MAX_PACE_SECONDS = 0.02
# How operators (and the tests) find the hub's connection in pg_stat_activity.
HUB_APPLICATION_NAME = "eventservice-hub"


@dataclass(frozen=True, slots=True)
class Item:
    """One stream entry, encoded once and shared by every subscriber's buffer."""

    position: int
    kind: str
    session_id: str
    name: str | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class Filters:
    session_ids: frozenset[str] | None = None
    names: frozenset[str] | None = None
    types: frozenset[str] | None = None

    @property
    def empty(self) -> bool:
        return self.session_ids is None and self.names is None and self.types is None

    def matches(self, item: Item) -> bool:
        return (
            (self.session_ids is None or item.session_id in self.session_ids)
            and (self.names is None or item.name in self.names)
            and (self.types is None or item.kind in self.types)
        )


class _Ready:
    """Awaitable that is already done: what Wake.wait returns when the flag is set."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


_READY = _Ready()


class Wake:
    """A flag one task waits on; lighter than asyncio.Event for 10,000 idle clients.

    asyncio.Event keeps a deque of waiters (~0.5 KiB even when empty) per client
    and a coroutine frame per wait; a subscriber has exactly one waiter, its
    stream, so one future slot is enough, awaited directly.
    """

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def wait(self) -> Awaitable[None]:
        if self._flag:
            return _READY
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter


class Subscriber:
    """A client's bounded buffer. Overflow drops the client (it resumes by id)."""

    __slots__ = ("buffer", "filters", "limit", "overflowed", "reset_reason", "start_position", "wake")

    def __init__(self, filters: Filters, limit: int, start_position: int) -> None:
        self.filters = filters
        self.limit = limit
        # A list, swapped out whole by drain(): a deque costs ~0.5 KiB per idle client.
        self.buffer: list[Item] = []
        self.wake = Wake()
        self.overflowed = False
        self.reset_reason = "slow_client"  # what the reset says once end() set overflowed
        self.start_position = start_position

    def offer(self, items: list[Item]) -> int:
        """Append what matches; how many, or -1 when the buffer overflowed (caller drops us)."""
        buffer = self.buffer
        before = len(buffer)
        if self.filters.empty:
            buffer += items
        else:
            match = self.filters.matches
            buffer += [item for item in items if match(item)]
        if len(buffer) > self.limit:
            self.end("slow_client")
            return -1
        if buffer:
            self.wake.set()
        return len(buffer) - before

    def end(self, reason: str) -> None:
        """The stream gets a reset saying why and ends; what was buffered is dropped (docs/stream.md, a slow client)."""
        self.reset_reason = reason
        self.overflowed = True
        self.buffer = []
        self.wake.set()

    def drain(self) -> list[Item]:
        items, self.buffer = self.buffer, []
        self.wake.clear()
        return items


def item_from_row(row: asyncpg.Record | tuple[Any, ...]) -> Item:
    return Item(row[0], row[1], row[2], row[4], sse_format.message(cast(sse_format.StreamRow, tuple(row))))


class Hub(Background):
    """`async with` it: on entry the LISTEN connection is up; on exit every subscriber is woken to end its stream."""

    def __init__(self, database_url: str, poll_seconds: float, replay_slots: int, timeout: float = 3.0) -> None:
        super().__init__()
        self._database_url = database_url
        self._poll_seconds = poll_seconds
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None
        self._subscribers: set[Subscriber] = set()
        self._notified_at: float | None = None
        self._notified_top = 0  # highest position any NOTIFY payload announced
        # Resuming clients read through the shared pool; at most this many at once.
        self.replay_slots = asyncio.Semaphore(max(1, replay_slots))
        self.position = 0  # highest position fanned out
        self.base = 1

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def loops(self) -> dict[str, Loop]:
        return {"hub": self._run}

    async def _open(self) -> None:
        await self._connect()
        assert self._conn is not None
        bounds = await store.stream_bounds(self._conn, self._timeout)
        assert bounds is not None and bounds.base is not None  # schema/001 writes stream_meta's one row
        self.base = bounds.base
        self.position = bounds.head if bounds.head is not None else self.base - 1

    async def _close(self) -> None:
        await self._close_connection()
        for sub in list(self._subscribers):
            sub.wake.set()

    async def _recover(self, name: str) -> None:
        await self._close_connection()  # the restarted loop reconnects and catches up from self.position

    def subscribe(self, filters: Filters, limit: int) -> Subscriber:
        # Synchronous on purpose: no await between reading the position and joining
        # the set, so the subscriber receives exactly the items after start_position.
        sub = Subscriber(filters, limit, self.position)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    async def _connect(self) -> None:
        conn = await db.connect(
            self._database_url,
            timeout=max(self._timeout, 3.0),
            command_timeout=self._timeout,
            server_settings={"application_name": HUB_APPLICATION_NAME},
        )
        try:
            async with asyncio.timeout(self._timeout):
                await conn.add_listener(queries.LISTEN_CHANNEL, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=2)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if isinstance(payload, str) and payload.isascii() and payload.isdigit():
            self._notified_top = max(self._notified_top, int(payload))
        if self._notified_at is None:
            self._notified_at = time.perf_counter()
        self._wake.set()

    def _on_terminated(self, _conn: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            try:
                if self._conn is None or self._conn.is_closed():
                    await self._close_connection()
                    await self._connect()
                    metrics.LISTEN_RECONNECTS.inc()
                    log.info("LISTEN connection re-established; catching up from %d", self.position)
                    await self._check_bounds()
                await self._catch_up()
                backoff = 0.05
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)
                except TimeoutError:
                    # Idle: a liveness probe (it times out on a silent connection)
                    # that also notices a restored database.
                    await self._check_bounds()
            except (StoreError, TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("LISTEN connection lost (%s); retrying in %.2fs", exc, backoff)
                await self._close_connection()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            # Anything else is a bug: app/background.py logs it and restarts this loop
            # (after _recover), so it cannot silently stall every stream.

    async def _catch_up(self) -> None:
        assert self._conn is not None
        if not self._subscribers and await self._skipped_ahead():
            return
        while True:
            # Cleared before the read: a notification arriving during it sets the
            # event again and costs one more (possibly empty) read, never a miss.
            self._wake.clear()
            notified_at, self._notified_at = self._notified_at, None
            rows = await store.stream_after(self._conn, self.position, PAGE_ROWS, self._timeout)
            if rows:
                self._fan_out([item_from_row(row) for row in rows])
                if notified_at is not None:
                    metrics.HUB_LAG.observe(time.perf_counter() - notified_at)
                await self._pace()
            if len(rows) < PAGE_ROWS:
                return

    async def _pace(self) -> None:
        """After a fan-out, pause as long as its writes took (at most MAX_PACE_SECONDS).

        The streams' writes run on this loop after _fan_out woke them, and so do the
        ingest and its ACKs. In a burst of small commits each commit used to cost a
        whole round of writes to every client (~9 µs each, ~9 ms at 1,000 clients),
        so the rounds starved the commits that fed them (measured with
        `python -m bench fanout --burst 100`: 100 one-event frames took ~30 ms to
        commit with 1 client, ~300 ms with 1,000). Pausing as long as the round
        took caps the fan-out at about half the loop; the rows committed meanwhile
        go out together in the next round. With a few clients a round takes
        microseconds, and a quiet stream pays nothing (the pause follows a fan-out).
        """
        started = time.perf_counter()
        await asyncio.sleep(0)  # queued behind every writer the fan-out woke: they write first
        spent = time.perf_counter() - started
        if spent > 0.001:
            await asyncio.sleep(min(spent, MAX_PACE_SECONDS))

    async def _skipped_ahead(self) -> bool:
        """With nobody listening, only the position must stay current: no row is read.

        Positions are commit-ordered, so a NOTIFY's position means every row up to it
        is committed. Without a fresh one (poll timeout, reconnect) one index probe
        finds the head. Measured: reading and encoding every ingested row for no one
        was ~30% of the server's CPU under ingest load. False when a client
        subscribed meanwhile: jumping ahead then would skip rows it must receive.
        """
        assert self._conn is not None
        self._wake.clear()
        self._notified_at = None
        if self._notified_top > self.position:
            self.position = self._notified_top
            return True
        head = await store.stream_head(self._conn, self._timeout)
        if self._subscribers:
            return False
        if head is not None and head > self.position:
            self.position = head
        return True

    async def _check_bounds(self) -> None:
        """Reset every client if the stream's positions went backwards or its base changed.

        Positions only grow (schema/003 refuses UPDATE, DELETE and TRUNCATE), so this
        means the database was restored from an older backup or rebuilt: positions up
        to ours may be handed out again, and a client waiting above them would never
        hear of them. A reset makes each client refetch and resume from the new head.
        """
        assert self._conn is not None
        bounds = await store.stream_bounds(self._conn, self._timeout)
        base = bounds.base if bounds is not None else None
        if bounds is None or base is None:
            return  # stream_meta emptied: nothing sensible to compare with
        head = bounds.head if bounds.head is not None else base - 1
        if base == self.base and head >= self.position:
            return
        log.warning(
            "stream positions went backwards (base %d -> %d, position %d -> head %d): database restored? resetting %d clients",
            self.base,
            base,
            self.position,
            head,
            len(self._subscribers),
        )
        self.base = base
        self.position = head
        self._notified_top = 0
        for sub in self._subscribers:
            sub.end("database_reset")
            metrics.SSE_DROPPED.labels("database_reset").inc()
        self._subscribers.clear()

    def _fan_out(self, items: list[Item]) -> None:
        self.position = items[-1].position
        queued = 0
        dropped = []
        for sub in self._subscribers:
            count = sub.offer(items)
            if count < 0:
                dropped.append(sub)
            else:
                queued += count
        # One counter update per fan-out, not per client: the lock inside
        # prometheus_client's counter showed up in the fan-out profile.
        metrics.SSE_MESSAGES.inc(queued)
        for sub in dropped:
            self._subscribers.discard(sub)
            metrics.SSE_DROPPED.labels("slow_client").inc()
