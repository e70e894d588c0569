"""SSE clients on ``GET /database_events``, run in child processes so parsing never shares
a core's event loop with the writer. The parent talks to each child over a Pipe:

    child -> ("connected", n_ok, n_failed, first_failure)
    parent -> ("window", t0, t1)     child -> ("result", {...}) once t1 (+ grace) has passed
    parent -> ("close",)             child closes its streams and exits

Times are ``time.time()`` (shared by all processes on the machine). Every child also
has an absolute deadline after which it exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import orjson

from .service import run_loop
from .stats import Recorder

# data.t at the end of a data line: the writers of bench/fanout.py send data {"t": <float>}, and data
# is the last field of an entry (app/stream/sse_format.py).
_SENT = re.compile(rb'\{"t":([0-9.eE+-]+)\}\}\n')

GRACE = 3.0  # seconds after a window closes during which its late deliveries are still awaited


@dataclass
class SseStats:
    connected: int = 0
    failed: int = 0
    first_failure: str | None = None
    deliveries: int = 0  # messages whose data.t (writer's send time) falls inside the window
    latency: Recorder = field(default_factory=Recorder)
    resets: int = 0  # "event: reset" messages
    ended: int = 0  # streams the server ended (dropped clients), reconnected with Last-Event-ID
    last_receipt: float = 0.0  # time.time() of the last delivery counted (burst mode's end of the burst)


class _Group:
    def __init__(self, url: str, count: int, concurrency: int, deadline: float, by_receipt: bool) -> None:
        self.url, self.count, self.deadline, self.by_receipt = url, count, deadline, by_receipt
        self.gate = asyncio.Semaphore(concurrency)
        self.stats = SseStats()
        self.window = (float("inf"), float("inf"))
        self.settled = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def _settle(self) -> None:
        if self.stats.connected + self.stats.failed >= self.count:
            self.settled.set()

    async def _stream(self, http: aiohttp.ClientSession, idx: int) -> None:
        last_id: str | None = None
        first = True
        for _attempt in range(1000):  # reconnects are bounded in number as well as in time
            if time.time() >= self.deadline:
                return
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                if first:
                    await self.gate.acquire()
                resp = await http.get(self.url, headers=headers)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if first:
                    self.gate.release()
                    self.stats.failed += 1
                    self.stats.first_failure = self.stats.first_failure or repr(exc)
                    self._settle()
                    return
                await asyncio.sleep(0.5)
                continue
            async with resp:
                if first:
                    self.gate.release()
                    if resp.status != 200:
                        self.stats.failed += 1
                        body = (await resp.text())[:200]
                        self.stats.first_failure = self.stats.first_failure or f"HTTP {resp.status}: {body}"
                        self._settle()
                        return
                    self.stats.connected += 1
                    self._settle()
                    first = False
                elif resp.status != 200:  # a reconnect refused: stop this client
                    self.stats.ended += 1
                    return
                last_id = await self._read(resp, last_id)
            self.stats.ended += 1
            await asyncio.sleep(0.2)

    async def _read(self, resp: aiohttp.ClientResponse, last_id: str | None) -> str | None:
        buf = b""
        reset = False
        st = self.stats
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async for chunk in resp.content.iter_any():
                now = time.time()
                if not buf and chunk.endswith(b"\n\n") and b"event:" not in chunk and b"\r" not in chunk:
                    # The common case, whole plain messages: scanned without a per-line loop, so the
                    # client's own CPU (which shares the cores) adds less to the latency it measures.
                    last_id = self._plain(chunk, now, last_id)
                    continue
                lines = (buf + chunk).split(b"\n")
                buf = lines.pop()
                for raw in lines:
                    line = raw[:-1] if raw.endswith(b"\r") else raw
                    if not line:
                        reset = False
                    elif line.startswith(b"data:"):
                        if reset:
                            continue
                        if self.by_receipt:
                            st.deliveries += self.window[0] <= now < self.window[1]
                            continue
                        if b'"t":' not in line:
                            continue
                        msg = orjson.loads(line[5:])
                        sent = (msg.get("data") or {}).get("t") if isinstance(msg, dict) else None
                        if isinstance(sent, float) and self.window[0] <= sent < self.window[1]:
                            st.deliveries += 1
                            st.latency.add(now - sent)
                            st.last_receipt = now
                    elif line.startswith(b"id:"):
                        last_id = line[3:].strip().decode()
                    elif line.startswith(b"event:"):
                        reset = line[6:].strip() == b"reset"
                        st.resets += reset
        return last_id

    def _plain(self, chunk: bytes, now: float, last_id: str | None) -> str | None:
        """Whole messages without `event:` or CR: what the per-line loop of _read counts, found by regex."""
        st = self.stats
        t0, t1 = self.window
        if self.by_receipt:
            if t0 <= now < t1:
                st.deliveries += chunk.count(b"\ndata:") + chunk.startswith(b"data:")
        else:
            for raw in _SENT.findall(chunk):
                sent = float(raw)
                if t0 <= sent < t1:
                    st.deliveries += 1
                    st.latency.add(now - sent)
                    st.last_receipt = now
        at = chunk.rfind(b"\nid:") + 1 or (0 if chunk.startswith(b"id:") else -1)
        if at < 0:
            return last_id
        return chunk[at + 3 : chunk.index(b"\n", at)].strip().decode()

    async def run(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=None)
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            self.tasks = [asyncio.create_task(self._stream(http, i)) for i in range(self.count)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.settled.wait(), timeout=max(1.0, self.deadline - time.time()))
            st = self.stats
            conn.send(("connected", st.connected, st.failed, st.first_failure))
            while time.time() < self.deadline:
                ready = await loop.run_in_executor(None, conn.poll, min(1.0, max(0.0, self.deadline - time.time())))
                if not ready:
                    continue
                cmd = conn.recv()
                if cmd[0] != "window":
                    break
                st.deliveries, st.latency, st.resets, st.ended, st.last_receipt = 0, Recorder(), 0, 0, 0.0
                self.window = (cmd[1], cmd[2])
                await asyncio.sleep(max(0.0, cmd[2] + GRACE - time.time()))
                conn.send(("result", _pack(st)))
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)


def _pack(st: SseStats) -> dict[str, Any]:
    return {
        "deliveries": st.deliveries,
        "latency": st.latency.samples.tobytes(),
        "latency_count": st.latency.count,
        "resets": st.resets,
        "ended": st.ended,
        "last_receipt": st.last_receipt,
    }


def _child(conn: Connection, url: str, count: int, concurrency: int, deadline: float, by_receipt: bool) -> None:
    run_loop(_Group(url, count, concurrency, deadline, by_receipt).run(conn))


class SseClients:
    """``total`` SSE clients spread over ``procs`` child processes (parent side)."""

    def __init__(
        self,
        url: str,
        total: int,
        procs: int = 1,
        concurrency: int = 200,
        max_seconds: float = 3600,
        by_receipt: bool = False,
    ) -> None:
        """``by_receipt``: count every message received in the window (no latency), instead of
        the messages whose ``data.t`` (the writer's send time) falls in it."""
        self.by_receipt = by_receipt
        self.url, self.total, self.procs = url, total, max(1, min(procs, total or 1))
        self.concurrency, self.deadline = concurrency, time.time() + max_seconds
        self.pipes: list[Connection] = []
        self.children: list[Any] = []

    async def connect(self, wait_s: float) -> SseStats:
        ctx = mp.get_context("spawn")
        share = [self.total // self.procs + (1 if i < self.total % self.procs else 0) for i in range(self.procs)]
        for n in share:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_child, args=(child, self.url, n, max(1, self.concurrency // self.procs), self.deadline, self.by_receipt)
            )
            proc.start()
            self.pipes.append(parent)
            self.children.append(proc)
        out = SseStats()
        for msg in await self._gather(wait_s):
            if msg is None:
                out.failed += 1
                out.first_failure = out.first_failure or "a client process did not report in time"
                continue
            _, ok, failed, first = msg
            out.connected += ok
            out.failed += failed
            out.first_failure = out.first_failure or first
        return out

    async def _gather(self, wait_s: float) -> list[Any]:
        loop = asyncio.get_running_loop()

        def recv(pipe: Connection) -> Any:
            return pipe.recv() if pipe.poll(wait_s) else None

        with ThreadPoolExecutor(max_workers=len(self.pipes) or 1) as pool:
            return list(await asyncio.gather(*(loop.run_in_executor(pool, recv, p) for p in self.pipes)))

    async def measure(self, t0: float, t1: float) -> SseStats:
        """Ask every child for the deliveries it receives between wall-clock ``t0`` and ``t1``."""
        for pipe in self.pipes:
            pipe.send(("window", t0, t1))
        out = SseStats()
        for msg in await self._gather(max(0.0, t1 - time.time()) + GRACE + 30):
            if msg is None:
                continue
            res = msg[1]
            out.deliveries += res["deliveries"]
            rec = Recorder()
            rec.samples.frombytes(res["latency"])
            rec.count = res["latency_count"]
            out.latency.merge(rec)
            out.resets += res["resets"]
            out.ended += res["ended"]
            out.last_receipt = max(out.last_receipt, res["last_receipt"])
        return out

    async def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send(("close",))
        loop = asyncio.get_running_loop()
        for proc in self.children:
            await loop.run_in_executor(None, proc.join, 30)
            if proc.is_alive():
                proc.terminate()
                await loop.run_in_executor(None, proc.join, 5)
        self.pipes, self.children = [], []
