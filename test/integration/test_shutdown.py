"""SIGTERM or Ctrl-C while clients upload: every ACKed batch is stored, none is half-stored,
and the process exits with its status and no traceback."""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from test.support.clients import SSEReader, event, new_session, upload
from test.support.service import Service

TS = 1_700_000_000_000
BATCH = 25


async def _uploader(
    ws_url: str, k: int, acked: set[str], sent: set[str], closes: list[int | None], enough: asyncio.Event
) -> None:
    """Pipelines batches (up to 8 unanswered) until the server closes the socket."""
    session = new_session()
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{ws_url}/ws?sessionId={session}") as ws:
        window = asyncio.Semaphore(8)
        in_flight: dict[int, str] = {}
        number = 0

        async def reader() -> None:
            try:
                async for message in ws:
                    answer = json.loads(message.data)
                    assert answer["type"] == "ACK", answer
                    acked.add(in_flight.pop(answer["batch"]))
                    if len(acked) >= 40:
                        enough.set()
                    window.release()
            finally:
                window.release()  # unblock the sender once the socket is closed

        reading = asyncio.create_task(reader())
        try:
            while not ws.closed and not reading.done():
                await window.acquire()
                if ws.closed or reading.done():
                    break
                number += 1
                batch_id = f"u{k}-{number}"
                in_flight[number] = batch_id
                frame = {
                    "batch_id": batch_id,
                    "events": [
                        {"type": "EVENT", "timestamp": TS + i, "name": "tick", "data": {"b": batch_id}} for i in range(BATCH)
                    ],
                }
                try:
                    await ws.send_str(json.dumps(frame))
                except (ConnectionResetError, RuntimeError):
                    break
                sent.add(batch_id)
        finally:
            await reading
            closes.append(ws.close_code)


def _stop(svc: Service, how: str) -> None:
    if how == "SIGTERM":
        svc.signal(signal.SIGTERM)
    else:
        svc.interrupt()


# SIGTERM is an ordinary stop; Ctrl-C exits as the shell's "interrupted", 128 + SIGINT.
EXIT_STATUS = {"SIGTERM": 0, "Ctrl-C": 130}


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
async def test_a_stop_signal_commits_and_acks_in_flight_batches(start_service, how: str) -> None:
    svc = await start_service("--graceful-timeout-seconds", "20")
    acked: set[str] = set()
    sent: set[str] = set()
    closes: list[int | None] = []
    async with await SSEReader.open(svc.url) as stream:
        enough = asyncio.Event()
        uploads = [asyncio.create_task(_uploader(svc.ws_url, k, acked, sent, closes, enough)) for k in range(4)]
        await asyncio.wait_for(enough.wait(), timeout=20)
        _stop(svc, how)
        await asyncio.wait_for(asyncio.gather(*uploads), timeout=30)
        # The SSE stream is ended by the server so EventSource clients reconnect elsewhere.
        assert await stream.ended(timeout=30)
    assert await asyncio.to_thread(svc.wait, 30) == EXIT_STATUS[how]
    assert closes == [1001] * 4, closes

    conn = await asyncpg.connect(svc.database_url)
    try:
        rows = await conn.fetch("SELECT data::jsonb->>'b' AS batch, count(*) AS n FROM events GROUP BY 1")
    finally:
        await conn.close()
    stored = {r["batch"]: r["n"] for r in rows}
    assert acked, "no batch was acknowledged before the signal"
    assert acked <= set(stored), f"ACKed but not stored: {sorted(acked - set(stored))[:5]}"
    assert all(n == BATCH for n in stored.values()), "a batch was half-stored"
    assert set(stored) <= sent
    assert "Traceback" not in svc.logs()


async def test_ctrl_c_while_idle_exits_130_without_a_traceback(start_service) -> None:
    svc = await start_service()
    svc.interrupt()
    assert await asyncio.to_thread(svc.wait, 30) == 130
    logs = svc.logs()
    assert "Application shutdown complete" in logs, logs[-2000:]
    assert "Traceback" not in logs and "KeyboardInterrupt" not in logs, logs[-3000:]


def test_ctrl_c_during_the_database_wait_exits_130_without_a_traceback() -> None:
    # Nothing listens on port 9 (discard): the service waits, printing its retries.
    svc = Service("postgresql://nobody@127.0.0.1:9/none", "--database-connect-timeout", "30")
    try:
        with pytest.raises(TimeoutError):  # never ready: no database
            svc.start(timeout=1)
        deadline = time.monotonic() + 20
        while "waiting for PostgreSQL" not in svc.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert svc.process is not None and svc.process.poll() is None, svc.logs()
        svc.interrupt()
        assert svc.wait(10) == 130
    finally:
        svc.stop()
    logs = svc.logs()
    assert "waiting for PostgreSQL" in logs, logs
    assert "ready" not in logs, logs
    assert "Traceback" not in logs and "KeyboardInterrupt" not in logs, logs


async def test_ctrl_c_with_the_embedded_postgresql_stops_it_cleanly_and_keeps_the_data() -> None:
    """The terminal's SIGINT reaches the whole group; PostgreSQL (its own session, from
    pg_ctl) must still be there for the graceful shutdown, then be stopped by atexit."""
    data_dir = Path(tempfile.mkdtemp(prefix="es-embedded-")) / "postgres-data"
    svc = Service(None, "--data-dir", str(data_dir))
    session = new_session()
    svc.start(timeout=60)
    try:
        assert (await upload(svc.ws_url, session, [event("kept", 1)]))[0]["type"] == "ACK"
        svc.interrupt()
        assert await asyncio.to_thread(svc.wait, 30) == 130
        assert not (data_dir / "postmaster.pid").exists(), "the embedded PostgreSQL was left running"
        svc.start(timeout=60)
        async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/session/{session}") as response:
            assert response.status == 200
            assert [c["name"] for c in (await response.json())["children"]] == ["kept"]
    finally:
        svc.stop()
    assert "Traceback" not in svc.logs() and "KeyboardInterrupt" not in svc.logs(), svc.logs()[-3000:]
