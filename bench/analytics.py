"""``python -m bench stats``: GET /stats/… latency on a generated database, with what each query costs.

Generates N EVENTs over M sessions spread over D days ending now (default 10 M /
1 M / 30 days) and writes them with COPY through the events trigger (so the
rollups are built the way production builds them), then measures p50/p99 of
summary, timeseries and names for the last 24 hours and for all D days, and a
3-step funnel over the sessions started in a range chosen to hold ~100,000 of
them. For each query it prints the EXPLAIN (ANALYZE, BUFFERS) summary: the scans,
their rows and the time PostgreSQL spent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg

from app.reads import stats as st
from app.store import db as app_db
from app.store import queries

from .report import Row, emit
from .service import Database, mib, service
from .stats import Recorder

# A few names dominate, as on real sites; the funnel walks the first three.
NAMES = ["view", "add_to_cart", "checkout", "scroll", "click", "search", "login", "share"] + [f"name{i:02d}" for i in range(22)]
WEIGHTS = [1.0 / (i + 1) for i in range(len(NAMES))]
FUNNEL = ("view", "add_to_cart", "checkout")
# Each EVENT's data (for /stats/breakdown and /sessions?data=): a path out of 50 (a few
# dominate), a plan, or no data at all for one in four.
_rng = random.Random(5)
DATA: list[str | None] = [
    None
    if i % 4 == 0
    else json.dumps({"path": f"/page/{min(49, int(_rng.expovariate(0.15)))}", "plan": ["free", "pro"][i % 3 == 0]})
    for i in range(10_007)
]
COLUMNS = ["session_id", "type", "ts", "name_id", "data"]
MIGRATIONS = [app_db.SCHEMA_DIR / "004_stats.sql", app_db.SCHEMA_DIR / "005_stats_sessions.sql"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=10_000_000, help="EVENTs generated (default 10,000,000)")
    p.add_argument("--sessions", type=int, default=None, help="sessions (default events / 10)")
    p.add_argument("--days", type=int, default=30, help="days the sessions start in, ending now (default 30)")
    p.add_argument("--chunk", type=int, default=100_000, help="rows per COPY statement (default 100,000)")
    p.add_argument("--requests", type=int, default=30, help="requests per figure for the 24-hour range (default 30)")
    p.add_argument("--long-requests", type=int, default=10, help="requests per figure for the whole range (default 10)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="with --database-url: measure what the database already holds (a previous run's data) instead of generating",
    )
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated endpoints to measure (summary,timeseries,names,funnel,breakdown,sessions; default all)",
    )
    p.add_argument("--funnel-sessions", type=int, default=100_000, help="sessions the funnel covers (default 100,000)")


def generate(events: int, sessions: int, days: int, now_ms: int, seed: int = 13) -> Iterator[list[tuple[Any, ...]]]:
    """Rows (session_id, type, ts, name_id as a name index, data) per session, sessions in start order.

    Each session: a SESSION_START, about events/sessions EVENTs a few seconds to a
    minute apart, and (90 %) a SESSION_END after the last.
    """
    rng = random.Random(seed)
    span = days * st.DAY_MS
    starts = sorted(now_ms - span + rng.randrange(span) for _ in range(sessions))
    per = events / sessions
    left = events
    chosen = rng.choices(range(len(NAMES)), weights=WEIGHTS, k=min(events, 1_000_000))
    pick = 0
    for index, start in enumerate(starts):
        sid = uuid.UUID(int=rng.getrandbits(128))
        remaining_sessions = sessions - index
        count = left if remaining_sessions == 1 else max(0, min(left, int(rng.uniform(0, 2 * per) + 0.5)))
        left -= count
        rows: list[tuple[Any, ...]] = [(sid, "SESSION_START", start, None, None)]
        ts = start
        for _ in range(count):
            ts += rng.randrange(200, 60_000)
            rows.append((sid, "EVENT", ts, chosen[pick % len(chosen)], DATA[pick % len(DATA)]))
            pick += 1
        if rng.random() < 0.9:
            rows.append((sid, "SESSION_END", ts + rng.randrange(0, 30_000), None, None))
        yield rows


async def load(url: str, args: argparse.Namespace, now_ms: int) -> tuple[int, int, float, float, float]:
    """COPY the generated rows in chunks (each chunk one statement, one trigger run); then VACUUM ANALYZE."""
    sessions = args.sessions or max(1, args.events // 10)
    conn = await app_db.connect(url)
    try:
        ids = [await conn.fetchval("SELECT event_name_id($1)", name) for name in NAMES]
        t0 = time.monotonic()
        chunk: list[tuple[Any, ...]] = []
        written = 0
        for rows in generate(args.events, sessions, args.days, now_ms):
            chunk.extend((sid, kind, ts, None if n is None else ids[n], data) for sid, kind, ts, n, data in rows)
            if len(chunk) >= args.chunk:
                await conn.copy_records_to_table(queries.EVENTS_TABLE, records=chunk, columns=COLUMNS)
                written += len(chunk)
                chunk = []
        if chunk:
            await conn.copy_records_to_table(queries.EVENTS_TABLE, records=chunk, columns=COLUMNS)
            written += len(chunk)
        copy_s = time.monotonic() - t0
        t1 = time.monotonic()
        await conn.execute("VACUUM ANALYZE")
        vacuum_s = time.monotonic() - t1
        # What migrating an existing database costs: 004 builds its two indexes and
        # recounts the rollups from the events, 005 recomputes the name presences and
        # the sessions' time spans (the triggers are already in place here).
        await conn.execute("DROP INDEX sessions_start; DROP INDEX events_ts_brin")
        t2 = time.monotonic()
        async with conn.transaction():
            for migration in MIGRATIONS:
                await conn.execute(migration.read_text())
        migrate_s = time.monotonic() - t2
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return written, sessions, copy_s, vacuum_s, migrate_s


def _scans(node: dict[str, Any], out: list[str]) -> None:
    kind = node.get("Node Type", "")
    if "Scan" in kind or kind in ("Function Scan",):
        target = node.get("Index Name") or node.get("Relation Name") or node.get("Alias") or ""
        rows = int(node.get("Actual Rows", 0) * node.get("Actual Loops", 1))
        fetches = node.get("Heap Fetches")
        extra = f", {fetches:,} heap fetches" if fetches else ""
        out.append(f"{kind} {target}: {rows:,} rows{extra}")
    for child in node.get("Plans", []):
        _scans(child, out)


async def explain(conn: asyncpg.Connection, sql: str, args: Sequence[Any]) -> str:
    """One line: PostgreSQL's execution time, buffers touched, and each scan with its rows."""
    plan = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args)
    top = json.loads(plan)[0]
    root = top["Plan"]
    scans: list[str] = []
    _scans(root, scans)
    hit, read = root.get("Shared Hit Blocks", 0), root.get("Shared Read Blocks", 0)
    return f"{top['Execution Time']:.0f} ms in PG, {(hit + read) * 8 / 1024:,.0f} MiB of buffers; " + "; ".join(scans)


