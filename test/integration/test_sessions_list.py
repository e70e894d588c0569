"""GET /sessions against the real server: newest first, counts, limits, cursor paging.

This module's server has a database of its own, so the newest sessions are the
ones these tests created last.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg
import pytest

from test.support.clients import event, new_session, upload
from test.support.service import Service

TS = 1_700_000_000_000


async def get(service: Service, query: str = "") -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/sessions{query}") as response:
        return response.status, response.content_type, await response.json(content_type=None)


async def listing(service: Service, query: str = "") -> dict[str, Any]:
    status, content_type, body = await get(service, query)
    assert (status, content_type) == (200, "application/json"), body
    assert set(body) == {"sessions", "next"}
    return body


async def every_session(service: Service, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Follow `before` from the newest page to the oldest."""
    found: list[dict[str, Any]] = []
    query = f"?limit={limit}"
    pages = 0
    while True:
        body = await listing(service, query)
        pages += 1
        found += body["sessions"]
        if body["next"] is None:
            return found, pages
        assert len(body["sessions"]) == limit, "only the last page may be short"
        query = f"?limit={limit}&before={body['next']}"
        assert pages < 10_000


async def test_newest_first_with_start_end_and_event_counts(service: Service) -> None:
    older, middle, newest = new_session(), new_session(), new_session()
    await upload(
        service.ws_url,
        older,
        [{"type": "SESSION_START", "timestamp": TS}, event("a", TS), event("b", TS), event("c", TS)],
        [{"type": "SESSION_END", "timestamp": TS + 5}],
    )
    await upload(service.ws_url, middle, [{"type": "SESSION_START", "timestamp": TS + 1}])
    await upload(service.ws_url, newest, [event("x", TS + 2)])
    # More for the oldest afterwards: it stays where it was first seen.
    await upload(service.ws_url, older, [event("d", TS + 3), {"type": "SESSION_START", "timestamp": TS - 1}])
    body = await listing(service, "?limit=3")
    assert body["sessions"] == [
        {"session_id": newest, "start": None, "end": None, "events": 1},
        {"session_id": middle, "start": TS + 1, "end": None, "events": 0},
        {"session_id": older, "start": TS - 1, "end": TS + 5, "events": 4},
    ]


async def test_default_limit_is_50_and_1000_is_the_most(service: Service) -> None:
    sessions = [new_session() for _ in range(1_005)]
    # One relay batch creates them all in one statement.
    await upload(service.ws_url, None, [event("n", TS, session_id=s) for s in sessions])
    default = await listing(service)
    assert len(default["sessions"]) == 50
    assert default["next"] is not None
    most = await listing(service, "?limit=1000")
    assert len(most["sessions"]) == 1000
    assert most["next"] is not None
    assert default["sessions"] == most["sessions"][:50]
    assert {s["session_id"] for s in most["sessions"]} <= set(sessions), "the newest are the ones just created"
    assert all(s["events"] == 1 for s in most["sessions"])
    status, content_type, body = await get(service, "?limit=1001")
    assert (status, content_type) == (400, "application/json")
    assert body["error"] and body["message"]


async def test_before_pages_through_every_session_once(service: Service, sql: asyncpg.Connection) -> None:
    expected = [r["id"] for r in await sql.fetch("SELECT id::text AS id FROM sessions ORDER BY seen DESC")]
    assert len(expected) > 1_000
    for limit in (1_000, 97, 1):
        found, pages = await every_session(service, limit)
        assert [s["session_id"] for s in found] == expected, f"limit={limit}"
        assert pages == -(-len(expected) // limit), f"limit={limit}: a full last page must say next null"


async def test_counts_match_the_database(service: Service, sql: asyncpg.Connection) -> None:
    found, _ = await every_session(service, 1_000)
    counts = {
        r["id"]: (r["start"], r["end"], r["events"])
        for r in await sql.fetch(
            """SELECT s.id::text AS id,
                      (SELECT min(ts) FROM events e WHERE e.session_id = s.id AND e.type = 'SESSION_START') AS start,
                      (SELECT max(ts) FROM events e WHERE e.session_id = s.id AND e.type = 'SESSION_END') AS end,
                      (SELECT count(*) FROM events e WHERE e.session_id = s.id AND e.type = 'EVENT') AS events
                 FROM sessions s"""
        )
    }
    assert {s["session_id"]: (s["start"], s["end"], s["events"]) for s in found} == counts


async def test_a_cursor_past_the_oldest_is_an_empty_last_page(service: Service) -> None:
    assert await listing(service, "?before=0") == {"sessions": [], "next": None}
    assert await listing(service, "?before=1") == {"sessions": [], "next": None}


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=-1",
        "?limit=abc",
        "?limit=",
        "?limit=2.5",
        "?limit=1001",
        "?before=abc",
        "?before=",
        "?before=-5",
        "?before=1.5",
        "?before=99999999999999999999",
        "?before=%C2%B2",
    ],
)
async def test_bad_limit_or_cursor_is_400(service: Service, query: str) -> None:
    status, content_type, body = await get(service, query)
    assert (status, content_type) == (400, "application/json"), body
    assert body["error"] and body["message"]


async def test_a_plain_sql_insert_is_listed_first(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    await sql.execute("INSERT INTO events (session_id, type, ts, name_id) VALUES ($1, 'EVENT', 5, event_name_id('x'))", session)
    body = await listing(service, "?limit=1")
    assert body["sessions"] == [{"session_id": session, "start": None, "end": None, "events": 1}]


async def test_no_event_is_without_its_session_row(sql: asyncpg.Connection) -> None:
    """Runs last in this module."""
    orphans = await sql.fetchval("SELECT count(*) FROM events e LEFT JOIN sessions s ON s.id = e.session_id WHERE s.id IS NULL")
    assert orphans == 0
