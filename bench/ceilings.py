"""Raw PostgreSQL ceilings on the same database: COPY, and one transaction per event.

Both write into scratch tables made with ``CREATE TABLE … (LIKE events INCLUDING ALL)``:
same columns, CHECKs, defaults, identity and indexes, but none of the events table's
triggers or foreign keys. They are ordinary (WAL-logged, fsync'd) tables, dropped after.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from .wsload import NAMES, IngestConfig, frame_events

KNOWN = ("session_id", "type", "ts", "name_id", "data")


@dataclass
class Ceiling:
    rows: int
    seconds: float
    db_cpu: float | None = None
    meter: dict[str, Any] | None = None  # the Meter's result over this ceiling's run (other CPU included)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def same_rows(cfg: IngestConfig, sids: list[str], count: int) -> list[tuple[Any, ...]]:
    """The rows the ingest clients sent, as (session_id, type, ts, name_id, data) tuples."""
    name_ids = {name: i + 1 for i, name in enumerate(NAMES)}
    rows: list[tuple[Any, ...]] = []
    client, k = 0, 0
    while len(rows) < count:
        for sid, ev in frame_events(cfg, sids, client, k % cfg.pool):
            data = ev.get("data")
            rows.append(
                (
                    uuid.UUID(sid),
                    ev["type"],
                    ev["timestamp"],
                    name_ids[ev["name"]] if ev["type"] == "EVENT" else None,
                    None if data is None else orjson.dumps(data).decode(),
                )
            )
        client = (client + 1) % cfg.clients
        k += 1 if client == 0 else 0
    return rows[:count]


async def _columns(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        """SELECT column_name, is_nullable, column_default, is_identity, is_generated
             FROM information_schema.columns
            WHERE table_name = 'events' AND table_schema = ANY (current_schemas(false))
            ORDER BY ordinal_position"""
    )
    if not rows:
        raise RuntimeError("no events table: did the app create its schema?")
    wanted = [r["column_name"] for r in rows if r["column_name"] in KNOWN]
    missing = [
        r["column_name"]
        for r in rows
        if r["column_name"] not in KNOWN
        and r["is_nullable"] == "NO"
        and r["column_default"] is None
        and r["is_identity"] != "YES"
        and r["is_generated"] == "NEVER"
    ]
    if missing:
        raise RuntimeError(f"events has required columns the bench does not know: {missing}")
    return wanted


def _project(rows: Sequence[tuple[Any, ...]], cols: list[str]) -> list[tuple[Any, ...]]:
    index = [KNOWN.index(c) for c in cols]
    return [tuple(row[i] for i in index) for row in rows]


async def measure(
    url: str,
    rows: Sequence[tuple[Any, ...]],
    *,
    copy_connections: int = 4,
    copy_chunk: int = 10_000,
    tx_events: int = 2_000,
    meter: Callable[[], Any] | None = None,
) -> tuple[Ceiling, Ceiling]:
    """COPY ``rows`` over ``copy_connections`` (one commit per chunk), then ``tx_events`` single-row commits.

    ``meter`` makes a bench.service.Meter: each ceiling is metered like the service's runs,
    so its row says how much CPU other processes took meanwhile (a disturbed ceiling
    inflates the ratio of ours to it).
    """
    suffix = f"{os.getpid()}_{int(time.time())}"
    copy_table, tx_table = f"bench_copy_{suffix}", f"bench_tx_{suffix}"
    admin = await asyncpg.connect(url)
    try:
        cols = await _columns(admin)
        data = _project(rows, cols)
        for table in (copy_table, tx_table):
            await admin.execute(f"CREATE TABLE {table} (LIKE events INCLUDING ALL)")
        chunks = [data[i : i + copy_chunk] for i in range(0, len(data), copy_chunk)]
        conns = [await asyncpg.connect(url) for _ in range(copy_connections)]
        try:
            queue: asyncio.Queue[list[tuple[Any, ...]]] = asyncio.Queue()
            for chunk in chunks:
                queue.put_nowait(chunk)

            async def copier(conn: asyncpg.Connection) -> None:
                while not queue.empty():
                    chunk = queue.get_nowait()
                    await conn.copy_records_to_table(copy_table, records=chunk, columns=cols)

            m = meter() if meter else None
            if m is not None:
                m.start()
            t0 = time.perf_counter()
            await asyncio.gather(*(copier(c) for c in conns))
            copy = Ceiling(len(data), time.perf_counter() - t0)
            if m is not None:
                copy.meter = m.stop()
                copy.db_cpu = copy.meter.get("db")

            placeholders = ", ".join(f"${i + 1}" for i in range(len(cols)))
            stmt = await conns[0].prepare(f"INSERT INTO {tx_table} ({', '.join(cols)}) VALUES ({placeholders})")
            single = data[:tx_events]
            m = meter() if meter else None
            if m is not None:
                m.start()
            t0 = time.perf_counter()
            for row in single:  # autocommit: every INSERT is its own durable transaction
                await stmt.fetch(*row)
            tx = Ceiling(len(single), time.perf_counter() - t0)
            if m is not None:
                tx.meter = m.stop()
                tx.db_cpu = tx.meter.get("db")
        finally:
            for conn in conns:
                await conn.close()
    finally:
        for table in (copy_table, tx_table):
            await admin.execute(f"DROP TABLE IF EXISTS {table}")
        await admin.close()
    return copy, tx
