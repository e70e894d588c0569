"""``python -m bench fanout``: SSE deliveries/s, send-to-client latency, RSS per idle client."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass

import aiohttp
import orjson

from .report import Row, disturbed, emit
from .service import Database, Meter, Service, mib, raise_fd_limit, service
from .sse import GRACE, SseClients
from .wsload import acquire, session_ids


def _cpu_columns(m: dict[str, float | None], deliveries: int) -> dict[str, object]:
    """The CPU columns every fan-out row carries, and the server's CPU per delivery."""
    server = m.get("server")
    return {
        "server CPU s": server,
        "PG CPU s": m.get("db"),
        "client CPU s": m.get("client"),
        "other CPU s": m.get("other"),
        "disturbed": disturbed(m),
        "server µs/delivery": server / deliveries * 1e6 if server is not None and deliveries else None,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=1000, help="SSE clients (default 1000; 10000 works)")
    p.add_argument("--rates", default="20", help="comma-separated writer rates, events/s, one step each (default 20)")
    p.add_argument("--max", action="store_true", help="ramp: double the rate each step until clients fall behind (max 10 steps)")
    p.add_argument("--client-procs", type=int, default=1, help="processes the SSE clients are spread over (default 1)")
    p.add_argument("--connect-concurrency", type=int, default=200, help="connection attempts in flight (default 200)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds idle before measuring RSS (default 3)")
    p.add_argument(
        "--burst",
        type=int,
        default=0,
        metavar="EVENTS",
        help="burst mode: instead of --rates, write EVENTS events as fast as possible (every frame sent at once, "
        "ACKs awaited afterwards), --bursts times; deliveries/s over first send to last receipt (default 0: off)",
    )
    p.add_argument("--bursts", type=int, default=3, help="bursts in burst mode, one row each (default 3)")
    p.add_argument("--burst-frame", type=int, default=1, help="events per frame in burst mode (default 1)")


@dataclass
class WriterResult:
    acked: int = 0
    in_window: int = 0  # events sent inside the measured window and acknowledged
    errors: int = 0
    first_error: str | None = None


async def write_at_rate(ws_base: str, sid: str, rate: float, start: float, window: tuple[float, float]) -> WriterResult:
    """One WebSocket writer: ``rate`` events/s from wall-clock ``start`` to the window's end, ``data = {"t": send time}``."""
    out = WriterResult()
    tick = max(0.01, 1.0 / rate)
    per_tick = rate * tick
    sem = asyncio.Semaphore(16)
    pending: list[tuple[int, bool]] = []  # (events, inside the window) per unacknowledged frame
    done = asyncio.Event()
    url = f"{ws_base}/ws?sessionId={sid}"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=4 * 2**20) as ws:

        async def receive() -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT or not pending:
                    break
                n, inside = pending.pop(0)
                sem.release()
                ack = orjson.loads(msg.data)
                if ack.get("type") == "ACK":
                    out.acked += n
                    out.in_window += n if inside else 0
                else:
                    out.errors += 1
                    out.first_error = out.first_error or str(msg.data)[:300]
                if done.is_set() and not pending:
                    return

        receiver = asyncio.create_task(receive())
        owed = 0.0
        for k in range(int((window[1] - start) / tick) + 1):
            due = start + k * tick
            if due >= window[1] or receiver.done():
                break
            await asyncio.sleep(max(0.0, due - time.time()))
            owed += per_tick
            n = int(owed)
            if not n:
                continue
            owed -= n
            if not await acquire(sem, window[1] - time.time()):
                break  # the server stopped answering: give up at the window's end
            now = time.time()
            ts = int(now * 1000)
            frame = [{"type": "EVENT", "timestamp": ts, "name": "fanout", "data": {"t": now}}] * n
            pending.append((n, window[0] <= now < window[1]))
            await ws.send_str(orjson.dumps(frame).decode())
        done.set()
        if not pending:
            receiver.cancel()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(receiver, timeout=15)
    return out


async def write_burst(ws_base: str, sid: str, events: int, per_frame: int, start: float) -> WriterResult:
    """One WebSocket writer: ``events`` events in frames of ``per_frame``, all sent from wall-clock ``start`` on
    without waiting for an ACK (the server's in-flight bound paces it), ``data = {"t": send time}``."""
    out = WriterResult()
    url = f"{ws_base}/ws?sessionId={sid}"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=4 * 2**20) as ws:
        await asyncio.sleep(max(0.0, start - time.time()))
        frames = 0
        for first in range(0, events, per_frame):
            now = time.time()
            n = min(per_frame, events - first)
            frame = [{"type": "EVENT", "timestamp": int(now * 1000), "name": "fanout", "data": {"t": now}}] * n
            await ws.send_str(orjson.dumps(frame).decode())
            frames += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    ack = orjson.loads(msg.data)
                    if ack.get("type") == "ACK":
                        out.acked += ack.get("accepted", 0)
                    else:
                        out.errors += 1
                        out.first_error = out.first_error or str(msg.data)[:300]
                    frames -= 1
                    if not frames:
                        break
    out.in_window = out.acked
    return out


