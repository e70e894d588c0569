"""GET /stats/summary, /stats/timeseries, /stats/names, /stats/funnel, /stats/breakdown: session analytics.

Parameters and shaping are pure (app/reads/stats.py); the reads are typed operations of
app/store/store.py over the rollups of schema/004_stats.sql. Each response reads one
REPEATABLE READ snapshot, so its figures agree with each other while writers keep
committing. A database that cannot answer raises DatabaseUnavailable, which the app's
one handler answers with a 503 (app/errors.py database_unavailable).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.codes import ErrorCode
from app.errors import error_response
from app.reads import find
from app.reads import stats as st
from app.services import Services
from app.store import store

Params = Mapping[str, Sequence[str]]
Handler = Callable[[asyncpg.Connection, dict[str, Any], st.Range], Awaitable[dict[str, Any]]]
Parser = Callable[[Params, st.Range], dict[str, Any]]

# Sessions per funnel read: ~50,000 sessions' step events are a few tens of MB in Python.
_FUNNEL_CHUNK = 50_000


def _bounds(rng: st.Range, watermark: int, *, hours: bool = True) -> store.EventBounds:
    return (*st.split_range(rng, hours=hours).event_bounds(), watermark)


async def with_retained_from(conn: asyncpg.Connection, body: dict[str, Any], start: int) -> dict[str, Any]:
    """Figures that need the entries themselves say what they lack (SPEC "Retention").

    `retained_from` (ms) is added when the range starts before the oldest retained
    entry; read in the response's snapshot, so it covers what the figures read.
    For every stats route computed from entries (names, funnel, breakdown).
    """
    retained = await store.retained_from(conn)
    if retained is not None and start < retained:
        body["retained_from"] = retained
    return body


async def with_retained_from_at_edges(conn: asyncpg.Connection, body: dict[str, Any], rng: st.Range) -> dict[str, Any]:
    """Summary and time series read rollups for whole minutes, which retention keeps:
    exact over any range of whole minutes. A partial minute at either end is read
    from the entries, so such a range that reaches before retention says so too."""
    if rng.start % 60_000 or rng.end % 60_000:
        return await with_retained_from(conn, body, rng.start)
    return body


def _no_options(params: Params, rng: st.Range) -> dict[str, Any]:
    return {}


async def _summary(conn: asyncpg.Connection, options: dict[str, Any], rng: st.Range) -> dict[str, Any]:
    totals = await store.stats_event_totals(conn, _bounds(rng, await store.stats_watermark(conn)))
    groups = await store.stats_session_groups(conn, rng.start, rng.end, st.DURATION_BOUNDS)
    per_session: dict[int, int] = {}
    by_duration_bucket: dict[int, int] = {}
    for g in groups:
        per_session[g.event_count] = per_session.get(g.event_count, 0) + g.sessions
        if g.duration_bucket is not None:
            by_duration_bucket[g.duration_bucket] = by_duration_bucket.get(g.duration_bucket, 0) + g.sessions
    started = sum(per_session.values())
    ended = sum(by_duration_bucket.values())
    duration_sum = sum(g.duration_sum for g in groups)
    events_p = st.percentiles_from_counts(per_session, (50, 90))
    durations_p = await _duration_percentiles(conn, rng, by_duration_bucket, ended, (50, 90, 99))
    body = {
        "from": rng.start,
        "to": rng.end,
        "sessions": {"started": started, "ended": ended, "open": started - ended},
        "events": totals.events,
        "names": totals.names,
        "duration_ms": {
            "p50": durations_p[50],
            "p90": durations_p[90],
            "p99": durations_p[99],
            "mean": st.mean(duration_sum, ended),
        },
        "events_per_session": {
            "p50": events_p[50],
            "p90": events_p[90],
            "mean": st.mean(sum(k * n for k, n in per_session.items()), started),
        },
        "duration_histogram": st.histogram_from_buckets(by_duration_bucket),
    }
    return await with_retained_from_at_edges(conn, body, rng)


async def _duration_percentiles(
    conn: asyncpg.Connection, rng: st.Range, counts: dict[int, int], ended: int, percents: Sequence[int]
) -> dict[int, int | None]:
    """Exact nearest-rank percentiles: only the buckets that hold a wanted rank are read and sorted."""
    if not ended:
        return {p: None for p in percents}
    ranks = {p: st.nearest_rank(ended, p) for p in percents}
    located = st.locate_ranks(counts, ranks.values())
    buckets = sorted({bucket for bucket, _ in located.values()})
    spans = [st.duration_bucket_range(b) for b in buckets]
    values: dict[int, list[int]] = {b: [] for b in buckets}
    for duration in await store.stats_durations_between(conn, rng.start, rng.end, spans):
        values[st.duration_bucket(duration)].append(duration)
    for listed in values.values():
        listed.sort()
    return {p: values[located[k][0]][located[k][1] - 1] for p, k in ranks.items()}


def _timeseries_options(params: Params, rng: st.Range) -> dict[str, Any]:
    bucket, size = st.parse_bucket(params)
    st.check_bucket_count(rng, bucket, size)
    return {"bucket": bucket, "size": size, "names": st.parse_names(params.get("name") or [], "name")}


async def _timeseries(conn: asyncpg.Connection, options: dict[str, Any], rng: st.Range) -> dict[str, Any]:
    bucket, size, wanted = options["bucket"], options["size"], options["names"]
    watermark = await store.stats_watermark(conn)
    bounds = _bounds(rng, watermark, hours=bucket != "minute")
    session_bounds = st.split_range(rng, hours=False).session_bounds()
    series_names: list[tuple[str, int | None]]
    if wanted:
        ids = await store.stats_name_ids(conn, wanted)
        series_names = [(name, ids.get(name)) for name in wanted]
    else:
        top = await store.stats_name_counts(conn, _bounds(rng, watermark), st.DEFAULT_TOP_NAMES)
        series_names = [(r.name, r.name_id) for r in top]
    starts = st.bucket_starts(rng, size)
    started = await store.stats_session_buckets(conn, session_bounds, size)
    known_ids = [i for _, i in series_names if i is not None]
    events = await store.stats_event_buckets(conn, bounds, size, known_ids)
    body = {
        "from": rng.start,
        "to": rng.end,
        "bucket": bucket,
        "total": st.points(starts, events.total),
        "sessions_started": st.points(starts, started),
        "series": [
            {"name": name, "points": st.points(starts, events.by_name.get(i, {}) if i is not None else {})}
            for name, i in series_names
        ],
    }
    return await with_retained_from_at_edges(conn, body, rng)


def _names_options(params: Params, rng: st.Range) -> dict[str, Any]:
    return {"limit": st.parse_limit(params, st.DEFAULT_NAMES_LIMIT, st.MAX_NAMES_LIMIT)}


async def _names(conn: asyncpg.Connection, options: dict[str, Any], rng: st.Range) -> dict[str, Any]:
    limit = options["limit"]
    watermark = await store.stats_watermark(conn)
    top = await store.stats_name_counts(conn, _bounds(rng, watermark), limit)
    sessions: dict[int, int] = {}
    if top:
        sessions = await store.stats_name_sessions(conn, st.hour_split(rng), watermark, [r.name_id for r in top])
    body = {
        "from": rng.start,
        "to": rng.end,
        "names": [{"name": r.name, "events": r.events, "sessions": sessions.get(r.name_id, 0)} for r in top],
    }
    return await with_retained_from(conn, body, rng.start)


def _funnel_options(params: Params, rng: st.Range) -> dict[str, Any]:
    return {"steps": st.parse_steps(params.get("step") or []), "within": st.parse_within(params)}


async def _funnel(conn: asyncpg.Connection, options: dict[str, Any], rng: st.Range) -> dict[str, Any]:
    steps, within = options["steps"], options["within"]
    ids = await store.stats_name_ids(conn, list(set(steps)))
    depths: list[int] = []
    if steps[0] in ids:
        # Step names as ids; a name never seen matches nothing (-1 is no id).
        step_ids = [ids.get(step, -1) for step in steps]
        sessions = store.stats_funnel_events(conn, rng.start, rng.end, list(ids.values()), _FUNNEL_CHUNK)
        async for names, stamps in sessions:
            depths.append(st.funnel_depth(names, stamps, step_ids, within))
    body = {"from": rng.start, "to": rng.end, "steps": st.funnel_steps(depths, steps)}
    return await with_retained_from(conn, body, rng.start)


def _breakdown_options(params: Params, rng: st.Range) -> dict[str, Any]:
    unknown = find.unknown_parameters(params, find.BREAKDOWN_PARAMETERS)
    if unknown is not None:
        raise st.BadParameter(ErrorCode.UNKNOWN_PARAMETER, unknown)
    return {"breakdown": find.parse_breakdown(params, rng)}


async def _breakdown(conn: asyncpg.Connection, options: dict[str, Any], rng: st.Range) -> dict[str, Any]:
    """Values, other and missing from one read, the series (with ?bucket=) from a second
    one in the same snapshot: of the pair's rollup and the events it has not counted
    when it has one (schema/010), else of the name's events in the range."""
    wanted: find.Breakdown = options["breakdown"]
    body: dict[str, Any] = {"from": rng.start, "to": rng.end, "name": wanted.name, "key": wanted.key}
    ids = await store.stats_name_ids(conn, [wanted.name])
    groups: list[store.BreakdownGroup] = []
    rollup: store.BreakdownRollup | None = None  # read once: the values and the series use the same one
    split = st.hour_split(rng)
    if wanted.name in ids:
        rollup = await store.breakdown_rollup(conn, ids[wanted.name], wanted.key)
        groups = await store.stats_breakdown(conn, ids[wanted.name], rng.start, rng.end, wanted.key, wanted.limit, rollup, split)
    values = sorted((g for g in groups if g.kind == 0), key=lambda g: (-g.events, g.value or ""))
    rest = {g.kind: {"events": g.events, "sessions": g.sessions} for g in groups if g.kind != 0}
    empty = {"events": 0, "sessions": 0}
    # orjson.Fragment: the value's JSON text as PostgreSQL has it (big integers, 1.50 stay exact).
    body["values"] = [{"value": orjson.Fragment(g.value or "null"), "events": g.events, "sessions": g.sessions} for g in values]
    body["other"] = rest.get(1, empty)
    body["missing"] = rest.get(2, empty)
    if wanted.bucket is not None:
        _, size = wanted.bucket
        labels = [g.value or "null" for g in values]
        counts: dict[int, dict[int, int]] = {}
        if labels:
            counts = await store.stats_breakdown_buckets(
                conn,
                ids[wanted.name],
                rng.start,
                rng.end,
                wanted.key,
                size,
                labels,
                rollup if size % st.HOUR_MS == 0 else None,
                split,
            )
        starts = st.bucket_starts(rng, size)
        body["series"] = [
            {"value": orjson.Fragment(label), "points": st.points(starts, counts.get(i, {}))} for i, label in enumerate(labels)
        ]
    return await with_retained_from(conn, body, rng.start)


