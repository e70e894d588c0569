"""Breakdown rollups (schema/010_breakdown_rollups.sql): which pairs get one, and that
answers are the same whether a pair has one, is catching up, or has none.

test_find.py compares every breakdown against brute force with rollups made and
folded at random points; here the limit on pairs, a pair made on a loaded database
while writes go on, and two processes asking at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest

from test.conftest import StartService
from test.integration.test_find import assert_breakdown_rollups_exact
from test.support.clients import event, new_session, upload
from test.support.service import Service
from test.support.waits import breakdowns_folded, folded, until

HOUR = 3_600_000
T0 = 1_780_000_000_000 + 1_234  # not on an hour: every range has partial hours


async def breakdown(svc: Service, name: str, key: str, lo: int, hi: int) -> dict[str, Any]:
    query = urlencode({"name": name, "key": key, "from": lo, "to": hi, "limit": 3})
    async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/stats/breakdown?{query}") as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def pairs(sql: asyncpg.Connection) -> set[tuple[str, str]]:
    rows = await sql.fetch("SELECT n.name, k.key FROM breakdown_keys k JOIN event_names n ON n.id = k.name_id")
    return {(r[0], r[1]) for r in rows}


_ROWS_OF_PAIR = """
SELECT (SELECT count(*) FROM breakdown_values WHERE key_id = $1)
     + (SELECT count(*) FROM breakdown_presences WHERE key_id = $1)
     + (SELECT count(*) FROM breakdown_event_hours WHERE key_id = $1)
     + (SELECT count(*) FROM breakdown_session_hours WHERE key_id = $1)
"""


async def test_pairs_past_the_limit_are_answered_from_events_alone(start_service: StartService) -> None:
    svc = await start_service("--breakdown-rollups", "2")
    sql = await asyncpg.connect(svc.database_url)
    try:
        batch = [event(name, T0 + i * 600_000, data={"k": f"v{i % 4}"}) for i in range(12) for name in ("a", "b", "c")]
        await upload(svc.ws_url, new_session(), batch, [event("a", T0, data={"other": 1})])
        asked = [("a", "k"), ("b", "k"), ("c", "k"), ("never-seen", "k"), ("a", "other")]
        first = [await breakdown(svc, name, key, T0 - HOUR, T0 + 3 * HOUR) for name, key in asked]
        assert first[0]["values"] == [{"value": f"v{i}", "events": 3, "sessions": 1} for i in range(3)]
        assert first[0]["other"] == {"events": 3, "sessions": 1} and first[0]["missing"] == {"events": 1, "sessions": 1}
        # The first two pairs asked for have rollups; the name no one sent, none.
        assert await pairs(sql) == {("a", "k"), ("b", "k")}
        await until(lambda: breakdowns_folded(sql))
        assert [await breakdown(svc, name, key, T0 - HOUR, T0 + 3 * HOUR) for name, key in asked] == first
        await assert_breakdown_rollups_exact(sql)
        # An operator frees a place: the pair's rows go with it, and the next pair asked for takes it.
        gone = await sql.fetchval("DELETE FROM breakdown_keys WHERE key = 'k' AND name_id = event_name_id('a') RETURNING id")
        assert await sql.fetchval(_ROWS_OF_PAIR, gone) == 0
        assert await breakdown(svc, "c", "k", T0 - HOUR, T0 + 3 * HOUR) == first[2]
        assert await pairs(sql) == {("b", "k"), ("c", "k")}
        with pytest.raises(asyncpg.RaiseError, match="DELETE FROM breakdown_keys"):
            await sql.execute("TRUNCATE breakdown_keys")
        await until(lambda: breakdowns_folded(sql))
        assert [await breakdown(svc, name, key, T0 - HOUR, T0 + 3 * HOUR) for name, key in asked] == first
        await assert_breakdown_rollups_exact(sql)
    finally:
        await sql.close()


async def test_zero_keeps_no_rollups(start_service: StartService) -> None:
    svc = await start_service("--breakdown-rollups", "0")
    sql = await asyncpg.connect(svc.database_url)
    try:
        await upload(svc.ws_url, new_session(), [event("a", T0, data={"k": 1})])
        body = await breakdown(svc, "a", "k", T0, T0 + 1)
        assert body["values"] == [{"value": 1, "events": 1, "sessions": 1}]
        assert await pairs(sql) == set()
    finally:
        await sql.close()


# Plain-SQL rows: $1 sessions, each with an EVENT `view` every 7 minutes over 30 hours,
# data.path one of five (or missing one time in six), from $2 on.
_LOAD = """
INSERT INTO events (session_id, type, ts, name_id, data)
SELECT md5(s::text || $3)::uuid, 'EVENT', $2::bigint + (i * 420000 + s * 997) % (30 * 3600000), event_name_id('view'),
       CASE WHEN (s + i) % 6 = 0 THEN '{}'::json ELSE json_build_object('path', '/p/' || ((s * i) % 5)) END
  FROM generate_series(1, $1) AS s, generate_series(0, 256) AS i
