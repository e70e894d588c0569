"""``python -m bench retention``: steady ingest over several retention windows.

Prints the database size at the end of each window (flat after the first), the
longest gap between ACKs and the ACK p99 while a piece is being removed against
the rest of the time, and each removal's time against its row count.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import time
import uuid
from datetime import datetime

import aiohttp
import asyncpg

from .service import Database, service

_REMOVED = re.compile(r"^(\S+) .*retention removed piece (\S+): (\d+) entries, (\d+) bytes, in ([0-9.]+) ms")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", type=float, default=20.0, help="retention window in seconds (default 20)")
    p.add_argument("--windows", type=int, default=5, help="windows of steady ingest (default 5)")
    p.add_argument("--rate", type=float, default=2000.0, help="events per second (default 2000)")
    p.add_argument("--batch", type=int, default=100, help="events per batch (default 100)")


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99 + 0.999999) - 1)]


async def main(args: argparse.Namespace, db: Database) -> None:
    days = args.window / 86_400
    extra = ["--retention-days", f"{days:.10f}", "--retention-check-seconds", str(max(args.window / 20, 0.2))]
    extra += ["--log-level", "info", *args.server_arg]
    acks: list[tuple[float, float]] = []  # (wall time of the ACK, latency s)
    sizes: list[tuple[int, int, int]] = []
    async with service(db, extra_args=extra) as svc, aiohttp.ClientSession() as http:
        sql = await asyncpg.connect(db.url)
        ws = await http.ws_connect(f"{svc.ws}/ws")
        pause = args.batch / args.rate
        end = time.monotonic() + args.window * args.windows
        next_sample = time.monotonic() + args.window
        window = 0
        while time.monotonic() < end:
            started = time.monotonic()
            session = str(uuid.uuid4())
            now_ms = int(time.time() * 1000)
            batch = [
                {"type": "EVENT", "timestamp": now_ms, "name": f"n{i % 10}", "session_id": session} for i in range(args.batch)
            ]
            await ws.send_str(json.dumps(batch))
            answer = json.loads((await ws.receive(timeout=30)).data)
            assert answer["type"] == "ACK", answer
            acks.append((time.time(), time.monotonic() - started))
            if time.monotonic() >= next_sample:
                window += 1
                size = int(await sql.fetchval("SELECT pg_database_size(current_database())"))
                rows = int(await sql.fetchval("SELECT count(*) FROM events"))
                sizes.append((window, size, rows))
                next_sample += args.window
            await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))
        await ws.close()
        await sql.close()
        log = svc.log_path.read_text(errors="replace")
    removals = []
    for line in log.splitlines():
        m = _REMOVED.match(line)
        if m:
            at = datetime.fromisoformat(m[1].replace("Z", "+00:00")).timestamp()
            removals.append((at - float(m[5]) / 1000, at, m[2], int(m[3]), float(m[5])))
    during = [lat for t, lat in acks if any(a - 0.05 <= t <= b + 0.05 for a, b, *_ in removals)]
    outside = [lat for t, lat in acks if not any(a - 0.05 <= t <= b + 0.05 for a, b, *_ in removals)]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(acks)]
    print(f"## retention: window {args.window:g} s x {args.windows}, {args.rate:g} events/s in batches of {args.batch}")
    print("\n| window | database size (MiB) | entries retained |\n|---|---|---|")
    for n, size, rows in sizes:
        print(f"| {n} | {size / 2**20:.1f} | {rows:,} |")
    p99_in, p99_out = _p99(during), _p99(outside)
    print("\n| ACKs | count | p99 (ms) |\n|---|---|---|")
    print(f"| during a removal | {len(during)} | {p99_in * 1000:.1f} |" if p99_in is not None else "| during a removal | 0 | - |")
    print(f"| otherwise | {len(outside)} | {p99_out * 1000:.1f} |" if p99_out is not None else "| otherwise | 0 | - |")
    print(f"\nlongest gap between two ACKs: {max(gaps, default=0) * 1000:.1f} ms (the pace is {pause * 1000:.0f} ms)")
    print("\n| piece | entries | removal (ms) |\n|---|---|---|")
    for _, _, name, rows, ms in removals:
        print(f"| {name} | {rows:,} | {ms:.1f} |")
