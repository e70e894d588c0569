"""WebSocket /ws against the real server and database: ACKs, idempotency, every rule.

Each rejected frame is checked three ways: the ERROR it gets (code, batch number,
details), that the events table did not change (counted with plain SQL), and that
the same connection still takes a valid batch afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from test.conftest import StartService
from test.support.clients import Uploader, event, new_session, upload
from test.support.service import Service

TS = 1_700_000_000_000
MAX_TS = 253_402_300_800_000
MIB = 1024 * 1024


async def total_events(sql: asyncpg.Connection) -> int:
    return int(await sql.fetchval("SELECT count(*) FROM events"))


async def session_rows(sql: asyncpg.Connection, session: str) -> list[tuple[str, int, str | None, str | None]]:
    rows = await sql.fetch(
        """SELECT e.type, e.ts, n.name, e.data::text AS data FROM events e
           LEFT JOIN event_names n ON n.id = e.name_id WHERE e.session_id = $1 ORDER BY e.position""",
        session,
    )
    return [(r["type"], r["ts"], r["name"], r["data"]) for r in rows]


async def get_json(service: Service, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(service.url + path) as response:
        return response.status, await response.json(content_type=None)


def ack(batch: int, accepted: int, batch_id: str | None = None, duplicate: bool = False) -> dict[str, Any]:
    return {"type": "ACK", "batch": batch, "batch_id": batch_id, "accepted": accepted, "duplicate": duplicate}


def assert_error(reply: dict[str, Any], code: str, batch: int, batch_id: str | None = None) -> None:
    assert reply["type"] == "ERROR", reply
    assert set(reply) == {"type", "batch", "batch_id", "error", "message", "details"}, reply
    assert (reply["error"], reply["batch"], reply["batch_id"]) == (code, batch, batch_id), reply
    assert isinstance(reply["message"], str) and len(reply["message"]) > 10, reply
    assert isinstance(reply["details"], list)


class Conn:
    """An uploader bound to a fresh session, counting its frames."""

    def __init__(self, up: Uploader, session: str) -> None:
        self.up = up
        self.session = session


@pytest.fixture
async def conn(service: Service) -> AsyncIterator[Conn]:
    session = new_session()
    async with await Uploader.open(service.ws_url, f"?sessionId={session}") as up:
        yield Conn(up, session)


async def rejected_then_usable(
    conn: Conn, sql: asyncpg.Connection, frame: str | bytes, code: str, batch: int = 1
) -> dict[str, Any]:
    """Send a bad frame: ERROR, nothing stored; then a good one on the same socket: ACK, stored."""
    before = await total_events(sql)
    reply = await conn.up.send(frame)
    assert_error(reply, code, batch, reply.get("batch_id"))
    assert await total_events(sql) == before, "a rejected batch stored something"
    assert await conn.up.send([event("after-error", TS)]) == ack(batch + 1, 1)
    assert await total_events(sql) == before + 1
    assert await session_rows(sql, conn.session) == [("EVENT", TS, "after-error", None)]
    return reply


# --- ACKs ------------------------------------------------------------------------


async def test_twenty_pipelined_frames_are_acked_in_order(conn: Conn, sql: asyncpg.Connection) -> None:
    frames = []
    for n in range(1, 21):
        events = [event(f"e{n}-{i}", TS + n) for i in range(n % 4 + 1)]
        frames.append({"batch_id": f"b{n}", "events": events} if n % 2 else events)
    for frame in frames:  # all sent before any answer is read
        await conn.up.send_raw(json.dumps(frame))
    replies = [await conn.up.receive() for _ in frames]
    assert replies == [ack(n, n % 4 + 1, f"b{n}" if n % 2 else None) for n in range(1, 21)]
    assert int(await sql.fetchval("SELECT count(*) FROM events WHERE session_id = $1", conn.session)) == sum(
        n % 4 + 1 for n in range(1, 21)
    )


async def test_errors_and_acks_interleave_in_frame_order(conn: Conn) -> None:
    """A rejection is known at once, an ACK only after COMMIT: still answered in order."""
    for n in range(1, 21):
        await conn.up.send_raw("[]" if n % 5 == 0 else json.dumps([event("x", TS)] * 50))
    replies = [await conn.up.receive() for _ in range(20)]
    assert [r["batch"] for r in replies] == list(range(1, 21))
    assert [r["type"] for r in replies] == ["ERROR" if n % 5 == 0 else "ACK" for n in range(1, 21)]


async def test_batch_numbers_count_rejected_frames_too(conn: Conn) -> None:
    assert_error(await conn.up.send("nope"), "invalid_json", 1)
    assert await conn.up.send({"batch_id": "z", "events": [event("a")]}) == ack(2, 1, "z")
    assert_error(await conn.up.send({"batch_id": "y", "events": []}), "invalid_batch", 3, "y")
    assert await conn.up.send([event("b")]) == ack(4, 1)


async def test_envelope_without_batch_id_is_acked_with_null(conn: Conn) -> None:
    assert await conn.up.send({"events": [event("a")]}) == ack(1, 1)
    assert await conn.up.send({"batch_id": None, "events": [event("a")]}) == ack(2, 1)


# --- idempotency -----------------------------------------------------------------


async def test_resending_an_acked_batch_is_a_duplicate_and_stores_nothing(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    batch = {"batch_id": "resend-1", "events": [event("a", TS), event("b", TS + 1)]}
    assert await upload(service.ws_url, session, batch, batch) == [ack(1, 2, "resend-1"), ack(2, 0, "resend-1", True)]
    # A new connection for the same session (a client that reconnected) too.
    assert await upload(service.ws_url, session.upper(), batch) == [ack(1, 0, "resend-1", True)]
    rows = await session_rows(sql, session)
    assert [r[2] for r in rows] == ["a", "b"]


async def test_a_pipelined_resend_before_the_ack_is_stored_once(conn: Conn, sql: asyncpg.Connection) -> None:
    batch = json.dumps({"batch_id": "fast", "events": [event("once", TS)]})
    for _ in range(3):
        await conn.up.send_raw(batch)
    replies = [await conn.up.receive() for _ in range(3)]
    assert replies == [ack(1, 1, "fast"), ack(2, 0, "fast", True), ack(3, 0, "fast", True)]
    assert await session_rows(sql, conn.session) == [("EVENT", TS, "once", None)]


async def test_the_same_batch_id_in_another_session_is_stored(service: Service, sql: asyncpg.Connection) -> None:
    first, second = new_session(), new_session()
    batch = {"batch_id": "shared-id", "events": [event("a", TS)]}
    assert await upload(service.ws_url, first, batch) == [ack(1, 1, "shared-id")]
    assert await upload(service.ws_url, second, batch) == [ack(1, 1, "shared-id")]
    assert len(await session_rows(sql, first)) == 1
    assert len(await session_rows(sql, second)) == 1


async def test_without_session_id_a_batch_id_is_unique_on_its_own(service: Service, sql: asyncpg.Connection) -> None:
    first, second = new_session(), new_session()
    batch_id = f"relay-{first}"
    one = {"batch_id": batch_id, "events": [event("a", TS, session_id=first)]}
    two = {"batch_id": batch_id, "events": [event("b", TS, session_id=second)]}
    assert await upload(service.ws_url, None, one) == [ack(1, 1, batch_id)]
    assert await upload(service.ws_url, None, two, one) == [ack(1, 0, batch_id, True), ack(2, 0, batch_id, True)]
    assert [r[2] for r in await session_rows(sql, first)] == ["a"]
    assert await session_rows(sql, second) == []


async def test_a_rejected_batch_does_not_claim_its_batch_id(conn: Conn, sql: asyncpg.Connection) -> None:
    assert_error(await conn.up.send({"batch_id": "retry-me", "events": [event("")]}), "invalid_event", 1, "retry-me")
    assert await conn.up.send({"batch_id": "retry-me", "events": [event("fixed", TS)]}) == ack(2, 1, "retry-me")
    assert await session_rows(sql, conn.session) == [("EVENT", TS, "fixed", None)]


# --- all or nothing --------------------------------------------------------------


async def test_one_bad_event_among_good_ones_stores_nothing(conn: Conn, sql: asyncpg.Connection) -> None:
    batch = [
        {"type": "SESSION_START", "timestamp": TS},
        event("a", TS),
        event("b", TS),
        {"type": "EVENT", "timestamp": TS},  # no name
        event("c", TS),
        {"type": "SESSION_END", "timestamp": TS},
    ]
    reply = await rejected_then_usable(conn, sql, json.dumps(batch), "invalid_event")
    assert [(d["index"], d["field"]) for d in reply["details"]] == [(3, "name")]
    assert reply["details"][0]["message"]
    # The session row shows no start or end from the rejected batch either.
    row = await sql.fetchrow("SELECT start_ms, end_ms, event_count FROM sessions WHERE id = $1", conn.session)
    assert tuple(row) == (None, None, 1)


# --- every invalid input ------------------------------------------------------------


def _frame(*events: Any) -> str:
    return json.dumps(list(events))


def _ev(**fields: Any) -> dict[str, Any]:
    """A valid EVENT with fields replaced; a value of ... removes the field."""
    base: dict[str, Any] = {"type": "EVENT", "timestamp": TS, "name": "click"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


INVALID_JSON = ["garbage", "[{", '[{"type":"EVENT",}]', "[NaN]", '[{"type":"EVENT","timestamp":1,"name":"a","data":{"x":1e400}}]']

INVALID_BATCH = [
    "[]",
    "{}",
    '{"batch_id":"b"}',
    '{"events":{}}',
    "5",
    '"a string"',
    "null",
    json.dumps({"batch_id": "", "events": [_ev()]}),
    json.dumps({"batch_id": "x" * 65, "events": [_ev()]}),
    json.dumps({"batch_id": 5, "events": [_ev()]}),
    json.dumps({"batch_id": True, "events": [_ev()]}),
    json.dumps({"batch_id": ["a"], "events": [_ev()]}),
]

# (event, field the ERROR must name)
INVALID_EVENTS: list[tuple[Any, str]] = [
    (_ev(type=...), "type"),
    (_ev(type="CLICK"), "type"),
    (_ev(type="event"), "type"),
    (_ev(type=["EVENT"]), "type"),
    (_ev(type={"a": 1}), "type"),
    (_ev(timestamp=...), "timestamp"),
    (_ev(timestamp=None), "timestamp"),
    (_ev(timestamp=True), "timestamp"),
    (_ev(timestamp=1_700_000_000_000.5), "timestamp"),
    (_ev(timestamp="1700000000000"), "timestamp"),
    (_ev(timestamp=-1), "timestamp"),
    (_ev(timestamp=MAX_TS), "timestamp"),
    (_ev(timestamp=2**64), "timestamp"),
    (_ev(name=...), "name"),
    (_ev(name=""), "name"),
    (_ev(name="x" * 256), "name"),
    (_ev(name="é" * 256), "name"),
    (_ev(name=42), "name"),
    (_ev(name=None), "name"),
    (_ev(data=[1]), "data"),
    (_ev(data="text"), "data"),
    (_ev(data=7), "data"),
    (_ev(data={"s": "x" * (16 * 1024)}), "data"),
    (_ev(data={"s": "nul\u0000inside"}), "data"),
    (_ev(data={"nested": [{"k\u0000": 1}]}), "data"),
    (_ev(session_id="not-a-uuid"), "session_id"),
    ("an event that is a string", ""),
]

# Raw text: lone surrogates cannot be written by json.dumps of a valid str.
SURROGATES = [
    ('{"type":"EVENT","timestamp":1,"name":"\\ud800"}', "name"),
    ('{"type":"EVENT","timestamp":1,"name":"ok","data":{"s":"\\ud800"}}', "data"),
    ('{"type":"EVENT","timestamp":1,"name":"ok","data":{"\\udfff":1}}', "data"),
]


@pytest.mark.parametrize("frame", INVALID_JSON)
async def test_invalid_json(conn: Conn, sql: asyncpg.Connection, frame: str) -> None:
    await rejected_then_usable(conn, sql, frame, "invalid_json")


async def test_a_binary_frame_is_invalid_json_even_if_it_holds_json(conn: Conn, sql: asyncpg.Connection) -> None:
    reply = await rejected_then_usable(conn, sql, _frame(_ev()).encode(), "invalid_json")
    assert "text" in reply["message"]


@pytest.mark.parametrize("frame", INVALID_BATCH)
async def test_invalid_batch(conn: Conn, sql: asyncpg.Connection, frame: str) -> None:
    await rejected_then_usable(conn, sql, frame, "invalid_batch")


@pytest.mark.parametrize(("bad", "field"), INVALID_EVENTS)
async def test_invalid_event(conn: Conn, sql: asyncpg.Connection, bad: Any, field: str) -> None:
    reply = await rejected_then_usable(conn, sql, _frame(_ev(name="good"), bad, _ev(name="good")), "invalid_event")
    assert [(d["index"], d["field"]) for d in reply["details"]] == [(1, field)]


@pytest.mark.parametrize(("bad", "field"), SURROGATES)
async def test_lone_surrogates_get_a_clear_error(conn: Conn, sql: asyncpg.Connection, bad: str, field: str) -> None:
    reply = await rejected_then_usable(conn, sql, f'[{{"type":"EVENT","timestamp":1,"name":"good"}},{bad}]', "invalid_event")
    assert [(d["index"], d["field"]) for d in reply["details"]] == [(1, field)]
    assert "surrogate" in reply["details"][0]["message"]


@pytest.mark.parametrize("depth", [100, 1_000, 5_000])
async def test_deeply_nested_data_gets_a_clear_error(conn: Conn, sql: asyncpg.Connection, depth: int) -> None:
    frame = '[{"type":"EVENT","timestamp":1,"name":"deep","data":{"x":' + "[" * depth + "]" * depth + "}}]"
    before = await total_events(sql)
    reply = await conn.up.send(frame)
    assert reply["type"] == "ERROR" and reply["error"] in {"invalid_event", "invalid_json"}, reply
    assert await total_events(sql) == before
    assert await conn.up.send([event("after-error", TS)]) == ack(2, 1)


async def test_a_foreign_session_id_is_session_mismatch(conn: Conn, sql: asyncpg.Connection) -> None:
    frame = _frame(_ev(session_id=conn.session), _ev(session_id=new_session()))
    reply = await rejected_then_usable(conn, sql, frame, "session_mismatch")
    assert [(d["index"], d["field"]) for d in reply["details"]] == [(1, "session_id")]


async def test_more_than_10_000_events_is_too_large(conn: Conn, sql: asyncpg.Connection) -> None:
    await rejected_then_usable(conn, sql, _frame(*[_ev()] * 10_001), "too_large")
    assert await conn.up.send(_frame(*[_ev(name="many")] * 10_000)) == ack(3, 10_000)


# --- accepted edge values ------------------------------------------------------------


async def test_edge_values_are_accepted_and_stored_as_sent(conn: Conn, sql: asyncpg.Connection) -> None:
    batch = [
        _ev(timestamp=0, name="zero"),
        _ev(timestamp=MAX_TS - 1, name="last-ms"),
        '{"type":"EVENT","timestamp":1.0e12,"name":"whole-float"}',
        _ev(name="x" * 255),
        _ev(name="é" * 255),
        _ev(name="😀" * 255),
        {"type": "SESSION_START", "timestamp": TS},  # no name: ignored
        {"type": "SESSION_END", "timestamp": TS, "name": ""},  # invalid name: ignored
        {"type": "SESSION_END", "timestamp": TS, "name": 5},
        _ev(name="empty", data={}),
        _ev(name="nested", data={"a": [1, {"b": None}], "u": "日本 é 😀", "f": 2.5, "big": 18446744073709551616}),
    ]
    frame = "[" + ",".join(e if isinstance(e, str) else json.dumps(e, ensure_ascii=False) for e in batch) + "]"
    assert await conn.up.send(frame) == ack(1, len(batch))
    rows = await session_rows(sql, conn.session)
    assert [(t, ts, name) for t, ts, name, _ in rows] == [
        ("EVENT", 0, "zero"),
        ("EVENT", MAX_TS - 1, "last-ms"),
        ("EVENT", 1_000_000_000_000, "whole-float"),
        ("EVENT", TS, "x" * 255),
        ("EVENT", TS, "é" * 255),
        ("EVENT", TS, "😀" * 255),
        ("SESSION_START", TS, None),
        ("SESSION_END", TS, None),
        ("SESSION_END", TS, None),
        ("EVENT", TS, "empty"),
        ("EVENT", TS, "nested"),
    ]
    assert rows[9][3] == "{}"
    assert rows[10][3] is not None
    assert '"big":18446744073709551616' in rows[10][3], "an integer past 64 bits must not be rounded"
    assert json.loads(rows[10][3]) == {"a": [1, {"b": None}], "u": "日本 é 😀", "f": 2.5, "big": 18446744073709551616}


async def test_data_limit_is_16_kib_of_compact_utf8(conn: Conn, sql: asyncpg.Connection) -> None:
    exact = {"s": "x" * (16 * 1024 - len('{"s":""}'))}
    assert await conn.up.send([_ev(name="limit", data=exact)]) == ack(1, 1)
    reply = await conn.up.send([_ev(data={"s": "é" * 9000})])  # 9,000 characters, 18,000 bytes
    assert_error(reply, "invalid_event", 2)
    assert await session_rows(sql, conn.session) == [("EVENT", TS, "limit", json.dumps(exact, separators=(",", ":")))]


# --- frame size ------------------------------------------------------------------


def _padded_frame(size: int) -> str:
    head = _frame(_ev(name="padded"))
    return head[:-1] + " " * (size - len(head)) + "]"


async def test_a_frame_of_exactly_1_mib_is_accepted(conn: Conn) -> None:
    frame = _padded_frame(MIB)
    assert len(frame.encode()) == MIB
    assert await conn.up.send(frame) == ack(1, 1)


async def test_a_frame_over_1_mib_closes_with_1009(service: Service, conn: Conn, sql: asyncpg.Connection) -> None:
    before = await total_events(sql)
    await conn.up.send_raw(_padded_frame(MIB + 1))
    message = await conn.up.ws.receive(timeout=15)
    assert message.type == aiohttp.WSMsgType.CLOSE, message
    assert message.data == 1009
    assert conn.up.ws.close_code == 1009
    assert await total_events(sql) == before
    # The server is fine: a new connection for the same session works.
    assert await upload(service.ws_url, conn.session, [event("next", TS)]) == [ack(1, 1)]


async def test_the_limits_are_settings(start_service: StartService) -> None:
    svc = await start_service("--max-frame-bytes", "4096", "--max-batch-events", "5", env={"MAX_DATA_BYTES": "100"})
    session = new_session()
    async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as up:
        assert await up.send([event("a", TS)] * 5) == ack(1, 5)
        assert_error(await up.send([event("a", TS)] * 6), "too_large", 2)
        assert await up.send([event("a", TS, data={"s": "x" * (100 - len('{"s":""}'))})]) == ack(3, 1)
        reply = await up.send([event("a", TS, data={"s": "x" * 100})])
        assert_error(reply, "invalid_event", 4)
        assert "100" in reply["details"][0]["message"]
        assert await up.send(_padded_frame(4096)) == ack(5, 1)
        await up.send_raw(_padded_frame(4097))
        message = await up.ws.receive(timeout=15)
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1009)


async def test_a_1009_close_releases_the_server_side_connection(service: Service) -> None:
    """Otherwise every oversized frame pins a handler and a connection slot until the idle timeout."""
    baseline = await _open_ws_connections(service)
    async with await Uploader.open(service.ws_url, f"?sessionId={new_session()}") as up:
        await up.send_raw(_padded_frame(MIB + 1))
        message = await up.ws.receive(timeout=15)
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1009)
    deadline = time.monotonic() + 5
    while await _open_ws_connections(service) > baseline:
        assert time.monotonic() < deadline, "the server still holds the connection closed with 1009"
        await asyncio.sleep(0.02)


# --- the handshake ---------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "?sessionId=nope",
        "?sessionId=",
        "?sessionId=0d856b46-48cd-4fba-946b-53d15b7b43e",
        "?sessionId=0d856b4648cd4fba946b53d15b7b43e0",
        "?sessionId=0d856b46-48cd-4fba-946b-53d15b7b43e0&timestampUnit=us",
        "?timestampUnit=",
    ],
)
async def test_malformed_query_is_refused_at_the_handshake_with_400(service: Service, query: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await Uploader.open(service.ws_url, query)
    assert raised.value.status == 400


async def test_the_handshake_refusal_carries_a_clear_json_reason(service: Service) -> None:
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/ws?sessionId=nope", headers=headers) as response:
        assert response.status == 400
        body = await response.json(content_type=None)
    assert body["error"] == "invalid_session_id"
    assert "UUID" in body["message"]


# --- units and UUIDs ------------------------------------------------------------


async def test_timestamp_unit_seconds_stores_milliseconds(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    async with await Uploader.open(service.ws_url, f"?sessionId={session}&timestampUnit=s") as up:
        batch = [{"type": "SESSION_START", "timestamp": 1_624_422_533}, event("a", 1_624_422_534), event("b", 1.7e9)]
        assert await up.send(batch) == ack(1, 3)
        # A millisecond value is year ~53,000 in seconds: refused, the socket stays usable.
        assert_error(await up.send([event("ms", TS)]), "invalid_event", 2)
        assert await up.send([{"type": "SESSION_END", "timestamp": 1_624_422_600}]) == ack(3, 1)
    assert [(t, ts) for t, ts, *_ in await session_rows(sql, session)] == [
        ("SESSION_START", 1_624_422_533_000),
        ("EVENT", 1_624_422_534_000),
        ("EVENT", 1_700_000_000_000),
        ("SESSION_END", 1_624_422_600_000),
    ]
    status, body = await get_json(service, f"/session/{session}")
    assert status == 200
    assert (body["start"], body["end"]) == (1_624_422_533_000, 1_624_422_600_000)
    assert [c["timestamp"] for c in body["children"]] == [1_624_422_534_000, 1_700_000_000_000]


async def test_explicit_millisecond_unit_reads_small_numbers_as_milliseconds(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    assert await upload(service.ws_url, session, [event("a", TS), event("b", 5)], query="timestampUnit=ms") == [ack(1, 2)]
    assert [ts for _, ts, *_ in await session_rows(sql, session)] == [TS, 5]


@pytest.mark.parametrize("query", ["", "&timestampUnit=auto"])
async def test_auto_unit_by_default_reads_seconds_milliseconds_and_rfc3339(
    service: Service, sql: asyncpg.Connection, query: str
) -> None:
    session = new_session()
    sent: list[Any] = [1_624_422_534, 1_624_422_534_123, 1569972082.25, 99_999_999_999, 100_000_000_000]
    sent += ["2019-10-01T23:21:22.123456Z", "2019-10-02T01:21:22+02:00", "2019-10-01t23:21:22z"]
    async with await Uploader.open(service.ws_url, f"?sessionId={session}{query}") as up:
        assert await up.send([event(f"e{i}", ts) for i, ts in enumerate(sent)]) == ack(1, len(sent))
    assert [ts for _, ts, *_ in await session_rows(sql, session)] == [
        1_624_422_534_000,
        1_624_422_534_123,
        1_569_972_082_250,
        99_999_999_999_000,
        100_000_000_000,
        1_569_972_082_123,
        1_569_972_082_000,
        1_569_972_082_000,
    ]


async def test_an_unknown_timestamp_unit_is_refused_naming_the_accepted_ones(service: Service) -> None:
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/ws?timestampUnit=us", headers=headers) as response:
        assert response.status == 400
        body = await response.json(content_type=None)
    assert body["error"] == "invalid_timestamp_unit"
    assert all(re.search(rf"\b{unit}\b", body["message"]) for unit in ("auto", "ms", "s")), body


async def test_every_problem_of_every_event_is_reported(conn: Conn, sql: asyncpg.Connection) -> None:
    frame = json.dumps([{"type": "CLICK", "timestamp": "now"}, _ev(), {"type": "EVENT", "timestamp": -1, "name": ""}])
    reply = await rejected_then_usable(conn, sql, frame, "invalid_event")
    assert [(d["index"], d["field"]) for d in reply["details"]] == [(0, "type"), (0, "timestamp"), (2, "timestamp"), (2, "name")]
    assert "2 of 3" in reply["message"]
    assert "RFC 3339" in reply["details"][1]["message"]


async def test_uuids_are_case_insensitive_and_stored_lowercase(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    upper = session.upper()
    batch = [
        {"type": "SESSION_START", "timestamp": TS, "session_id": upper},
        event("a", TS, session_id=session),
        event("b", TS, session_id=upper[:18] + session[18:]),
    ]
    assert await upload(service.ws_url, upper, batch) == [ack(1, 3)]
    assert await sql.fetchval("SELECT count(*) FROM events WHERE session_id = $1", session) == 3
    status, body = await get_json(service, f"/session/{upper}")
    assert status == 200
    assert body["session_id"] == session
    status, listing = await get_json(service, "/sessions?limit=1000")
    assert session in {s["session_id"] for s in listing["sessions"]}
    assert upper not in {s["session_id"] for s in listing["sessions"]}


# --- relay mode --------------------------------------------------------------------


async def test_one_connection_without_session_id_uploads_many_sessions(service: Service, sql: asyncpg.Connection) -> None:
    first, second = new_session(), new_session()
    batch = [
        {"type": "SESSION_START", "timestamp": TS, "session_id": first},
        {"type": "SESSION_START", "timestamp": TS + 1, "session_id": second.upper()},
        event("one-a", TS + 2, session_id=first),
        event("two-a", TS + 3, session_id=second),
        event("one-b", TS + 4, session_id=first),
        {"type": "SESSION_END", "timestamp": TS + 5, "session_id": second},
    ]
    async with await Uploader.open(service.ws_url) as up:
        assert await up.send(batch) == ack(1, 6)
        # An event without session_id on such a connection: invalid_event, nothing stored.
        before = await total_events(sql)
        reply = await up.send([event("c", TS, session_id=first), event("orphan", TS)])
        assert_error(reply, "invalid_event", 2)
        assert [(d["index"], d["field"]) for d in reply["details"]] == [(1, "session_id")]
        assert await total_events(sql) == before
        assert await up.send([event("one-c", TS + 6, session_id=first)]) == ack(3, 1)
    status, one = await get_json(service, f"/session/{first}")
    assert status == 200
    assert (one["start"], one["end"]) == (TS, None)
    assert [c["name"] for c in one["children"]] == ["one-a", "one-b", "one-c"]
    status, two = await get_json(service, f"/session/{second}")
    assert status == 200
    assert (two["session_id"], two["start"], two["end"]) == (second, TS + 1, TS + 5)
    assert [c["name"] for c in two["children"]] == ["two-a"]


# --- SESSION_START / SESSION_END ----------------------------------------------------


async def test_start_is_the_earliest_start_and_end_the_latest_end_whatever_the_order(
    service: Service, sql: asyncpg.Connection
) -> None:
    session = new_session()

    def start(ts: int) -> dict[str, Any]:
        return {"type": "SESSION_START", "timestamp": ts}

    def end(ts: int) -> dict[str, Any]:
        return {"type": "SESSION_END", "timestamp": ts}

    # End before start, repeats, events outside [start, end], over two connections.
    # Small numbers would be seconds under the default timestampUnit=auto.
    ms = "timestampUnit=ms"
    await upload(service.ws_url, session, [end(5_000), event("after-end", 9_000)], [start(3_000)], query=ms)
    await upload(service.ws_url, session, [start(2_000), event("before-start", 1_000)], [end(4_000), start(2_500)], query=ms)
    await upload(service.ws_url, session, [end(7_000), end(6_000), start(2_000)], query=ms)
    status, body = await get_json(service, f"/session/{session}")
    assert status == 200
    assert (body["start"], body["end"]) == (2_000, 7_000)
    assert [(c["name"], c["timestamp"]) for c in body["children"]] == [("before-start", 1_000), ("after-end", 9_000)]
    row = await sql.fetchrow("SELECT start_ms, end_ms, event_count FROM sessions WHERE id = $1", session)
    assert tuple(row) == (2_000, 7_000, 2)


async def _open_ws_connections(service: Service) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/metrics") as response:
        text = await response.text()
    match = re.search(r"^eventservice_websocket_connections (\S+)$", text, re.MULTILINE)
    assert match, "metrics lack eventservice_websocket_connections"
    return float(match[1])


async def test_a_disconnect_does_not_end_a_session(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    baseline = await _open_ws_connections(service)
    async with await Uploader.open(service.ws_url, f"?sessionId={session}") as up:
        assert await up.send([{"type": "SESSION_START", "timestamp": TS}, event("a", TS + 1)]) == ack(1, 2)
    # Wait (bounded) until the server has finished with the connection, then look.
    deadline = time.monotonic() + 10
    while await _open_ws_connections(service) > baseline:
        assert time.monotonic() < deadline, "the server never noticed the disconnect"
        await asyncio.sleep(0.02)
    status, body = await get_json(service, f"/session/{session}")
    assert (status, body["start"], body["end"]) == (200, TS, None)
    assert [t for t, *_ in await session_rows(sql, session)] == ["SESSION_START", "EVENT"]


# --- plain SQL writers and integrity ------------------------------------------------


async def test_a_plain_sql_insert_creates_its_session(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    await sql.execute("INSERT INTO events (session_id, type, ts, name_id) VALUES ($1, 'EVENT', 5, event_name_id('x'))", session)
    row = await sql.fetchrow("SELECT start_ms, end_ms, event_count FROM sessions WHERE id = $1", session)
    assert row is not None and tuple(row) == (None, None, 1)
    status, body = await get_json(service, f"/session/{session}")
    assert status == 200
    assert body == {
        "type": "SESSION",
        "session_id": session,
        "start": None,
        "end": None,
        "children": [{"type": "EVENT", "timestamp": 5, "name": "x"}],
    }


async def test_no_event_is_without_its_session_row(sql: asyncpg.Connection) -> None:
    """Runs last in this module: after everything above, every event has a session."""
    assert await total_events(sql) > 10_000
    orphans = await sql.fetchval("SELECT count(*) FROM events e LEFT JOIN sessions s ON s.id = e.session_id WHERE s.id IS NULL")
    assert orphans == 0
    mismatched = await sql.fetchval(
        """SELECT count(*) FROM sessions s WHERE s.event_count <>
           (SELECT count(*) FROM events e WHERE e.session_id = s.id AND e.type = 'EVENT')"""
    )
    assert mismatched == 0
