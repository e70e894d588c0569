"""Several processes against one database behave as one service."""

from __future__ import annotations

import asyncio

import aiohttp

from test.support.clients import SSEReader, Uploader, event, new_session, upload

TS = 1_700_000_000_000


async def test_two_processes_share_one_commit_ordered_stream(start_service) -> None:
    a = await start_service()
    b = await start_service(database_url=a.database_url)
    async with await SSEReader.open(a.url) as on_a, await SSEReader.open(b.url) as on_b:

        async def writer(svc_ws: str, name: str) -> None:
            async with await Uploader.open(svc_ws) as up:
                for i in range(10):
                    ack = await up.send([event(name, TS + i, session_id=new_session()) for _ in range(3)])
                    assert ack["type"] == "ACK"

        await asyncio.gather(writer(a.ws_url, "via-a"), writer(b.ws_url, "via-b"))
        seen_a = await on_a.take(60)
        seen_b = await on_b.take(60)
    assert [m.position for m in seen_a] == [m.position for m in seen_b]
    assert [m.position for m in seen_a] == sorted({m.position for m in seen_a})
    assert {m.json["name"] for m in seen_a} == {"via-a", "via-b"}


async def test_last_event_id_from_one_process_resumes_on_the_other(start_service) -> None:
    a = await start_service()
    b = await start_service(database_url=a.database_url)
    session = new_session()
    async with await SSEReader.open(a.url, f"?session_id={session}") as on_a:
        await upload(a.ws_url, session, [event("one", TS)])
        last = await on_a.next()
    await upload(a.ws_url, session, [event("two", TS)])
    await upload(b.ws_url, session, [event("three", TS)])
    async with await SSEReader.open(b.url, f"?session_id={session}", headers={"Last-Event-ID": last.id or ""}) as on_b:
        names = [m.json["name"] for m in await on_b.take(2)]
    assert names == ["two", "three"]
    async with aiohttp.ClientSession() as http, http.get(f"{b.url}/session/{session}") as response:
        body = await response.json()
    assert [c["name"] for c in body["children"]] == ["one", "two", "three"]


async def test_workers_flag_serves_from_several_processes(start_service) -> None:
    svc = await start_service("--workers", "2")
    async with await SSEReader.open(svc.url) as stream:
        sessions = [new_session() for _ in range(8)]
        await asyncio.gather(*(upload(svc.ws_url, s, [event("w", TS)]) for s in sessions))
        got = {m.json["session_id"] for m in await stream.take(8)}
    assert got == set(sessions)


async def test_metrics_sum_over_all_workers(start_service) -> None:
    """Each scrape reaches one worker; the counters must still cover all of them."""
    svc = await start_service("--workers", "2")
    uploads = 12
    await asyncio.gather(*(upload(svc.ws_url, new_session(), [event("m", TS), event("m", TS)]) for _ in range(uploads)))
    for _ in range(4):  # several scrapes, whichever worker answers
        async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/metrics") as response:
            text = await response.text()
        accepted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('eventservice_events_total{result="accepted"}')
        )
        assert accepted == 2 * uploads
