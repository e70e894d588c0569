"""Load under faults, and the one checker of what must hold afterwards.

Uploaders record what each batch was answered; stream followers record every
message they got across reconnects; `check` compares both with the database:
- every ACKed batch is stored exactly once (a duplicate ACK too: once, not twice);
- nothing of an ERROR-answered batch is stored;
- a batch whose answer never came (connection or process gone) is stored 0 or 1
  times, never partly, never twice; one with a batch_id is resent until answered;
- every follower saw every row once and in order, or got an explicit reset that
  covers what it did not see;
- no service process exited.
Each event carries its batch's marker in data.m, so the database says exactly which
batches it holds and how many times.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import asyncpg

from test.support.clients import new_session
from test.support.service import Service

TS = 1_700_000_000_000
_markers = itertools.count()


@dataclass
class Ledger:
    acked: dict[str, int] = field(default_factory=dict)  # marker -> events in the batch
    errored: dict[str, str] = field(default_factory=dict)  # marker -> error code
    in_doubt: dict[str, int] = field(default_factory=dict)  # no answer and not resent
    errors: Counter[str] = field(default_factory=Counter)
    resends: int = 0

    @property
    def sent(self) -> int:
        return len(self.acked) + len(self.errored) + len(self.in_doubt)


def _batch(marker: str, size: int, session: str, with_id: bool) -> str:
    events = [
        {"type": "EVENT", "session_id": session, "timestamp": TS + i, "name": f"load-{i % 3}", "data": {"m": marker, "i": i}}
        for i in range(size)
    ]
    return json.dumps({"batch_id": marker, "events": events} if with_id else {"events": events})


async def upload_until(
    ledger: Ledger, services: list[Service], stop: asyncio.Event, uploader: int, rng: random.Random, depth: int = 4
) -> None:
    """One relay-mode uploader until stop: batches of 1-20 events, half with a batch_id,
    up to `depth` frames awaiting their answers (answers come in order).

    `unavailable` and lost connections are what a careful client sees under faults:
    a batch with a batch_id is resent until it is answered; one without is not
    (its answer, or its absence, is what the checker holds the service to).
    """
    session = new_session()
    resend: deque[tuple[str, str, int, bool]] = deque()  # (marker, frame, size, with_id)
    doubted: set[str] = set()  # sent once without an answer: a later ERROR does not clear it

    def next_batch() -> tuple[str, str, int, bool] | None:
        if resend:
            ledger.resends += 1
            return resend.popleft()
        if stop.is_set():
            return None
        marker = f"u{uploader}-{next(_markers)}"
        size, with_id = rng.randint(1, 20), rng.random() < 0.5
        return (marker, _batch(marker, size, session, with_id), size, with_id)

    while not stop.is_set() or resend:
        svc = rng.choice(services)
        inflight: deque[tuple[str, str, int, bool]] = deque()
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(f"{svc.ws_url}/ws") as ws:
                while True:
                    while len(inflight) < depth and (batch := next_batch()) is not None:
                        await ws.send_str(batch[1])
                        inflight.append(batch)
                    if not inflight:
                        break
                    reply = json.loads(await ws.receive_str(timeout=30))
                    marker, frame, size, with_id = inflight.popleft()
                    if reply["type"] == "ACK":
                        ledger.acked[marker] = size
                        ledger.in_doubt.pop(marker, None)
                        continue
                    ledger.errors[reply["error"]] += 1
                    if reply["error"] == "unavailable" and with_id and time.monotonic() < _resend_deadline(stop):
                        resend.append((marker, frame, size, with_id))
                        await asyncio.sleep(0.05)
                    elif marker in doubted:
                        ledger.in_doubt[marker] = size
                    else:
                        ledger.errored[marker] = reply["error"]
        except (TimeoutError, OSError, aiohttp.ClientError, TypeError, ValueError):
            # The connection or the process went away (receive_str raises TypeError
            # on a close frame) with batches unanswered.
            ledger.errors["connection_lost"] += 1
            for marker, frame, size, with_id in inflight:
                doubted.add(marker)
                if with_id and time.monotonic() < _resend_deadline(stop):
                    resend.append((marker, frame, size, with_id))
                else:
                    ledger.in_doubt[marker] = size
            await asyncio.sleep(0.2)
        if resend and time.monotonic() > _resend_deadline(stop):
            for marker, _frame, size, _with_id in resend:
                ledger.in_doubt[marker] = size
            resend.clear()


_DEADLINES: dict[int, float] = {}


def _resend_deadline(stop: asyncio.Event) -> float:
    """Resends go on for 30 s after stop at most: a test must end even if the service never recovers."""
    if stop.is_set():
        return _DEADLINES.setdefault(id(stop), time.monotonic() + 30)
    return float("inf")


@dataclass
class Follower:
    """An SSE client that resumes with Last-Event-ID after every end, as EventSource does."""

    service: Service
    start: int  # resumes from here: everything after it must arrive
    resume_every: int = 0  # close and resume after this many messages (0: only when the server ends the stream)
    seen: list[int] = field(default_factory=list)
    resets: list[tuple[int, int]] = field(default_factory=list)  # (last id before, reset id)
    reconnects: int = 0
    problems: list[str] = field(default_factory=list)
    _last: int = 0

    async def run(self, until: asyncio.Event, target: list[int]) -> None:
        """Follow until `until` is set and every position up to target[0] was seen."""
        self._last = self.start
        while not (until.is_set() and target and self._last >= target[0]):
            try:
                await self._one_stream(until, target)
            except (TimeoutError, OSError, aiohttp.ClientError, ValueError):
                pass
            self.reconnects += 1
            await asyncio.sleep(0.1)

    async def _one_stream(self, until: asyncio.Event, target: list[int]) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=20)
        headers = {"Last-Event-ID": str(self._last)}
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"{self.service.url}/database_events", headers=headers) as response,
        ):
            if response.status != 200:
                await asyncio.sleep(0.2)
                return
            buffer = b""
            count = 0
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    lines = [line for line in block.decode().split("\n") if ": " in line and not line.startswith(":")]
                    fields = dict(line.split(": ", 1) for line in lines)
                    if "id" not in fields:
                        continue
                    position = int(fields["id"])
                    if fields.get("event") == "reset":
                        self.resets.append((self._last, position))
                        self._last = position
                        continue
                    if position <= self._last:
                        self.problems.append(f"position {position} after {self._last} (duplicate or out of order)")
                    self.seen.append(position)
                    self._last = max(self._last, position)
                    count += 1
                if until.is_set() and target and self._last >= target[0]:
                    return
                if self.resume_every and count >= self.resume_every:
                    return


async def stored(conn: asyncpg.Connection, since: int) -> tuple[Counter[str], list[int]]:
    rows = await conn.fetch("SELECT position, data::jsonb->>'m' AS m FROM events WHERE position > $1 ORDER BY position", since)
    return Counter(r["m"] for r in rows if r["m"] is not None), [r["position"] for r in rows]


async def check(
    conn: asyncpg.Connection,
    ledger: Ledger,
    followers: list[Follower],
    services: list[Service],
    since: int,
    *,
    allow_exited: tuple[Service, ...] = (),
) -> dict[str, object]:
    """Assert every invariant; return a summary for the test's own assertions and messages."""
    counts, positions = await stored(conn, since)
    problems: list[str] = []
    for marker, size in ledger.acked.items():
        if counts[marker] != size:
            problems.append(f"ACKed batch {marker} of {size} events stored {counts[marker]} times-events")
    for marker, code in ledger.errored.items():
        if counts[marker]:
            problems.append(f"batch {marker} answered {code} but {counts[marker]} of its events are stored")
    for marker, size in ledger.in_doubt.items():
        if counts[marker] not in (0, size):
            problems.append(f"unanswered batch {marker} of {size} events stored {counts[marker]} events")
    known = set(ledger.acked) | set(ledger.errored) | set(ledger.in_doubt)
    for marker in counts.keys() - known:
        problems.append(f"stored batch {marker} that no uploader recorded sending")
    for follower in followers:
        problems += [f"follower of {follower.service.port}: {p}" for p in follower.problems]
        excused: list[tuple[int, int]] = follower.resets
        expected = [p for p in positions if p > follower.start and not any(a < p <= b for a, b in excused)]
        got = [p for p in follower.seen if not any(a < p <= b for a, b in excused)]
        if got != expected:
            missing = sorted(set(expected) - set(got))
            extra = [p for p, n in Counter(got).items() if n > 1]
            problems.append(
                f"follower of {follower.service.port} from {follower.start}: {len(got)} rows seen, {len(expected)} expected, "
                f"missing {missing[:5]}{'…' if len(missing) > 5 else ''} ({len(missing)}), repeated {extra[:5]}, "
                f"resets {follower.resets}"
            )
    for svc in services:
        if svc not in allow_exited and svc.process is not None and svc.process.poll() is not None:
            problems.append(f"service on {svc.port} exited with {svc.process.returncode}")
    assert not problems, "\n".join(problems[:30])
    return {
        "acked": len(ledger.acked),
        "errored": dict(ledger.errors),
        "in_doubt": len(ledger.in_doubt),
        "resends": ledger.resends,
        "rows": len(positions),
        "reconnects": sum(f.reconnects for f in followers),
        "resets": sum(len(f.resets) for f in followers),
    }


