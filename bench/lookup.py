"""``python -m bench lookup``: GET /session/<id> of a 1,000-event session, requests/s and p50/p99.

``--cold``: many distinct sessions, ingested interleaved as real traffic is (so one
session's rows are spread over the table, not clustered), looked up in random order
with the tree cache off, so every request reads and encodes its tree.
``--compare REV`` runs REV's code too, on the same data, its windows interleaved with
the working tree's, so both sides see the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from app.reads.tree_store import MIN_EVENTS
from app.routes.session import PAGE_ROWS

from .report import Row, disturbed, emit
from .service import REPO_ROOT, Database, Meter, Service, mib, service
from .stats import Recorder
from .wsload import BASE_TS, session_ids, upload


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (default 16)")
    p.add_argument("--events", type=int, default=1000, help="EVENTs in the session looked up (default 1000)")
    p.add_argument("--max-requests", type=int, default=10_000_000, help="bound on requests per client")
    p.add_argument("--cold", action="store_true", help="distinct sessions in random order, tree cache off")
    p.add_argument("--sessions", type=int, default=2000, help="sessions created for --cold (default 2000)")
    p.add_argument("--rounds", type=int, default=1, help="measured windows per side for --cold (default 1)")
    p.add_argument("--compare", metavar="REV", default=None, help="--cold: also run git REV's app, windows interleaved")
    p.add_argument(
        "--tree-store-after",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="--cold: the working tree's --tree-store-after-seconds, and the bench waits for every tree to be stored "
        "before measuring (0: no stored trees; default 2)",
    )


def session_events(count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"type": "SESSION_START", "timestamp": BASE_TS}]
    events += [
        {"type": "EVENT", "timestamp": BASE_TS + i, "name": f"page{i % 25}", "data": {"i": i, "path": f"/p/{i}"}}
        for i in range(count)
    ]
    events.append({"type": "SESSION_END", "timestamp": BASE_TS + count})
    return events


async def main(args: argparse.Namespace, db: Database) -> None:
    if args.cold:
        await cold_main(args, db)
        return
    rows: list[Row] = []
    notes: list[str] = []
    async with service(db, workers=args.workers, extra_args=args.server_arg) as svc:
        sid = session_ids(1, seed=3)[0]
        accepted = await upload(svc.ws, sid, session_events(args.events))
        url = f"{svc.http}/session/{sid}"
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            async with http.get(url) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"GET /session answered {r.status}: {body[:300]!r}")
            children = len(orjson.loads(body).get("children", []))
            notes.append(f"Session of {accepted:,} accepted events; the tree has {children:,} children, {len(body):,} bytes.")
            if children != args.events:
                notes.append(f"**Unexpected**: {children} children for {args.events} EVENTs.")

            rec = Recorder()
            counts = {"ok": 0, "bad": 0}
            t0 = time.monotonic()
            win = (t0 + args.warmup, t0 + args.warmup + args.duration)
            meter = Meter(svc.tree, db.tree)

            await asyncio.gather(meter.span(*win), _drive(http, args, win, lambda: url, rec, counts))
        m = meter.result
        p50, p99 = rec.p50_p99_ms()
        rows.append(
            {
                "workers": args.workers,
                "clients": args.clients,
                "session events": args.events,
                "requests/s": counts["ok"] / args.duration,
                "p50 ms": p50,
                "p99 ms": p99,
                "server CPU s": m.get("server"),
                "PG CPU s": m.get("db"),
                "client CPU s": m.get("client"),
                "other CPU s": m.get("other"),
                "disturbed": disturbed(m),
                "server µs/req": m["server"] / counts["ok"] * 1e6 if m.get("server") and counts["ok"] else None,
                "server RSS MiB": mib(svc.tree.rss_bytes()),
                "errors": counts["bad"],
            }
        )
    notes.append("Latency: request sent to body fully read, keep-alive connections, one per client.")
    emit(f"lookup ({args.duration:g} s measured after {args.warmup:g} s warm-up)", rows, notes)


async def _drive(
    http: aiohttp.ClientSession,
    args: argparse.Namespace,
    win: tuple[float, float],
    next_url: Callable[[], str],
    rec: Recorder,
    counts: dict[str, int],
) -> None:
    """--clients clients GET next_url() back to back until the window ends; what ends inside it counts."""

    async def client() -> None:
        for _ in range(args.max_requests):
            start = time.monotonic()
            if start >= win[1]:
                return
            async with http.get(next_url()) as r:
                await r.read()
                status = r.status
            end = time.monotonic()
            if win[0] <= end < win[1]:
                counts["ok" if status == 200 else "bad"] += 1
                rec.add(end - start)

    await asyncio.gather(*(client() for _ in range(args.clients)))


# --------------------------------------------------------------------------- --cold


def _cold_event(sid: str, i: int, count: int) -> dict[str, Any]:
    """Event ``i`` of a session shaped like session_events(count), with its session_id (relay mode)."""
    if i == 0:
        ev: dict[str, Any] = {"type": "SESSION_START", "timestamp": BASE_TS}
    elif i == count + 1:
        ev = {"type": "SESSION_END", "timestamp": BASE_TS + count}
    else:
        k = i - 1
        ev = {"type": "EVENT", "timestamp": BASE_TS + k, "name": f"page{k % 25}", "data": {"i": k, "path": f"/p/{k}"}}
    ev["session_id"] = sid
    return ev


async def ingest_interleaved(ws_base: str, sids: list[str], count: int, batch: int = 1000, conns: int = 8) -> int:
    """Event i of every session before event i+1 of any: each batch mixes ``batch`` sessions."""
    total = len(sids) * (count + 2)
    starts = iter(range(0, total, batch))
    accepted = 0

    async def conn(http: aiohttp.ClientSession) -> None:
        nonlocal accepted
        async with http.ws_connect(f"{ws_base}/ws", max_msg_size=4 * 2**20) as ws:
            for start in starts:
                end = min(total, start + batch)
                events = [_cold_event(sids[g % len(sids)], g // len(sids), count) for g in range(start, end)]
                await ws.send_str(orjson.dumps(events).decode())
                ack = orjson.loads((await ws.receive(timeout=120)).data)
                if ack.get("type") != "ACK":
                    raise RuntimeError(f"upload refused: {str(ack)[:300]}")
                accepted += int(ack.get("accepted", 0))

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(conn(http) for _ in range(conns)))
    return accepted


@contextlib.contextmanager
def exported(rev: str) -> Iterator[Path]:
    """REV's files (git archive) in a temporary directory, to run its app side by side."""
    with tempfile.TemporaryDirectory(prefix="bench-rev-") as tmp:
        archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


