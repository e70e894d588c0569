"""GET /sessions: recently first-seen sessions, newest first, cursor-paged, with filters.

The filters (app/reads/find.py) are checked before any database work; the page is
read in one REPEATABLE READ snapshot with the fold's watermark, so a name's
presences (schema/005_stats_sessions.sql) and the events past them agree.
"""

from __future__ import annotations

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.codes import ErrorCode
from app.errors import error_response
from app.params import bounded_int
from app.reads import find
from app.reads import stats as st
from app.store import store

DEFAULT_LIMIT = 50
MAX_LIMIT = 1_000
_NEWEST = 2**63 - 1


def _params(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


def _filtered(wanted: find.SessionFilter) -> bool:
    return wanted != find.SessionFilter()


async def recent_sessions(request: Request) -> Response:
    params = _params(request)
    unknown = find.unknown_parameters(params, find.SESSIONS_PARAMETERS)
    if unknown is not None:
        return error_response(400, ErrorCode.UNKNOWN_PARAMETER, unknown)
    limit = bounded_int(request.query_params.get("limit", str(DEFAULT_LIMIT)), 1, MAX_LIMIT)
    if limit is None or len(params.get("limit", [])) > 1:
        return error_response(400, ErrorCode.INVALID_LIMIT, f"limit must be an integer from 1 to {MAX_LIMIT}.")
    before = bounded_int(request.query_params.get("before", str(_NEWEST)), 0, _NEWEST)
    if before is None or len(params.get("before", [])) > 1:
        return error_response(400, ErrorCode.INVALID_CURSOR, "before must be a cursor returned as next by a previous page.")
    try:
        wanted = find.parse_session_filter(params)
    except st.BadParameter as exc:
        return error_response(400, exc.code, exc.message)
    pool: asyncpg.Pool = request.app.state.services.pool
    if not _filtered(wanted):
        async with store.connection(pool) as conn:
            rows = await store.recent_sessions(conn, before, limit + 1)
    else:
        async with store.snapshot(pool, timeout=10) as conn:
            rows = await _find(conn, wanted, before, limit + 1)
    page = rows[:limit]
    body = {
        "sessions": [{"session_id": r.session_id, "start": r.start_ms, "end": r.end_ms, "events": r.event_count} for r in page],
        "next": str(page[-1].seen) if len(rows) > limit else None,
    }
    return Response(orjson.dumps(body), media_type="application/json")


async def _find(conn: asyncpg.Connection, wanted: find.SessionFilter, before: int, limit: int) -> list[store.SessionSummary]:
    await store.stats_settings(conn)
    ids: dict[str, int] = {}
    if wanted.names:
        ids = await store.stats_name_ids(conn, list(wanted.names))
        if len(ids) < len(wanted.names):
            return []  # a name never stored: no session has it
    query = store.SessionQuery(
        start_from=wanted.start_from,
        start_to=wanted.start_to,
        ended=wanted.ended,
        min_duration_ms=wanted.min_duration_ms,
        max_duration_ms=wanted.max_duration_ms,
        name_ids=list(ids.values()),
        data=[store.DataMatch(d.key, d.match, d.also) for d in wanted.data],
    )
    return await store.find_sessions(conn, before, limit, query, await store.stats_watermark(conn))


routes = [Route("/sessions", recent_sessions, methods=["GET"])]
