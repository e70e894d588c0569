"""Property-based attacks on /ws: whatever arrives, the answer is an ACK or an ERROR.

For every generated frame (arbitrary JSON, event-shaped JSON with hostile
fields, arbitrary text, arbitrary bytes):
- exactly one answer comes back, in order, and it is a well-formed ACK or ERROR;
- an ERROR stores nothing (the events table does not change) and leaves a row
  in rejected_batches; an ACK stores exactly `accepted` events;
- the connection stays open and the service healthy.

max_examples stays modest so the suite stays fast; the example database is off
so runs do not depend on each other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test.support.clients import Uploader, event, new_session
from test.support.service import Service

ERROR_CODES = {"invalid_json", "invalid_batch", "invalid_event", "session_mismatch", "too_large", "rate_limited", "unavailable"}
MAX_TS = 253_402_300_800_000
FUZZ = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Connection:
    up: Uploader
    frames: int = 0
    errors: int = 0


@pytest.fixture(scope="module")
async def with_session(service: Service) -> AsyncIterator[Connection]:
    up = await Uploader.open(service.ws_url, f"?sessionId={new_session()}")
    try:
        yield Connection(up)
    finally:
        await up.close()


@pytest.fixture(scope="module")
async def relay(service: Service) -> AsyncIterator[Connection]:
    up = await Uploader.open(service.ws_url)
    try:
        yield Connection(up)
    finally:
        await up.close()


async def exchange(conn: Connection, db: asyncpg.Connection, frame: str | bytes) -> dict[str, Any]:
    """Send one frame; check the answer's shape and that the store moved by exactly what it says."""
    before = await db.fetchval("SELECT count(*) FROM events")
    await conn.up.send_raw(frame)
    conn.frames += 1
    answer = await conn.up.receive(timeout=15)
    after = await db.fetchval("SELECT count(*) FROM events")
    assert answer["batch"] == conn.frames
    if answer["type"] == "ACK":
        assert set(answer) == {"type", "batch", "batch_id", "accepted", "duplicate"}
        assert isinstance(answer["accepted"], int) and answer["accepted"] >= 0
        assert after - before == answer["accepted"]
    else:
        assert answer["type"] == "ERROR", answer
        assert answer["error"] in ERROR_CODES
        assert isinstance(answer["message"], str) and answer["message"]
        assert isinstance(answer["details"], list)
        assert after == before, f"an ERROR stored {after - before} events: {answer}"
        conn.errors += 1
    return answer


async def rejected_rows(db: asyncpg.Connection) -> int:
    return await db.fetchval("SELECT count(*) FROM rejected_batches")


async def expect_rejected_rows(db: asyncpg.Connection, wanted: int) -> None:
    """The recorder writes in the background: poll until every ERROR has its row."""
    deadline = time.monotonic() + 15
    while (found := await rejected_rows(db)) < wanted:
        assert time.monotonic() < deadline, f"{found} rejected rows, expected {wanted}"
        await asyncio.sleep(0.05)
    assert found == wanted


async def assert_healthy(service: Service) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/healthcheck") as response:
        assert response.status == 200
    async with await Uploader.open(service.ws_url, f"?sessionId={new_session()}") as up:
        assert (await up.send([event("healthy")]))["type"] == "ACK"


# --- strategies -------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)

hostile_text = st.text(max_size=300) | st.sampled_from(["", "\u0000", "a\u0000b", "\u202e", "x" * 256, "x" * 255])
timestamps = (
    st.integers(min_value=-5, max_value=MAX_TS + 5)
    | st.integers()
    | st.floats(allow_nan=False)
    | st.datetimes().map(lambda d: d.isoformat() + "Z")  # RFC 3339 when it has seconds; else refused
    | st.booleans()
    | st.text(max_size=15)
    | st.none()
)
event_objects = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["SESSION_START", "EVENT", "SESSION_END", "event", "", "OTHER"]) | json_scalars,
        "timestamp": timestamps,
    },
    optional={
        "name": hostile_text | json_scalars,
        "data": st.dictionaries(st.text(max_size=10), json_values, max_size=5) | json_values,
        "session_id": st.sampled_from([new_session(), new_session().upper(), "not-a-uuid", ""]) | json_scalars,
        "extra": json_values,
    },
)
# Valid events too, so the properties see ACKs as well as ERRORs.
valid_events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["SESSION_START", "EVENT", "SESSION_END"]),
        "timestamp": st.integers(min_value=0, max_value=MAX_TS - 1),
        "name": st.text(min_size=1, max_size=255).filter(lambda n: "\u0000" not in n),
    },
    optional={"data": st.dictionaries(st.text(max_size=10).filter(lambda k: "\u0000" not in k), json_scalars, max_size=4)},
)
event_batches = st.lists(event_objects | valid_events, min_size=0, max_size=6)
envelopes = st.fixed_dictionaries(
    {"events": event_batches | json_values},
    optional={"batch_id": st.text(min_size=0, max_size=70) | json_scalars},
)


# --- properties -------------------------------------------------------------------------


@FUZZ
@given(doc=json_values)
async def test_arbitrary_json(service: Service, sql: asyncpg.Connection, with_session: Connection, doc: Any) -> None:
    await exchange(with_session, sql, json.dumps(doc))


@FUZZ
@given(doc=event_batches | envelopes)
async def test_event_shaped_json_with_a_session(
    service: Service, sql: asyncpg.Connection, with_session: Connection, doc: Any
) -> None:
    await exchange(with_session, sql, json.dumps(doc))


@FUZZ
@given(doc=event_batches | envelopes)
async def test_event_shaped_json_on_a_relay_connection(
    service: Service, sql: asyncpg.Connection, relay: Connection, doc: Any
) -> None:
    await exchange(relay, sql, json.dumps(doc))


@FUZZ
@given(frame=st.text(max_size=500))
async def test_arbitrary_text(service: Service, sql: asyncpg.Connection, relay: Connection, frame: str) -> None:
    await exchange(relay, sql, frame)


@FUZZ
@given(frame=st.binary(max_size=2000))
async def test_arbitrary_bytes(service: Service, sql: asyncpg.Connection, relay: Connection, frame: bytes) -> None:
    answer = await exchange(relay, sql, frame)
    assert answer["type"] == "ERROR" and answer["error"] == "invalid_json"  # binary frames are never batches


async def test_every_error_left_a_row_and_the_service_is_healthy(
    service: Service, sql: asyncpg.Connection, with_session: Connection, relay: Connection
) -> None:
    if not (with_session.frames and relay.frames):
        pytest.skip("checks what the property tests above sent: run them too")
    await expect_rejected_rows(sql, with_session.errors + relay.errors)
    # Some generated batches were valid: the property tests saw both kinds.
    assert with_session.errors < with_session.frames
    assert not with_session.up.ws.closed and not relay.up.ws.closed
    await assert_healthy(service)
