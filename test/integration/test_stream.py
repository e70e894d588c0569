"""GET /database_events: format, filters, plain-SQL writers, and gapless resume."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import asyncpg
import pytest

from test.support.clients import SSEReader, Uploader, event, new_session, upload
from test.support.service import Service

TS = 1_700_000_000_000


async def test_messages_have_id_and_data_and_no_event_field(service: Service) -> None:
    session = new_session()
    async with await SSEReader.open(service.url) as stream:
        headers = stream.response.headers
        assert headers["Content-Type"].startswith("text/event-stream")
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Accel-Buffering"] == "no"
        await upload(
            service.ws_url,
            session,
            [
                {"type": "SESSION_START", "timestamp": TS},
                event("click", TS + 1, data={"x": [1, {"y": "é"}], "z": None}),
                {"type": "SESSION_END", "timestamp": TS + 2, "name": "ignored"},
            ],
        )
        messages = await stream.take(3)
        assert stream.retry is not None and stream.retry > 0
    assert [m.event for m in messages] == [None, None, None]
    positions = [m.position for m in messages]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert [m.json for m in messages] == [
        {"type": "SESSION_START", "session_id": session, "timestamp": TS},
        {"type": "EVENT", "session_id": session, "timestamp": TS + 1, "name": "click", "data": {"x": [1, {"y": "é"}], "z": None}},
        {"type": "SESSION_END", "session_id": session, "timestamp": TS + 2},
    ]


async def test_filters_by_session_name_and_type(service: Service) -> None:
    wanted, other = new_session(), new_session()
    async with (
        await SSEReader.open(service.url, f"?session_id={wanted.upper()}") as by_session,
        await SSEReader.open(service.url, "?name=buy&name=view") as by_name,
        await SSEReader.open(service.url, "?type=SESSION_START&type=SESSION_END") as by_type,
    ):
        await upload(service.ws_url, other, [{"type": "SESSION_START", "timestamp": TS}, event("buy", TS)])
        await upload(
            service.ws_url,
            wanted,
            [event("view", TS), event("skip", TS), {"type": "SESSION_END", "timestamp": TS}],
        )
        got_session = await by_session.take(3)
        got_name = await by_name.take(2)
        got_type = await by_type.take(2)
    assert {m.json["session_id"] for m in got_session} == {wanted}
    assert [m.json.get("name") for m in got_session] == ["view", "skip", None]
    assert [(m.json["session_id"], m.json["name"]) for m in got_name] == [(other, "buy"), (wanted, "view")]
    assert [(m.json["session_id"], m.json["type"]) for m in got_type] == [(other, "SESSION_START"), (wanted, "SESSION_END")]


@pytest.mark.parametrize("query", ["?session_id=nope", "?type=CLICK", "?last_event_id=abc", "?last_event_id=-1"])
async def test_malformed_stream_parameters_are_400(service: Service, query: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/database_events{query}") as response:
        assert response.status == 400
        body = await response.json()
        assert body["error"] and body["message"]


async def test_plain_sql_insert_appears_on_the_stream(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    async with await SSEReader.open(service.url, f"?session_id={session}") as stream:
        await sql.execute(
            "INSERT INTO events (session_id, type, ts, name_id, data) VALUES ($1, 'EVENT', 42, event_name_id('psql'), $2)",
            session,
            '{"by": "hand"}',
        )
        message = await stream.next()
    assert message.json == {"type": "EVENT", "session_id": session, "timestamp": 42, "name": "psql", "data": {"by": "hand"}}
    row = await sql.fetchrow("SELECT event_count FROM sessions WHERE id = $1", session)
    assert row is not None and row["event_count"] == 1


async def _positions_after(sql: asyncpg.Connection, start: int) -> list[int]:
    rows = await sql.fetch("SELECT position FROM events WHERE position > $1 ORDER BY position", start)
    return [r["position"] for r in rows]


async def _current_position(service: Service) -> int:
    async with await SSEReader.open(service.url, "?last_event_id=99999999999999999") as stream:
        reset = await stream.next()
    assert reset.event == "reset"
    return reset.position


@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_replays_exactly_what_was_missed(service: Service, how: str) -> None:
    session = new_session()
    await upload(service.ws_url, session, [event("before", TS)])
    async with await SSEReader.open(service.url, f"?session_id={session}") as stream:
        await upload(service.ws_url, session, [event("seen", TS)])
        # On a busy machine the hub may pass "before" on only after this stream
        # subscribed, so the stream can start with it: read up to "seen", whatever
        # came first, rather than assume the first message is "seen".
        last_seen = await stream.next()
        while last_seen.json["name"] != "seen":
            assert last_seen.json["name"] == "before"
            last_seen = await stream.next()
    await upload(service.ws_url, session, [event("missed-1", TS)], [event("missed-2", TS), event("missed-3", TS)])
    query = f"?session_id={session}"
    headers = None
    if how == "header":
        headers = {"Last-Event-ID": last_seen.id or ""}
    else:
        query += f"&last_event_id={last_seen.id}"
    async with await SSEReader.open(service.url, query, headers=headers) as resumed:
        replayed = await resumed.take(3)
        await upload(service.ws_url, session, [event("live", TS)])
        live = await resumed.next()
    assert [m.json["name"] for m in replayed] == ["missed-1", "missed-2", "missed-3"]
    assert live.json["name"] == "live"
    positions = [last_seen.position] + [m.position for m in replayed] + [live.position]
    assert positions == sorted(set(positions))


async def test_resume_from_zero_replays_from_the_beginning(start_service) -> None:
    svc = await start_service()
    session = new_session()
    await upload(svc.ws_url, session, [event("a", TS), event("b", TS)])
    async with await SSEReader.open(svc.url, "?last_event_id=0") as stream:
        messages = await stream.take(2)
    assert [m.json["name"] for m in messages] == ["a", "b"]


async def test_position_ahead_or_foreign_or_unreadable_gets_reset(service: Service, sql: asyncpg.Connection) -> None:
    await upload(service.ws_url, new_session(), [event("x", TS)])
    base = await sql.fetchval("SELECT base FROM stream_meta")
    for kind in ["ahead", "foreign", "unreadable"]:
        head = await sql.fetchval("SELECT max(position) FROM events")
        header = {"ahead": str(head + 1_000_000), "foreign": str(base - 10), "unreadable": "not-a-number"}[kind]
        async with await SSEReader.open(service.url, headers={"Last-Event-ID": header}) as stream:
            reset = await stream.next()
            assert reset.event == "reset", header
            assert reset.position == head, header
            assert json.loads(reset.data)["reason"]
            # After the reset the stream carries on live from the current position.
            session = new_session()
            await upload(service.ws_url, session, [event("after-reset", TS)])
            nxt = await stream.next()
            assert nxt.json["session_id"] == session and nxt.position > head


async def test_resume_has_no_gap_or_duplicate_while_writers_commit(service: Service, sql: asyncpg.Connection) -> None:
    """Clients resume at many points while WebSocket and plain-SQL writers commit concurrently."""
    marker = new_session()
    start = await _current_position(service)
    stop = asyncio.Event()
    written = 0

    async def ws_writer(k: int) -> None:
        nonlocal written
        async with await Uploader.open(service.ws_url) as up:
            i = 0
            while not stop.is_set():
                sid = new_session()
                ack = await up.send([event(f"w{k}", TS + i, session_id=sid) for _ in range(5)])
                assert ack["type"] == "ACK", ack
                written += 5
                i += 1

    async def sql_writer() -> None:
        nonlocal written
        conn = await asyncpg.connect(service.database_url)
        try:
            while not stop.is_set():
                await conn.execute(
                    "INSERT INTO events (session_id, type, ts, name_id) "
                    "SELECT $1, 'EVENT', g, event_name_id('sql') FROM generate_series(1, 3) g",
                    marker,
                )
                written += 3
        finally:
            await conn.close()

    async def resumer() -> list[int]:
        """Reads a little, drops the connection, resumes from the last id seen; repeats."""
        seen: list[int] = []
        last = start
        for _ in range(6):
            async with await SSEReader.open(service.url, headers={"Last-Event-ID": str(last)}) as stream:
                for _ in range(25):
                    message = await stream.next()
                    assert message.event is None, message
                    seen.append(message.position)
                    last = message.position
        return seen

    writers = [asyncio.create_task(ws_writer(k)) for k in range(3)] + [asyncio.create_task(sql_writer())]
    try:
        results = await asyncio.wait_for(asyncio.gather(*(resumer() for _ in range(4))), timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    expected = await _positions_after(sql, start)
    assert written >= 150
    for seen in results:
        assert seen == sorted(set(seen)), "positions must strictly increase, without duplicates"
        # Every committed row up to the last one this client saw, none skipped.
        assert seen == [p for p in expected if p <= seen[-1]]


async def test_every_live_client_sees_every_row_once_in_order_under_concurrent_writers(
    service: Service, sql: asyncpg.Connection
) -> None:
    start = await _current_position(service)
    readers = [await SSEReader.open(service.url) for _ in range(3)]
    total = 0

    async def ws_writer(k: int) -> None:
        nonlocal total
        async with await Uploader.open(service.ws_url) as up:
            for i in range(15):
                ack = await up.send([event(f"c{k}", TS + i, session_id=new_session()) for _ in range(7)])
                assert ack["type"] == "ACK"
                total += 7

    async def sql_writer() -> None:
        nonlocal total
        conn = await asyncpg.connect(service.database_url)
        try:
            for _ in range(20):
                async with conn.transaction():
                    await conn.execute("INSERT INTO events (session_id, type, ts) VALUES ($1, 'SESSION_START', 1)", new_session())
                    await conn.execute("INSERT INTO events (session_id, type, ts) VALUES ($1, 'SESSION_END', 2)", new_session())
                total += 2
        finally:
            await conn.close()

    try:
        await asyncio.gather(*(ws_writer(k) for k in range(4)), sql_writer())
        expected = await _positions_after(sql, start)
        assert len(expected) == total
        for reader in readers:
            got = [m.position for m in await reader.take(total, timeout=30)]
            assert got == expected
    finally:
        for reader in readers:
            await reader.close()


async def test_keepalive_comments_are_sent(start_service) -> None:
    svc = await start_service(env={"SSE_PING_SECONDS": "0.2"})
    async with await SSEReader.open(svc.url) as stream:
        async with asyncio.timeout(10):
            while not stream.comments:
                chunk = await stream.response.content.readany()
                stream._feed(chunk)
    assert any(c.startswith("ping") for c in stream.comments)


async def test_header_wins_over_query_when_eventsource_reconnects(service: Service) -> None:
    """EventSource keeps the URL it was opened with and adds the newer id as a header."""
    session = new_session()
    await upload(service.ws_url, session, [event("old", TS)], [event("new", TS)])
    async with await SSEReader.open(service.url, f"?session_id={session}&last_event_id=0") as first:
        old, new = await first.take(2)
    query = f"?session_id={session}&last_event_id=0"
    async with await SSEReader.open(service.url, query, headers={"Last-Event-ID": old.id or ""}) as again:
        assert (await again.next()).position == new.position


async def test_head_and_early_disconnects_do_not_leak_subscribers(start_service) -> None:
    """HEAD never starts the body; the subscription must still be released."""
    svc = await start_service()
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.head(f"{svc.url}/database_events?session_id={new_session()}") as response:
                assert response.status == 200
        async with asyncio.timeout(10):
            while True:
                async with http.get(f"{svc.url}/metrics") as response:
                    text = await response.text()
                gauge = [line for line in text.splitlines() if line.startswith("eventservice_sse_clients ")]
                if gauge and float(gauge[0].split()[1]) == 0:
                    break
                await asyncio.sleep(0.05)
