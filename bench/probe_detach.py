"""``python -m bench.probe_detach``: what a partition DDL costs the batches after it (issue 18).

`bench retention` left a suspect for the ACK p99 of batches sent during a removal: each
DETACH and ATTACH of a piece invalidates the plans and partition descriptors of every
backend that uses `events`, so the writer's next statement rebuilds them. This probe
isolates that: the service runs with retention on but nothing due (a day's window), 8
WebSockets send batches of 20 EVENTs at 4,000 events/s, and once a second plain SQL
attaches an empty piece past the spare and detaches it (CONCURRENTLY) and drops it,
the catalog changes a removal makes, without removing any entry. It prints the ACK
p50/p99 of the batches sent within 50 ms after a DDL against all the others.
Throwaway database (or ``$DATABASE_URL``: it adds and drops pieces, use a scratch one).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid

import aiohttp
import asyncpg

from .report import disturbed, fmt
from .retention import _percentile, _upload
from .service import Database, Meter, database, service

AFTER = 0.05  # s after a DDL's end still counted as after it


async def _ddl(url: str, end: float, spans: list[tuple[float, float, str]]) -> None:
    sql = await asyncpg.connect(url)
    try:
        while time.monotonic() < end - 1.5:
            await asyncio.sleep(1.0)
            top = int(await sql.fetchval("SELECT max(hi) FROM retention_pieces"))
            started = time.time()
            piece = str(await sql.fetchval("SELECT retention_add_piece($1)", top))
            spans.append((started, time.time(), "attach"))
            await asyncio.sleep(0.3)
            started = time.time()
            await sql.execute(f"ALTER TABLE events DETACH PARTITION {piece} CONCURRENTLY")
            await sql.execute(f"DROP TABLE {piece}")
            await sql.execute("DELETE FROM retention_pieces WHERE name = $1", piece)
            spans.append((started, time.time(), "detach+drop"))
    finally:
        await sql.close()


async def _probe(db: Database, seconds: float) -> None:
    args = argparse.Namespace(batch=20, connections=8, rate=4000.0)
    extra = ["--retention-days", "1", "--retention-check-seconds", "3600"]
    acks: list[tuple[float, float]] = []
    spans: list[tuple[float, float, str]] = []
    sessions = itertools.cycle([str(uuid.uuid4()) for _ in range(2000)])
    async with service(db, extra_args=extra) as svc, aiohttp.ClientSession() as http:
        meter = Meter(svc.tree, db.tree)
        meter.start()
        end = time.monotonic() + seconds
        await asyncio.gather(
            _ddl(db.url, end, spans), *(_upload(http, f"{svc.ws}/ws", args, end, sessions, acks) for _ in range(args.connections))
        )
        measured = meter.stop()

    def after(sent: float, kind: str) -> bool:
        return any(k == kind and a <= sent <= b + AFTER for a, b, k in spans)

    print(f"## probe_detach: {seconds:g} s, 4,000 events/s in batches of 20 over 8 connections, a DDL pair each second")
    print(f"\ndisturbed: {fmt(disturbed(measured))}\n")
    print("| batches sent | count | p50 (ms) | p99 (ms) |\n|---|---|---|---|")
    groups = {
        "during or ≤ 50 ms after an ATTACH": [b - a for a, b in acks if after(a, "attach")],
        "during or ≤ 50 ms after a DETACH + DROP": [b - a for a, b in acks if after(a, "detach+drop")],
        "otherwise": [b - a for a, b in acks if not after(a, "attach") and not after(a, "detach+drop")],
    }
    for label, values in groups.items():
        p50, p99 = _percentile(values, 50), _percentile(values, 99)
        shown = "- | -" if p50 is None or p99 is None else f"{p50 * 1000:.1f} | {p99 * 1000:.1f}"
        print(f"| {label} | {len(values)} | {shown} |")
    took = {kind: sorted((b - a) * 1000 for a, b, k in spans if k == kind) for kind in ("attach", "detach+drop")}
    for kind, values in took.items():
        if values:
            print(f"\n{kind}: {len(values)} times, median {values[len(values) // 2]:.1f} ms, max {values[-1]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probe_detach")
    parser.add_argument("--seconds", type=float, default=60.0)
    options = parser.parse_args()
    with database(None, warm=False) as d:  # as the figures quoted in docs were measured: a new cluster
        asyncio.run(_probe(d, options.seconds))


if __name__ == "__main__":
    main()
