"""GET /database_events?tail=N: the latest stored entries first, then live, with no gap.

What the monitor page opens with. A real server and PostgreSQL; writers are the
WebSocket ingest path and plain SQL.
"""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import pytest

from test.support.clients import SSEReader, Uploader, event, new_session, upload
from test.support.postgres import StandalonePostgres
from test.support.service import Service

TS = 1_700_000_000_000


async def test_tail_starts_with_the_last_entries_oldest_first_then_live(service: Service) -> None:
    session = new_session()
    await upload(
        service.ws_url, session, [{"type": "SESSION_START", "timestamp": TS}] + [event(f"e{i}", TS + i) for i in range(10)]
    )
    async with await SSEReader.open(service.url, f"?session_id={session}&tail=4") as stream:
        stored = await stream.take(4)
        await upload(service.ws_url, session, [event("live", TS + 99)])
        live = await stream.next()
    assert [m.json["name"] for m in stored] == ["e6", "e7", "e8", "e9"]
    assert live.json["name"] == "live"
    positions = [m.position for m in stored] + [live.position]
    assert positions == sorted(set(positions))


async def test_tail_larger_than_what_is_stored_gives_everything_and_zero_gives_nothing(service: Service) -> None:
    session = new_session()
    await upload(service.ws_url, session, [{"type": "SESSION_START", "timestamp": TS}, event("only", TS + 1)])
    async with await SSEReader.open(service.url, f"?session_id={session}&tail=10000") as everything:
        got = await everything.take(2)
        assert [m.json["type"] for m in got] == ["SESSION_START", "EVENT"]
        async with await SSEReader.open(service.url, f"?session_id={session}&tail=0") as nothing:
            await upload(service.ws_url, session, [{"type": "SESSION_END", "timestamp": TS + 2}])
            # The first message on tail=0 is the live one: nothing stored came before it.
            assert (await nothing.next()).json["type"] == "SESSION_END"
        assert (await everything.next()).json["type"] == "SESSION_END"


async def test_tail_applies_the_filters_and_includes_plain_sql_writes(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    await upload(
        service.ws_url,
        session,
        [event("buy", TS), event("view", TS + 1), event("buy", TS + 2), {"type": "SESSION_END", "timestamp": TS + 3}],
    )
    await sql.execute(
        "INSERT INTO events (session_id, type, ts, name_id) VALUES ($1, 'EVENT', $2, event_name_id('buy'))", session, TS + 4
    )
    query = f"?session_id={session}&name=buy&type=EVENT&tail=2"
    async with await SSEReader.open(service.url, query) as stream:
        got = await stream.take(2)
        # The plain-SQL row may be in the tail before the hub has fanned it out: it must
        # not come again live.
        await upload(service.ws_url, session, [event("buy", TS + 5)])
        live = await stream.next()
    assert [(m.json["name"], m.json["timestamp"]) for m in got] == [("buy", TS + 2), ("buy", TS + 4)]
    assert live.json["timestamp"] == TS + 5 and live.position > got[-1].position


async def test_a_resume_position_takes_precedence_over_tail(service: Service) -> None:
    session = new_session()
    await upload(service.ws_url, session, [event("a", TS)], [event("b", TS)], [event("c", TS)])
    async with await SSEReader.open(service.url, f"?session_id={session}&tail=3") as first:
        a, b, c = await first.take(3)
    assert [m.json["name"] for m in (a, b, c)] == ["a", "b", "c"]
    # EventSource keeps ?tail= in the URL it reconnects to and adds Last-Event-ID.
    async with await SSEReader.open(service.url, f"?session_id={session}&tail=3", headers={"Last-Event-ID": a.id or ""}) as again:
        assert [m.position for m in await again.take(2)] == [b.position, c.position]
        await upload(service.ws_url, session, [event("d", TS)])
        assert (await again.next()).json["name"] == "d"
    async with await SSEReader.open(service.url, f"?session_id={session}&tail=3&last_event_id={b.id}") as by_query:
        assert (await by_query.next()).position == c.position


@pytest.mark.parametrize("value", ["-1", "10001", "abc", "", "1.5", "1e3", "99999999999999999999"])
async def test_a_bad_tail_is_a_400_naming_the_range(service: Service, value: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/database_events?tail={value}") as response:
        assert response.status == 400
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["error"] == "invalid_tail"
    assert "10,000" in body["message"]


async def test_tail_then_live_has_no_gap_or_duplicate_while_writers_commit(service: Service, sql: asyncpg.Connection) -> None:
    """Tail readers open at many moments while WebSocket and plain-SQL writers commit."""
    stop = asyncio.Event()
    first_write = asyncio.Event()

    async def ws_writer(k: int) -> None:
        async with await Uploader.open(service.ws_url) as up:
            i = 0
            while not stop.is_set():
                ack = await up.send([event(f"w{k}", TS + i, session_id=new_session()) for _ in range(5)])
                assert ack["type"] == "ACK", ack
                first_write.set()
                i += 1

    async def sql_writer() -> None:
        conn = await asyncpg.connect(service.database_url)
        try:
            while not stop.is_set():
                await conn.execute(
                    "INSERT INTO events (session_id, type, ts, name_id) "
                    "SELECT $1, 'EVENT', g, event_name_id('sql') FROM generate_series(1, 3) g",
                    new_session(),
                )
        finally:
            await conn.close()

    async def tail_reader(n: int) -> list[int]:
        async with await SSEReader.open(service.url, f"?tail={n}") as stream:
            return [m.position for m in await stream.take(n + 40)]

    writers = [asyncio.create_task(ws_writer(k)) for k in range(3)] + [asyncio.create_task(sql_writer())]
    try:
        await asyncio.wait_for(first_write.wait(), timeout=30)
        results = []
        for _ in range(4):  # readers open at different moments of the writing
            results += await asyncio.wait_for(asyncio.gather(*(tail_reader(n) for n in (1, 25, 120))), timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    committed = [r["position"] for r in await sql.fetch("SELECT position FROM events ORDER BY position")]
    for seen in results:
        assert seen == sorted(set(seen)), "positions must strictly increase, without duplicates"
        # Exactly the committed rows from the first one shown on, none skipped.
        assert seen == [p for p in committed if seen[0] <= p <= seen[-1]]


async def test_tail_while_the_database_is_down_ends_the_stream_for_a_retry(
    start_service, standalone_postgres: StandalonePostgres
) -> None:
    svc = await start_service(database_url=standalone_postgres.url)
    session = new_session()
    await upload(svc.ws_url, session, [event(f"e{i}", TS + i) for i in range(3)])
    await asyncio.to_thread(standalone_postgres.stop)
    # Neither a 500 nor a stream that silently starts without its tail: it ends, and
    # EventSource reconnects to the same URL after the retry hint.
    async with await SSEReader.open(svc.url, f"?session_id={session}&tail=5") as stream:
        assert await stream.ended(timeout=30)
        assert stream.retry is not None
    await asyncio.to_thread(standalone_postgres.start)
    names: list[str] = []
    async with asyncio.timeout(30):
        while not names:  # the pool may hand out a connection that died with the old server once
            async with await SSEReader.open(svc.url, f"?session_id={session}&tail=5") as stream:
                try:
                    names = [m.json["name"] for m in await stream.take(3, timeout=5)]
                except EOFError:
                    continue
    assert names == ["e0", "e1", "e2"]