async def _window(args: argparse.Namespace, db: Database, svc: Service, label: str, sids: list[str], seed: int) -> Row:
    """One measured window of 16 (--clients) clients, each taking the next session of a shuffled order."""
    rng = random.Random(seed)
    order = sids[:]
    rng.shuffle(order)
    taken = 0
    rec = Recorder()
    counts = {"ok": 0, "bad": 0}
    t0 = time.monotonic()
    win = (t0 + args.warmup, t0 + args.warmup + args.duration)
    meter = Meter(svc.tree, db.tree)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:

        def next_url() -> str:
            nonlocal taken
            if taken == len(order):
                rng.shuffle(order)
                taken = 0
            taken += 1
            return f"{svc.http}/session/{order[taken - 1]}"

        await asyncio.gather(meter.span(*win), _drive(http, args, win, next_url, rec, counts))
    m = meter.result
    p50, p99 = rec.p50_p99_ms()
    ok = counts["ok"]
    return {
        "code": label,
        "clients": args.clients,
        "requests/s": ok / args.duration,
        "p50 ms": p50,
        "p99 ms": p99,
        "server µs/req": m["server"] / ok * 1e6 if m.get("server") and ok else None,
        "PG µs/req": m["db"] / ok * 1e6 if m.get("db") and ok else None,
        "client CPU s": m.get("client"),
        "other CPU s": m.get("other"),
        "disturbed": disturbed(m),
        "errors": counts["bad"],
    }


async def _check_same(sides: list[tuple[str, Service]], sids: list[str], events: int, notes: list[str]) -> None:
    """Every side answers the same bytes, and the whole tree."""
    async with aiohttp.ClientSession() as http:
        for sid in sids:
            bodies = []
            for _, svc in sides:
                async with http.get(f"{svc.http}/session/{sid}") as r:
                    bodies.append((r.status, await r.read()))
            if bodies[0][0] != 200 or len(orjson.loads(bodies[0][1])["children"]) != events:
                raise RuntimeError(f"session {sid}: {bodies[0][0]} {bodies[0][1][:200]!r}")
            if any(b != bodies[0] for b in bodies[1:]):
                raise RuntimeError(f"session {sid}: the sides answered different bodies")
    notes.append(f"The {len(sides)} side(s) answered byte-identical, complete trees for the {len(sids)} sessions checked.")