async def timed(http: aiohttp.ClientSession, url: str, count: int) -> tuple[Recorder, Any]:
    rec = Recorder()
    body: Any = None
    for _ in range(count):
        t0 = time.perf_counter()
        async with http.get(url) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"GET {url} answered {response.status}: {body}")
        rec.add(time.perf_counter() - t0)
    return rec, body


async def _rollup_plans(
    conn: asyncpg.Connection, name_id: int, key: str, rng: st.Range, notes: list[str]
) -> list[tuple[str, list[Any]]]:
    """Waits for the pair's rollup (schema/010_breakdown_rollups.sql) to reach the fold's
    watermark, notes how long that took, and gives the plan of the read that uses it."""
    started = time.monotonic()
    while True:
        row = await conn.fetchrow(
            "SELECT k.id, k.through, k.through >= f.position AS caught_up FROM breakdown_keys k, stats_folded f"
            " WHERE k.name_id = $1 AND k.key = $2",
            name_id,
            key,
        )
        if row is None:
            raise RuntimeError("the breakdown did not give its pair a rollup: is BREAKDOWN_ROLLUPS 0?")
        if row["caught_up"]:
            break
        await asyncio.sleep(0.5)
    if (waited := time.monotonic() - started) > 1:
        notes.append(f"- The rollup of (view, path) caught up with every event in {waited:.0f} s after it was first asked for.")
    args = [name_id, key, 20, *st.hour_split(rng), row["id"], row["through"]]
    return [("values by path from the rollup", [queries.STATS_BREAKDOWN_ROLLUP, *args])]


