"""Every database operation the service runs, named and typed (pgqueuer's `Queries`,
procrastinate's `JobManager`): callers never see SQL text, `$n` order or row layout.

Each operation runs inside `db.wrap_exceptions`, so a caller sees `DatabaseUnavailable`
or `DataRefused` (the driver's error in `__cause__`) and nothing else from the driver.
Rows come back as NamedTuples, except on the hot paths (stream rows fanned out to
every client, session-tree pages), where asyncpg builds a Record subclass itself
(`record_class=`): named fields at no cost per row, read by index where it counts.
The SQL is in app/store/queries.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import NamedTuple, ParamSpec, TypeVar, cast

import asyncpg

from app.store import queries
from app.store.db import wrap_exceptions

P = ParamSpec("P")
T = TypeVar("T")

# A stats range as half-open [lo, hi) pairs, (0, 0) when empty (app/reads/stats.py
# split_range): for EVENTs, whole hours, whole minutes at the head and at the tail,
# raw minutes at the head and at the tail, then the fold's watermark (stats_watermark);
# for sessions, whole minutes and raw edges.
EventBounds = tuple[int, int, int, int, int, int, int, int, int, int, int]
SessionBounds = tuple[int, int, int, int, int, int]


def _translated(operation: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(operation)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with wrap_exceptions():
            return await operation(*args, **kwargs)

    return wrapper


# --- connections ------------------------------------------------------------------


@asynccontextmanager
async def connection(pool: asyncpg.Pool, timeout: float | None = 10.0) -> AsyncIterator[asyncpg.Connection]:
    """A pool connection; waiting for it, and everything done with it, translated."""
    with wrap_exceptions():
        async with pool.acquire(timeout=timeout) as conn:
            yield cast(asyncpg.Connection, conn)  # the pool's proxy has a Connection's methods


@asynccontextmanager
async def snapshot(pool: asyncpg.Pool, timeout: float = 10.0) -> AsyncIterator[asyncpg.Connection]:
    """A read-only REPEATABLE READ transaction: several reads that agree with each other."""
    async with connection(pool, timeout) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        yield conn


@_translated
async def ping(pool: asyncpg.Pool, seconds: float) -> None:
    """One round trip through the pool within `seconds` (readiness)."""
    async with asyncio.timeout(seconds), pool.acquire() as conn:
        await conn.fetchval(queries.PING)


# --- rows -------------------------------------------------------------------------


class StreamRecord(asyncpg.Record):
    """A stream entry: (position, type, session_id, ts, name, data), in that order."""

    @property
    def position(self) -> int:
        return cast(int, self[0])


class TreeRecord(asyncpg.Record):
    """(start_ms, end_ms, event_count, position, ts, name, data): the session's figures on
    every row, then one EVENT, or position NULL for a session with none left to page."""

    @property
    def version(self) -> tuple[int | None, int | None, int]:
        return (self[0], self[1], self[2])

    @property
    def start_ms(self) -> int | None:
        return cast("int | None", self[0])

    @property
    def end_ms(self) -> int | None:
        return cast("int | None", self[1])

    @property
    def position(self) -> int | None:
        return cast("int | None", self[3])

    @property
    def ts(self) -> int:
        return cast(int, self[4])


class StreamBounds(NamedTuple):
    base: int | None  # the first position this database hands out (random per database)
    head: int | None  # the highest committed position; None when empty
    allocated: int | None  # the highest position handed out, committed or not


class SessionVersion(NamedTuple):
    start_ms: int | None
    end_ms: int | None
    event_count: int


class SessionSummary(NamedTuple):
    session_id: str
    start_ms: int | None
    end_ms: int | None
    event_count: int
    seen: int  # the paging cursor: when the session was first seen


class LockHolderRow(NamedTuple):
    pid: int
    application_name: str | None
    state: str | None
    xact_start: dt.datetime
    held_seconds: float
    waiting: int


class NameId(NamedTuple):
    id: int
    name: str


class NameCount(NamedTuple):
    name_id: int
    name: str
    events: int


# --- write path -------------------------------------------------------------------


@_translated
async def upsert_event_names(conn: asyncpg.Connection, names: list[str], timeout: float | None) -> list[NameId]:
    """Ids of `names` (sorted by the caller), creating the missing ones; a name another
    writer committed meanwhile may be missing from the answer: ask again for it."""
    return [NameId(r[0], r[1]) for r in await conn.fetch(queries.UPSERT_EVENT_NAMES, names, timeout=timeout)]


@_translated
async def begin_write(conn: asyncpg.Connection, lock_timeout: str, timeout: float) -> int:
    """Open the write transaction; its id, for resolving a COMMIT that got no answer."""
    await conn.execute(queries.BEGIN, timeout=timeout)
    return cast(int, await conn.fetchval(queries.BEGIN_WRITE, lock_timeout, timeout=timeout))


@_translated
async def claim_batch_ids(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str]], accepted: Sequence[int], timeout: float
) -> set[tuple[str, str]]:
    """Claim each (scope, batch_id) with its event count; the keys that were new."""
    rows = await conn.fetch(queries.CLAIM_BATCH_IDS, [k[0] for k in keys], [k[1] for k in keys], list(accepted), timeout=timeout)
    return {(r[0], r[1]) for r in rows}


# A row as the writer copies it: (session_id, type, ts, name_id, data as JSON text).
Record = tuple[str, str, int, int | None, str | None]


@_translated
async def copy_events(conn: asyncpg.Connection, records: list[Record], timeout: float) -> None:
    """(session_id, type, ts, name_id, data) rows into events, by COPY."""
    await conn.copy_records_to_table(queries.EVENTS_TABLE, records=records, columns=queries.EVENTS_COPY_COLUMNS, timeout=timeout)


@_translated
async def commit(conn: asyncpg.Connection, timeout: float) -> None:
    await conn.execute(queries.COMMIT, timeout=timeout)


@_translated
async def transaction_status(conn: asyncpg.Connection, xid: int, timeout: float) -> str | None:
    """'committed', 'aborted', 'in progress', or None when too old to know."""
    try:
        return cast("str | None", await conn.fetchval(queries.TXID_STATUS, xid, timeout=timeout))
    except asyncpg.InvalidParameterValueError:
        # "in the future": the database restarted without ever making it durable.
        return "aborted"


@_translated
async def write_stored(conn: asyncpg.Connection, record: Record, xid: int, timeout: float) -> bool:
    """Whether transaction `xid` (64-bit) stored this (session_id, type, ts, name_id, data) row."""
    return bool(await conn.fetchval(queries.WRITE_STORED, *record, xid, timeout=timeout))


@_translated
async def terminate_writer(conn: asyncpg.Connection, pid: int, xid: int, timeout: float) -> None:
    """End backend `pid` if it is still inside transaction `xid` (it then aborts it)."""
    await conn.fetchval(queries.TERMINATE_WRITER, pid, xid, timeout=timeout)


@_translated
async def record_rejected(pool: asyncpg.Pool, records: Iterable[tuple[object, ...]], keep_rows: int) -> None:
    """Insert rejected_batches rows and prune the table to its newest `keep_rows`, atomically."""
    async with pool.acquire(timeout=10) as conn, conn.transaction():
        await conn.executemany(queries.REJECTED_INSERT, records)
        await conn.execute(queries.REJECTED_PRUNE, keep_rows)


# --- ingest's watch ---------------------------------------------------------------


@_translated
async def insert_lock_holder(conn: asyncpg.Connection, held_longer_than: float) -> LockHolderRow | None:
    """Who holds the insert lock, if its transaction is older than `held_longer_than` seconds."""
    row = await conn.fetchrow(queries.INSERT_LOCK_HOLDER, held_longer_than)
    return None if row is None else LockHolderRow(*row)


@_translated
async def prune_batch_ids(conn: asyncpg.Connection, older_than_seconds: float, at_most: int) -> int:
    """Forget up to `at_most` batch_ids claimed more than `older_than_seconds` ago; how many."""
    status = await conn.execute(queries.PRUNE_BATCH_IDS, older_than_seconds, at_most)
    return int(status.split()[-1])


# --- the stream -------------------------------------------------------------------


@_translated
async def stream_bounds(conn: asyncpg.Connection, timeout: float | None = None) -> StreamBounds | None:
    row = await conn.fetchrow(queries.STREAM_BOUNDS, timeout=timeout)
    return None if row is None else StreamBounds(*row)


@_translated
async def stream_head(conn: asyncpg.Connection, timeout: float | None = None) -> int | None:
    """The highest committed position (an index probe); None when the stream is empty."""
    return cast("int | None", await conn.fetchval(queries.STREAM_HEAD, timeout=timeout))


@_translated
async def stream_after(conn: asyncpg.Connection, position: int, limit: int, timeout: float) -> list[StreamRecord]:
    """Up to `limit` entries after `position`, in position order (the hub's read)."""
    return await conn.fetch(queries.STREAM_AFTER, position, limit, timeout=timeout, record_class=StreamRecord)


class StreamFilter(NamedTuple):
    """What a stream client asked for; None means "any"."""

    session_ids: list[str] | None = None
    names: list[str] | None = None
    types: list[str] | None = None


@_translated
async def stream_replay(
    conn: asyncpg.Connection, after: int, upper: int, only: StreamFilter, limit: int, timeout: float
) -> list[StreamRecord]:
    """Up to `limit` matching entries in (after, upper], in position order."""
    return await conn.fetch(queries.STREAM_REPLAY, after, upper, *only, limit, timeout=timeout, record_class=StreamRecord)


@_translated
async def stream_tail(conn: asyncpg.Connection, upper: int, only: StreamFilter, count: int) -> list[StreamRecord]:
    """The last `count` matching entries at or below `upper`, oldest first."""
    return await conn.fetch(queries.STREAM_TAIL, upper, *only, count, record_class=StreamRecord)


# --- sessions ---------------------------------------------------------------------


@_translated
async def session_page(conn: asyncpg.Connection, session_id: str, after: tuple[int, int], limit: int) -> list[TreeRecord]:
    """Up to `limit` EVENTs of a session after (ts, position), each with the session's
    figures; one row with position None for a session without (more) EVENTs; none
    for an unknown session."""
    return await conn.fetch(queries.SESSION_TREE_PAGE, session_id, after[0], after[1], limit, record_class=TreeRecord)


class WholeTree(NamedTuple):
    start_ms: int | None
    end_ms: int | None
    event_count: int
    children: bytes | None  # the encoded EVENTs, comma-separated; None: too many, page them
    stored: bool  # read from session_trees (current, and nothing lost to retention)

    @property
    def version(self) -> tuple[int | None, int | None, int]:
        return (self.start_ms, self.end_ms, self.event_count)


@_translated
async def session_tree(conn: asyncpg.Connection, session_id: str, below: int) -> WholeTree | None:
    """A session's figures and, when it holds fewer than `below` EVENTs, all of them
    encoded; None for an unknown session."""
    row = await conn.fetchrow(queries.SESSION_TREE_WHOLE, session_id, below)
    return None if row is None else WholeTree(*row)


class TreeStoreRun(NamedTuple):
    marked: int  # positions read past the watermark (their sessions marked changed)
    due: int  # sessions that left the pending set
    built: int  # trees (re)built among them


@_translated
async def tree_store_run(
    conn: asyncpg.Connection, *, mark_rows: int, quiet_seconds: float, build_at_most: int, min_events: int, below: int
) -> TreeStoreRun | None:
    """One step of the tree builder in one transaction (schema/008_session_trees.sql):
    mark the sessions of the next positions changed, then build up to `build_at_most`
    trees of sessions quiet for `quiet_seconds`. None: another process's step holds it."""
    async with conn.transaction():
        if not await conn.fetchval(queries.TREE_STORE_TRY_LOCK):
            return None
        mark = await conn.fetchrow(queries.TREE_STORE_MARK, mark_rows)
        counts = await conn.fetchrow(queries.TREE_STORE_BUILD, quiet_seconds, below, build_at_most, min_events)
        assert counts is not None  # an aggregate: always one row
    return TreeStoreRun(0 if mark is None else int(mark[1]), int(counts[0]), int(counts[1]))


@_translated
async def tree_store_prune(conn: asyncpg.Connection) -> int:
    """Delete the stored trees of sessions that lost entries; after any build running now."""
    async with conn.transaction():
        await conn.execute(queries.TREE_STORE_LOCK)
        status = await conn.execute(queries.TREE_STORE_PRUNE)
    return int(status.split()[-1])


@_translated
async def session_version(conn: asyncpg.Connection, session_id: str) -> SessionVersion | None:
    row = await conn.fetchrow(queries.SESSION_VERSION, session_id)
    return None if row is None else SessionVersion(*row)


@_translated
async def recent_sessions(conn: asyncpg.Connection, before: int, limit: int) -> list[SessionSummary]:
    """Up to `limit` sessions first seen before the cursor `before`, newest first."""
    return [SessionSummary(*r) for r in await conn.fetch(queries.RECENT_SESSIONS, before, limit)]


# --- analytics (one snapshot per response: see snapshot()) ---------------------------


class EventTotals(NamedTuple):
    events: int
    names: int  # distinct names among them


class SessionGroup(NamedTuple):
    """The sessions started in a range that hold `event_count` EVENTs and, when they
    ended, lasted a duration in fine bucket `duration_bucket` (None: not ended)."""

    event_count: int
    duration_bucket: int | None
    sessions: int
    duration_sum: int  # in ms; 0 when not ended


class EventBuckets(NamedTuple):
    total: dict[int, int]  # bucket start -> EVENTs of every name; empty buckets absent
    by_name: dict[int, dict[int, int]]  # name id -> bucket start -> its EVENTs


@_translated
async def stats_fold(conn: asyncpg.Connection, timeout: float) -> None:
    """READ COMMITTED whatever the database's default: the fold refuses anything else."""
    async with conn.transaction(isolation="read_committed"):
        await conn.execute(queries.STATS_FOLD, timeout=timeout)


@_translated
async def stats_fold_up_to(conn: asyncpg.Connection, max_events: int, timeout: float) -> None:
    """One slice of the fold: at most max_events events, READ COMMITTED as stats_fold."""
    async with conn.transaction(isolation="read_committed"):
        await conn.execute(queries.STATS_FOLD_UP_TO, max_events, timeout=timeout)


@_translated
async def breakdown_fold_up_to(conn: asyncpg.Connection, max_events: int, timeout: float) -> bool:
    """One slice of every breakdown rollup behind the watermark; True: none is behind."""
    async with conn.transaction(isolation="read_committed"):
        return bool(await conn.fetchval(queries.BREAKDOWN_FOLD_UP_TO, max_events, timeout=timeout))


@_translated
async def stats_watermark(conn: asyncpg.Connection) -> int:
    """The last stream position the rollups and presences count (schema/005_stats_sessions.sql)."""
    return int(await conn.fetchval(queries.STATS_WATERMARK))


@_translated
async def stats_settings(conn: asyncpg.Connection) -> None:
    """Memory to sort and hash in, and custom plans, for this transaction only."""
    await conn.execute(queries.STATS_SETTINGS)


@_translated
async def stats_event_totals(conn: asyncpg.Connection, bounds: EventBounds) -> EventTotals:
    row = await conn.fetchrow(queries.STATS_EVENT_TOTALS, *bounds)
    assert row is not None  # an aggregate: always one row
    return EventTotals(int(row[0]), int(row[1]))


@_translated
async def stats_session_groups(
    conn: asyncpg.Connection, start: int, end: int, duration_bounds: Sequence[int]
) -> list[SessionGroup]:
    """The sessions started in [start, end), in one pass, grouped by their number of
    EVENTs and fine duration bucket (width_bucket on `duration_bounds`)."""
    rows = await conn.fetch(queries.STATS_SESSION_GROUPS, start, end, list(duration_bounds))
    return [SessionGroup(int(r[0]), r[1], int(r[2]), int(r[3] or 0)) for r in rows]


# STATS_DURATIONS_BETWEEN reads up to this many duration ranges.
DURATION_SPANS = 3


@_translated
async def stats_durations_between(conn: asyncpg.Connection, start: int, end: int, spans: Sequence[tuple[int, int]]) -> list[int]:
    """Durations of the sessions started in [start, end) and ended, within any of the
    half-open `spans` (at most DURATION_SPANS), in no particular order."""
    if len(spans) > DURATION_SPANS:
        raise ValueError(f"at most {DURATION_SPANS} duration spans, got {len(spans)}")
    padded = [*spans, *[(0, 0)] * (DURATION_SPANS - len(spans))]  # (0, 0) is empty
    rows = await conn.fetch(queries.STATS_DURATIONS_BETWEEN, start, end, *(x for span in padded for x in span))
    return [r[0] for r in rows]


@_translated
async def stats_name_ids(conn: asyncpg.Connection, names: list[str]) -> dict[str, int]:
    """Ids of the names that exist; a name never seen is absent."""
    return {r[1]: r[0] for r in await conn.fetch(queries.STATS_NAME_IDS, names)}


@_translated
async def stats_name_counts(conn: asyncpg.Connection, bounds: EventBounds, limit: int) -> list[NameCount]:
    """EVENTs per name in the range, most first (ties by name in code point order)."""
    return [NameCount(r[0], r[1], int(r[2])) for r in await conn.fetch(queries.STATS_NAME_COUNTS, *bounds, limit)]


@_translated
async def stats_event_buckets(conn: asyncpg.Connection, bounds: EventBounds, size: int, name_ids: list[int]) -> EventBuckets:
    """EVENTs per bucket of `size` ms, of every name and of each of `name_ids`, in one pass."""
    total: dict[int, int] = {}
    by_name: dict[int, dict[int, int]] = {}
    for bucket, series, is_total, n in await conn.fetch(queries.STATS_EVENT_BUCKETS, *bounds, size, name_ids):
        if is_total:
            total[bucket] = int(n)
        elif series is not None:  # None: the EVENTs of the other names
            by_name.setdefault(series, {})[bucket] = int(n)
    return EventBuckets(total, by_name)


@_translated
async def stats_session_buckets(conn: asyncpg.Connection, bounds: SessionBounds, size: int) -> dict[int, int]:
    """Sessions started per bucket start; empty buckets absent."""
    return {r[0]: int(r[1]) for r in await conn.fetch(queries.STATS_SESSION_BUCKETS, *bounds, size)}


@_translated
async def stats_name_sessions(
    conn: asyncpg.Connection, split: tuple[int, int, int, int, int, int], watermark: int, name_ids: list[int]
) -> dict[int, int]:
    """Distinct sessions with an EVENT of each name in a range given as
    (whole hours, head, tail): app/reads/stats.py hour_split."""
    hours_lo, hours_hi, *edges = split
    rows = await conn.fetch(queries.STATS_NAME_SESSIONS, hours_lo, hours_hi, name_ids, *edges, watermark)
    return {r[0]: int(r[1]) for r in rows}


async def stats_funnel_events(
    conn: asyncpg.Connection, start: int, end: int, name_ids: list[int], chunk: int
) -> AsyncIterator[tuple[list[int], list[int]]]:
    """Per session started in [start, end): its EVENTs of `name_ids` as name ids and
    timestamps, in order. Read in chunks of about `chunk` sessions by start, each
    fetched whole: memory stays bounded, and unlike a server-side cursor a plain fetch
    lets PostgreSQL scan in parallel (half the time on 2 cores, bench stats). Call
    it inside snapshot(), so the chunks see one state of the database."""
    with wrap_exceptions():
        lo = start
        while lo < end:
            hi = await conn.fetchval(queries.STATS_FUNNEL_CHUNK_END, lo, end, chunk)
            hi = end if hi is None else max(hi, lo + 1)  # more than `chunk` ties at lo: one chunk
            span = await conn.fetchrow(queries.STATS_FUNNEL_SPAN, lo, hi)
            assert span is not None  # an aggregate: always one row
            if span[0] is not None:  # else no session started in [lo, hi)
                for row in await conn.fetch(queries.STATS_FUNNEL_EVENTS, lo, hi, name_ids, span[0], span[1]):
                    yield row[0], row[1]
            lo = hi


# --- finding sessions, breakdowns ---------------------------------------------------------


class DataMatch(NamedTuple):
    """One data filter as the database compares it: a key and one or two jsonb texts."""

    key: str
    match: str
    also: str | None


class SessionQuery(NamedTuple):
    """GET /sessions filters with names as ids (None: that filter is not given)."""

    start_from: int | None
    start_to: int | None
    ended: bool | None
    min_duration_ms: int | None
    max_duration_ms: int | None
    name_ids: list[int]
    data: list[DataMatch]


@_translated
async def find_sessions(
    conn: asyncpg.Connection, before: int, limit: int, query: SessionQuery, watermark: int
) -> list[SessionSummary]:
    """Up to `limit` sessions first seen before `before` that pass every filter, newest first."""
    rows = await conn.fetch(
        queries.FIND_SESSIONS,
        before,
        limit,
        query.start_from,
        query.start_to,
        query.ended,
        query.min_duration_ms,
        query.max_duration_ms,
        query.name_ids,
        [d.key for d in query.data],
        [d.match for d in query.data],
        [d.also for d in query.data],
        watermark,
    )
    return [SessionSummary(*r) for r in rows]


class BreakdownGroup(NamedTuple):
    """kind 0: one value (its jsonb text in `value`), 1: the rest past the limit, 2: missing."""

    kind: int
    value: str | None
    events: int
    sessions: int


@_translated
async def breakdown_register(pool: asyncpg.Pool, name: str, key: str, at_most: int) -> bool:
    """Gives (name, key) a rollup (schema/010_breakdown_rollups.sql) while fewer than
    at_most pairs have one. Its own short transaction, before the reader's snapshot:
    that one is read-only, and a rollup that is new has nothing folded yet anyway."""
    # READ COMMITTED whatever the database's default: the count after the lock must see
    # the pairs other processes made just before.
    async with connection(pool) as conn, conn.transaction(isolation="read_committed"):
        return bool(await conn.fetchval(queries.BREAKDOWN_REGISTER, name, key, at_most))


class BreakdownRollup(NamedTuple):
    """A pair's rollup (schema/010_breakdown_rollups.sql): its id, and the last position it counts."""

    key_id: int
    through: int


@_translated
async def breakdown_rollup(conn: asyncpg.Connection, name_id: int, key: str) -> BreakdownRollup | None:
    """The pair's rollup, read in the response's snapshot; None: the pair is read from events alone."""
    row = await conn.fetchrow(queries.BREAKDOWN_KEY, name_id, key)
    return None if row is None else BreakdownRollup(int(row[0]), int(row[1]))


@_translated
async def stats_breakdown(
    conn: asyncpg.Connection,
    name_id: int,
    start: int,
    end: int,
    key: str,
    limit: int,
    rollup: BreakdownRollup | None,
    split: tuple[int, int, int, int, int, int],
) -> list[BreakdownGroup]:
    """From the pair's rollup and the events it does not count, or from the events
    alone without one; `split` is app/reads/stats.py hour_split."""
    if rollup is None:
        rows = await conn.fetch(queries.STATS_BREAKDOWN, name_id, start, end, key, limit)
    else:
        rows = await conn.fetch(queries.STATS_BREAKDOWN_ROLLUP, name_id, key, limit, *split, *rollup)
    return [BreakdownGroup(int(r[0]), r[1], int(r[2]), int(r[3])) for r in rows]


@_translated
async def stats_breakdown_buckets(
    conn: asyncpg.Connection,
    name_id: int,
    start: int,
    end: int,
    key: str,
    size: int,
    values: list[str],
    rollup: BreakdownRollup | None,
    split: tuple[int, int, int, int, int, int],
) -> dict[int, dict[int, int]]:
    """Index into `values` (0-based) -> bucket start -> EVENTs; empty buckets absent.
    From the pair's rollup when given one (only for buckets of whole hours, which its
    hourly rows fall into); `split` is app/reads/stats.py hour_split."""
    if rollup is None:
        rows = await conn.fetch(queries.STATS_BREAKDOWN_BUCKETS, name_id, start, end, key, size, values)
    else:
        rows = await conn.fetch(queries.STATS_BREAKDOWN_BUCKETS_ROLLUP, name_id, key, size, values, *split, *rollup)
    out: dict[int, dict[int, int]] = {}
    for value, bucket, n in rows:
        out.setdefault(int(value) - 1, {})[int(bucket)] = int(n)
    return out


# --- retention (schema/007_retention.sql; run by app/store/retention.py) -------------

_PIECE_NAME = re.compile(r"events_p-?[0-9]{1,20}")


def _piece(name: str) -> str:
    """A piece's name as SQL, checked: only names retention_add_piece() makes pass."""
    if not _PIECE_NAME.fullmatch(name):
        raise ValueError(f"not a piece of events: {name!r}")
    return name


class RetentionState(NamedTuple):
    removed_through: int | None  # every position at or below it is removed
    retained_from_ms: int | None  # every entry stored since then is retained (None: nothing removed)
    last_removal_ms: int | None  # when the last piece was removed
    last_removal_rows: int | None
    last_removal_duration_ms: float | None


class RemovedPiece(NamedTuple):
    name: str
    rows: int
    bytes: int
    seconds: float


@_translated
async def retention_try_lock(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(queries.RETENTION_TRY_LOCK))


@_translated
async def retention_unlock(conn: asyncpg.Connection) -> None:
    await conn.fetchval(queries.RETENTION_UNLOCK)


@_translated
async def retention_in_use_age(conn: asyncpg.Connection) -> float | None:
    """Seconds since the piece the sequence points into was opened."""
    age = await conn.fetchval(queries.RETENTION_IN_USE_AGE)
    return None if age is None else float(age)


@_translated
async def retention_roll(conn: asyncpg.Connection) -> str:
    """Closes the piece in use and opens the spare one (a few microseconds under the writers' lock)."""
    async with conn.transaction(isolation="read_committed"):
        row = await conn.fetchrow(queries.RETENTION_ROLL)
    assert row is not None
    return str(row[1])


@_translated
async def retention_ensure_spare(conn: asyncpg.Connection) -> str | None:
    """A spare piece ahead of the one in use; its name when one had to be made."""
    if await conn.fetchval(queries.RETENTION_SPARES):
        return None
    async with conn.transaction(isolation="read_committed"):
        return cast(str, await conn.fetchval(queries.RETENTION_ADD_SPARE))


@_translated
async def retention_mark(conn: asyncpg.Connection, window_seconds: float) -> list[str]:
    async with conn.transaction(isolation="read_committed"):
        return [r[0] for r in await conn.fetch(queries.RETENTION_MARK, window_seconds)]


@_translated
async def retention_marked(conn: asyncpg.Connection) -> list[str]:
    """Pieces a cut run marked and did not finish removing."""
    return [r[0] for r in await conn.fetch(queries.RETENTION_MARKED)]


@_translated
async def retention_remove(conn: asyncpg.Connection, name: str, timeout: float) -> RemovedPiece:
    """Detach (concurrently: inserts and reads go on) and drop one marked piece.

    Each step looks at the catalog first, so a run killed anywhere in between is
    finished by the next one: a detach left pending is finalized, a detached piece
    dropped, a dropped one forgotten.
    """
    piece = _piece(name)
    started = time.monotonic()
    pending = await conn.fetchval(queries.RETENTION_DETACH_PENDING, piece)
    if pending is False:
        await conn.execute(queries.RETENTION_DETACH.format(piece=piece), timeout=timeout)
    elif pending is True:
        await conn.execute(queries.RETENTION_FINALIZE.format(piece=piece), timeout=timeout)
    rows, size = 0, 0
    if await conn.fetchval(queries.RETENTION_PIECE_EXISTS, piece):
        counted = await conn.fetchrow(queries.RETENTION_PIECE_ROWS.format(piece=piece), timeout=timeout)
        assert counted is not None
        rows, size = int(counted[0]), int(counted[1])
        await conn.execute(queries.RETENTION_DROP.format(piece=piece), timeout=timeout)
    seconds = time.monotonic() - started
    await conn.execute(queries.RETENTION_DONE, piece, rows, seconds * 1000)
    return RemovedPiece(piece, rows, size, seconds)


@_translated
async def retention_state(conn: asyncpg.Connection) -> RetentionState | None:
    row = await conn.fetchrow(queries.RETENTION_STATE)
    return None if row is None else RetentionState(*row)


@_translated
async def retention_prune_presences(conn: asyncpg.Connection, before_hour_ms: int, at_most: int) -> int:
    return int(await conn.fetchval(queries.RETENTION_PRUNE_PRESENCES, before_hour_ms, at_most))


@_translated
async def retained_from(conn: asyncpg.Connection) -> int | None:
    """The store time (ms) since which every entry is retained; None: nothing was removed."""
    return cast("int | None", await conn.fetchval(queries.RETAINED_FROM))


@_translated
async def session_retained_from(conn: asyncpg.Connection, session_id: str) -> int | None:
    """retained_from when this session was first seen before it (it lost entries), else None."""
    return cast("int | None", await conn.fetchval(queries.SESSION_RETAINED_FROM, session_id))


@_translated
async def stream_removed_through(conn: asyncpg.Connection, timeout: float | None = None) -> int:
    """Every position at or below this is removed (0: none)."""
    return int(await conn.fetchval(queries.STREAM_REMOVED_THROUGH, timeout=timeout) or 0)
