"""``python -m bench retention``: steady ingest over several retention windows.

Prints the database size at the end of each window (flat after the first), the
longest gap between ACKs, the ACK p50/p99 of the batches sent while a piece was
being removed against all the others (the goal: within 1.2x), and each removal's
time against its row count. Several connections, so that every removal has
batches sent during it (one connection at 10 batches/s left ~40 samples in a
run). The batches go to a fixed set of sessions, as a site's do: sessions and
their name presences are kept past the window by design (docs/retention.md), so
a new session per batch would grow them whatever retention does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import aiohttp
import asyncpg

from .report import disturbed, fmt
from .service import Database, Meter, service

_REMOVED = re.compile(r"^(\S+) .*retention removed piece (\S+): (\d+) entries, (\d+) bytes, in ([0-9.]+) ms")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", type=float, default=20.0, help="retention window in seconds (default 20)")
    p.add_argument("--windows", type=int, default=5, help="windows of steady ingest (default 5)")
    p.add_argument("--rate", type=float, default=4000.0, help="events per second, all connections together (default 4000)")
    p.add_argument("--batch", type=int, default=20, help="events per batch (default 20)")
    p.add_argument("--connections", type=int, default=8, help="WebSocket uploaders, each at rate / connections (default 8)")
    p.add_argument("--sessions", type=int, default=2000, help="sessions the batches go to, in turn (default 2000)")
    p.add_argument("--after", type=float, default=0.05, help="s after a removal still counted as during it (default 0.05)")


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * p / 100 + 0.999999) - 1)]


async def _upload(
    http: aiohttp.ClientSession,
    url: str,
    args: argparse.Namespace,
    end: float,
    sessions: Iterator[str],
    acks: list[tuple[float, float]],
) -> None:
    """One uploader at rate / connections: (wall time sent, wall time ACKed) per batch."""
    pause = args.batch * args.connections / args.rate
    async with http.ws_connect(url) as ws:
        while time.monotonic() < end:
            started = time.monotonic()
            session = next(sessions)
            now_ms = int(time.time() * 1000)
            batch = [
                {"type": "EVENT", "timestamp": now_ms, "name": f"n{i % 10}", "session_id": session} for i in range(args.batch)
            ]
            sent = time.time()
            await ws.send_str(json.dumps(batch))
            answer = json.loads((await ws.receive(timeout=30)).data)
            assert answer["type"] == "ACK", answer
            acks.append((sent, time.time()))
            await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))


_EVENTS_BYTES = "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits WHERE inhparent = 'events'::regclass"


async def _sample_sizes(db_url: str, window: float, end: float, sizes: list[tuple[int, int, int, int]]) -> None:
    sql = await asyncpg.connect(db_url)
    try:
        for n in itertools.count(1):
            await asyncio.sleep(min(window, max(0.0, end - time.monotonic())))
            size = int(await sql.fetchval("SELECT pg_database_size(current_database())"))
            events = int(await sql.fetchval(_EVENTS_BYTES))
            rows = int(await sql.fetchval("SELECT count(*) FROM events"))
            sizes.append((n, size, events, rows))
            if time.monotonic() >= end - 0.5:
                return
    finally:
        await sql.close()


async def main(args: argparse.Namespace, db: Database) -> None:
    days = args.window / 86_400
    extra = ["--retention-days", f"{days:.10f}", "--retention-check-seconds", str(max(args.window / 20, 0.2))]
    extra += ["--log-level", "info", *args.server_arg]
    acks: list[tuple[float, float]] = []  # (wall time sent, wall time ACKed)
    sizes: list[tuple[int, int, int, int]] = []
    sessions = itertools.cycle([str(uuid.uuid4()) for _ in range(args.sessions)])
    async with service(db, extra_args=extra) as svc, aiohttp.ClientSession() as http:
        meter = Meter(svc.tree, db.tree)
        meter.start()
        end = time.monotonic() + args.window * args.windows
        await asyncio.gather(
            _sample_sizes(db.url, args.window, end, sizes),
            *(_upload(http, f"{svc.ws}/ws", args, end, sessions, acks) for _ in range(args.connections)),
        )
        measured = meter.stop()
        log = svc.log_path.read_text(errors="replace")
    removals = []
    for line in log.splitlines():
        m = _REMOVED.match(line)
        if m:
            at = datetime.fromisoformat(m[1].replace("Z", "+00:00")).timestamp()
            removals.append((at - float(m[5]) / 1000, at, m[2], int(m[3]), float(m[5])))

    # A batch is "during a removal" when it was sent while one ran (or up to --after
    # seconds after it ended: the catalog change is then seen by every backend). By
    # send time, not by being in flight at any moment of one: that favours slow
    # batches (a long flight overlaps more), and a detach waits for the commits in
    # progress, so a removal stretches over whichever commit is slow anyway.
    def during_one(sent: float) -> bool:
        return any(start <= sent <= stop + args.after for start, stop, *_ in removals)

    during = [b - a for a, b in acks if during_one(a)]
    outside = [b - a for a, b in acks if not during_one(a)]
    answered = sorted(b for _, b in acks)
    gaps = [later - earlier for earlier, later in itertools.pairwise(answered)]
    # The slowest batches, and how far each was sent from the nearest removal: whether
    # what is slow lines up with removals or with something else (a neighbour, a fold).
    slowest = sorted(acks, key=lambda ack: ack[0] - ack[1])[:5]
    pace = args.batch * args.connections / args.rate
    print(
        f"## retention: window {args.window:g} s x {args.windows}, {args.rate:g} events/s in batches of {args.batch} "
        f"over {args.connections} connections to {args.sessions} sessions"
    )
    print(
        f"\ndisturbed: {fmt(disturbed(measured))}; server {fmt(measured.get('server'))} and PostgreSQL "
        f"{fmt(measured.get('db'))} CPU s over {fmt(measured.get('wall'))} s"
    )
    print("\n| window | database size (MiB) | events' pieces (MiB) | entries retained |\n|---|---|---|---|")
    for n, size, events, rows in sizes:
        print(f"| {n} | {size / 2**20:.1f} | {events / 2**20:.1f} | {rows:,} |")
    print("\n| ACKs | count | p50 (ms) | p99 (ms) |\n|---|---|---|---|")
    for label, values in (("sent during a removal", during), ("otherwise", outside)):
        p50, p99 = _percentile(values, 50), _percentile(values, 99)
        if p50 is None or p99 is None:
            print(f"| {label} | 0 | - | - |")
        else:
            print(f"| {label} | {len(values)} | {p50 * 1000:.1f} | {p99 * 1000:.1f} |")
    p99_in, p99_out = _percentile(during, 99), _percentile(outside, 99)
    if p99_in is not None and p99_out:
        print(f"\nACK p99 during a removal / otherwise: {p99_in / p99_out:.2f}x (goal: within 1.2x)")
    print(
        f"longest gap between two ACKs of the {args.connections} connections: {max(gaps, default=0) * 1000:.1f} ms "
        f"(each connection's pace is {pace * 1000:.0f} ms)"
    )
    print("\n| slowest batches: ACK (ms) | sent ... ms from the nearest removal (- before it starts, 0 during) |\n|---|---|")
    for sent, acked in slowest:
        offsets = [
            0.0 if start <= sent <= stop else (sent - start if sent < start else sent - stop) for start, stop, *_ in removals
        ]
        nearest = min(offsets, key=abs, default=None)
        print(f"| {(acked - sent) * 1000:.1f} | {'-' if nearest is None else f'{nearest * 1000:+.0f}'} |")
    print("\n| piece | entries | removal (ms) |\n|---|---|---|")
    for _, _, name, rows, ms in removals:
        print(f"| {name} | {rows:,} | {ms:.1f} |")
