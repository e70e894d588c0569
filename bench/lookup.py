"""``python -m bench lookup``: GET /session/<id> of a 1,000-event session, requests/s and p50/p99."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp
import orjson

from .report import Row, disturbed, emit
from .service import Database, Meter, mib, service
from .stats import Recorder
from .wsload import BASE_TS, session_ids, upload


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (default 16)")
    p.add_argument("--events", type=int, default=1000, help="EVENTs in the session looked up (default 1000)")
    p.add_argument("--max-requests", type=int, default=10_000_000, help="bound on requests per client")


def session_events(count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"type": "SESSION_START", "timestamp": BASE_TS}]
    events += [
        {"type": "EVENT", "timestamp": BASE_TS + i, "name": f"page{i % 25}", "data": {"i": i, "path": f"/p/{i}"}}
        for i in range(count)
    ]
    events.append({"type": "SESSION_END", "timestamp": BASE_TS + count})
    return events


async def main(args: argparse.Namespace, db: Database) -> None:
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

            async def client() -> None:
                for _ in range(args.max_requests):
                    start = time.monotonic()
                    if start >= win[1]:
                        return
                    async with http.get(url) as r:
                        await r.read()
                        status = r.status
                    end = time.monotonic()
                    if win[0] <= end < win[1]:
                        counts["ok" if status == 200 else "bad"] += 1
                        rec.add(end - start)

            await asyncio.gather(meter.span(*win), *(client() for _ in range(args.clients)))
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
