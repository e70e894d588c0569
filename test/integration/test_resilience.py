"""Failure modes: a client that never reads, a killed LISTEN connection, the database going away."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import asyncpg

from test.support.clients import SSEReader, Uploader, event, metric, new_session, readyz, upload
from test.support.postgres import StandalonePostgres
from test.support.raw import stalled_sse
from test.support.service import Service

TS = 1_700_000_000_000


async def test_a_client_that_never_reads_is_dropped_without_slowing_others(start_service) -> None:
    svc = await start_service(env={"SSE_CLIENT_BUFFER": "300", "SSE_SEND_TIMEOUT_SECONDS": "2"})
    stalled = stalled_sse(svc.port)
    try:
        async with await SSEReader.open(svc.url) as fast:
            # Wait until the stalled client is registered, so it really is in the fan-out.
            deadline = time.monotonic() + 10
            while await metric(svc.url, "eventservice_sse_clients") < 2:
                assert time.monotonic() < deadline, "stalled client never connected"
                await asyncio.sleep(0.05)
            big = {"pad": "x" * 15_000}
            session = new_session()
            started = time.monotonic()
            async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as up:
                for i in range(40):
                    ack = await up.send([event("big", TS + i, data=big) for _ in range(10)])
                    assert ack["type"] == "ACK"
            received = await fast.take(400, timeout=30)
            elapsed = time.monotonic() - started
            assert [m.json["timestamp"] for m in received] == [TS + i for i in range(40) for _ in range(10)]
            assert elapsed < 30
            deadline = time.monotonic() + 15
            while await metric(svc.url, "eventservice_sse_clients_dropped_total") < 1:
                assert time.monotonic() < deadline, "the stalled client was never dropped"
                await asyncio.sleep(0.1)
            # The fast client is still live after the slow one was dropped.
            await upload(svc.ws_url, session, [event("after-drop", TS)])
            assert (await fast.next()).json["name"] == "after-drop"
    finally:
        stalled.close()


async def test_killed_listen_connection_loses_nothing(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    async with await SSEReader.open(service.url, f"?session_id={session}") as stream:
        await upload(service.ws_url, session, [event("before-kill", TS)])
        assert (await stream.next()).json["name"] == "before-kill"
        killed = await sql.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'eventservice-hub'"
        )
        assert killed == 1
        # Written while the hub has no connection: must arrive once it reconnects.
        await upload(service.ws_url, session, *[[event(f"during-{i}", TS + i)] for i in range(5)])
        names = [m.json["name"] for m in await stream.take(5, timeout=20)]
        assert names == [f"during-{i}" for i in range(5)]
        deadline = time.monotonic() + 10
        while not await sql.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'eventservice-hub'"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert await metric(service.url, "eventservice_listen_reconnects_total") >= 1


async def test_readyz_follows_the_database_and_ingest_says_unavailable(
    start_service, standalone_postgres: StandalonePostgres
) -> None:
    svc = await start_service(database_url=standalone_postgres.url)
    assert (await readyz(svc.url))[0] == 200
    session = new_session()
    async with await SSEReader.open(svc.url, f"?session_id={session}") as stream:
        await upload(svc.ws_url, session, [event("up", TS)])
        assert (await stream.next()).json["name"] == "up"

        await asyncio.to_thread(standalone_postgres.stop)
        deadline = time.monotonic() + 15
        while (status := await readyz(svc.url))[0] != 503:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        assert status[1]["status"] == "unavailable" and status[1]["reason"]
        answer = (await upload(svc.ws_url, session, [event("down", TS)]))[0]
        assert answer["type"] == "ERROR" and answer["error"] == "unavailable", answer
        async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/session/{session}") as response:
            assert response.status == 503

        await asyncio.to_thread(standalone_postgres.start)
        deadline = time.monotonic() + 20
        while (await readyz(svc.url))[0] != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        # The pool may hand out a connection that died with the old server once.
        for _ in range(5):
            answer = (await upload(svc.ws_url, session, [event("back", TS)]))[0]
            if answer["type"] == "ACK":
                break
        assert answer["type"] == "ACK", answer
        # The stream survived the outage: the hub reconnected and caught up.
        assert (await stream.next(timeout=20)).json["name"] == "back"
    assert re.search(r"LISTEN connection (lost|re-established)", svc.logs())
