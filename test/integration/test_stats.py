"""GET /stats/… against the real server and PostgreSQL, every figure checked exactly.

The data is written with plain SQL (as an operator or another writer would), in
shuffled statements: events before their session's start, late events, repeated
SESSION_STARTs (a later, smaller one moves the session to another bucket),
repeated SESSION_ENDs, sessions that never end or never start, timestamp ties.
A brute-force model built from the same rows computes each figure straight from
SPEC's definitions (no shared code with app/reads/stats.py), and the service's answer
must equal it for many ranges, including sub-minute edges and single milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from test.support import postgres as test_postgres
from test.support.service import Service

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
BUCKETS = {"minute": MINUTE, "hour": HOUR, "day": DAY}
T0 = 1_772_000_000_000 + 12_345  # 2026-02-25, not aligned to anything
NAMES = ["view", "click", "buy", "Buy", "ä-name", "z"]
BOUNDS = [1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000, 3_600_000]
SCHEMA = Path(__file__).resolve().parents[2] / "schema"
# The analytics migrations, in the order the service applies them (005 replaces 004's trigger).
ANALYTICS_MIGRATIONS = [SCHEMA / "004_stats.sql", SCHEMA / "005_stats_sessions.sql"]

Row = tuple[str, str, int, str | None]  # session, type, ts, name


@dataclass
class Model:
    """Every row inserted, in arrival order: the brute-force side of each comparison."""

    rows: list[Row] = field(default_factory=list)

    def sessions(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for sid, kind, ts, _ in self.rows:
            s = out.setdefault(sid, {"start": None, "end": None, "events": 0})
            if kind == "SESSION_START":
                s["start"] = ts if s["start"] is None else min(s["start"], ts)
            elif kind == "SESSION_END":
                s["end"] = ts if s["end"] is None else max(s["end"], ts)
            else:
                s["events"] += 1
        return out

    def events_in(self, lo: int, hi: int) -> list[tuple[int, Row]]:
        return [(i, r) for i, r in enumerate(self.rows) if r[1] == "EVENT" and lo <= r[2] < hi]


def brute_percentile(values: Sequence[int], p: int) -> int | None:
    """The smallest value with at least p % of the values at or below it."""
    if not values:
        return None
    return min(v for v in values if sum(1 for x in values if x <= v) * 100 >= p * len(values))


def brute_summary(model: Model, lo: int, hi: int) -> dict[str, Any]:
    started = [s for s in model.sessions().values() if s["start"] is not None and lo <= s["start"] < hi]
    ended = [s for s in started if s["end"] is not None]
    durations = [s["end"] - s["start"] for s in ended]
    counts = [s["events"] for s in started]
    events = model.events_in(lo, hi)
    histogram = []
    previous = None
    for bound in [*BOUNDS, None]:
        histogram.append(
            {
                "le_ms": bound,
                "sessions": sum(1 for d in durations if (previous is None or d > previous) and (bound is None or d <= bound)),
            }
        )
        previous = bound
    return {
        "from": lo,
        "to": hi,
        "sessions": {"started": len(started), "ended": len(ended), "open": len(started) - len(ended)},
        "events": len(events),
        "names": len({r[3] for _, r in events}),
        "duration_ms": {
            "p50": brute_percentile(durations, 50),
            "p90": brute_percentile(durations, 90),
            "p99": brute_percentile(durations, 99),
            "mean": sum(durations) / len(durations) if durations else None,
        },
        "events_per_session": {
            "p50": brute_percentile(counts, 50),
            "p90": brute_percentile(counts, 90),
            "mean": sum(counts) / len(counts) if counts else None,
        },
        "duration_histogram": histogram,
    }


def brute_names(model: Model, lo: int, hi: int, limit: int) -> dict[str, Any]:
    events = model.events_in(lo, hi)
    per: dict[str, list[str]] = {}
    for _, (sid, _, _, name) in events:
        assert name is not None
        per.setdefault(name, []).append(sid)
    ordered = sorted(per, key=lambda n: (-len(per[n]), [ord(c) for c in n]))[:limit]
    return {
        "from": lo,
        "to": hi,
        "names": [{"name": n, "events": len(per[n]), "sessions": len(set(per[n]))} for n in ordered],
    }


def brute_timeseries(model: Model, lo: int, hi: int, bucket: str, names: list[str] | None) -> dict[str, Any]:
    size = BUCKETS[bucket]
    starts = []
    t = lo - lo % size
    while t < hi:
        starts.append(t)
        t += size
    events = model.events_in(lo, hi)
    if names is None:
        names = [n["name"] for n in brute_names(model, lo, hi, 5)["names"]]
    sessions = [s for s in model.sessions().values() if s["start"] is not None and lo <= s["start"] < hi]

    def count(pred: Any) -> list[list[int]]:
        return [[b, sum(1 for x in pred if b <= x < b + size)] for b in starts]

    return {
        "from": lo,
        "to": hi,
        "bucket": bucket,
        "total": count([r[2] for _, r in events]),
        "sessions_started": count([s["start"] for s in sessions]),
        "series": [{"name": n, "points": count([r[2] for _, r in events if r[3] == n])} for n in names],
    }


def brute_depth(stamps: list[tuple[int, int, str]], steps: list[str], within: int | None) -> int:
    """Deepest k for which some chain of step-1…k events exists, by exhaustive search.

    stamps: (ts, arrival, name) sorted; a chain's events are strictly increasing in
    that order and, with within, at most within ms after its first event.
    """
    best = 0

    def extend(at: int, depth: int, first_ts: int) -> None:
        nonlocal best
        best = max(best, depth)
        if depth == len(steps):
            return
        for j in range(at + 1, len(stamps)):
            ts, _, name = stamps[j]
            if name == steps[depth] and (within is None or ts - first_ts <= within):
                extend(j, depth + 1, first_ts)

    for i, (ts, _, name) in enumerate(stamps):
        if name == steps[0]:
            extend(i, 1, ts)
    return best


def brute_funnel(model: Model, lo: int, hi: int, steps: list[str], within: int | None) -> dict[str, Any]:
    sessions = model.sessions()
    reached = [0] * (len(steps) + 1)
    for sid, s in sessions.items():
        if s["start"] is None or not lo <= s["start"] < hi:
            continue
        stamps = sorted((r[2], i, r[3]) for i, r in enumerate(model.rows) if r[0] == sid and r[1] == "EVENT")
        depth = brute_depth([x for x in stamps if x[2] in steps], steps, within)  # type: ignore[misc]
        for k in range(1, depth + 1):
            reached[k] += 1
    first = reached[1]
    return {
        "from": lo,
        "to": hi,
        "steps": [
            {"name": step, "sessions": reached[k], "conversion": reached[k] / first if first else None}
            for k, step in enumerate(steps, start=1)
        ],
    }


async def insert(conn: asyncpg.Connection, model: Model, rows: Sequence[Row]) -> None:
    """One plain-SQL statement, rows taking positions in the given order."""
    names = sorted({r[3] for r in rows if r[3] is not None})
    ids = {n: await conn.fetchval("SELECT event_name_id($1)", n) for n in names}
    await conn.execute(
        """
        INSERT INTO events (session_id, type, ts, name_id)
        SELECT s, t, ts, n FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::int[]) WITH ORDINALITY AS x (s, t, ts, n, o)
         ORDER BY o
        """,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [ids[r[3]] if r[3] is not None else None for r in rows],
    )
    model.rows.extend(rows)


def generate(rng: random.Random, base: int, sessions: int, spread: int) -> list[Row]:
    rows: list[Row] = []
    for _ in range(sessions):
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        begin = base + rng.randrange(spread)
        length = rng.choice([0, 500, 1_000, 1_001, 4_000, 29_999, 60_000, 61_000, 900_000, 4_000_000, rng.randrange(7_200_000)])
        for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):  # no start, one, or repeated starts
            rows.append((sid, "SESSION_START", begin + rng.choice([0, 0, rng.randrange(-120_000, 120_000)]), None))
        for _ in range(rng.choice([0, 1, 1, 2])):  # never ended, ended, ended twice
            rows.append((sid, "SESSION_END", begin + length + rng.choice([0, rng.randrange(-2_000, 90_000)]), None))
        ts = begin
        for _ in range(rng.randrange(0, 14)):
            ts += rng.choice([0, 0, 1, 999, 30_000, rng.randrange(-90_000, 200_000)])  # ties and going back
            rows.append((sid, "EVENT", max(0, ts), rng.choice(NAMES)))
    rng.shuffle(rows)
    return rows


async def get(service: Service, path: str, params: Sequence[tuple[str, Any]] = ()) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}{path}?{urlencode(list(params))}") as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def stat(service: Service, path: str, params: Sequence[tuple[str, Any]]) -> Any:
    status, body = await get(service, path, params)
    assert status == 200, body
    return body


def ranges(rng: random.Random, lo: int, hi: int) -> list[tuple[int, int]]:
    """Whole ranges, sub-minute edges, single milliseconds, minute/hour/day-aligned ones."""
    out = [(lo, hi), (lo - lo % DAY, hi - hi % DAY + DAY), (lo + MINUTE - lo % MINUTE, hi - hi % MINUTE)]
    for _ in range(6):
        a, b = sorted(rng.sample(range(lo, hi), 2))
        out.append((a, b))
    edge = lo + 3 * HOUR
    out += [
        (edge, edge + 1),
        (edge - edge % MINUTE, edge - edge % MINUTE + 1),
        (edge, edge + 59_999),
        (edge - 1, edge + MINUTE + 1),
    ]
    return out


MODEL = Model()


@pytest.fixture(scope="module")
async def loaded(service: Service, sql: asyncpg.Connection) -> Model:
    rng = random.Random(13)
    rows = generate(rng, T0, 90, 2 * DAY)
    for i in range(0, len(rows), 37):  # many statements, each a shuffled slice
        await insert(sql, MODEL, rows[i : i + 37])
    return MODEL


async def check_all(service: Service, model: Model, seed: int) -> None:
    rng = random.Random(seed)
    for lo, hi in ranges(rng, T0 - HOUR, T0 + 2 * DAY + 3 * HOUR):
        span = [("from", lo), ("to", hi)]
        assert await stat(service, "/stats/summary", span) == brute_summary(model, lo, hi), (lo, hi)
        assert await stat(service, "/stats/names", span) == brute_names(model, lo, hi, 50), (lo, hi)
        assert await stat(service, "/stats/names", [*span, ("limit", 2)]) == brute_names(model, lo, hi, 2)
        for bucket, size in BUCKETS.items():
            if (hi - 1) // size - lo // size >= 10_000:
                continue
            got = await stat(service, "/stats/timeseries", [*span, ("bucket", bucket)])
            assert got == brute_timeseries(model, lo, hi, bucket, None), (lo, hi, bucket)
        chosen = ["buy", "never-seen", "view"]
        got = await stat(service, "/stats/timeseries", [*span, ("bucket", "hour"), *(("name", n) for n in chosen)])
        assert got == brute_timeseries(model, lo, hi, "hour", chosen)
        for steps, within in [
            (["view", "click"], None),
            (["view", "click", "buy"], None),
            (["click", "view", "click"], 60_000),
            (["view", "view"], 0),
            (["Buy", "z", "view", "click"], 200_000),
        ]:
            params = [*span, *(("step", s) for s in steps)] + ([("within", within)] if within is not None else [])
            assert await stat(service, "/stats/funnel", params) == brute_funnel(model, lo, hi, steps, within), (lo, hi, steps)


async def test_every_figure_matches_brute_force(service: Service, loaded: Model) -> None:
    await check_all(service, loaded, 1)


async def test_late_events_and_earlier_starts_move_figures(service: Service, sql: asyncpg.Connection, loaded: Model) -> None:
    """After more writes (earlier SESSION_STARTs for existing sessions, late events) everything still agrees."""
    rng = random.Random(7)
    known = list(loaded.sessions())
    late: list[Row] = []
    for sid in rng.sample(known, 25):
        s = loaded.sessions()[sid]
        base = s["start"] if s["start"] is not None else T0 + DAY
        late.append((sid, "SESSION_START", max(0, base - rng.choice([1, MINUTE, HOUR + 1, DAY])), None))
        late.append((sid, "EVENT", base - rng.randrange(0, DAY), rng.choice(NAMES)))
        late.append((sid, "SESSION_END", base + rng.randrange(0, HOUR), None))
    late += generate(rng, T0 + HOUR, 15, DAY)
    # Several statements in one transaction: each sees the sessions as the previous left them.
    async with sql.transaction():
        for i in range(0, len(late) // 2, 11):
            await insert(sql, loaded, late[i : min(i + 11, len(late) // 2)])
    for i in range(len(late) // 2, len(late), 11):
        await insert(sql, loaded, late[i : i + 11])
    await check_all(service, loaded, 2)


ROLLUP_EVENTS = "SELECT minute_ms, name_id, events FROM stats_event_minutes WHERE events <> 0 ORDER BY 1, 2"
ROLLUP_HOURS = "SELECT hour_ms, name_id, events FROM stats_event_hours WHERE events <> 0 ORDER BY 1, 2"
ROLLUP_SESSIONS = """
SELECT m, sum(n) AS n FROM (
    SELECT minute_ms AS m, started AS n FROM stats_session_minutes
    UNION ALL SELECT minute_ms, started FROM stats_session_deltas) AS x
 GROUP BY 1 HAVING sum(n) <> 0 ORDER BY 1
