"""GET /session/<UUID> against the real server: order, data fidelity, errors, paging, streaming."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import asyncpg
import pytest

from test.support.clients import Uploader, event, new_session, upload
from test.support.service import Service

TS = 1_700_000_000_000


async def get(service: Service, path: str) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as http, http.get(service.url + path) as response:
        text = await response.text()
        return response.status, response.content_type, json.loads(text)


async def tree(service: Service, session: str, query: str = "") -> dict[str, Any]:
    status, content_type, body = await get(service, f"/session/{session}{query}")
    assert (status, content_type) == (200, "application/json"), body
    return body


async def all_pages(service: Service, session: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Follow `next` from the first page to the last; return the children and the page count."""
    children: list[dict[str, Any]] = []
    query = f"?limit={limit}"
    pages = 0
    while True:
        body = await tree(service, session, query)
        pages += 1
        assert len(body["children"]) <= limit
        children += body["children"]
        if body["next"] is None:
            return children, pages
        assert len(body["children"]) == limit, "only the last page may be short"
        query = f"?limit={limit}&after={body['next']}"
        assert pages < 10_000


async def test_children_are_ordered_by_timestamp_then_arrival(service: Service) -> None:
    session = new_session()
    await upload(
        service.ws_url,
        session,
        [event("t3-first", TS + 3), event("t1-first", TS + 1), {"type": "SESSION_START", "timestamp": TS + 2}],
        [event("t1-second", TS + 1), event("t0", TS), event("t3-second", TS + 3)],
    )
    await upload(service.ws_url, session, [event("t1-third", TS + 1), {"type": "SESSION_END", "timestamp": TS}])
    body = await tree(service, session)
    assert body["type"] == "SESSION" and body["session_id"] == session
    assert (body["start"], body["end"]) == (TS + 2, TS)
    assert [(c["name"], c["timestamp"]) for c in body["children"]] == [
        ("t0", TS),
        ("t1-first", TS + 1),
        ("t1-second", TS + 1),
        ("t1-third", TS + 1),
        ("t3-first", TS + 3),
        ("t3-second", TS + 3),
    ]
    assert all(c["type"] == "EVENT" and "data" not in c for c in body["children"])


async def test_data_is_returned_as_sent(service: Service) -> None:
    session = new_session()
    payloads: list[Any] = [
        {},
        {"a": {"b": {"c": [1, 2, {"d": None}]}}, "list": [], "obj": {}},
        {"text": '日本語 é ü 😀 "quoted" back\\slash \n newline \t tab', "ключ": "значение"},
        {"t": True, "f": False, "n": None, "i": -42, "x": 2.5, "e": 1e-7, "max": 9223372036854775807},
        {"big": 123456789012345678901234567890},
    ]
    await upload(
        service.ws_url, session, [event(f"e{i}", TS + i, data=d) for i, d in enumerate(payloads)] + [event("none", TS + 9)]
    )
    body = await tree(service, session)
    assert [c.get("data", "absent") for c in body["children"]] == [*payloads, "absent"]


async def test_unknown_session_is_404_json(service: Service) -> None:
    status, content_type, body = await get(service, f"/session/{new_session()}")
    assert (status, content_type) == (404, "application/json")
    assert body["error"] == "not_found" and body["message"]


@pytest.mark.parametrize(
    "bad",
    [
        "nope",
        "0d856b46-48cd-4fba-946b-53d15b7b43e",
        "0d856b4648cd4fba946b53d15b7b43e0",
        "0d856b46-48cd-4fba-946b-53d15b7b43e0x",
        "%20",
    ],
)
async def test_malformed_session_id_is_400_json(service: Service, bad: str) -> None:
    status, content_type, body = await get(service, f"/session/{bad}")
    assert (status, content_type) == (400, "application/json")
    assert body["error"] and body["message"]


async def test_upper_case_uuid_finds_the_session_and_answers_lower_case(service: Service) -> None:
    session = new_session()
    await upload(service.ws_url, session, [event("a", TS)])
    body = await tree(service, session.upper())
    assert body["session_id"] == session
    assert [c["name"] for c in body["children"]] == ["a"]


async def test_a_session_with_only_a_start_has_no_children(service: Service) -> None:
    session = new_session()
    await upload(service.ws_url, session, [{"type": "SESSION_START", "timestamp": TS}])
    assert await tree(service, session) == {"type": "SESSION", "session_id": session, "start": TS, "end": None, "children": []}
    paged = await tree(service, session, "?limit=5")
    assert (paged["children"], paged["next"]) == ([], None)


