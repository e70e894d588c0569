"""WebSocket ingest clients: N connections pipelining batches; events/s acknowledged and ACK latency."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from .stats import Recorder

NAMES = [f"name{i:02d}" for i in range(20)]
BASE_TS = 1_700_000_000_000


@dataclass
class IngestConfig:
    clients: int = 20
    batch: int = 100
    sessions: int = 1000
    window: int = 8
    duration: float = 10.0
    warmup: float = 2.0
    rate: float | None = None  # total events/s; None: as fast as ACKs come back
    mode: str = "relay"  # relay: /ws, session_id in every event; session: /ws?sessionId=
    batch_ids: bool = False
    pool: int = 32  # distinct pre-encoded frames per client, sent round-robin
    max_frames: int = 5_000_000  # per client, a bound on top of the duration
    run_token: str = ""  # set by run(): makes batch_ids unique per phase


@dataclass
class IngestResult:
    events: int = 0
    frames: int = 0
    seconds: float = 0.0
    latency: Recorder = field(default_factory=Recorder)
    errors: int = 0
    first_error: str | None = None
    late_frames: int = 0  # frames still unacknowledged at the end

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def session_ids(count: int, seed: int = 0) -> list[str]:
    base = uuid.uuid5(uuid.NAMESPACE_URL, f"eventservice-bench-{seed}-{time.time_ns()}")
    return [str(uuid.uuid5(base, str(i))) for i in range(count)]


def make_event(g: int, i: int, batch: int, sid: str | None) -> dict[str, Any]:
    """Event number ``i`` of a batch: a SESSION_START first, a SESSION_END last, EVENTs between."""
    if i == 0:
        ev: dict[str, Any] = {"type": "SESSION_START", "timestamp": BASE_TS + g}
    elif i == batch - 1 and batch > 2:
        ev = {"type": "SESSION_END", "timestamp": BASE_TS + g}
    else:
        # `i` is unique; `path` one of 50 per name (what a breakdown groups by: --breakdown).
        data = {"i": g, "path": f"/p/{g // len(NAMES) % 50}"}
        ev = {"type": "EVENT", "timestamp": BASE_TS + g, "name": NAMES[g % len(NAMES)], "data": data}
    if sid is not None:
        ev["session_id"] = sid
    return ev


def frame_events(cfg: IngestConfig, sids: list[str], client: int, k: int) -> list[tuple[str, dict[str, Any]]]:
    """(session_id, event) pairs of frame ``k`` of ``client``; relay mode spreads them over all sessions."""
    out = []
    for i in range(cfg.batch):
        g = (client * cfg.pool + k) * cfg.batch + i
        sid = sids[g % len(sids)] if cfg.mode == "relay" else sids[client % len(sids)]
        out.append((sid, make_event(g, i, cfg.batch, sid)))
    return out


def build_frames(cfg: IngestConfig, sids: list[str], client: int) -> list[str]:
    frames = []
    for k in range(cfg.pool):
        events = [ev for _, ev in frame_events(cfg, sids, client, k)]
        frames.append(orjson.dumps(events).decode())
    return frames


async def acquire(sem: asyncio.Semaphore, wait_s: float) -> bool:
    """Take a window slot within ``wait_s`` seconds; False when none came free in time."""
    try:
        await asyncio.wait_for(sem.acquire(), timeout=max(0.001, wait_s))
    except TimeoutError:
        return False
    return True


@dataclass
class _Window:
    start: float
    end: float

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.end


async def _client(
    http: aiohttp.ClientSession,
    url: str,
    frames: list[str],
    idx: int,
    cfg: IngestConfig,
    t0: float,
    win: _Window,
    out: IngestResult,
) -> None:
    sem = asyncio.Semaphore(cfg.window)
    pending: deque[float] = deque()  # send (or scheduled) time of each unacknowledged frame, in order
    state = {"done": False}
    async with http.ws_connect(url, max_msg_size=4 * 2**20, autoping=True) as ws:

        async def receive() -> None:
            expected = 1
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                now = time.monotonic()
                sent = pending.popleft() if pending else now
                sem.release()
                ack = orjson.loads(msg.data)
                if ack.get("type") == "ACK" and ack.get("batch") == expected:
                    if now in win:
                        out.events += int(ack.get("accepted", 0))
                        out.frames += 1
                        out.latency.add(now - sent)
                else:
                    out.errors += 1
                    out.first_error = out.first_error or msg.data[:300]
                expected += 1
                if state["done"] and not pending:
                    return

        receiver = asyncio.create_task(receive())
        interval = cfg.clients * cfg.batch / cfg.rate if cfg.rate else 0.0
        offset = interval * idx / cfg.clients
        prefix = f'{{"batch_id":"{cfg.run_token}-c{idx}-{{}}","events":'  # unique per run, client and frame
        try:
            for k in range(cfg.max_frames):
                now = time.monotonic()
                if now >= win.end or receiver.done():
                    break
                scheduled = now
                if interval:
                    scheduled = t0 + offset + k * interval
                    if scheduled >= win.end:
                        break
                    if scheduled > now:
                        await asyncio.sleep(scheduled - now)
                if not await acquire(sem, win.end - time.monotonic()):
                    break  # the server stopped answering: give up at the window's end
                if not interval:
                    scheduled = time.monotonic()
                body = frames[k % len(frames)]
                if cfg.batch_ids:
                    body = prefix.replace("{}", str(k)) + body + "}"
                pending.append(scheduled)
                await ws.send_str(body)
        finally:
            state["done"] = True
            if not pending and not receiver.done():
                receiver.cancel()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(receiver, timeout=15.0)
            out.late_frames += len(pending)


async def run(ws_base: str, cfg: IngestConfig, sids: list[str], meter: Any = None) -> IngestResult:
    """One ingest phase: warm-up, then ``duration`` seconds measured (``meter`` started/stopped around it)."""
    out = IngestResult()
    cfg = dataclasses.replace(cfg, run_token=uuid.uuid4().hex[:12])  # fresh batch_ids for every phase
    frames = [build_frames(cfg, sids, c) for c in range(cfg.clients)]
    if cfg.mode == "relay":
        urls = [f"{ws_base}/ws"] * cfg.clients
    else:
        urls = [f"{ws_base}/ws?sessionId={sids[c % len(sids)]}" for c in range(cfg.clients)]
    t0 = time.monotonic()
    win = _Window(t0 + cfg.warmup, t0 + cfg.warmup + cfg.duration)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = [asyncio.create_task(_client(http, urls[c], frames[c], c, cfg, t0, win, out)) for c in range(cfg.clients)]
        metered = asyncio.create_task(meter.span(win.start, win.end)) if meter else None
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if metered:
            await metered
    for res in results:
        if isinstance(res, BaseException):
            out.errors += 1
            out.first_error = out.first_error or f"client failed: {res!r}"
    out.seconds = cfg.duration
    return out


async def upload(ws_base: str, sid: str, events: list[dict[str, Any]], chunk: int = 1000) -> int:
    """Upload ``events`` of one session on ``/ws?sessionId=``; returns the number acknowledged."""
    accepted = 0
    url = f"{ws_base}/ws?sessionId={sid}"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=4 * 2**20) as ws:
        for start in range(0, len(events), chunk):
            await ws.send_str(orjson.dumps(events[start : start + chunk]).decode())
            msg = await ws.receive(timeout=30)
            ack = orjson.loads(msg.data)
            if ack.get("type") != "ACK":
                raise RuntimeError(f"upload refused: {str(msg.data)[:300]}")
            accepted += int(ack.get("accepted", 0))
    return accepted