"""
FOLDED = "position <= (SELECT position FROM stats_folded)"  # what the rollups of EVENTs and presences count
RECOUNT_EVENTS = (
    "SELECT ts - ts % 60000 AS m, name_id, count(*) AS n FROM events"
    f" WHERE type = 'EVENT' AND {FOLDED} GROUP BY 1, 2 ORDER BY 1, 2"
)
RECOUNT_HOURS = RECOUNT_EVENTS.replace("60000", "3600000")
RECOUNT_SESSIONS = (
    "SELECT start_ms - start_ms % 60000 AS m, count(*) AS n FROM sessions WHERE start_ms IS NOT NULL GROUP BY 1 ORDER BY 1"
)
ROLLUP_NAME_HOURS = "SELECT hour_ms, name_id, prev_hour_ms, sessions FROM stats_name_hours WHERE sessions <> 0 ORDER BY 1, 2, 3"
# Each (session, name, hour) with an EVENT up to the fold's watermark, with the previous hour of the same pair.
FOLDED_PAIRS = f"""
SELECT DISTINCT session_id, name_id, ts - ts % 3600000 AS h FROM events WHERE type = 'EVENT' AND {FOLDED}
"""
RECOUNT_NAME_HOURS = f"""
SELECT h, name_id, prev, count(*) AS n FROM (
    SELECT h, name_id, coalesce(lag(h) OVER (PARTITION BY session_id, name_id ORDER BY h), -1) AS prev
      FROM ({FOLDED_PAIRS}) AS d) AS x
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
PRESENCES = "SELECT session_id, name_id, hour_ms FROM stats_name_session_hours ORDER BY 1, 2, 3"
RECOUNT_PRESENCES = f"SELECT * FROM ({FOLDED_PAIRS}) AS d ORDER BY 1, 2, 3"
UNFOLDED_EVENTS = "SELECT count(*) FROM events WHERE position > (SELECT position FROM stats_folded)"
SPANS = "SELECT id, first_ts, last_ts FROM sessions ORDER BY id"
RECOUNT_SPANS = "SELECT session_id, min(ts), max(ts) FROM events GROUP BY session_id ORDER BY session_id"


