"""SIGTERM while clients upload: every ACKed batch is stored, none is half-stored."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
import asyncpg

from test.support.clients import SSEReader, new_session

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


async def test_sigterm_commits_and_acks_in_flight_batches(start_service) -> None:
    svc = await start_service("--graceful-timeout-seconds", "20")
    acked: set[str] = set()
    sent: set[str] = set()
    closes: list[int | None] = []
    async with await SSEReader.open(svc.url) as stream:
        enough = asyncio.Event()
        uploads = [asyncio.create_task(_uploader(svc.ws_url, k, acked, sent, closes, enough)) for k in range(4)]
        await asyncio.wait_for(enough.wait(), timeout=20)
        svc.signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*uploads), timeout=30)
        # The SSE stream is ended by the server so EventSource clients reconnect elsewhere.
        assert await stream.ended(timeout=30)
    assert await asyncio.to_thread(svc.wait, 30) == 0
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
