"""A cached session tree is never served stale: every kind of change invalidates it."""

from __future__ import annotations

import aiohttp
import asyncpg

from test.support.clients import event, new_session, upload
from test.support.service import Service


async def _tree(svc: Service, session: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/session/{session}") as response:
        assert response.status == 200
        return await response.json()


async def test_new_events_start_and_end_show_up_after_a_cached_read(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    ms = "timestampUnit=ms"  # small numbers would be seconds under the default, auto
    await upload(service.ws_url, session, [event("a", 10)], query=ms)
    assert [c["name"] for c in (await _tree(service, session))["children"]] == ["a"]
    assert [c["name"] for c in (await _tree(service, session))["children"]] == ["a"]  # now from the cache

    await upload(service.ws_url, session, [event("b", 5)], query=ms)
    assert [c["name"] for c in (await _tree(service, session))["children"]] == ["b", "a"]

    await upload(service.ws_url, session, [{"type": "SESSION_END", "timestamp": 99}], query=ms)
    assert (await _tree(service, session))["end"] == 99
    await upload(service.ws_url, session, [{"type": "SESSION_START", "timestamp": 1}], query=ms)
    assert (await _tree(service, session))["start"] == 1

    # A plain-SQL writer is seen too: the trigger bumps the version in the same statement.
    await sql.execute(
        "INSERT INTO events (session_id, type, ts, name_id) VALUES ($1, 'EVENT', 50, event_name_id('sql'))", session
    )
    assert [c["name"] for c in (await _tree(service, session))["children"]] == ["b", "a", "sql"]


async def _get(svc: Service, path: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{svc.url}{path}") as response:
        assert response.status == 200
        return await response.json()


async def test_a_page_after_a_cursor_is_never_cached_as_the_whole_tree(service: Service) -> None:
    session = new_session()
    await upload(service.ws_url, session, [event(name, ts) for ts, name in enumerate("abcd", 1)], query="timestampUnit=ms")
    first = await _get(service, f"/session/{session}?limit=2")
    assert [c["name"] for c in first["children"]] == ["a", "b"] and first["next"]

    rest = await _get(service, f"/session/{session}?after={first['next']}")  # after, no limit: the rest
    assert [c["name"] for c in rest["children"]] == ["c", "d"]
    # The whole tree, then the rest again: neither answer stands in for the other.
    assert [c["name"] for c in (await _tree(service, session))["children"]] == ["a", "b", "c", "d"]
    rest = await _get(service, f"/session/{session}?after={first['next']}")
    assert [c["name"] for c in rest["children"]] == ["c", "d"]