async def assert_rollups_exact(sql: asyncpg.Connection) -> None:
    """In one snapshot: the service folds beside us."""
    async with sql.transaction(isolation="repeatable_read", readonly=True):
        assert await sql.fetch(ROLLUP_EVENTS) == await sql.fetch(RECOUNT_EVENTS)
        assert await sql.fetch(ROLLUP_HOURS) == await sql.fetch(RECOUNT_HOURS)
        assert await sql.fetch(ROLLUP_SESSIONS) == await sql.fetch(RECOUNT_SESSIONS)
        assert await sql.fetch(PRESENCES) == await sql.fetch(RECOUNT_PRESENCES)
        assert await sql.fetch(ROLLUP_NAME_HOURS) == await sql.fetch(RECOUNT_NAME_HOURS)
        assert [tuple(r) for r in await sql.fetch(SPANS)] == [tuple(r) for r in await sql.fetch(RECOUNT_SPANS)]


@contextlib.asynccontextmanager
async def folds_paused(url: str) -> AsyncIterator[None]:
    """Hold the fold's lock (727401, 2) from a connection of our own: the service's fold
    waits, the trigger's skips, so what was appended stays unfolded meanwhile."""
    holder = await asyncpg.connect(url)
    try:
        await holder.execute("SELECT pg_advisory_lock(727401, 2)")
        yield
    finally:
        await holder.close()