async def _find_sessions(http: aiohttp.ClientSession, base: str, day: st.Range, count: int) -> Row:
    """GET /sessions?name=checkout&from=<24 h ago>: the first page (50), as a person searching would."""
    url = f"{base}/sessions?{urlencode([('name', 'checkout'), ('from', day.start)])}"
    await timed(http, url, 1)
    rec, body = await timed(http, url, count)
    p50, p99 = rec.p50_p99_ms()
    covers = f"{len(body['sessions'])} sessions on the first page"
    return {"query": "sessions?name=&from=", "range": "24 h", "requests": count, "p50 ms": p50, "p99 ms": p99, "covers": covers}


async def main(args: argparse.Namespace, db: Database) -> None:
    if args.events < 10 or args.days < 2:
        raise SystemExit("--events must be at least 10 and --days at least 2")
    await app_db.migrate(db.url)
    now_ms = int(time.time() * 1000)
    if args.reuse:
        conn = await app_db.connect(db.url)
        try:
            sessions = int(await conn.fetchval("SELECT count(*) FROM sessions"))
            newest = await conn.fetchval("SELECT max(start_ms) FROM sessions")
        finally:
            await conn.close()
        now_ms = int(newest or now_ms) + 1
        notes = [f"Reused a database of {sessions:,} sessions; ranges end at its newest session start."]
    else:
        rows_written, sessions, copy_s, vacuum_s, migrate_s = await load(db.url, args, now_ms)
        notes = [
            f"Generated {args.events:,} EVENTs in {sessions:,} sessions over {args.days} days ({rows_written:,} rows with the "
            f"SESSION_STARTs and SESSION_ENDs): COPY through the trigger {copy_s:,.1f} s ({rows_written / copy_s:,.0f} rows/s), "
            f"then VACUUM ANALYZE {vacuum_s:,.1f} s. Migrations 004 and 005 on that database (indexes built, "
            f"rollups and name presences counted from scratch, writers held meanwhile): {migrate_s:,.1f} s."
        ]
    day = st.Range(now_ms - st.DAY_MS, now_ms)
    whole = st.Range(now_ms - args.days * st.DAY_MS, now_ms + 1)
    # Sessions start uniformly, so this many days hold about funnel_sessions of them.
    funnel_days = min(args.days, args.funnel_sessions / sessions * args.days)
    funnel_range = st.Range(now_ms - int(funnel_days * st.DAY_MS), now_ms)
    results: list[Row] = []
    async with service(db, workers=args.workers, extra_args=args.server_arg) as svc:
        conn = await app_db.connect(db.url)
        await conn.execute(queries.STATS_SETTINGS.replace("LOCAL ", ""))  # as the service's stats transactions
        name_ids = {r["name"]: r["id"] for r in await conn.fetch(queries.STATS_NAME_IDS, NAMES)}
        watermark = await conn.fetchval(queries.STATS_WATERMARK)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
                cases: list[tuple[str, st.Range, str, list[tuple[str, Any]], int, list[tuple[str, list[Any]]]]] = []
                for label, rng, count, bucket in (
                    ("24 h", day, args.requests, "minute"),
                    (f"{args.days} d", whole, args.long_requests, "hour"),
                ):
                    span = [("from", rng.start), ("to", rng.end)]
                    b = (*st.split_range(rng).event_bounds(), watermark)
                    tb = (*st.split_range(rng, hours=bucket != "minute").event_bounds(), watermark)
                    sb = st.split_range(rng, hours=False).session_bounds()
                    hs = st.hour_split(rng)
                    size = st.BUCKETS[bucket]
                    top5 = [name_ids[n] for n in NAMES[:5]]
                    cases += [
                        (
                            "summary",
                            rng,
                            label,
                            span,
                            count,
                            [
                                ("events/names from rollups", [queries.STATS_EVENT_TOTALS, *b]),
                                (
                                    "sessions in one pass",
                                    [queries.STATS_SESSION_GROUPS, rng.start, rng.end, list(st.DURATION_BOUNDS)],
                                ),
                            ],
                        ),
                        (
                            f"timeseries ({bucket})",
                            rng,
                            label,
                            [*span, ("bucket", bucket)],
                            count,
                            [
                                ("top names", [queries.STATS_NAME_COUNTS, *b, 5]),
                                ("total and series", [queries.STATS_EVENT_BUCKETS, *tb, size, top5]),
                                ("sessions started", [queries.STATS_SESSION_BUCKETS, *sb, size]),
                            ],
                        ),
                        (
                            "names",
                            rng,
                            label,
                            span,
                            count,
                            [
                                ("counts from rollups", [queries.STATS_NAME_COUNTS, *b, 50]),
                                (
                                    "distinct sessions",
                                    [queries.STATS_NAME_SESSIONS, *hs[:2], list(name_ids.values()), *hs[2:], watermark],
                                ),
                            ],
                        ),
                        (
                            "breakdown",
                            rng,
                            label,
                            [*span, ("name", "view"), ("key", "path")],
                            count,
                            [("values by path", [queries.STATS_BREAKDOWN, name_ids["view"], rng.start, rng.end, "path", 20])],
                        ),
                        (
                            "breakdown (day series)",
                            rng,
                            label,
                            [*span, ("name", "view"), ("key", "path"), ("bucket", "day")],
                            count,
                            [],
                        ),
                    ]
                steps = [("step", s) for s in FUNNEL]
                funnel_span = list(await conn.fetchrow(queries.STATS_FUNNEL_SPAN, funnel_range.start, funnel_range.end))
                cases.append(
                    (
                        "funnel (3 steps)",
                        funnel_range,
                        f"{funnel_days:.1f} d",
                        [("from", funnel_range.start), ("to", funnel_range.end), *steps],
                        args.long_requests,
                        [
                            ("step events' span", [queries.STATS_FUNNEL_SPAN, funnel_range.start, funnel_range.end]),
                            (
                                "step events",
                                [
                                    queries.STATS_FUNNEL_EVENTS,
                                    funnel_range.start,
                                    funnel_range.end,
                                    [name_ids[s] for s in FUNNEL],
                                    *funnel_span,
                                ],
                            ),
                        ],
                    )
                )
                only = set(args.only.split(",")) if args.only else None
                for name, rng, label, params, count, plans in cases:
                    path = name.split(" ")[0]
                    if only is not None and path not in only:
                        continue
                    url = f"{svc.http}/stats/{path}?{urlencode(params)}"
                    await timed(http, url, 1)  # warm the caches and the prepared statements
                    if name == "breakdown":  # the first request gave the pair a rollup: measured once it has caught up
                        plans = await _rollup_plans(conn, name_ids["view"], "path", rng, notes)
                    rec, body = await timed(http, url, count)
                    p50, p99 = rec.p50_p99_ms()
                    row: Row = {"query": name, "range": label, "requests": count, "p50 ms": p50, "p99 ms": p99}
                    if path == "funnel":
                        row["covers"] = f"{body['steps'][0]['sessions']:,} sessions reached step 1"
                        started = await conn.fetchval(
                            "SELECT count(*) FROM sessions WHERE start_ms >= $1 AND start_ms < $2", rng.start, rng.end
                        )
                        row["covers"] = f"{started:,} sessions started; " + row["covers"]
                    results.append(row)
                    for what, (sql, *qargs) in plans:
                        notes.append(f"- {name}, {label}, {what}: {await explain(conn, sql, qargs)}")
                if only is None or "sessions" in only:
                    results.append(await _find_sessions(http, svc.http, day, args.requests))
        finally:
            await conn.close()
        rss = svc.tree.rss_bytes()
    notes.append(f"Server RSS after the run: {mib(rss):,.0f} MiB." if rss else "")
    emit("GET /stats/… on a generated database", results, notes)
