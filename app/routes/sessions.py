"""GET /sessions: recently first-seen sessions, newest first, cursor-paged."""

from __future__ import annotations

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.codes import ErrorCode
from app.errors import error_response
from app.params import bounded_int
from app.store import store

DEFAULT_LIMIT = 50
MAX_LIMIT = 1_000
_NEWEST = 2**63 - 1


async def recent_sessions(request: Request) -> Response:
    params = request.query_params
    limit = bounded_int(params.get("limit", str(DEFAULT_LIMIT)), 1, MAX_LIMIT)
    if limit is None:
        return error_response(400, ErrorCode.INVALID_LIMIT, f"limit must be an integer from 1 to {MAX_LIMIT}.")
    before = bounded_int(params.get("before", str(_NEWEST)), 0, _NEWEST)
    if before is None:
        return error_response(400, ErrorCode.INVALID_CURSOR, "before must be a cursor returned as next by a previous page.")
    pool: asyncpg.Pool = request.app.state.services.pool
    async with store.connection(pool) as conn:
        rows = await store.recent_sessions(conn, before, limit + 1)
    page = rows[:limit]
    body = {
        "sessions": [{"session_id": r.session_id, "start": r.start_ms, "end": r.end_ms, "events": r.event_count} for r in page],
        "next": str(page[-1].seen) if len(rows) > limit else None,
    }
    return Response(orjson.dumps(body), media_type="application/json")


routes = [Route("/sessions", recent_sessions, methods=["GET"])]