async def unfolded(sql: asyncpg.Connection) -> tuple[int, int]:
    """Session deltas, and events past the fold's watermark."""
    row = await sql.fetchrow(f"SELECT (SELECT count(*) FROM stats_session_deltas), ({UNFOLDED_EVENTS})")
    assert row is not None
    return int(row[0]), int(row[1])


async def until_folded(sql: asyncpg.Connection, seconds: float = 20) -> None:
    """Poll until the service's fold has taken everything (it runs about once a second)."""
    deadline = time.monotonic() + seconds
    while await unfolded(sql) != (0, 0):
        assert time.monotonic() < deadline, f"the service did not fold: {await unfolded(sql)}"
        await asyncio.sleep(0.1)


async def migrate_analytics_again(sql: asyncpg.Connection) -> None:
    for path in ANALYTICS_MIGRATIONS:
        await sql.execute(path.read_text())


async def test_rollups_equal_a_recount_and_migration_rerun_is_exact(
    service: Service, sql: asyncpg.Connection, loaded: Model
) -> None:
    await assert_rollups_exact(sql)
    # A second run (the service after docker's initdb ran the file) recounts, never adds;
    # and a database whose events predate the rollups (emptied here) gets them backfilled.
    await migrate_analytics_again(sql)
    await assert_rollups_exact(sql)
    await sql.execute(
        "TRUNCATE stats_event_minutes, stats_event_hours, stats_session_minutes, stats_event_deltas, stats_session_deltas,"
        " stats_name_session_hours, stats_name_hours, stats_folded"
    )
    await sql.execute("UPDATE sessions SET first_ts = NULL, last_ts = NULL")
    await migrate_analytics_again(sql)
    await assert_rollups_exact(sql)
    await check_all(service, loaded, 3)


