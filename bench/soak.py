"""``python -m bench soak``: M minutes at half load; server RSS at start and end (no leak = flat)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time

from . import wsload
from .ingest import ingest_row, phase
from .report import Row, emit, table
from .service import Database, Meter, mib, raise_fd_limit, service
from .sse import SseClients


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    p.add_argument("--rate", type=float, default=None, help="events/s; default: half of a 10 s max-throughput probe")
    p.add_argument("--clients", type=int, default=20, help="WebSocket connections (default 20)")
    p.add_argument("--batch", type=int, default=100, help="events per frame (default 100)")
    p.add_argument("--sessions", type=int, default=1000, help="sessions the events are spread over (default 1000)")
    p.add_argument("--window", type=int, default=8, help="frames in flight per connection (default 8)")
    p.add_argument("--sse-clients", type=int, default=100, help="SSE clients following one session during the soak")
    p.add_argument("--sample-seconds", type=float, default=30.0, help="RSS sampling interval (default 30)")


async def main(args: argparse.Namespace, db: Database) -> None:
    raise_fd_limit(args.sse_clients + 4096)
    base = wsload.IngestConfig(
        clients=args.clients, batch=args.batch, sessions=args.sessions, window=args.window, warmup=args.warmup
    )
    sids = wsload.session_ids(base.sessions)
    notes: list[str] = []
    samples: list[Row] = []
    async with service(db, workers=args.workers, extra_args=args.server_arg) as svc:
        rate = args.rate
        if rate is None:
            probe, _ = await phase(svc, db, dataclasses.replace(base, duration=10.0, warmup=2.0), sids)
            rate = max(1.0, probe.events_per_s / 2)
            notes.append(f"Half load: a 10 s probe reached {probe.events_per_s:,.0f} events/s; soaking at {rate:,.0f}.")
        cfg = dataclasses.replace(base, rate=rate, duration=args.minutes * 60)
        sse = SseClients(
            f"{svc.http}/database_events?session_id={sids[0]}",
            args.sse_clients,
            max_seconds=cfg.warmup + cfg.duration + 120,
            by_receipt=True,
        )
        try:
            st = await sse.connect(wait_s=60 + args.sse_clients / 100) if args.sse_clients else None
            t0 = time.monotonic()
            win = (t0 + cfg.warmup, t0 + cfg.warmup + cfg.duration)
            wall = time.time() - t0
            measuring = asyncio.create_task(sse.measure(win[0] + wall, win[1] + wall)) if st else None

            async def sample() -> None:
                steps = int(cfg.duration / args.sample_seconds) + 1
                for k in range(steps + 1):
                    due = min(win[0] + k * args.sample_seconds, win[1] - 0.5)
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    samples.append({"t s": round(due - win[0]), "server RSS MiB": mib(svc.tree.rss_bytes())})
                    if due >= win[1] - 0.5:
                        return

            meter = Meter(svc.tree, db.tree)
            sampler = asyncio.create_task(sample())
            res = await wsload.run(svc.ws, cfg, sids, meter)
            await sampler
            got = await measuring if measuring else None
        finally:
            await sse.close()
        row = ingest_row("soak", cfg, args.workers, res, meter.result, svc.tree.rss_bytes())
        start_rss, end_rss = samples[0]["server RSS MiB"], samples[-1]["server RSS MiB"]
        row.update(
            {
                "RSS start MiB": start_rss,
                "RSS end MiB": end_rss,
                "RSS max MiB": max((s["server RSS MiB"] or 0) for s in samples),
                "growth %": None if not start_rss or end_rss is None else 100.0 * (end_rss - start_rss) / start_rss,
            }
        )
        if got is not None and st is not None:
            row.update(
                {
                    "SSE clients": st.connected,
                    "SSE deliveries/s": got.deliveries / cfg.duration,
                    "SSE dropped/reset": f"{got.ended}/{got.resets}",
                }
            )
        if res.first_error:
            notes.append(f"{res.errors} errors, first: `{res.first_error}`")
    notes.append("Server RSS over time (sum over the app's process tree):\n\n" + table(samples))
    emit(f"soak ({args.minutes:g} min at {rate:,.0f} events/s)", [row], notes)
