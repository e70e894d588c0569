"""GET /session/<UUID>: one session as a tree, streamed page by page from keyset reads."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import NamedTuple

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.codes import ErrorCode
from app.errors import error_response
from app.ids import parse_uuid
from app.params import bounded_int
from app.reads.tree_cache import TreeCache
from app.services import Services
from app.store import store
from app.store.store import TreeRecord, WholeTree

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


def _head(session_id: str, row: TreeRecord | WholeTree) -> bytes:
    start, end = row.start_ms, row.end_ms
    return b'{"type":"SESSION","session_id":"%s","start":%s,"end":%s,"children":[' % (
        session_id.encode(),
        b"null" if start is None else str(start).encode(),
        b"null" if end is None else str(end).encode(),
    )


def _children(rows: Sequence[TreeRecord]) -> list[bytes]:
    # Unpacked, not read by name: this runs once per EVENT of every tree served.
    return [_child(ts, name, data) for _s, _e, _c, position, ts, name, data in rows if position is not None]


async def _page(pool: asyncpg.Pool, session_id: str, after: tuple[int, int], limit: int) -> list[TreeRecord]:
    async with store.connection(pool) as conn:
        return await store.session_page(conn, session_id, after, limit)


async def _whole(pool: asyncpg.Pool, session_id: str) -> WholeTree | None:
    async with store.connection(pool) as conn:
        return await store.session_tree(conn, session_id, PAGE_ROWS)


async def _cached(pool: asyncpg.Pool, trees: TreeCache, session_id: str) -> bytes | None:
    entry = trees.get(session_id)
    if entry is None:
        return None
    version, body = entry
    async with store.connection(pool) as conn:
        current = await store.session_version(conn, session_id)
        # A tree cached before retention removed some of its entries is not served.
        lost = await store.session_retained_from(conn, session_id)
    return body if current is not None and current == version and lost is None else None


async def _retained_from(pool: asyncpg.Pool, session_id: str) -> int | None:
    """Read after the tree: a removal between the two makes the answer say so, never the reverse."""
    async with store.connection(pool) as conn:
        return await store.session_retained_from(conn, session_id)


def _end(retained_from: int | None) -> bytes:
    """The tree's last bytes: `retained_from` when the session lost entries to retention."""
    return b"]}" if retained_from is None else b'],"retained_from":%d}' % retained_from


class _Query(NamedTuple):
    limit: int | None  # None: the whole tree (cached, or streamed page by page)
    after: tuple[int, int]


def _parse_query(request: Request) -> _Query | Response:
    """?limit and ?after, or the 400 that refuses them."""
    params = request.query_params
    limit: int | None = None
    after = _START
    if "limit" in params:
        limit = bounded_int(params["limit"], 1, MAX_LIMIT)
        if limit is None:
            return error_response(400, ErrorCode.INVALID_LIMIT, f"limit must be an integer from 1 to {MAX_LIMIT}.")
    if "after" in params:
        match = _CURSOR.fullmatch(params["after"])
        if match is None:
            return error_response(400, ErrorCode.INVALID_CURSOR, "after must be a cursor returned as next by a previous page.")
        after = (int(match[1]), int(match[2]))
    return _Query(limit, after)


async def session_tree(request: Request) -> Response:
    session_id = parse_uuid(request.path_params["session_id"])
    if session_id is None:
        return error_response(
            400, ErrorCode.INVALID_SESSION_ID, "The session id must be a UUID like 0d856b46-48cd-4fba-946b-53d15b7b43e0."
        )
    query = _parse_query(request)
    if isinstance(query, Response):
        return query
    services: Services = request.app.state.services
    whole_tree = query.limit is None and query.after == _START  # the only answer the cache holds
    if whole_tree:
        cached = await _cached(services.pool, services.trees, session_id)
        if cached is not None:
            return Response(cached, media_type="application/json")
    # A DatabaseUnavailable from here on is the app's 503 (app/errors.py).
    if whole_tree:
        # The typical session: one round trip, encoded by PostgreSQL, no row decoded here.
        whole = await _whole(services.pool, session_id)
        if whole is None:
            return _not_found(session_id)
        if whole.children is not None:
            # A stored tree was served only if the session lost nothing (same snapshot).
            lost = None if whole.stored else await _retained_from(services.pool, session_id)
            body = _head(session_id, whole) + whole.children + _end(lost)
            if lost is None:
                services.trees.put(session_id, whole.version, body)
            return Response(body, media_type="application/json")
    rows = await _page(services.pool, session_id, query.after, (query.limit + 1) if query.limit is not None else PAGE_ROWS)
    if not rows:
        return _not_found(session_id)
    if query.limit is not None:
        return _limited(session_id, rows, query.limit, await _retained_from(services.pool, session_id))
    if len(rows) < PAGE_ROWS:
        lost = await _retained_from(services.pool, session_id)
        body = _head(session_id, rows[0]) + b",".join(_children(rows)) + _end(lost)
        if whole_tree and lost is None:
            services.trees.put(session_id, rows[0].version, body)
        return Response(body, media_type="application/json")
    return StreamingResponse(_stream(services.pool, session_id, rows), media_type="application/json")


def _not_found(session_id: str) -> Response:
    return error_response(404, ErrorCode.NOT_FOUND, f"No session {session_id} has been recorded.")


def _limited(session_id: str, rows: list[TreeRecord], limit: int, lost: int | None) -> Response:
    """One page of ?limit children and the cursor to the next, if there is one."""
    page = rows[:limit]
    last, position = page[-1], page[-1].position
    cursor = b'"%d.%d"' % (last.ts, position) if len(rows) > limit and position is not None else b"null"
    body = _head(session_id, rows[0]) + b",".join(_children(page)) + b'],"next":' + cursor
    body += b"}" if lost is None else b',"retained_from":%d}' % lost
    return Response(body, media_type="application/json")


async def _stream(pool: asyncpg.Pool, session_id: str, first: list[TreeRecord]) -> AsyncIterator[bytes]:
    """A large session: memory stays at one page whatever the session's size."""
    yield _head(session_id, first[0]) + b",".join(_children(first))
    last = first[-1]
    while True:
        assert last.position is not None  # a full page holds only EVENT rows
        page = await _page(pool, session_id, (last.ts, last.position), PAGE_ROWS)
        page = [r for r in page if r.position is not None]
        if page:
            yield b"," + b",".join(_children(page))
            last = page[-1]
        if len(page) < PAGE_ROWS:
            break
    yield _end(await _retained_from(pool, session_id))


routes = [Route("/session/{session_id}", session_tree, methods=["GET"])]