async def test_folding_deltas_changes_no_figure(service: Service, sql: asyncpg.Connection, loaded: Model) -> None:
    """Deltas and events past the watermark counted where they are, then folded: the same figures either way."""
    rng = random.Random(11)
    async with folds_paused(service.database_url):
        for rows in [generate(rng, T0 + 2 * HOUR, 10, DAY) for _ in range(2)]:
            await insert(sql, loaded, rows)
        session_deltas, past_watermark = await unfolded(sql)
        assert session_deltas > 0 and past_watermark > 0
        await check_all(service, loaded, 4)
    await sql.execute("SELECT stats_fold()")
    assert await unfolded(sql) == (0, 0)
    await insert(sql, loaded, generate(rng, T0 + 2 * HOUR, 10, DAY))
    await assert_rollups_exact(sql)
    await check_all(service, loaded, 5)


async def test_the_service_folds_within_seconds(service: Service, sql: asyncpg.Connection, loaded: Model) -> None:
    await insert(sql, loaded, generate(random.Random(12), T0 + 3 * HOUR, 5, DAY))
    await until_folded(sql)
    await assert_rollups_exact(sql)


async def test_a_fold_behind_catches_up_in_bounded_steps(postgres: test_postgres.TestPostgres) -> None:
    """stats_fold() takes at most 1,000,000 events a call (stats_fold_up_to(n) at most
    n): between steps the watermark sits mid-way and every count is still exact."""
    from app.store import db as app_db

    url = await postgres.create_database("fold_steps")  # no service: nothing folds but us
    await app_db.migrate(url)
    conn = await asyncpg.connect(url)
    try:
        model = Model()
        rng = random.Random(21)
        for _ in range(3):
            await insert(conn, model, generate(rng, T0, 6, 3 * HOUR))
            gap = conn.transaction()  # positions drawn and rolled back: a gap
            await gap.start()
            await conn.execute("INSERT INTO events (session_id, type, ts) SELECT gen_random_uuid(), 'SESSION_START', 0")
            await gap.rollback()
        behind = (await unfolded(conn))[1]
        assert behind > 20
        while behind:
            await conn.execute("SELECT stats_fold_up_to(7)")
            now_behind = (await unfolded(conn))[1]
            assert now_behind == max(0, behind - 7)
            behind = now_behind
            await assert_rollups_exact(conn)
        with pytest.raises(asyncpg.RaiseError, match="at least one"):
            await conn.execute("SELECT stats_fold_up_to(0)")
    finally:
        await conn.close()


async def test_one_service_fold_takes_every_slice_up_to_the_head(postgres: test_postgres.TestPostgres) -> None:
    """The service folds in slices of FOLD_SLICE events (short transactions beside the
    writers), but one fold still reaches the head it saw: more than a slice behind, one
    call leaves nothing unfolded, and the rollups stay exact."""
    from app.store import db as app_db
    from app.store import watch

    url = await postgres.create_database("fold_slices")  # no service: nothing folds but us
    await app_db.migrate(url)
    conn = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        model = Model()
        sid = str(uuid.uuid4())
        rows = [(sid, "SESSION_START", T0, None), *((sid, "EVENT", T0 + i, ("view", "click")[i % 2]) for i in range(25_000))]
        # REPEATABLE READ: the trigger's own fold (when a statement crosses a multiple of
        # 1,000,000 positions, 2.5 % of the time here: seen once) stays out of it.
        async with conn.transaction(isolation="repeatable_read"):
            await insert(conn, model, rows)
        assert (await unfolded(conn))[1] > 2 * watch.FOLD_SLICE
        await watch.Watch(pool, lock_report_seconds=5, retention_hours=1).fold_stats()
        assert await unfolded(conn) == (0, 0)
        await assert_rollups_exact(conn)
    finally:
        await pool.close()
        await conn.close()


async def test_the_fold_runs_whatever_the_databases_default_isolation(
    postgres: test_postgres.TestPostgres, start_service: Any
) -> None:
    """stats_fold() refuses anything but READ COMMITTED; the service asks for it explicitly."""
    url = await postgres.create_database("fold_isolation")
    admin = await asyncpg.connect(url)
    try:
        name = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'")
    finally:
        await admin.close()
    await start_service(database_url=url)
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SHOW transaction_isolation") == "repeatable read"
        sid = str(uuid.uuid4())
        await insert(conn, Model(), [(sid, "SESSION_START", T0, None), (sid, "EVENT", T0, "view")])
        await until_folded(conn)
    finally:
        await conn.close()


