"""Hostile input: what an attacker sends, and a well-behaved client that must not notice.

Every malformed input must get a clear 4xx or an ERROR frame (or, below the JSON
layer, the WebSocket close code the protocol prescribes), never a 500, a hang, a
crash, or a partial write; and the service must keep answering others meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import asyncpg
import pytest

from test.conftest import StartService
from test.support.clients import Uploader, event, new_session
from test.support.raw import OP_TEXT, RawWebSocket, closed_by_peer, open_tcp
from test.support.service import Service


async def stored(svc: Service, session: str) -> int:
    conn = await asyncpg.connect(svc.database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM events WHERE session_id = $1", session)
    finally:
        await conn.close()


async def healthy(svc: Service) -> None:
    """The service still ingests and answers HTTP."""
    session = new_session()
    async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as up:
        answer = await up.send([event("still-alive")], timeout=10)
    assert answer["type"] == "ACK", answer
    async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/healthcheck") as response:
        assert response.status == 200


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(nested(100_000), id="100k-nested-arrays"),
        pytest.param('{"a":' * 100_000 + "1" + "}" * 100_000, id="100k-nested-objects"),
        pytest.param(
            '[{"type":"EVENT","timestamp":1,"name":"deep","data":{"a":' + nested(100_000) + "}}]", id="100k-nested-in-data"
        ),
        pytest.param(nested(100_000)[:-1], id="100k-nested-unclosed"),
    ],
)
async def test_deep_nesting_is_an_error_not_a_crash(service: Service, frame: str) -> None:
    session = new_session()
    async with await Uploader.open(service.ws_url, f"?sessionId={session}") as up:
        answer = await up.send(frame, timeout=30)
        assert answer["type"] == "ERROR"
        assert answer["error"] in {"invalid_json", "invalid_event", "invalid_batch"}
        assert answer["message"]
        # The same connection carries on.
        assert (await up.send([event("after")]))["type"] == "ACK"
    assert await stored(service, session) == 1
    await healthy(service)


def data_event(data_json: str) -> str:
    return '[{"type":"EVENT","timestamp":1700000000000,"name":"n","data":' + data_json + "}]"


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param('[{"type":"EVENT","timestamp":' + "9" * 30 + ',"name":"n"}]', id="timestamp-30-digits"),
        pytest.param('[{"type":"EVENT","timestamp":' + "9" * 5000 + ',"name":"n"}]', id="timestamp-5000-digits"),
        pytest.param('[{"type":"EVENT","timestamp":1e400,"name":"n"}]', id="timestamp-1e400"),
        pytest.param('[{"type":"EVENT","timestamp":-1e400,"name":"n"}]', id="timestamp-minus-1e400"),
        pytest.param('[{"type":"EVENT","timestamp":1.5e12,"name":"n"}]', id="timestamp-float-exponent"),
        pytest.param(data_event('{"x":1e400}'), id="data-1e400"),
        pytest.param(data_event('{"x":' + "1" * 5000 + "}"), id="data-5000-digits"),
        pytest.param(data_event('{"x":123456789012345678901234567890}'), id="data-30-digits"),
        pytest.param(data_event('{"x":-9223372036854775809}'), id="data-below-int64"),
        pytest.param(data_event('{"x":1.0000000000000000000000001}'), id="data-long-fraction"),
        pytest.param(data_event('{"x":NaN}'), id="data-nan"),
        pytest.param(data_event('{"x":Infinity}'), id="data-infinity"),
    ],
)
async def test_huge_numbers_are_refused_or_kept_exactly(service: Service, frame: str) -> None:
    """ACK means the number was stored as sent (an integer not rounded, nothing turned into null)."""
    session = new_session()
    async with await Uploader.open(service.ws_url, f"?sessionId={session}") as up:
        answer = await up.send(frame, timeout=30)
    assert answer["type"] in {"ACK", "ERROR"}, answer
    if answer["type"] == "ERROR":
        assert answer["error"] in {"invalid_json", "invalid_event"}
        assert await stored(service, session) == 0
        return
    # Integers compared as digits (exact); fractions as doubles, which is what JSON promises.
    sent = json.loads(frame, parse_int=str)[0]
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/session/{session}") as response:
        text = await response.text()
    children = json.loads(text, parse_int=str)["children"]
    assert children[0].get("data") == sent.get("data"), text[:300]


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ([{"type": "EVENT", "timestamp": 1, "name": "a\u0000b"}], "invalid_event"),
        ([{"type": "EVENT", "timestamp": 1, "name": "\u0000"}], "invalid_event"),
        ([{"type": "EVENT", "timestamp": 1, "name": "n", "data": {"k": "v\u0000"}}], "invalid_event"),
        ([{"type": "EVENT", "timestamp": 1, "name": "n", "data": {"k\u0000": 1}}], "invalid_event"),
        ([{"type": "EVENT", "timestamp": 1, "name": "n", "session_id": "\u0000"}], "invalid_event"),
        ({"batch_id": "a\u0000b", "events": [{"type": "EVENT", "timestamp": 1, "name": "n"}]}, "invalid_batch"),
        ('[{"type":"EVENT","timestamp":1,"name":"a\x00b"}]', "invalid_json"),  # a raw NUL, not escaped
        ('[{"type":"EVENT","timestamp":1,"name":"\\ud800"}]', "invalid_event"),  # a lone surrogate
    ],
)
async def test_nul_bytes_and_surrogates_are_refused_with_a_reason(service: Service, frame: Any, error: str) -> None:
    session = new_session()
    good = [event("good")]
    payload = frame if isinstance(frame, str) else json.dumps(frame)
    async with await Uploader.open(service.ws_url, f"?sessionId={session}") as up:
        answer = await up.send(payload)
        assert answer["type"] == "ERROR"
        assert answer["error"] == error, answer
        assert answer["message"]
        assert (await up.send(good))["type"] == "ACK"
    assert await stored(service, session) == 1  # the good batch only: nothing of the bad one


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(service: Service) -> None:
    raw = await RawWebSocket.open(service.port, f"/ws?sessionId={new_session()}")
    try:
        await raw.send_frame(OP_TEXT, b'[{"type":"EVENT","timestamp":1,"name":"\xff\xfe"}]')
        assert await raw.close_code() == 1007  # RFC 6455: inconsistent data
    finally:
        raw.close()
    await healthy(service)


async def test_a_fragmented_frame_left_unfinished_harms_nobody(service: Service) -> None:
    raw = await RawWebSocket.open(service.port, f"/ws?sessionId={new_session()}")
    try:
        await raw.send_frame(OP_TEXT, b'[{"type":"EVENT",', fin=False)  # and never the rest
        await healthy(service)
    finally:
        raw.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /session/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", id="invalid-utf8-path"),
        pytest.param(b"GET /sessions?limit=\xff HTTP/1.1\r\nHost: x\r\n\r\n", id="invalid-utf8-query"),
        pytest.param(b"GET /sessions?limit=" + b"9" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="huge-query"),
        pytest.param(b"GET /sessions HTTP/1.1\r\nHost: x\r\nAuthorization: \xff\xff\r\n\r\n", id="binary-header"),
        pytest.param(b"GET /database_events?last_event_id=" + b"9" * 50 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="huge-position"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, id="tls-hello"),
        pytest.param(b"NONSENSE\r\n\r\n", id="garbage"),
    ],
)
async def test_malformed_http_never_gets_a_500(service: Service, request_bytes: bytes) -> None:
    reader, writer = await open_tcp(service.port)
    try:
        writer.write(request_bytes)
        await writer.drain()
        head = await asyncio.wait_for(reader.read(200), 15)
    finally:
        writer.close()
    if head:  # a server may also just hang up on garbage
        status = int(head.split(b" ", 2)[1])
        assert status < 500, head  # a 4xx for the malformed; the binary header is just ignored (no tokens here)
    await healthy(service)


async def test_slowloris_does_not_starve_a_well_behaved_client(start_service: StartService) -> None:
    svc = await start_service(env={"HANDSHAKE_TIMEOUT_SECONDS": "2", "IDLE_TIMEOUT_SECONDS": "2"})
    attackers: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    silent_ws: list[Uploader] = []
    # 300 connections that say nothing, 200 that send half a WebSocket handshake,
    # and 50 WebSockets that open and then send nothing.
    for _ in range(300):
        attackers.append(await open_tcp(svc.port))
    for i in range(200):
        reader, writer = await open_tcp(svc.port)
        writer.write(f"GET /ws?sessionId={new_session()} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad-{i}: ".encode())
        attackers.append((reader, writer))
    for _ in range(50):
        silent_ws.append(await Uploader.open(svc.ws_url, f"?sessionId={new_session()}"))

    async def dribble() -> None:
        """One more attacker that keeps sending a header byte at a time: the deadline still applies."""
        reader, writer = await open_tcp(svc.port)
        attackers.append((reader, writer))
        writer.write(b"GET /sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        try:
            while not writer.is_closing():
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.1)  # the attack's pace, not a synchronisation
        except (ConnectionError, OSError):
            return

    dribbler = asyncio.create_task(dribble())
    try:
        session = new_session()
        async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as good:
            started = time.monotonic()
            sent = 0
            # Keep uploading past both timeouts: every ACK comes promptly throughout.
            while time.monotonic() - started < 5:
                t0 = time.monotonic()
                answer = await good.send([event(f"ok-{sent}")], timeout=10)
                assert answer["type"] == "ACK", answer
                assert time.monotonic() - t0 < 2.0, "an ACK took longer than 2 s under attack"
                sent += 1
        assert await stored(svc, session) == sent

        # And the attackers were all cut off by the server.
        closed = await asyncio.gather(*(closed_by_peer(reader, 20) for reader, _ in attackers))
        assert all(closed), f"{closed.count(False)} of {len(closed)} slow connections still open"
        for ws in silent_ws:
            message = await ws.ws.receive(timeout=20)
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001
    finally:
        dribbler.cancel()
        for _, writer in attackers:
            writer.close()
        for ws in silent_ws:
            await ws.close()
    await healthy(svc)