"""


# The pair has a rollup and it counts every event (false before the first request).
_CAUGHT_UP = "SELECT coalesce(bool_and(through >= (SELECT max(position) FROM events)), false) FROM breakdown_keys"


async def test_a_pair_made_on_a_loaded_database_catches_up_while_writes_go_on(start_service: StartService) -> None:
    svc = await start_service()
    sql = await asyncpg.connect(svc.database_url)
    try:
        await sql.execute(_LOAD, 200, T0, "first")  # 51,400 events: the service folds them in slices of 10,000
        await until(lambda: folded(sql))
        ranges = [(T0 - HOUR, T0 + 40 * HOUR), (T0 + 5 * HOUR + 17, T0 + 9 * HOUR - 5), (T0 + HOUR, T0 + HOUR + 60_000)]
        expected = await raw_breakdowns(sql, ranges)
        assert expected[0]["values"][0]["events"] > 0
        # The first answer gives the pair a rollup; every answer while it catches up
        # (in slices, over several folds) is the same.
        caught_up = False
        while not caught_up:
            caught_up = bool(await sql.fetchval(_CAUGHT_UP))
            assert [await breakdown(svc, "view", "path", lo, hi) for lo, hi in ranges] == expected
        # Writes go on (late ones too: the same hours again) while it is read.
        writes = asyncio.gather(*(sql_write(svc.database_url, 50, T0, f"more{n}") for n in range(3)))
        while not writes.done():  # each answered (200), none with fewer events than before the writes
            for (lo, hi), old in zip(ranges, expected, strict=True):
                body = await breakdown(svc, "view", "path", lo, hi)
                assert sum(v["events"] for v in body["values"]) >= sum(v["events"] for v in old["values"])
        await writes
        await until(lambda: breakdowns_folded(sql), timeout=60)
        assert [await breakdown(svc, "view", "path", lo, hi) for lo, hi in ranges] == await raw_breakdowns(sql, ranges)
        await assert_breakdown_rollups_exact(sql)
    finally:
        await sql.close()


async def sql_write(url: str, sessions: int, base: int, seed: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(_LOAD, sessions, base, seed)
    finally:
        await conn.close()


async def raw_breakdowns(sql: asyncpg.Connection, ranges: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """The same figures recounted in SQL straight from events (limit 3, as asked)."""
    out = []
    for lo, hi in ranges:
        rows = await sql.fetch(
            """
            SELECT (data -> 'path')::jsonb::text AS v, count(*) AS events, count(DISTINCT session_id) AS sessions
              FROM events WHERE type = 'EVENT' AND name_id = event_name_id('view') AND ts >= $1 AND ts < $2
             GROUP BY (data -> 'path')::jsonb
            """,
            lo,
            hi,
        )
        values = sorted((r for r in rows if r["v"] is not None), key=lambda r: (-r["events"], r["v"]))
        top = {r["v"] for r in values[:3]}
        rest = await sql.fetchrow(
            """
            SELECT count(*) AS events, count(DISTINCT session_id) AS sessions
              FROM events WHERE type = 'EVENT' AND name_id = event_name_id('view') AND ts >= $1 AND ts < $2
               AND data -> 'path' IS NOT NULL AND NOT ((data -> 'path')::jsonb::text = ANY($3::text[]))
            """,
            lo,
            hi,
            list(top),
        )
        assert rest is not None
        missing = [r for r in rows if r["v"] is None]
        out.append(
            {
                "from": lo,
                "to": hi,
                "name": "view",
                "key": "path",
                "values": [{"value": json.loads(r["v"]), "events": r["events"], "sessions": r["sessions"]} for r in values[:3]],
                "other": {"events": rest["events"], "sessions": rest["sessions"]},
                "missing": {"events": missing[0]["events"], "sessions": missing[0]["sessions"]}
                if missing
                else {"events": 0, "sessions": 0},
            }
        )
    return out


async def test_processes_asking_at_once_never_pass_the_limit(start_service: StartService) -> None:
    svc = await start_service()
    sql = await asyncpg.connect(svc.database_url)
    try:
        names = [f"n{i}" for i in range(12)]
        await upload(svc.ws_url, new_session(), [event(n, T0, data={"k": 1}) for n in names])
        conns = [await asyncpg.connect(svc.database_url) for _ in names]
        try:
            # All at once, each from a connection of its own: they meet at the function's lock.
            calls = (c.fetchval("SELECT breakdown_register($1, 'k', 3)", n) for c, n in zip(conns, names, strict=True))
            made = await asyncio.gather(*calls)
        finally:
            for c in conns:
                await c.close()
        assert sum(made) == 3 and len(await pairs(sql)) == 3
        # The pairs that have one keep it: asked again, they still say so; the others do not.
        again = [await sql.fetchval("SELECT breakdown_register($1, 'k', 3)", n) for n in names]
        assert again == made
    finally:
        await sql.close()


async def test_answers_come_from_the_rollup_once_it_has_caught_up(start_service: StartService) -> None:
    """Equal answers alone would not show it: a rollup row changed by hand shows in the next answer."""
    svc = await start_service()
    sql = await asyncpg.connect(svc.database_url)
    try:
        await upload(svc.ws_url, new_session(), [event("a", T0 + i * HOUR, data={"k": "x"}) for i in range(3)])
        lo, hi = T0 - T0 % HOUR, T0 - T0 % HOUR + 3 * HOUR  # whole hours: no event is read from events
        first = await breakdown(svc, "a", "k", lo, hi)
        assert first["values"] == [{"value": "x", "events": 3, "sessions": 1}]
        await until(lambda: sql.fetchval(_CAUGHT_UP))
        await sql.execute("UPDATE breakdown_event_hours SET events = events + 100 WHERE hour_ms = $1", lo)
        assert (await breakdown(svc, "a", "k", lo, hi))["values"][0]["events"] == 103
        # A partial hour at each end is read from events: the changed hour is not in it.
        assert (await breakdown(svc, "a", "k", lo + 1, hi))["values"][0]["events"] == 3
    finally:
        await sql.close()


async def test_a_key_with_too_many_values_is_given_up_and_frees_its_place(start_service: StartService) -> None:
    svc = await start_service("--breakdown-rollups", "1")
    sql = await asyncpg.connect(svc.database_url)
    try:
        await sql.execute(
            "INSERT INTO events (session_id, type, ts, name_id, data)"
            " SELECT md5((i % 50)::text)::uuid, 'EVENT', $1::bigint + i, event_name_id('ids'), json_build_object('i', i)"
            "   FROM generate_series(1, 12000) AS i",
            T0,
        )
        expected = await breakdown(svc, "ids", "i", T0, T0 + HOUR)  # asked for: the pair gets a rollup
        assert expected["other"]["events"] == 12000 - 3
        await until(lambda: sql.fetchval("SELECT given_up_at IS NOT NULL FROM breakdown_keys"), timeout=60)
        gone = await sql.fetchval("SELECT id FROM breakdown_keys")
        assert await sql.fetchval(_ROWS_OF_PAIR, gone) == 0
        assert await breakdown(svc, "ids", "i", T0, T0 + HOUR) == expected
        # It keeps its row (asked again, it is not made again) but not its place.
        await upload(svc.ws_url, new_session(), [event("b", T0, data={"k": 1})])
        await breakdown(svc, "b", "k", T0, T0 + 1)
        assert await pairs(sql) == {("ids", "i"), ("b", "k")}
    finally:
        await sql.close()


async def test_data_postgresql_cannot_read_as_jsonb_counts_as_missing(start_service: StartService) -> None:
    """json takes a \\u0000 escape (only plain SQL can store one: ingest refuses it); jsonb
    does not, nor can a key be taken of it. Such data counts as without the key,
    and neither the reads nor the rollup's fold stop on it."""
    svc = await start_service()
    sql = await asyncpg.connect(svc.database_url)
    try:
        session = new_session()
        await upload(svc.ws_url, session, [event("a", T0, data={"k": "x"})])
        await breakdown(svc, "a", "k", T0, T0 + HOUR)  # the pair gets a rollup
        rows = ['{"k": "x", "n": "nul \\u0000"}', '["\\u0000"]', '{"k": "a \\\\u0000 is text here"}']
        for data in rows:
            await sql.execute(
                "INSERT INTO events (session_id, type, ts, name_id, data) VALUES ($1, 'EVENT', $2, event_name_id('a'), $3::json)",
                session,
                T0 + 1,
                data,
            )
        await until(lambda: breakdowns_folded(sql))
        body = await breakdown(svc, "a", "k", T0, T0 + HOUR)
        assert body["values"] == [  # ties in the order of their JSON text
            {"value": "a \\u0000 is text here", "events": 1, "sessions": 1},
            {"value": "x", "events": 1, "sessions": 1},
        ]
        assert body["missing"] == {"events": 2, "sessions": 1}
        query = urlencode({"data": "k:x"})
        async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/sessions?{query}") as response:
            assert response.status == 200
            assert [s["session_id"] for s in (await response.json())["sessions"]] == [session]
        await assert_breakdown_rollups_exact(sql)
    finally:
        await sql.close()