async def test_writers_fold_every_million_positions_unless_a_fold_runs(postgres: test_postgres.TestPostgres) -> None:
    """With no service folding, a statement crossing a multiple of 1,000,000 positions
    folds; while another fold holds the lock, it skips instead of waiting."""
    from app.store import db as app_db

    url = await postgres.create_database("writer_folds")
    await app_db.migrate(url)
    conn = await asyncpg.connect(url)
    try:
        model = Model()

        async def cross_a_million() -> None:
            head = await conn.fetchval("SELECT coalesce(max(position), base) FROM events, stream_meta GROUP BY base")
            await conn.execute(f"ALTER TABLE events ALTER COLUMN position RESTART WITH {head - head % 1_000_000 + 999_998}")
            sid = str(uuid.uuid4())
            await insert(conn, model, [(sid, "SESSION_START", T0, None), *((sid, "EVENT", T0 + i, "view") for i in range(4))])

        first = str(uuid.uuid4())
        await insert(conn, model, [(first, "SESSION_START", T0, None), (first, "EVENT", T0, "view")])
        assert await unfolded(conn) == (1, 2)
        await cross_a_million()
        assert await unfolded(conn) == (0, 0)
        async with folds_paused(url):
            await asyncio.wait_for(cross_a_million(), 10)  # not blocked by the held lock
            assert await unfolded(conn) == (1, 5)
        await assert_rollups_exact(conn)
        async with conn.transaction(isolation="repeatable_read"):
            with pytest.raises(asyncpg.RaiseError, match="READ COMMITTED"):
                await conn.execute("SELECT stats_fold()")
    finally:
        await conn.close()


async def test_websocket_ingest_counts_too(service: Service, loaded: Model) -> None:
    """The service's own writer (COPY) goes through the same trigger as plain SQL."""
    from test.support.clients import upload

    sid = str(uuid.uuid4())
    base = T0 + 5 * DAY
    batch = [
        {"type": "SESSION_START", "timestamp": base + 5},
        {"type": "EVENT", "timestamp": base + 10, "name": "view"},
        {"type": "EVENT", "timestamp": base + 10, "name": "click"},
        {"type": "SESSION_END", "timestamp": base + 2_000},
    ]
    acks = await upload(service.ws_url, sid, batch)
    assert acks[0]["type"] == "ACK", acks
    loaded.rows.extend((sid, e["type"], e["timestamp"], e.get("name")) for e in batch)
    span = [("from", base), ("to", base + DAY)]
    summary = await stat(service, "/stats/summary", span)
    assert summary == brute_summary(loaded, base, base + DAY)
    assert summary["sessions"] == {"started": 1, "ended": 1, "open": 0}
    assert summary["duration_histogram"][1] == {"le_ms": 5_000, "sessions": 1}
    funnel = await stat(service, "/stats/funnel", [*span, ("step", "view"), ("step", "click")])
    assert [s["sessions"] for s in funnel["steps"]] == [1, 1]


async def test_rfc3339_and_default_range(service: Service, loaded: Model) -> None:
    lo, hi = T0 - T0 % DAY, T0 - T0 % DAY + DAY
    by_ms = await stat(service, "/stats/summary", [("from", lo), ("to", hi)])
    by_text = await stat(service, "/stats/summary", [("from", "2026-02-25T00:00:00Z"), ("to", "2026-02-26T02:00:00+02:00")])
    assert lo == 1_771_977_600_000 and by_text == by_ms
    body = await stat(service, "/stats/summary", [])
    assert body["to"] - body["from"] == DAY
    only_to = await stat(service, "/stats/names", [("to", hi)])
    assert (only_to["from"], only_to["to"]) == (lo, hi)