async def _register_breakdown(services: Services, options: dict[str, Any]) -> None:
    """A pair asked for gets a rollup (up to BREAKDOWN_ROLLUPS pairs), so that the next
    answers read whole hours from it; this one reads what is folded so far (maybe
    nothing: its figures are the same either way)."""
    wanted: find.Breakdown = options["breakdown"]
    if services.settings.breakdown_rollups:
        await store.breakdown_register(services.pool, wanted.name, wanted.key, services.settings.breakdown_rollups)


def _endpoint(
    parse: Parser, handler: Handler, before: Callable[[Services, dict[str, Any]], Awaitable[None]] | None = None
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        params: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            params.setdefault(key, []).append(value)
        try:  # every parameter is checked before any database work
            rng = st.parse_range(params, int(time.time() * 1000))
            options = parse(params, rng)
        except st.BadParameter as exc:
            return error_response(400, exc.code, exc.message)
        services: Services = request.app.state.services
        if before is not None:  # writes that must precede the read-only snapshot
            await before(services, options)
        async with store.snapshot(services.pool, timeout=10) as conn:
            await store.stats_settings(conn)
            body = await handler(conn, options, rng)
        return Response(orjson.dumps(body), media_type="application/json")

    return endpoint


routes = [
    Route("/stats/summary", _endpoint(_no_options, _summary), methods=["GET"]),
    Route("/stats/timeseries", _endpoint(_timeseries_options, _timeseries), methods=["GET"]),
    Route("/stats/names", _endpoint(_names_options, _names), methods=["GET"]),
    Route("/stats/funnel", _endpoint(_funnel_options, _funnel), methods=["GET"]),
    Route("/stats/breakdown", _endpoint(_breakdown_options, _breakdown, _register_breakdown), methods=["GET"]),
]