async def run_bursts(args: argparse.Namespace, svc: Service, db: Database, clients: SseClients, connected: int) -> list[Row]:
    """Burst mode: --bursts bursts of --burst events, one row each (deliveries/s from first send to last receipt)."""
    rows: list[Row] = []
    sid = session_ids(1, seed=8)[0]
    for k in range(args.bursts):
        start = time.time() + 0.5
        win = (start, start + 1.0)  # every event of the burst is sent inside it (the SSE clients count by data.t)
        meter = Meter(svc.tree, db.tree)
        metering = asyncio.create_task(meter.span(win[0], win[1] + GRACE, clock=time.time))
        measuring = asyncio.create_task(clients.measure(*win))
        w = await write_burst(svc.ws, sid, args.burst, args.burst_frame, start)
        got = await measuring
        await metering
        m = meter.result
        expected = w.acked * connected
        span = got.last_receipt - start if got.deliveries else None
        p50, p99 = got.latency.p50_p99_ms()
        rows.append(
            {
                "step": f"burst {k + 1}: {args.burst} events, {args.burst_frame}/frame",
                "workers": args.workers,
                "clients": connected,
                "burst s": span,
                "deliveries/s": got.deliveries / span if span else None,
                "delivered %": 100.0 * got.deliveries / expected if expected else None,
                "p50 ms": p50,
                "p99 ms": p99,
                **_cpu_columns(m, got.deliveries),
                "dropped/reset": f"{got.ended}/{got.resets}",
                "errors": w.errors,
            }
        )
    return rows


async def main(args: argparse.Namespace, db: Database) -> None:
    raise_fd_limit(args.clients + 4096)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.max:
        rates = [rates[0] * 2**i for i in range(10)]
    rows: list[Row] = []
    notes: list[str] = []
    step_seconds = args.warmup + args.duration + 5
    async with service(db, workers=args.workers, extra_args=args.server_arg) as svc:
        await asyncio.sleep(1.0)
        rss0 = svc.tree.rss_bytes()
        clients = SseClients(
            svc.http + "/database_events",
            args.clients,
            procs=args.client_procs,
            concurrency=args.connect_concurrency,
            max_seconds=120 + args.clients / 50 + step_seconds * len(rates),
        )
        try:
            t_connect = time.monotonic()
            st = await clients.connect(wait_s=60 + args.clients / 100)
            connect_s = time.monotonic() - t_connect
            idle = Meter(svc.tree, db.tree)
            idle.start()
            await asyncio.sleep(args.settle)
            idle.stop()
            rss1 = svc.tree.rss_bytes()
            per_client = None if rss0 is None or rss1 is None or not st.connected else (rss1 - rss0) / st.connected
            rows.append(
                {
                    "step": "idle",
                    "workers": args.workers,
                    "clients": st.connected,
                    "server CPU s": idle.result.get("server"),
                    "PG CPU s": idle.result.get("db"),
                    "other CPU s": idle.result.get("other"),
                    "disturbed": disturbed(idle.result),
                    "server RSS MiB": mib(rss1),
                    "KiB per idle client": None if per_client is None else per_client / 1024,
                    "errors": st.failed,
                }
            )
            notes.append(
                f"{st.connected:,} of {args.clients:,} clients connected in {connect_s:.1f} s; "
                f"server RSS {mib(rss0) or 0:.1f} MiB with none, {mib(rss1) or 0:.1f} MiB with them idle."
            )
            if st.first_failure:
                notes.append(f"{st.failed} clients failed to connect, first: `{st.first_failure}`")
            if args.burst > 0 and st.connected:
                rows += await run_bursts(args, svc, db, clients, st.connected)
                rates = []
            sid = session_ids(1, seed=7)[0]
            for rate in rates:
                if not st.connected:
                    break
                start = time.time() + 0.2
                win = (start + args.warmup, start + args.warmup + args.duration)
                meter = Meter(svc.tree, db.tree)
                metering = asyncio.create_task(meter.span(win[0], win[1], clock=time.time))
                measuring = asyncio.create_task(clients.measure(*win))
                w = await write_at_rate(svc.ws, sid, rate, start, win)
                got = await measuring
                await metering
                m = meter.result
                expected = w.in_window * st.connected
                p50, p99 = got.latency.p50_p99_ms()
                rows.append(
                    {
                        "step": f"{rate:g} ev/s",
                        "workers": args.workers,
                        "clients": st.connected,
                        "written ev/s": w.in_window / args.duration,
                        "deliveries/s": got.deliveries / args.duration,
                        "delivered %": 100.0 * got.deliveries / expected if expected else None,
                        "p50 ms": p50,
                        "p99 ms": p99,
                        **_cpu_columns(m, got.deliveries),
                        "server RSS MiB": mib(svc.tree.rss_bytes()),
                        "dropped/reset": f"{got.ended}/{got.resets}",
                        "errors": w.errors,
                    }
                )
                if w.first_error:
                    notes.append(f"writer at {rate:g} ev/s: {w.errors} errors, first: `{w.first_error}`")
                behind = got.ended or got.resets or (expected and got.deliveries < 0.9 * expected)
                if args.max and (behind or (p99 or 0) > 1000):
                    notes.append(f"Ramp stopped at {rate:g} ev/s: clients fell behind (dropped, reset, <90 % or p99 > 1 s).")
                    break
        finally:
            await clients.close()
    notes.append(
        "Latency: from the writer's `time.time()` in each event's `data.t` (taken just before the WebSocket send, so it "
        "includes the ingest commit) to receipt by the SSE client. Deliveries count messages whose `data.t` falls in the "
        "window (awaited up to 3 s after it); delivered % compares them with events sent in the window and ACKed × clients; "
        "written ev/s is what the writer achieved (below the step's rate when ACKs come back late and its window of 16 "
        "frames is full). "
        "CPU is over the measured window (idle row: over the settle period); client CPU is the load generator (writer + "
        "SSE client processes)."
    )
    if args.burst > 0:
        notes.append(
            "Burst rows: deliveries/s = deliveries of the burst's events / (last receipt - first send); CPU over the "
            f"burst plus {GRACE:g} s."
        )
    emit(f"fanout ({args.duration:g} s measured per step after {args.warmup:g} s warm-up)", rows, notes)