async def test_empty_range_is_zeros_and_nulls(service: Service) -> None:
    span = [("from", 1_000), ("to", 2_000)]
    summary = await stat(service, "/stats/summary", span)
    assert summary["sessions"] == {"started": 0, "ended": 0, "open": 0}
    assert summary["duration_ms"] == {"p50": None, "p90": None, "p99": None, "mean": None}
    assert summary["events_per_session"] == {"p50": None, "p90": None, "mean": None}
    assert [b["sessions"] for b in summary["duration_histogram"]] == [0] * 10
    series = await stat(service, "/stats/timeseries", [*span, ("bucket", "minute")])
    assert series["total"] == [[0, 0]] and series["sessions_started"] == [[0, 0]] and series["series"] == []
    funnel = await stat(service, "/stats/funnel", [*span, ("step", "a"), ("step", "b")])
    assert funnel["steps"] == [{"name": "a", "sessions": 0, "conversion": None}, {"name": "b", "sessions": 0, "conversion": None}]


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/stats/summary", [("from", 5), ("to", 5)], "invalid_range"),
        ("/stats/summary", [("from", 9), ("to", 5)], "invalid_range"),
        ("/stats/summary", [("from", "yesterday")], "invalid_from"),
        ("/stats/summary", [("to", "2026-02-30T00:00:00Z")], "invalid_to"),
        ("/stats/summary", [("from", "2026-02-01T00:00:00")], "invalid_from"),
        ("/stats/summary", [("from", "-5")], "invalid_from"),
        ("/stats/summary", [("from", "253402300800000")], "invalid_from"),
        ("/stats/summary", [("from", 1), ("from", 2)], "invalid_from"),
        ("/stats/timeseries", [("bucket", "week")], "invalid_bucket"),
        ("/stats/timeseries", [("bucket", "minute"), ("from", 0), ("to", 10_001 * MINUTE)], "too_many_buckets"),
        ("/stats/timeseries", [("name", "")], "invalid_name"),
        ("/stats/names", [("limit", "0")], "invalid_limit"),
        ("/stats/names", [("limit", "1001")], "invalid_limit"),
        ("/stats/names", [("limit", "x")], "invalid_limit"),
        ("/stats/funnel", [("step", "a")], "invalid_step"),
        ("/stats/funnel", [("step", str(i)) for i in range(11)], "invalid_step"),
        ("/stats/funnel", [("step", "a"), ("step", "b"), ("within", "-1")], "invalid_within"),
        ("/stats/funnel", [("step", "a"), ("step", "b"), ("within", "1.5")], "invalid_within"),
    ],
)
async def test_bad_parameters_are_400_json(service: Service, path: str, params: list[tuple[str, Any]], code: str) -> None:
    status, body = await get(service, path, params)
    assert status == 400 and set(body) == {"error", "message"} and body["error"] == code, body


async def test_exactly_10000_buckets_are_allowed(service: Service) -> None:
    body = await stat(service, "/stats/timeseries", [("bucket", "minute"), ("from", 30_000), ("to", 10_000 * MINUTE)])
    assert len(body["total"]) == 10_000 and body["total"][0] == [0, 0] and body["total"][-1][0] == 9_999 * MINUTE


async def test_read_tokens_apply(start_service: Any) -> None:
    svc = await start_service(env={"READ_TOKENS": "stats-read-token-0123456789"})
    for path in ("/stats/summary", "/stats/timeseries", "/stats/names", "/stats/funnel?step=a&step=b"):
        async with aiohttp.ClientSession() as http:
            async with http.get(svc.url + path) as response:
                assert response.status == 401 and (await response.json())["error"] == "unauthorized"
            async with http.get(svc.url + path, headers={"Authorization": "Bearer stats-read-token-0123456789"}) as response:
                assert response.status == 200, await response.text()


# --- hypothesis: funnels with ties and windows, through the real database -----------------

_STEP_NAMES = ["a", "b", "c"]
_session_events = hs.lists(hs.tuples(hs.integers(0, 6), hs.sampled_from([*_STEP_NAMES, "x"])), min_size=0, max_size=9)
_case_counter = iter(range(10**6))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    sessions=hs.lists(_session_events, min_size=1, max_size=5),
    steps=hs.lists(hs.sampled_from(_STEP_NAMES), min_size=2, max_size=4),
    within=hs.one_of(hs.none(), hs.integers(0, 4)),
)
async def test_funnel_ties_and_windows(
    service: Service, sql: asyncpg.Connection, sessions: list[list[tuple[int, str]]], steps: list[str], within: int | None
) -> None:
    base = 10 * DAY + next(_case_counter) * HOUR  # a window of its own per example
    model = Model()
    rows: list[Row] = []
    for events in sessions:
        sid = str(uuid.uuid4())
        rows.append((sid, "SESSION_START", base, None))
        rows += [(sid, "EVENT", base + offset, name) for offset, name in events]
    await insert(sql, model, rows)
    params = [("from", base), ("to", base + 1), *(("step", s) for s in steps)]
    params += [("within", within)] if within is not None else []
    assert await stat(service, "/stats/funnel", params) == brute_funnel(model, base, base + 1, steps, within)


# --- hypothesis: distinct sessions per name, whatever order the hours arrive in -----------

_presence = hs.tuples(hs.integers(0, 2), hs.sampled_from(["p", "q"]), hs.integers(0, 7), hs.integers(0, HOUR - 1))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    statements=hs.lists(hs.tuples(hs.lists(_presence, min_size=1, max_size=6), hs.booleans()), min_size=1, max_size=5),
    cuts=hs.lists(hs.integers(0, 9 * HOUR), min_size=2, max_size=6),
)
async def test_name_sessions_exact_whatever_order_hours_arrive(
    service: Service, sql: asyncpg.Connection, statements: list[tuple[list[tuple[int, str, int, int]], bool]], cuts: list[int]
) -> None:
    """Statements bring a pair's hours in any order, several at once, before and between
    hours it already has, folded (stats_fold) at random points: the presences stay a
    recount of the folded events, and /stats/names is exact folded or not."""
    base = 40 * DAY + next(_case_counter) * 12 * HOUR  # a window of its own per example
    sids = [str(uuid.uuid4()) for _ in range(3)]
    model = Model()
    for events, fold in statements:
        await insert(sql, model, [(sids[s], "EVENT", base + hour * HOUR + offset, name) for s, name, hour, offset in events])
        if fold:
            await sql.execute("SELECT stats_fold()")
        async with sql.transaction(isolation="repeatable_read", readonly=True):  # the service folds too
            assert await sql.fetch(ROLLUP_NAME_HOURS) == await sql.fetch(RECOUNT_NAME_HOURS)
        for lo, hi in itertools.pairwise(sorted({base + c for c in cuts})):
            assert await stat(service, "/stats/names", [("from", lo), ("to", hi)]) == brute_names(model, lo, hi, 50), (lo, hi)


