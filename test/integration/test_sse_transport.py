"""How the SSE stream is driven (app/stream/response.py), against a real server.

Pings at the configured interval, a client whose socket stops draining dropped
after the send timeout and counted, a client that goes away unsubscribed at once
(no write needed to notice), and the connection log's byte count though body
writes skip the middleware. Timings are bounded below by what the server
promises and above only by generous deadlines, so a busy machine cannot fail them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import aiohttp

from test.support.clients import SSEReader, Uploader, event, metric, new_session
from test.support.raw import stalled_sse
from test.support.service import Service

TS = 1_700_000_000_000


async def _until_metric(svc: Service, name: str, want: float, deadline_s: float = 20) -> None:
    deadline = time.monotonic() + deadline_s
    while (value := await metric(svc.url, name)) != want:
        assert time.monotonic() < deadline, f"{name} stayed {value}, expected {want}"
        await asyncio.sleep(0.05)


async def test_pings_arrive_at_the_configured_interval(start_service) -> None:
    interval = 0.4
    svc = await start_service(env={"SSE_PING_SECONDS": str(interval)})
    async with await SSEReader.open(svc.url) as stream:
        arrivals: list[float] = []
        async with asyncio.timeout(30):
            while len(arrivals) < 5:
                chunk = await stream.response.content.readany()
                assert chunk, "stream ended"
                before = len(stream.comments)
                stream._feed(chunk)
                arrivals += [time.monotonic()] * (len(stream.comments) - before)
    assert all(c.startswith("ping") for c in stream.comments)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Never more often than configured (a little slack for delivery jitter)...
    assert min(gaps) >= interval * 0.5, gaps
    # ...and not a multiple of it either, on average, however busy the machine.
    assert sum(gaps) / len(gaps) < interval * 5, gaps


async def test_a_stalled_client_is_dropped_after_the_send_timeout_and_counted(start_service) -> None:
    # A buffer far larger than what is sent: the drop must come from the send timeout.
    svc = await start_service(env={"SSE_SEND_TIMEOUT_SECONDS": "1", "SSE_CLIENT_BUFFER": "100000"})
    stalled = stalled_sse(svc.port)
    try:
        await _until_metric(svc, "eventservice_sse_clients ", 1)
        big = {"pad": "x" * 15_000}
        async with await Uploader.open(svc.ws_url, f"?sessionId={new_session()}") as up:
            for i in range(40):
                assert (await up.send([event("big", TS + i, data=big) for _ in range(10)]))["type"] == "ACK"
        await _until_metric(svc, 'eventservice_sse_clients_dropped_total{reason="send_timeout"}', 1, deadline_s=30)
        await _until_metric(svc, "eventservice_sse_clients ", 0)
        assert await metric(svc.url, 'eventservice_sse_clients_dropped_total{reason="slow_client"}') == 0
        # The socket was closed by the server: reading ends in EOF, not a hang.
        stalled.settimeout(30)
        while stalled.recv(65536):
            pass
    finally:
        stalled.close()


async def test_a_client_that_goes_away_is_unsubscribed_without_any_write(start_service) -> None:
    svc = await start_service(env={"SSE_PING_SECONDS": "3600"})  # no ping to find out by
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            response = await http.get(f"{svc.url}/database_events?session_id={new_session()}")
            assert response.status == 200
            await response.content.readany()  # the retry hint: the stream is live
            await _until_metric(svc, "eventservice_sse_clients ", 1)
            response.close()  # drops the connection
            await _until_metric(svc, "eventservice_sse_clients ", 0)


async def test_stream_messages_still_arrive_whole_and_in_order(service: Service) -> None:
    """The body bypasses the middleware send wrappers: nothing may be lost or split wrongly."""
    session = new_session()
    async with await SSEReader.open(service.url, f"?session_id={session}") as stream:
        async with await Uploader.open(service.ws_url, f"?sessionId={session}") as up:
            for i in range(5):
                assert (await up.send([event(f"e{i}-{k}", TS + i) for k in range(20)]))["type"] == "ACK"
        got = await stream.take(100)
    assert [m.json["name"] for m in got] == [f"e{i}-{k}" for i in range(5) for k in range(20)]


async def test_the_connection_log_counts_the_bytes_written_past_the_middleware(start_service) -> None:
    svc = await start_service("--log-format", "json")
    session = new_session()
    received = 0
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{svc.url}/database_events?session_id={session}") as response:
            async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as up:
                assert (await up.send([event(f"n{k}", TS) for k in range(30)]))["type"] == "ACK"
            async with asyncio.timeout(20):
                text = b""
                while text.count(b"\n\n") < 31:  # the retry hint and 30 messages
                    chunk = await response.content.readany()
                    assert chunk
                    text += chunk
            received = len(text)

    def closes() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in svc.logs().splitlines() if line.startswith("{")]
        return [r for r in lines if r["msg"] == "sse close" and r.get("session") == session]

    deadline = time.monotonic() + 20
    while not closes():
        assert time.monotonic() < deadline, "no sse close line"
        await asyncio.sleep(0.05)
    (close,) = closes()
    assert close["bytes"] == received  # SSE bytes of the body, without the chunked framing