async def head(conn: asyncpg.Connection) -> int:
    """The newest position, or the one before the first when there is none."""
    return await conn.fetchval("SELECT coalesce(max(position), (SELECT base - 1 FROM stream_meta)) FROM events")


async def run_load(
    services: list[Service],
    url: str,
    inject: Callable[[float], Awaitable[None]],
    *,
    uploaders: int = 5,
    seconds: float = 6.0,
) -> dict[str, object]:
    """Uploaders and followers (two per process, one of them resuming every 97 rows) around inject()."""
    rng = random.Random(9)
    conn = await asyncpg.connect(url)
    try:
        since = await head(conn)
    finally:
        await conn.close()
    ledger = Ledger()
    stop, done = asyncio.Event(), asyncio.Event()
    followers = [Follower(svc, since, resume_every=every) for svc in services for every in (0, 97)]
    target: list[int] = []
    upload_tasks = [
        asyncio.create_task(upload_until(ledger, services, stop, i, random.Random(rng.random()))) for i in range(uploaders)
    ]
    follow_tasks = [asyncio.create_task(f.run(done, target)) for f in followers]
    try:
        await inject(seconds)
        stop.set()
        async with asyncio.timeout(60):
            await asyncio.gather(*upload_tasks)
        conn = await asyncpg.connect(url)
        target.append(await head(conn))
        done.set()
        async with asyncio.timeout(60):
            await asyncio.gather(*follow_tasks)
    finally:
        for task in upload_tasks + follow_tasks:
            task.cancel()
    try:
        summary = await check(conn, ledger, followers, services, since)
    finally:
        await conn.close()
    assert summary["acked"] and summary["rows"], summary
    return summary
