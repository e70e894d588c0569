"""POST /batch against a real server: every answer of its contract, and one flow with /ws.

Each answer is checked for its status, its body (the ACK or ERROR object of /ws),
and what it left behind: the events stored (all or none), the rejected_batches
row of a refusal. A batch_id sent on one door and again on the other is stored
once: the same writer and the same memory serve both.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from test.conftest import StartService
from test.support.clients import Uploader, event, new_session
from test.support.postgres import StandalonePostgres
from test.support.raw import open_tcp, read_response
from test.support.service import Service

TS = 1_700_000_000_000
TOKEN = "ingest-" + secrets.token_hex(12)
ORIGIN = "https://shop.example"
JSON = {"Content-Type": "application/json"}


async def post(
    svc: Service, body: str | bytes, query: str = "", headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, dict[str, str], Any]:
    """Status, headers and the JSON body (None when there is no body)."""
    sent = {**JSON, **(headers or {})}
    async with aiohttp.ClientSession() as http, http.request(method, f"{svc.url}/batch{query}", data=body, headers=sent) as r:
        raw = await r.read()
        return r.status, dict(r.headers), json.loads(raw) if raw else None


def frame(session: str, n: int, batch_id: str | None = None, tag: str = "e") -> str:
    events = [event(f"{tag}-{i}", TS + i, data={"i": i}) for i in range(n)]
    events.insert(0, {"type": "SESSION_START", "timestamp": TS, "session_id": session})
    for e in events:
        e["session_id"] = session
    return json.dumps(events if batch_id is None else {"batch_id": batch_id, "events": events})


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, f"not reached in {timeout}s (last: {result!r})"
        await asyncio.sleep(0.05)
    return result


async def stored(conn: asyncpg.Connection, session: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM events WHERE session_id = $1", uuid.UUID(session)))


async def rejected(conn: asyncpg.Connection, session: str) -> list[asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM rejected_batches WHERE session_id = $1 ORDER BY id", uuid.UUID(session))
    return list(rows)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain;charset=UTF-8", "application/json; charset=utf-8"])
async def test_a_batch_is_acked_after_commit_and_readable_at_once(
    service: Service, sql: asyncpg.Connection, content_type: str
) -> None:
    session = new_session()
    status, headers, body = await post(service, frame(session, 3), headers={"Content-Type": content_type})
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert body == {"type": "ACK", "batch": 1, "batch_id": None, "accepted": 4, "duplicate": False}
    # After the 200 the batch is committed: the very next read sees it.
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/session/{session}") as r:
        tree = await r.json()
    assert [c["name"] for c in tree["children"]] == ["e-0", "e-1", "e-2"]
    assert tree["start"] == TS


async def test_a_body_without_content_type_is_read_as_the_frame(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    async with aiohttp.ClientSession() as http:
        # skip_auto_headers: aiohttp would otherwise add application/octet-stream.
        async with http.post(f"{service.url}/batch", data=frame(session, 1).encode(), skip_auto_headers=["Content-Type"]) as r:
            assert r.status == 200, await r.text()
    assert await stored(sql, session) == 2


async def test_the_session_id_may_come_from_the_query(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    body = json.dumps([event("q", TS), {"type": "SESSION_END", "timestamp": TS + 5}])
    status, _, answer = await post(service, body, f"?sessionId={session}&timestampUnit=ms")
    assert (status, answer["accepted"]) == (200, 2)
    assert await stored(sql, session) == 2


async def test_a_batch_id_is_stored_once_whichever_door_it_comes_through(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    first = frame(session, 5, batch_id="shared-1")
    async with await Uploader.open(service.ws_url) as up:
        assert (await up.send(first))["duplicate"] is False
    status, _, answer = await post(service, first)
    assert (status, answer["duplicate"], answer["batch_id"]) == (200, True, "shared-1")
    # And the other way: HTTP first, the WebSocket's resend is the duplicate.
    second = frame(session, 5, batch_id="shared-2", tag="f")
    assert (await post(service, second))[2]["duplicate"] is False
    async with await Uploader.open(service.ws_url) as up:
        again = await up.send(second)
    assert (again["type"], again["duplicate"]) == ("ACK", True)
    assert (await post(service, second))[2]["duplicate"] is True
    assert await stored(sql, session) == 12


INVALID = [
    ("not json", "invalid_json"),
    ('{"events": []}', "invalid_batch"),
    ("[]", "invalid_batch"),
    ('{"batch_id": "", "events": [{"type": "EVENT", "timestamp": 1, "name": "x"}]}', "invalid_batch"),
]


@pytest.mark.parametrize(("body", "code"), INVALID, ids=[c for _, c in INVALID])
async def test_a_malformed_batch_is_400_and_recorded(service: Service, sql: asyncpg.Connection, body: str, code: str) -> None:
    session = new_session()
    status, _, answer = await post(service, body, f"?sessionId={session}")
    assert status == 400
    assert (answer["type"], answer["batch"], answer["error"]) == ("ERROR", 1, code)
    assert answer["message"]
    rows = await eventually(lambda: rejected(sql, session))
    assert [r["error"] for r in rows] == [code]
    assert rows[0]["frame"] == body


async def test_a_body_that_is_not_utf8_is_invalid_json(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    status, _, answer = await post(service, b'[{"name": "\xff"}]', f"?sessionId={session}")
    assert (status, answer["error"]) == (400, "invalid_json")
    assert "UTF-8" in answer["message"]
    rows = await eventually(lambda: rejected(sql, session))
    assert rows[0]["error"] == "invalid_json"


async def test_one_invalid_event_refuses_the_whole_batch(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    events = [event("ok", TS), event("x" * 300, TS), event("ok", TS)]
    status, _, answer = await post(service, json.dumps(events), f"?sessionId={session}")
    assert (status, answer["error"]) == (400, "invalid_event")
    assert answer["details"] and answer["details"][0]["index"] == 1
    assert await stored(sql, session) == 0  # nothing half-written
    assert [r["error"] for r in await eventually(lambda: rejected(sql, session))] == ["invalid_event"]


async def test_events_of_another_session_are_session_mismatch(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    status, _, answer = await post(service, frame(new_session(), 1), f"?sessionId={session}")
    assert (status, answer["error"]) == (400, "session_mismatch")
    assert await stored(sql, session) == 0


QUERY_ERRORS = [
    ("?sessionid=0d856b46-48cd-4fba-946b-53d15b7b43e0", "unknown_parameter", "did you mean sessionId?"),
    ("?sessionId=nope", "invalid_session_id", "UUID"),
    ("?timestampUnit=hours", "invalid_timestamp_unit", "auto"),
]


@pytest.mark.parametrize(("query", "code", "hint"), QUERY_ERRORS, ids=[c for _, c, _ in QUERY_ERRORS])
async def test_a_bad_query_is_400_before_the_body_is_read(service: Service, query: str, code: str, hint: str) -> None:
    status, _, answer = await post(service, frame(new_session(), 1), query)
    assert (status, answer["error"]) == (400, code)
    assert hint in answer["message"]
    if code == "unknown_parameter":
        assert "/batch accepts" in answer["message"]


async def test_other_content_types_are_415_and_other_methods_405(service: Service) -> None:
    status, _, answer = await post(service, "a=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, answer["error"]) == (415, "unsupported_media_type")
    assert "application/json" in answer["message"]
    status, headers, answer = await post(service, "", method="GET")
    assert (status, answer["error"]) == (405, "method_not_allowed")
    assert "POST" in headers["Allow"]


async def test_too_many_events_or_bytes_are_413(start_service: StartService) -> None:
    svc = await start_service(env={"MAX_BATCH_EVENTS": "3", "MAX_FRAME_BYTES": "2048"})
    conn = await asyncpg.connect(svc.database_url)
    try:
        session = new_session()
        status, _, answer = await post(svc, frame(session, 5))  # 6 events with the SESSION_START
        assert (status, answer["error"]) == (413, "too_large")
        # Over the byte limit, with a Content-Length and then chunked (no length known up front).
        big = json.dumps([event("big", TS, session_id=session, data={"pad": "x" * 3000})])
        status, _, answer = await post(svc, big)
        assert (status, answer["error"]) == (413, "too_large")
        assert "2048" in answer["message"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"[" + b" " * 1000

        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{svc.url}/batch?sessionId={session}", data=chunks(), headers=JSON) as r,
        ):
            assert r.status == 413
            assert (await r.json())["error"] == "too_large"
        assert (await post(svc, frame(session, 2)))[0] == 200  # the limits refuse only what is over them
        assert await stored(conn, session) == 3
        rows = await eventually(lambda: rejected(conn, session))
        assert [r["error"] for r in rows] == ["too_large"]  # the other two carried no session to file them under
        assert await conn.fetchval("SELECT count(*) FROM rejected_batches WHERE error = 'too_large'") == 3
    finally:
        await conn.close()


async def test_tokens_are_required_and_the_rate_limit_is_shared_with_the_websocket(start_service: StartService) -> None:
    svc = await start_service(env={"INGEST_TOKENS": TOKEN, "INGEST_RATE_PER_TOKEN": "0.01", "INGEST_BURST_PER_TOKEN": "2"})
    session = new_session()
    status, headers, answer = await post(svc, frame(session, 1))
    assert (status, answer["error"]) == (401, "unauthorized")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, answer = await post(svc, frame(session, 1), "?token=wrong")
    assert (status, answer["error"]) == (401, "unauthorized")
    assert (await post(svc, frame(session, 1), f"?token={TOKEN}"))[0] == 200
    async with await Uploader.open(svc.ws_url, f"?token={TOKEN}") as up:
        assert (await up.send(frame(session, 1, tag="ws")))["type"] == "ACK"  # the bucket's second batch
    status, headers, answer = await post(svc, frame(session, 1), headers={"Authorization": f"Bearer {TOKEN}"})
    assert (status, answer["error"]) == (429, "rate_limited")
    assert answer["retry_after_ms"] > 0
    assert int(headers["Retry-After"]) == -(-answer["retry_after_ms"] // 1000)


async def test_cors_preflight_and_origins(start_service: StartService) -> None:
    svc = await start_service(env={"ALLOWED_ORIGINS": ORIGIN})
    session = new_session()
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization",
    }
    async with aiohttp.ClientSession() as http, http.options(f"{svc.url}/batch", headers=preflight) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "content-type" in r.headers["Access-Control-Allow-Headers"].lower()
    # What sendBeacon sends: text/plain, no preflight, the page's Origin.
    beacon = {"Origin": ORIGIN, "Content-Type": "text/plain;charset=UTF-8"}
    status, headers, answer = await post(svc, frame(session, 2), headers=beacon)
    assert (status, answer["accepted"]) == (200, 3)
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    status, headers, answer = await post(svc, frame(session, 2), headers={**beacon, "Origin": "https://evil.example"})
    assert (status, answer["error"]) == (403, "forbidden_origin")
    assert "Access-Control-Allow-Origin" not in headers
    # A preflight from an unlisted origin is the same refusal, in the JSON of every error.
    refused = {**preflight, "Origin": "https://evil.example"}
    async with aiohttp.ClientSession() as http, http.options(f"{svc.url}/batch", headers=refused) as r:
        assert (r.status, (await r.json())["error"]) == (403, "forbidden_origin")
        assert "Access-Control-Allow-Origin" not in r.headers
    odd = {**preflight, "Access-Control-Request-Method": "DELETE"}
    async with aiohttp.ClientSession() as http, http.options(f"{svc.url}/batch", headers=odd) as r:
        assert (r.status, (await r.json())["error"]) == (400, "invalid_preflight")
    # A request from the service's own pages, or with no Origin at all, needs no listing.
    assert (await post(svc, frame(session, 1, tag="own"), headers={"Origin": svc.url}))[0] == 200
    conn = await asyncpg.connect(svc.database_url)
    try:
        assert await stored(conn, session) == 5
    finally:
        await conn.close()


async def test_a_batch_while_the_database_is_down_is_503_and_nothing_is_lost(
    start_service: StartService, standalone_postgres: StandalonePostgres
) -> None:
    svc = await start_service(database_url=standalone_postgres.url)
    session = new_session()
    body = frame(session, 3, batch_id="outage-1")
    await asyncio.to_thread(standalone_postgres.stop)
    status, headers, answer = await post(svc, body)
    assert (status, answer["error"]) == (503, "unavailable")
    assert headers["Retry-After"] == "1"
    await asyncio.to_thread(standalone_postgres.start)

    async def resent() -> dict[str, Any] | None:
        status, _, answer = await post(svc, body)
        return answer if status == 200 else None

    assert (await eventually(resent, timeout=30))["accepted"] == 4
    assert (await post(svc, body))[2]["duplicate"] is True
    conn = await asyncpg.connect(svc.database_url)
    try:
        assert await stored(conn, session) == 4
    finally:
        await conn.close()


async def test_a_body_that_trickles_is_408_and_stores_nothing(start_service: StartService) -> None:
    svc = await start_service(env={"HANDSHAKE_TIMEOUT_SECONDS": "1"})
    session = new_session()
    body = frame(session, 1).encode()
    reader, writer = await open_tcp(svc.port)
    try:
        head = f"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body[:10])  # and then nothing more
        await writer.drain()
        status_line, _headers, answer = await read_response(reader, timeout=15)
    finally:
        writer.close()
    assert status_line.split()[1] == "408", status_line
    assert json.loads(answer)["error"] == "request_timeout"
    conn = await asyncpg.connect(svc.database_url)
    try:
        assert await stored(conn, session) == 0
    finally:
        await conn.close()