_SEQ_SCANS = """
SELECT relname, seq_scan FROM pg_stat_user_tables
 WHERE relname IN ('sessions', 'stats_name_session_hours') ORDER BY relname
"""


async def test_trigger_probes_use_indexes_even_when_first_planned_on_empty_tables(
    postgres: test_postgres.TestPostgres,
) -> None:
    """PL/pgSQL caches plans per connection, a generic one once a statement ran five
    times: planned on a nearly empty database, the probes of the trigger and of its
    fold must still be index scans once the tables are large (a sequential scan per
    probe made loading 10 M events quadratic)."""
    from app.store import db as app_db

    url = await postgres.create_database("trigger_plans")
    await app_db.migrate(url)
    writer, reader = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        # No autoanalyze meanwhile: its invalidation would replan and hide a bad plan.
        for table in ("sessions", "stats_name_session_hours"):
            await reader.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        model = Model()
        first = str(uuid.uuid4())
        await insert(writer, model, [(first, "SESSION_START", T0, None)])
        for i in range(8):  # past the five custom plans after which a cached generic plan may take over
            await insert(writer, model, [(first, "EVENT", T0 + i * HOUR, "view")])
            await writer.execute("SELECT stats_fold()")
        await reader.execute(
            """
            INSERT INTO events (session_id, type, ts, name_id)
            SELECT gen_random_uuid(), t, $1::bigint + g, CASE WHEN t = 'EVENT' THEN event_name_id('view') END
              FROM generate_series(1, 20000) AS g, unnest(ARRAY['SESSION_START', 'EVENT']) AS t
            """,
            T0,
        )
        await reader.execute("SELECT stats_fold()")

        async def seq_scans() -> list[tuple[str, int]]:
            for conn in (writer, reader):
                await conn.execute("SELECT pg_stat_force_next_flush()")  # flushed when it goes idle
            await reader.execute("SELECT pg_stat_clear_snapshot()")
            return [tuple(r) for r in await reader.fetch(_SEQ_SCANS)]

        before = await seq_scans()
        for conn in (writer, reader):  # both planned the fold while the tables were tiny
            rows: list[Row] = []
            for _ in range(25):
                sid = str(uuid.uuid4())
                rows += [(sid, "SESSION_START", T0 + HOUR, None), (sid, "EVENT", T0 + HOUR, "view")]
            rows.append((first, "EVENT", T0 - HOUR, "view"))  # an hour before one it has: both probes
            await insert(conn, model, rows)
            await conn.execute("SELECT stats_fold()")
            assert await conn.fetchval(UNFOLDED_EVENTS) == 0
        assert await seq_scans() == before
    finally:
        await writer.close()
        await reader.close()


async def test_funnel_chunks_read_every_session_once(sql: asyncpg.Connection, loaded: Model) -> None:
    """The funnel reads sessions in chunks by start: whatever the chunk size, and with
    more sessions sharing one start than a chunk holds, each session comes once."""
    from app.store import store

    tied = T0 + 7 * DAY
    rows: list[Row] = []
    for i in range(5):
        sid = str(uuid.uuid4())
        rows += [(sid, "SESSION_START", tied, None), (sid, "EVENT", tied + i, "view"), (sid, "EVENT", tied - i, "click")]
    await insert(sql, loaded, rows)
    ids = list((await store.stats_name_ids(sql, ["view", "click", "buy"])).values())
    lo, hi = T0 - DAY, T0 + 8 * DAY

    async def read(chunk: int) -> list[tuple[list[int], list[int]]]:
        async with sql.transaction(isolation="repeatable_read", readonly=True):
            return sorted([(list(n), list(t)) async for n, t in store.stats_funnel_events(sql, lo, hi, ids, chunk)])

    whole = await read(10**9)
    assert len(whole) > 50 and sum(1 for _, stamps in whole if stamps[0] <= tied <= stamps[-1] and len(stamps) == 2) >= 5
    for chunk in (1, 2, 3, 7):
        assert await read(chunk) == whole, chunk