async def test_a_session_from_plain_sql_is_served(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    await sql.execute("INSERT INTO events (session_id, type, ts) VALUES ($1, 'SESSION_END', 9)", session)
    assert await tree(service, session) == {"type": "SESSION", "session_id": session, "start": None, "end": 9, "children": []}
    await sql.execute(
        "INSERT INTO events (session_id, type, ts, name_id, data) VALUES ($1, 'EVENT', 5, event_name_id('x'), $2)",
        session,
        '{"k": [1, 2]}',
    )
    body = await tree(service, session)
    assert body["children"] == [{"type": "EVENT", "timestamp": 5, "name": "x", "data": {"k": [1, 2]}}]


# --- paging ------------------------------------------------------------------------


async def test_limit_pages_through_everything_in_order(service: Service) -> None:
    session = new_session()
    # Many equal timestamps, so the cursor must carry arrival order to be right.
    events = [event(f"e{i:03d}", TS + i // 7, data={"i": i}) for i in range(100)]
    await upload(service.ws_url, session, events[50:], events[:50])
    full = (await tree(service, session))["children"]
    arrival = {i: (i - 50 if i >= 50 else 50 + i) for i in range(100)}
    assert [c["data"]["i"] for c in full] == sorted(range(100), key=lambda i: (i // 7, arrival[i]))
    for limit in (1, 7, 33, 99, 100, 101, 10_000):
        children, pages = await all_pages(service, session, limit)
        assert children == full, f"limit={limit}"
        assert pages == -(-100 // limit), f"limit={limit}: a full last page must say next null"


async def test_pages_have_exact_sizes_and_the_last_next_is_null(service: Service) -> None:
    session = new_session()
    await upload(service.ws_url, session, [event(f"e{i}", TS + i) for i in range(10)])
    first = await tree(service, session, "?limit=4")
    assert [c["name"] for c in first["children"]] == ["e0", "e1", "e2", "e3"]
    assert isinstance(first["next"], str)
    assert (first["start"], first["end"]) == (None, None)
    second = await tree(service, session, f"?limit=4&after={first['next']}")
    assert [c["name"] for c in second["children"]] == ["e4", "e5", "e6", "e7"]
    third = await tree(service, session, f"?limit=4&after={second['next']}")
    assert [c["name"] for c in third["children"]] == ["e8", "e9"]
    assert third["next"] is None
    # Exactly full last page: the next one is empty, still 200.
    exact = await tree(service, session, "?limit=10")
    assert len(exact["children"]) == 10 and exact["next"] is None
    unpaged = await tree(service, session)
    assert "next" not in unpaged


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=-1",
        "?limit=abc",
        "?limit=",
        "?limit=1.5",
        "?limit=10001",
        "?limit=99999999999999999999",
        "?after=abc",
        "?after=",
        "?after=5",
        "?after=1.2.3",
        "?after=-1.5",
        "?limit=5&after=x",
    ],
)
async def test_bad_limit_or_cursor_is_400(service: Service, query: str) -> None:
    session = new_session()
    await upload(service.ws_url, session, [event("a", TS)])
    status, content_type, body = await get(service, f"/session/{session}{query}")
    assert (status, content_type) == (400, "application/json"), body
    assert body["error"] and body["message"]


# --- large sessions ----------------------------------------------------------------


async def test_a_session_larger_than_a_page_streams_every_event_in_order(service: Service) -> None:
    session = new_session()
    count = 5_123
    # Sent newest first, two frames: the server must sort across its internal pages.
    events = [event(f"n{i}", TS + i // 3, data={"i": i}) if i % 2 else event(f"n{i}", TS + i // 3) for i in range(count)]
    async with await Uploader.open(service.ws_url, f"?sessionId={session}") as up:
        for part in (events[4_000:], events[2_000:4_000], events[:2_000]):
            assert (await up.send(part))["accepted"] == len(part)
        assert (await up.send([{"type": "SESSION_START", "timestamp": TS}, {"type": "SESSION_END", "timestamp": TS + 9}]))[
            "type"
        ] == "ACK"
    arrival = {i: n for n, i in enumerate([*range(4_000, count), *range(2_000, 4_000), *range(2_000)])}
    expected = sorted(range(count), key=lambda i: (i // 3, arrival[i]))

    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/session/{session}") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        raw = await response.read()
    body = json.loads(raw)
    assert (body["start"], body["end"]) == (TS, TS + 9)
    children = body["children"]
    assert len(children) == count
    assert [c["name"] for c in children] == [f"n{i}" for i in expected]
    assert all(("data" in c) == (int(c["name"][1:]) % 2 == 1) for c in children)
    # The paged view of the same session agrees.
    paged, _ = await all_pages(service, session, 2_000)
    assert paged == children


async def test_a_session_of_exactly_one_internal_page(service: Service) -> None:
    session = new_session()
    await upload(service.ws_url, session, [event(f"p{i}", TS + i) for i in range(2_000)])
    body = await tree(service, session)
    assert [c["name"] for c in body["children"]] == [f"p{i}" for i in range(2_000)]


async def test_no_event_is_without_its_session_row(sql: asyncpg.Connection) -> None:
    """Runs last in this module."""
    assert await sql.fetchval("SELECT count(*) FROM events") > 7_000
    orphans = await sql.fetchval("SELECT count(*) FROM events e LEFT JOIN sessions s ON s.id = e.session_id WHERE s.id IS NULL")
    assert orphans == 0
