"""GET /session/<UUID>: one session as a tree, streamed page by page from keyset reads."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.codes import ErrorCode
from app.errors import error_response, unavailable_response
from app.ingest.validation import parse_uuid
from app.params import bounded_int
from app.reads.tree_cache import TreeCache, Version
from app.services import Services
from app.store import queries
from app.store.db import is_unavailable

PAGE_ROWS = 2_000
MAX_LIMIT = 10_000
_CURSOR = re.compile(r"([0-9]{1,16})\.([0-9]{1,18})")
_START = (-1, -1)  # keyset origin: before every (ts, position)


_NAME_JSON: dict[str, bytes] = {}  # names repeat across children: encode each once


def _name_json(name: str) -> bytes:
    encoded = _NAME_JSON.get(name)
    if encoded is None:
        if len(_NAME_JSON) >= 10_000:
            _NAME_JSON.clear()
        encoded = _NAME_JSON[name] = orjson.dumps(name)
    return encoded


def _child(ts: int, name: str, data: str | None) -> bytes:
    if data is None:
        return b'{"type":"EVENT","timestamp":%d,"name":%s}' % (ts, _name_json(name))
    return b'{"type":"EVENT","timestamp":%d,"name":%s,"data":%s}' % (ts, _name_json(name), data.encode())


def _head(session_id: str, row: asyncpg.Record) -> bytes:
    start, end = row["start_ms"], row["end_ms"]
    return b'{"type":"SESSION","session_id":"%s","start":%s,"end":%s,"children":[' % (
        session_id.encode(),
        b"null" if start is None else str(start).encode(),
        b"null" if end is None else str(end).encode(),
    )


def _children(rows: Sequence[asyncpg.Record]) -> list[bytes]:
    return [_child(r["ts"], r["name"], r["data"]) for r in rows if r["position"] is not None]


async def _page(pool: asyncpg.Pool, session_id: str, after: tuple[int, int], limit: int) -> list[asyncpg.Record]:
    async with pool.acquire(timeout=10) as conn:
        return await conn.fetch(queries.SESSION_TREE_PAGE, session_id, after[0], after[1], limit)


def _version(row: asyncpg.Record) -> Version:
    return (row["start_ms"], row["end_ms"], row["event_count"])


async def _cached(pool: asyncpg.Pool, trees: TreeCache, session_id: str) -> bytes | None:
    entry = trees.get(session_id)
    if entry is None:
        return None
    async with pool.acquire(timeout=10) as conn:
        row = await conn.fetchrow(queries.SESSION_VERSION, session_id)
    return entry[1] if row is not None and _version(row) == entry[0] else None


async def session_tree(request: Request) -> Response:
    session_id = parse_uuid(request.path_params["session_id"])
    if session_id is None:
        return error_response(
            400, ErrorCode.INVALID_SESSION_ID, "The session id must be a UUID like 0d856b46-48cd-4fba-946b-53d15b7b43e0."
        )
    limit: int | None = None
    after = _START
    params = request.query_params
    if "limit" in params:
        limit = bounded_int(params["limit"], 1, MAX_LIMIT)
        if limit is None:
            return error_response(400, ErrorCode.INVALID_LIMIT, f"limit must be an integer from 1 to {MAX_LIMIT}.")
    if "after" in params:
        match = _CURSOR.fullmatch(params["after"])
        if match is None:
            return error_response(400, ErrorCode.INVALID_CURSOR, "after must be a cursor returned as next by a previous page.")
        after = (int(match[1]), int(match[2]))
    services: Services = request.app.state.services
    pool = services.pool
    try:
        if limit is None:
            cached = await _cached(pool, services.trees, session_id)
            if cached is not None:
                return Response(cached, media_type="application/json")
        rows = await _page(pool, session_id, after, (limit + 1) if limit is not None else PAGE_ROWS)
    except Exception as exc:
        if is_unavailable(exc):
            return unavailable_response()
        raise
    if not rows:
        return error_response(404, ErrorCode.NOT_FOUND, f"No session {session_id} has been recorded.")
    head = _head(session_id, rows[0])

    if limit is not None:
        page = rows[:limit]
        more = len(rows) > limit and page[-1]["position"] is not None
        cursor = b'"%d.%d"' % (page[-1]["ts"], page[-1]["position"]) if more else b"null"
        body = head + b",".join(_children(page)) + b'],"next":' + cursor + b"}"
        return Response(body, media_type="application/json")

    if len(rows) < PAGE_ROWS:
        body = head + b",".join(_children(rows)) + b"]}"
        services.trees.put(session_id, _version(rows[0]), body)
        return Response(body, media_type="application/json")

    async def stream(first: list[asyncpg.Record]) -> AsyncIterator[bytes]:
        # Large sessions: memory stays at one page whatever the session's size.
        yield head + b",".join(_children(first))
        last = first[-1]
        while True:
            page = await _page(pool, session_id, (last["ts"], last["position"]), PAGE_ROWS)
            page = [r for r in page if r["position"] is not None]
            if page:
                yield b"," + b",".join(_children(page))
                last = page[-1]
            if len(page) < PAGE_ROWS:
                break
        yield b"]}"

    return StreamingResponse(stream(rows), media_type="application/json")


routes = [Route("/session/{session_id}", session_tree, methods=["GET"])]
