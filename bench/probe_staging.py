"""``python -m bench.probe_staging``: where the time under the insert lock goes (issue 20).

COPY straight into ``events`` (what the writer does under the lock) against COPY into an
index-less temp staging table (which could run outside the lock) plus ``INSERT ... SELECT``
from it (which must run under it: it draws the positions). 25 groups of 8,000 EVENTs over
1,000 sessions each way, one connection, on a throwaway database with the service's schema
(or ``$DATABASE_URL``: it writes into ``events``, use a scratch database). Prints µs per event.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import orjson

from app.store import db

from .service import database

GROUPS = 25
GROUP_EVENTS = 8_000
COLUMNS = ("session_id", "type", "ts", "name_id", "data")
BASE_TS = 1_700_000_000_000
Record = tuple[str, str, int, int, str]


async def _probe(url: str) -> None:
    await db.migrate(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET synchronous_commit = on")
        names = "INSERT INTO event_names (name) SELECT 'probe' || g FROM generate_series(1, 8) g RETURNING id"
        ids = [r[0] for r in await conn.fetch(names)]
        sessions = [str(uuid.uuid4()) for _ in range(1000)]

        def group(g: int) -> list[Record]:
            return [
                (sessions[(g * GROUP_EVENTS + i) % 1000], "EVENT", BASE_TS + i, ids[i % 8], orjson.dumps({"i": i}).decode())
                for i in range(GROUP_EVENTS)
            ]

        await conn.execute("CREATE TEMP TABLE stage (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        await conn.execute("ALTER TABLE stage DROP COLUMN position")
        million = GROUPS * GROUP_EVENTS / 1e6
        for rnd in range(2):
            direct = direct_commit = staged = inserted = staged_commit = 0.0
            for g in range(GROUPS):
                rows = group(g)
                t0 = time.perf_counter()
                async with conn.transaction():
                    await conn.copy_records_to_table("events", records=rows, columns=COLUMNS)
                    t1 = time.perf_counter()
                direct += t1 - t0
                direct_commit += time.perf_counter() - t1
            for g in range(GROUPS):
                rows = group(GROUPS + g)
                t0 = time.perf_counter()
                async with conn.transaction():
                    await conn.copy_records_to_table("stage", records=rows, columns=COLUMNS)
                    t1 = time.perf_counter()
                    await conn.execute(f"INSERT INTO events ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM stage")
                    t2 = time.perf_counter()
                staged += t1 - t0
                inserted += t2 - t1
                staged_commit += time.perf_counter() - t2
            print(
                f"round {rnd + 1}: COPY into events {direct / million:.2f} µs/event (+ COMMIT {direct_commit / million:.2f}); "
                f"COPY into staging {staged / million:.2f} µs/event, INSERT ... SELECT {inserted / million:.2f} µs/event "
                f"(+ COMMIT {staged_commit / million:.2f})"
            )
    finally:
        await conn.close()


def main() -> None:
    with database(None, warm=False) as d:  # as the figures quoted in docs were measured: a new cluster
        asyncio.run(_probe(d.url))


if __name__ == "__main__":
    main()
