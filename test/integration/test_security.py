"""Access control and resource limits, attacked from outside with real clients.

One module-wide server runs with tokens and an allowed origin; tests that need
other settings (caps, timeouts, rate limits, rejected-batch bounds) start their
own. Waiting is always polling against a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from multidict import CIMultiDict

from test.conftest import StartService
from test.support import postgres as pg
from test.support.clients import SSEReader, Uploader, event, new_session
from test.support.postgres import free_port
from test.support.raw import closed_by_peer, open_tcp, read_response
from test.support.service import REPO, Service

INGEST = "ingest-" + secrets.token_hex(12)
INGEST_2 = "ingest2-" + secrets.token_hex(12)
READ = "read-" + secrets.token_hex(12)
ORIGIN = "https://app.example"
EVIL = "https://evil.example"

READ_PATHS = {
    # path -> what a request with a valid read token gets
    "/sessions": 200,
    "/session/0d856b46-48cd-4fba-946b-53d15b7b43e0": 404,
    "/metrics": 200,
    "/database_events": 200,
}
OPEN_PATHS = ["/healthcheck", "/readyz", "/", "/openapi.json", "/static/monitor.js"]


@pytest.fixture(scope="module")
async def secured(postgres: pg.TestPostgres) -> AsyncIterator[Service]:
    url = await postgres.create_database("security_secured")
    svc = Service(url, env={"INGEST_TOKENS": f"{INGEST},{INGEST_2}", "READ_TOKENS": READ, "ALLOWED_ORIGINS": ORIGIN})
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s (last: {result!r})")
        await asyncio.sleep(0.05)


async def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, CIMultiDict[str], bytes]:
    """Status, headers and (for non-streams) body; a stream is left after its headers."""
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers) as response:
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        body = b"" if streaming else await response.read()
        return response.status, response.headers.copy(), body


def batch(session: str | None = None, n: int = 1) -> list[dict[str, Any]]:
    extra = {"session_id": session} if session else {}
    return [event(f"e{i}", **extra) for i in range(n)]


# --- tokens on the read endpoints ---------------------------------------------------------


@pytest.mark.parametrize("path", list(READ_PATHS))
@pytest.mark.parametrize(
    ("how", "token"),
    [("header", READ), ("query", READ)],
)
async def test_a_read_token_opens_read_endpoints(secured: Service, path: str, how: str, token: str) -> None:
    if how == "header":
        status, _, _ = await get(secured.url + path, {"Authorization": f"Bearer {token}"})
    else:
        status, _, _ = await get(f"{secured.url}{path}?token={token}")
    assert status == READ_PATHS[path]


@pytest.mark.parametrize("path", list(READ_PATHS))
@pytest.mark.parametrize(
    ("how", "token", "invalid"),
    [
        ("missing", None, False),
        ("header", "wrong-" + secrets.token_hex(8), True),
        ("query", "wrong-" + secrets.token_hex(8), True),
        ("header", INGEST, True),  # an ingest token does not read
        ("query", INGEST, True),
        ("basic", READ, True),  # not a Bearer credential
        ("query", "", True),
    ],
)
async def test_read_endpoints_refuse_missing_wrong_and_ingest_tokens(
    secured: Service, path: str, how: str, token: str | None, invalid: bool
) -> None:
    headers: dict[str, str] = {}
    url = secured.url + path
    if how == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif how == "basic":
        headers["Authorization"] = f"Basic {token}"
    elif how == "query":
        url += f"?token={token}"
    status, response_headers, body = await get(url, headers)
    assert status == 401
    assert response_headers["WWW-Authenticate"].startswith("Bearer")
    assert ('error="invalid_token"' in response_headers["WWW-Authenticate"]) == invalid
    assert response_headers["Content-Type"] == "application/json"
    document = json.loads(body)
    assert document["error"] == "unauthorized"
    assert document["message"]


async def test_a_present_authorization_header_wins_over_the_query(secured: Service) -> None:
    status, _, _ = await get(f"{secured.url}/sessions?token={READ}", {"Authorization": "Bearer nope-nope-nope"})
    assert status == 401


@pytest.mark.parametrize("path", OPEN_PATHS)
async def test_open_endpoints_need_no_token(secured: Service, path: str) -> None:
    status, _, _ = await get(secured.url + path)
    assert status == 200


# --- tokens on /ws ------------------------------------------------------------------------


@pytest.mark.parametrize(("how", "token"), [("header", INGEST), ("query", INGEST), ("query", INGEST_2)])
async def test_an_ingest_token_opens_ws(secured: Service, how: str, token: str) -> None:
    session = new_session()
    query = f"?sessionId={session}" + (f"&token={token}" if how == "query" else "")
    headers = {"Authorization": f"Bearer {token}"} if how == "header" else None
    async with await Uploader.open(secured.ws_url, query, headers=headers) as up:
        answer = await up.send(batch())
    assert answer["type"] == "ACK"
    assert answer["accepted"] == 1


@pytest.mark.parametrize(
    ("how", "token"),
    [
        ("missing", None),
        ("header", "wrong-" + secrets.token_hex(8)),
        ("query", "wrong-" + secrets.token_hex(8)),
        ("header", READ),  # a read token does not ingest
        ("query", READ),
    ],
)
async def test_ws_refuses_missing_wrong_and_read_tokens_at_the_handshake(secured: Service, how: str, token: str | None) -> None:
    query = f"?sessionId={new_session()}" + (f"&token={token}" if how == "query" else "")
    headers = {"Authorization": f"Bearer {token}"} if how == "header" else None
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await Uploader.open(secured.ws_url, query, headers=headers)
    assert refused.value.status == 401


# --- origins and CORS ---------------------------------------------------------------------


@pytest.mark.parametrize("origin", [EVIL, "null", "http://app.example", "https://app.example.evil.example"])
async def test_ws_from_a_foreign_origin_is_refused(secured: Service, origin: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await Uploader.open(secured.ws_url, f"?token={INGEST}", headers={"Origin": origin})
    assert refused.value.status == 403


async def test_ws_origin_allowed_listed_same_host_or_absent(secured: Service) -> None:
    for origin in [ORIGIN, "HTTPS://APP.EXAMPLE:443", f"http://127.0.0.1:{secured.port}", None]:
        headers = {"Origin": origin} if origin else {}
        async with await Uploader.open(secured.ws_url, f"?sessionId={new_session()}&token={INGEST}", headers=headers) as up:
            assert (await up.send(batch()))["type"] == "ACK", origin


async def test_cors_headers_only_for_the_allowed_origin(secured: Service) -> None:
    auth = {"Authorization": f"Bearer {READ}"}
    _, headers, _ = await get(secured.url + "/sessions", {**auth, "Origin": ORIGIN})
    assert headers.get("access-control-allow-origin") == ORIGIN
    _, headers, _ = await get(secured.url + "/sessions", {**auth, "Origin": EVIL})
    assert "access-control-allow-origin" not in {k.lower() for k in headers}
    # A 401 carries it too, so the page can tell "token needed" from a network error.
    status, headers, _ = await get(secured.url + "/sessions", {"Origin": ORIGIN})
    assert status == 401
    assert headers.get("access-control-allow-origin") == ORIGIN


async def test_cors_preflight(secured: Service) -> None:
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    status, headers, _ = await get(secured.url + "/sessions", {**preflight, "Origin": ORIGIN}, method="OPTIONS")
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in headers["access-control-allow-headers"].lower()
    status, headers, body = await get(secured.url + "/sessions", {**preflight, "Origin": EVIL}, method="OPTIONS")
    assert status == 403 and json.loads(body)["error"] == "forbidden_origin"  # JSON, like every other error
    assert "access-control-allow-origin" not in {k.lower() for k in headers}


async def test_no_cors_and_same_host_only_when_no_origins_are_configured(start_service: StartService) -> None:
    svc = await start_service()
    _, headers, _ = await get(svc.url + "/sessions", {"Origin": ORIGIN})
    assert "access-control-allow-origin" not in {k.lower() for k in headers}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await Uploader.open(svc.ws_url, "", headers={"Origin": ORIGIN})
    assert refused.value.status == 403
    async with await Uploader.open(svc.ws_url, "", headers={"Origin": f"http://127.0.0.1:{svc.port}"}) as up:
        assert (await up.send(batch(new_session())))["type"] == "ACK"


# --- logs ---------------------------------------------------------------------------------


async def test_no_token_appears_in_the_logs(secured: Service) -> None:
    session = new_session()
    # Tokens in the query string of a WebSocket (which uvicorn logs), of an SSE
    # request, and in headers; a refused one too.
    async with await Uploader.open(secured.ws_url, f"?sessionId={session}&token={INGEST}") as up:
        assert (await up.send(batch()))["type"] == "ACK"
        assert (await up.send("not json"))["type"] == "ERROR"
    async with await SSEReader.open(secured.url, f"?token={READ}"):
        pass
    await get(secured.url + "/sessions", {"Authorization": f"Bearer {READ}"})
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await Uploader.open(secured.ws_url, f"?token={READ}")

    async def closed_logged() -> bool:
        return any("ws close" in line and f"session={session}" in line for line in secured.logs().splitlines())

    await eventually(closed_logged, what="the connection's close line")
    logs = secured.logs()
    for token in (INGEST, INGEST_2, READ):
        assert token not in logs
    assert "token=[redacted]" in logs  # the lines were written, with the value removed
    assert "principal=ingest#1" in logs


# --- connection cap -----------------------------------------------------------------------


async def test_connection_cap_refuses_new_and_spares_existing(start_service: StartService) -> None:
    svc = await start_service(env={"MAX_CONNECTIONS": "2"})
    session = new_session()
    first = await Uploader.open(svc.ws_url, f"?sessionId={session}")
    try:
        assert (await first.send(batch()))["type"] == "ACK"
        stream = await SSEReader.open(svc.url)
        try:
            # A third WebSocket is accepted and closed at once with 1013 and a reason.
            async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as third:
                message = await third.ws.receive(timeout=10)
                assert message.type == aiohttp.WSMsgType.CLOSE
                assert message.data == 1013
                assert "capacity" in message.extra
            # A third SSE client gets a 503 with a JSON reason.
            status, headers, body = await get(svc.url + "/database_events")
            assert status == 503
            assert json.loads(body)["error"] == "over_capacity"
            assert "Retry-After" in headers
            # The open ones are unharmed.
            assert (await first.send(batch()))["type"] == "ACK"
        finally:
            await stream.close()

        # A slot frees when a client leaves: a new connection gets in.
        async def admitted() -> bool:
            async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as up:
                await up.send_raw(json.dumps(batch()))
                message = await up.ws.receive(timeout=10)
                return message.type == aiohttp.WSMsgType.TEXT

        await eventually(admitted, what="a slot to free")
    finally:
        await first.close()
    assert await metric(svc, 'eventservice_connections_refused_total{reason="capacity"}') >= 2


async def test_connection_cap_counts_batch_requests_while_their_bodies_arrive(start_service: StartService) -> None:
    """A flood of slow POST /batch bodies is bounded like a flood of idle sockets."""
    svc = await start_service(env={"MAX_CONNECTIONS": "2", "HANDSHAKE_TIMEOUT_SECONDS": "60"})
    session = new_session()
    body = json.dumps(batch(session)).encode()
    head = f"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    slow = [await open_tcp(svc.port) for _ in range(2)]
    try:
        for _, writer in slow:
            writer.write(head.encode() + body[:5])  # and the rest later
            await writer.drain()

        async def post() -> tuple[int, CIMultiDict[str], bytes]:
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{svc.url}/batch", data=json.dumps(batch(session)), headers={"Content-Type": "application/json"}) as r,
            ):
                return r.status, r.headers.copy(), await r.read()

        async def refused() -> tuple[int, CIMultiDict[str], bytes] | None:
            answer = await post()
            return answer if answer[0] == 503 else None

        _, headers, refusal = await eventually(refused, what="a third batch request refused")
        assert json.loads(refusal)["error"] == "over_capacity" and "Retry-After" in headers
        # A WebSocket counts against the same cap.
        async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as third:
            message = await third.ws.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1013
        # The slow ones are unharmed: the rest of a body arrives and is ACKed.
        reader, writer = slow.pop()
        writer.write(body[5:])
        await writer.drain()
        status_line, _, answer = await read_response(reader, timeout=15)
        writer.close()
        assert status_line.split()[1] == "200" and json.loads(answer)["type"] == "ACK"

        async def admitted() -> bool:
            return (await post())[0] == 200

        await eventually(admitted, what="a slot to free")
    finally:
        for _, writer in slow:
            writer.close()


# --- timeouts -----------------------------------------------------------------------------


async def test_idle_websocket_is_closed_and_busy_one_is_not(start_service: StartService) -> None:
    svc = await start_service(env={"IDLE_TIMEOUT_SECONDS": "1", "SSE_PING_SECONDS": "0.2"})
    session = new_session()
    started = time.monotonic()
    async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as idle:
        message = await idle.ws.receive(timeout=15)
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert message.data == 1001
    assert "idle" in message.extra
    assert time.monotonic() - started >= 0.9

    # A client that keeps sending stays open well past the idle timeout, and one
    # that went idle after sending still got every answer before the close.
    async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as busy:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 2.5:
            assert (await busy.send(batch()))["type"] == "ACK"
            sent += 1
        message = await busy.ws.receive(timeout=15)
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001
    assert sent > 1

    # SSE is not idle-limited: its pings keep it going past the WebSocket idle timeout.
    async with await SSEReader.open(svc.url) as stream:
        started = time.monotonic()
        while time.monotonic() - started < 2.5:
            chunk = await asyncio.wait_for(stream.response.content.readany(), 5)
            assert chunk, "the SSE stream ended"
    assert await metric(svc, 'eventservice_connections_timed_out_total{reason="idle"}') == 2


async def test_handshake_timeout_closes_silent_and_half_handshakes(start_service: StartService) -> None:
    svc = await start_service(env={"HANDSHAKE_TIMEOUT_SECONDS": "1"})
    started = time.monotonic()
    silent = await open_tcp(svc.port)
    half = await open_tcp(svc.port)
    half[1].write(b"GET /ws?sessionId=" + new_session().encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
    await half[1].drain()
    try:
        results = await asyncio.gather(closed_by_peer(silent[0], 15), closed_by_peer(half[0], 15))
        assert results == [True, True]
        assert time.monotonic() - started >= 0.9
    finally:
        silent[1].close()
        half[1].close()
    # A prompt client is unaffected.
    async with await Uploader.open(svc.ws_url, f"?sessionId={new_session()}") as up:
        assert (await up.send(batch()))["type"] == "ACK"
    assert await metric(svc, 'eventservice_connections_timed_out_total{reason="handshake"}') == 2


# --- rate limits --------------------------------------------------------------------------


async def session_events(svc: Service, session: str) -> int:
    status, _, body = await get(f"{svc.url}/session/{session}")
    return len(json.loads(body)["children"]) if status == 200 else 0


async def test_rate_limit_per_connection(start_service: StartService) -> None:
    svc = await start_service(env={"INGEST_RATE_PER_CONNECTION": "2", "INGEST_BURST_PER_CONNECTION": "3"})
    session = new_session()
    async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as up:
        for _ in range(4):
            await up.send_raw(json.dumps(batch(n=2)))
        answers = [await up.receive() for _ in range(4)]
        assert [a["type"] for a in answers[:3]] == ["ACK", "ACK", "ACK"]
        limited = answers[3]
        assert limited["type"] == "ERROR"
        assert limited["error"] == "rate_limited"
        assert limited["batch"] == 4
        assert 0 < limited["retry_after_ms"] <= 500
        assert await session_events(svc, session) == 6  # nothing of the limited batch

        # Honouring the hint, the client gets through again.
        async def accepted() -> bool:
            answer = await up.send(batch(n=2))
            if answer["type"] == "ERROR":
                await asyncio.sleep(answer["retry_after_ms"] / 1000)
            return answer["type"] == "ACK"

        await eventually(accepted, what="an ACK after the retry hint")
    assert await session_events(svc, session) == 8


async def test_rate_limit_per_token_spans_connections(start_service: StartService) -> None:
    svc = await start_service(
        env={"INGEST_TOKENS": f"{INGEST},{INGEST_2}", "INGEST_RATE_PER_TOKEN": "0.01", "INGEST_BURST_PER_TOKEN": "2"}
    )
    one = await Uploader.open(svc.ws_url, f"?sessionId={new_session()}&token={INGEST}")
    two = await Uploader.open(svc.ws_url, f"?sessionId={new_session()}&token={INGEST}")
    other = await Uploader.open(svc.ws_url, f"?sessionId={new_session()}&token={INGEST_2}")
    try:
        assert (await one.send(batch()))["type"] == "ACK"
        assert (await two.send(batch()))["type"] == "ACK"
        answer = await one.send(batch())
        assert answer["error"] == "rate_limited"
        assert answer["retry_after_ms"] > 0
        assert (await two.send(batch()))["error"] == "rate_limited"
        assert (await other.send(batch()))["type"] == "ACK"  # another token has its own bucket
    finally:
        for up in (one, two, other):
            await up.close()


# --- rejected batches ---------------------------------------------------------------------


async def metric(svc: Service, line_start: str) -> float:
    _, _, body = await get(svc.url + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_rejected_batches_are_kept_truncated_and_counted(start_service: StartService) -> None:
    svc = await start_service(env={"REJECTED_MAX_FRAME_BYTES": "64"})
    session = new_session()
    counter = 'eventservice_rejected_batches_total{reason="invalid_json"}'
    before = await metric(svc, counter)
    big = "x" * 5000
    nul = json.dumps([{"type": "EVENT", "timestamp": 1, "name": "a\u0000b"}])  # escaped in the JSON
    raw_nul = '[{"type":"EVENT","timestamp":1,"name":"a\x00b"}]'  # a real NUL character in the frame
    async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as up:
        assert (await up.send(big))["error"] == "invalid_json"
        assert (await up.send(nul))["error"] == "invalid_event"
        assert (await up.send(b"\x00\xff binary"))["error"] == "invalid_json"
        assert (await up.send({"batch_id": "b-1", "events": []}))["error"] == "invalid_batch"
        assert (await up.send(raw_nul))["error"] == "invalid_json"
        assert (await up.send(batch()))["type"] == "ACK"
    conn = await asyncpg.connect(svc.database_url)
    try:

        async def rows() -> list[asyncpg.Record]:
            found = await conn.fetch("SELECT * FROM rejected_batches ORDER BY id")
            return found if len(found) == 5 else []

        found = await eventually(rows, what="5 rejected rows")
        assert [r["error"] for r in found] == ["invalid_json", "invalid_event", "invalid_json", "invalid_batch", "invalid_json"]
        assert [r["batch"] for r in found] == [1, 2, 3, 4, 5]
        assert all(str(r["session_id"]) == session for r in found)
        assert found[0]["frame"] == "x" * 64
        assert found[0]["frame_bytes"] == 5000
        assert "\\u0000" in found[1]["frame"]  # the NUL kept visibly, not lost
        assert found[2]["frame"].startswith("\\u0000\\xff binary")
        assert found[2]["frame_bytes"] == 9
        assert found[3]["batch_id"] == "b-1"
        assert found[4]["frame"] == '[{"type":"EVENT","timestamp":1,"name":"a\\u0000b"}]'
        assert all(r["message"] and r["connection"] for r in found)
        assert len({r["connection"] for r in found}) == 1
        assert await conn.fetchval("SELECT count(*) FROM events WHERE session_id = $1", session) == 1
    finally:
        await conn.close()
    assert await metric(svc, counter) == before + 3
    # The connection id joins a row with the connection's log lines.
    assert f"conn={found[0]['connection']}" in svc.logs()


async def test_rejected_batches_are_pruned_oldest_first(start_service: StartService) -> None:
    svc = await start_service(env={"REJECTED_MAX_ROWS": "5"})
    async with await Uploader.open(svc.ws_url, f"?sessionId={new_session()}") as up:
        for i in range(12):
            assert (await up.send(f"bad frame {i}"))["type"] == "ERROR"
    conn = await asyncpg.connect(svc.database_url)
    try:

        async def newest_kept() -> list[int]:
            batches = [r["batch"] for r in await conn.fetch("SELECT batch FROM rejected_batches ORDER BY id")]
            return batches if batches and batches[-1] == 12 and len(batches) <= 5 else []

        kept = await eventually(newest_kept, what="the table pruned to the newest 5")
        assert kept == list(range(13 - len(kept), 13))
    finally:
        await conn.close()


# --- exposure -----------------------------------------------------------------------------


def test_non_loopback_bind_without_tokens_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("INGEST_TOKENS", "READ_TOKENS")}
    env["DATABASE_URL"] = "postgresql://unused@127.0.0.1:1/unused"
    result = subprocess.run(
        [sys.executable, "-m", "app", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Refusing to bind 0.0.0.0" in result.stderr
    assert "--insecure" in result.stderr
    # One line, prefixed like every other start-up failure.
    assert result.stderr.startswith("python -m app: Refusing") and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize(
    ("flags", "env"),
    [(("--host", "0.0.0.0", "--insecure"), {}), (("--host", "0.0.0.0"), {"READ_TOKENS": READ})],
)
async def test_non_loopback_bind_starts_with_insecure_or_tokens(
    start_service: StartService, flags: tuple[str, ...], env: dict[str, str]
) -> None:
    svc = await start_service(*flags, env=env)
    status, _, _ = await get(svc.url + "/healthcheck")
    assert status == 200


async def test_json_logs_one_line_per_connection_without_secrets(start_service: StartService) -> None:
    svc = await start_service("--log-format", "json", env={"INGEST_TOKENS": INGEST})
    session = new_session()
    async with await Uploader.open(svc.ws_url, f"?sessionId={session}&token={INGEST}") as up:
        assert (await up.send(batch()))["type"] == "ACK"
        assert (await up.send("[]"))["type"] == "ERROR"

    def records() -> list[dict[str, Any]]:
        # Only Python's own warnings (e.g. a library's deprecation notice) bypass logging.
        return [json.loads(line) for line in svc.logs().splitlines() if line.startswith("{")]

    async def closed() -> list[dict[str, Any]]:
        return [r for r in records() if r["msg"] == "ws close" and r.get("session") == session]

    (close,) = await eventually(closed, what="the JSON close line")
    opened = [r for r in records() if r["msg"] == "ws open" and r.get("session") == session]
    assert len(opened) == 1 and opened[0]["conn"] == close["conn"]
    assert close["principal"] == "ingest#1"
    assert (close["frames"], close["acks"], close["errors"]) == (2, 1, 1)
    assert close["remote"].startswith("127.0.0.1:")
    assert {"ts", "level", "logger"} <= set(close)
    rejected = [r for r in records() if r["msg"] == "batch rejected" and r.get("conn") == close["conn"]]
    assert rejected and rejected[0]["error"] == "invalid_batch"
    assert INGEST not in svc.logs()
