"""The Python uploader's queue alone: batching, settling, flush waiters, the SQLite spool, event checks."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from eventservice_client.events import EventError, Limits, check_object, encode_event
from eventservice_client.importer import ImportOptions, _Batcher, batch_id_for
from eventservice_client.link import Backoff
from eventservice_client.outbox import Batch, Batching, MemoryStorage, Outbox, QueueFull
from eventservice_client.spool import SpoolBusy, SpoolStorage
from eventservice_client.uploader import ws_url

SESSION = "0d856b46-48cd-4fba-946b-53d15b7b43e0"


def ev(i: int) -> bytes:
    return encode_event("EVENT", SESSION, 1_700_000_000_000, f"e{i}", {"i": i}, Limits())


async def test_a_batch_is_sealed_at_flush_events_with_a_fresh_id() -> None:
    outbox = Outbox(MemoryStorage(), Batching(flush_events=3, flush_ms=60_000))
    for i in range(7):
        outbox.add(ev(i))
    batches = list(outbox.unsettled())
    assert [len(b.events) for b in batches] == [3, 3]
    assert len({b.batch_id for b in batches}) == 2 and all(1 <= len(b.batch_id) <= 64 for b in batches)
    assert outbox.pending == 7 and len(outbox.open) == 1
    outbox.close()


async def test_a_batch_is_sealed_flush_ms_after_its_first_event() -> None:
    outbox = Outbox(MemoryStorage(), Batching(flush_events=100, flush_ms=20))
    outbox.add(ev(0))
    assert not outbox.sealed
    deadline = asyncio.get_running_loop().time() + 5
    while not outbox.sealed:
        assert asyncio.get_running_loop().time() < deadline, "never sealed by time"
        await asyncio.sleep(0.005)
    assert [len(b.events) for b in outbox.unsettled()] == [1]
    outbox.close()


async def test_a_batch_is_sealed_before_it_would_pass_max_batch_bytes() -> None:
    outbox = Outbox(MemoryStorage(), Batching(flush_events=1000, flush_ms=60_000, max_batch_bytes=400))
    for i in range(10):
        outbox.add(ev(i))
    outbox.seal()
    assert all(len(b.frame().encode()) <= 400 for b in outbox.unsettled())
    assert sum(len(b.events) for b in outbox.unsettled()) == 10
    outbox.close()


async def test_the_frame_is_the_envelope_the_server_reads() -> None:
    batch = Batch("abc", [ev(0), ev(1)])
    frame = json.loads(batch.frame())
    assert frame["batch_id"] == "abc" and [e["name"] for e in frame["events"]] == ["e0", "e1"]


async def test_flush_waiter_resolves_only_when_every_earlier_batch_is_settled() -> None:
    outbox = Outbox(MemoryStorage(), Batching(flush_events=2, flush_ms=60_000))
    for i in range(5):
        outbox.add(ev(i))
    waiter = outbox.settled_through()  # seals the fifth event too
    first, second, third = outbox.unsettled()
    outbox.settle(third.batch_id)
    outbox.settle(first.batch_id)
    await asyncio.sleep(0)
    assert not waiter.done()
    outbox.add(ev(9))  # tracked after the call: not waited for
    outbox.settle(second.batch_id)
    await asyncio.wait_for(waiter, 1)
    assert outbox.pending == 1
    outbox.close()


async def test_track_beyond_max_queue_events_is_refused_not_dropped() -> None:
    outbox = Outbox(MemoryStorage(), Batching(flush_events=2, flush_ms=60_000, max_queue_events=3))
    for i in range(3):
        outbox.add(ev(i))
    with pytest.raises(QueueFull):
        outbox.add(ev(3))
    assert outbox.pending == 3
    outbox.close()


async def test_the_spool_keeps_sealed_batches_with_their_ids_and_open_events_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    outbox = Outbox(SpoolStorage(path), Batching(flush_events=2, flush_ms=60_000))
    for i in range(5):
        outbox.add(ev(i))
    first, second = outbox.unsettled()
    outbox.settle(first.batch_id)
    assert outbox.put(Batch("import-1", [ev(7)], lines=[12]))
    outbox.storage.close()  # (kill -9 of a relay with a spool: test_python_client.py)
    again = Outbox(SpoolStorage(path), Batching(flush_events=2, flush_ms=60_000))
    again.restore()
    kept = list(again.unsettled())
    assert [b.batch_id for b in kept[:2]] == [second.batch_id, "import-1"]
    assert kept[0].events == second.events and kept[1].lines == [12]
    # The open event left behind is sealed at once, to go with the others first.
    assert [len(b.events) for b in kept] == [2, 1, 1] and again.pending == 4
    assert not again.put(Batch("import-1", [ev(7)]))  # the same id twice is kept once
    for batch in kept:
        again.settle(batch.batch_id)
    again.close()
    third = Outbox(SpoolStorage(path), Batching())
    third.restore()
    assert third.pending == 0
    third.close()


def test_a_spool_has_one_owner_at_a_time(tmp_path: Path) -> None:
    first = SpoolStorage(tmp_path / "s.sqlite")
    with pytest.raises(SpoolBusy, match="in use"):
        SpoolStorage(tmp_path / "s.sqlite")
    first.close()
    SpoolStorage(tmp_path / "s.sqlite").close()


def test_the_spool_is_in_wal_mode(tmp_path: Path) -> None:
    storage = SpoolStorage(tmp_path / "s.sqlite")
    assert storage.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    storage.close()


@pytest.mark.parametrize(
    ("kind", "name", "data", "field"),
    [
        ("EVENT", "", None, "name"),
        ("EVENT", "x" * 256, None, "name"),
        ("EVENT", "a\x00b", None, "name"),
        ("EVENT", "ok", {"pad": "x" * 16_400}, "data"),
        ("EVENT", "ok", {"s": "\ud800"}, "data"),
        ("EVENT", "ok", {"s": "a\x00"}, "data"),
        ("EVENT", "ok", {"n": float("nan")}, "data"),
        ("SESSION_START", None, ["not", "a", "dict"], "data"),
    ],
)
def test_an_event_the_server_would_refuse_is_refused_at_once(kind: str, name: str | None, data: object, field: str) -> None:
    with pytest.raises(EventError) as refused:
        encode_event(kind, SESSION, 1_700_000_000_000, name, data, Limits())  # type: ignore[arg-type]
    assert refused.value.field == field


def test_deep_data_and_bad_session_ids_are_refused() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(70):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    with pytest.raises(EventError, match="deeper"):
        encode_event("EVENT", SESSION, 1, "ok", deep, Limits())
    with pytest.raises(EventError, match="UUID"):
        encode_event("EVENT", "0d856b46", 1, "ok", None, Limits())
    assert json.loads(encode_event("EVENT", SESSION.upper(), 1, "ok", {}, Limits()))["session_id"] == SESSION


@pytest.mark.parametrize(
    "timestamp",
    [True, "123", "2019-10-01T23:21:22", "2019-10-01T23:21:22+0200", -1, 1.5e12 + 0.5, 1e300, "2019-02-30T00:00:00Z"],
)
def test_an_import_line_with_a_bad_timestamp_is_refused(timestamp: object) -> None:
    with pytest.raises(EventError, match="timestamp"):
        check_object({"type": "EVENT", "timestamp": timestamp, "name": "x", "session_id": SESSION}, Limits())


@pytest.mark.parametrize("timestamp", [1569972082.25, 1624422533298, "2019-10-01T23:21:22.123Z", "2019-10-01T23:21:22+02:00"])
def test_an_import_line_with_a_good_timestamp_passes_as_given(timestamp: object) -> None:
    event = {"type": "EVENT", "timestamp": timestamp, "name": "x", "session_id": SESSION}
    assert json.loads(check_object(event, Limits())) == event


def test_import_batches_and_their_ids_are_the_same_on_every_read() -> None:
    def batches() -> list[Batch]:
        batcher = _Batcher(ImportOptions(batch_events=3))
        sealed = [batcher.add(line, ev(line)) for line in range(1, 9) if line != 4]
        return [b for b in [*sealed, batcher.seal()] if b is not None]

    one, two = batches(), batches()
    assert [b.batch_id for b in one] == [b.batch_id for b in two]
    assert [b.lines for b in one] == [[1, 2, 3], [5, 6, 7], [8]]
    assert all(len(b.batch_id) <= 64 for b in one)
    assert batch_id_for([1], [ev(1)]) != batch_id_for([2], [ev(1)]) != batch_id_for([2], [ev(2)])


def test_backoff_has_full_jitter_between_the_floor_and_the_cap() -> None:
    backoff = Backoff(250, 30_000)
    first = [backoff.delay(1) for _ in range(200)]
    late = [backoff.delay(20) for _ in range(200)]
    assert all(0.25 <= d <= 0.5 for d in first)
    assert all(0.25 <= d <= 30 for d in late) and max(late) > 10 and min(late) < 10


def test_the_websocket_url_comes_from_the_base_url() -> None:
    assert ws_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws"
    assert ws_url("https://events.example.com/") == "wss://events.example.com/ws"
    assert ws_url("ws://h:1/ws") == "ws://h:1/ws"
    with pytest.raises(ValueError, match="base_url"):
        ws_url("ftp://h")
    assert uuid.UUID(SESSION)