async def _explain(conn: asyncpg.Connection, sql: str, *params: object) -> str:
    plan = orjson.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *params))[0]
    top = plan["Plan"]
    return (
        f"{plan['Execution Time']:.2f} ms, {top.get('Shared Hit Blocks', 0):,} buffers hit and "
        f"{top.get('Shared Read Blocks', 0):,} read"
    )


async def _explained(conn: asyncpg.Connection, sid: str) -> str:
    """Where PostgreSQL's time goes for one session: its tree encoded from events, and the whole-tree read."""
    # Imported here: --compare's other side is another checkout, this one is the working tree's.
    from app.store import queries

    from_events = await _explain(conn, f"SELECT {queries.ENCODED_CHILDREN} FROM sessions s WHERE s.id = $1", sid)
    whole = await _explain(conn, queries.SESSION_TREE_WHOLE, sid, 2000)
    return (
        f"EXPLAIN (ANALYZE, BUFFERS) of one session: encoding it from events {from_events}; "
        f"the working tree's whole-tree read {whole}."
    )


async def _wait_stored(conn: asyncpg.Connection, svc: Service, db: Database, sessions: int, events: int) -> str:
    """Until the working tree's builder has stored every session's tree; what that cost."""
    meter = Meter(svc.tree, db.tree)
    meter.start()
    t0 = time.monotonic()
    deadline = t0 + 600
    query = "SELECT count(*), coalesce(sum(pg_column_size(children)), 0) FROM session_trees WHERE event_count = $1"
    while True:
        stored, size = await conn.fetchrow(query, events) or (0, 0)
        if stored >= sessions:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {stored} of {sessions} trees stored in 600 s")
        await asyncio.sleep(0.2)
    m = meter.stop()
    took = time.monotonic() - t0
    per_tree = {k: (m[k] or 0.0) / sessions * 1e3 for k in ("server", "db")}
    return (
        f"Stored trees: all {sessions:,} built {took:.1f} s after the VACUUM (builder quiet time included), "
        f"{size / sessions / 1024:.1f} KiB each as stored (TOAST-compressed); while building, "
        f"PG {per_tree['db']:.2f} ms and server {per_tree['server']:.2f} ms of CPU per tree "
        f"(other CPU {m.get('other') or 0.0:.1f} s)."
    )


async def cold_main(args: argparse.Namespace, db: Database) -> None:
    rows: list[Row] = []
    notes: list[str] = []
    server_args = [*args.server_arg, "--tree-cache-bytes", "0"]
    new_args = [*server_args, "--tree-store-after-seconds", str(args.tree_store_after)]
    sids = session_ids(args.sessions, seed=5)
    with contextlib.ExitStack() as stack:
        old_dir = stack.enter_context(exported(args.compare)) if args.compare else None
        async with service(db, workers=args.workers, extra_args=new_args) as new:
            t0 = time.monotonic()
            accepted = await ingest_interleaved(new.ws, sids, args.events)
            notes.append(
                f"{args.sessions:,} sessions × {args.events:,} EVENTs ingested interleaved ({accepted:,} events in "
                f"{time.monotonic() - t0:.0f} s), then VACUUM ANALYZE (what autovacuum would do)."
            )
            conn = await asyncpg.connect(db.url)
            try:
                await conn.execute("VACUUM (ANALYZE) events, sessions")
                if args.tree_store_after > 0 and MIN_EVENTS <= args.events < PAGE_ROWS:
                    notes.append(await _wait_stored(conn, new, db, len(sids), args.events))
                elif args.tree_store_after > 0:
                    notes.append(
                        f"No tree is stored for sessions of {args.events} EVENTs (only {MIN_EVENTS} to {PAGE_ROWS - 1} are)."
                    )
                notes.append(await _explained(conn, sids[len(sids) // 2]))
            finally:
                await conn.close()
            sides: list[tuple[str, Service]] = [("working tree", new)]
            async with contextlib.AsyncExitStack() as astack:
                if old_dir is not None:
                    old = await astack.enter_async_context(
                        service(db, workers=args.workers, extra_args=server_args, app_dir=old_dir)
                    )
                    sides.append((args.compare, old))
                await _check_same(sides, sids[:50], args.events, notes)
                for r in range(args.rounds):
                    for label, svc in sides if r % 2 == 0 else sides[::-1]:
                        rows.append(await _window(args, db, svc, label, sids, seed=r))
    notes.append(
        "Latency: request sent to body fully read, keep-alive connections, one per client. The servers run with "
        "--tree-cache-bytes 0, so every request reads its session from the database (the working tree: its stored "
        "tree when --tree-store-after > 0, else its events)."
    )
    emit(f"lookup --cold ({args.duration:g} s measured after {args.warmup:g} s warm-up per window)", rows, notes)
