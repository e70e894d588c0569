"""The transport: one WebSocket to /ws (relay mode, no sessionId), kept up for the outbox.

It sends the outbox's sealed batches in order with a few frames in flight, and matches
each answer to its frame by position (the server answers frames in order, numbering
them from 1 per connection; a `rate_limited` answer has no batch_id, so the position
is the key). On a closed or failed connection it reconnects with exponential backoff
and full jitter, then resends every unsettled batch in order. A retryable ERROR
(`unavailable`, `rate_limited`, `shutting_down`, `over_capacity`) pauses sending for its
delay, then everything unsettled goes again in order; any other ERROR settles its batch
as dropped and is reported once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from eventservice_client.outbox import Batch, Outbox

log = logging.getLogger("eventservice_client")

RETRYABLE = frozenset({"unavailable", "rate_limited", "shutting_down", "over_capacity"})
CLOSE_MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True, slots=True)
class UploadError:
    """What on_error receives: an ERROR answer that dropped a batch, a refused event, or a refused handshake."""

    error: str
    message: str
    batch_id: str | None = None
    details: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0  # how many events were lost with it
    lines: list[int] | None = None  # an import's line numbers of the batch


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: exponential from `min_ms`, capped at `max_ms`, with full jitter."""

    min_ms: int = 250
    max_ms: int = 30_000

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (1 = the first retry)."""
        ceiling = min(self.max_ms, self.min_ms * 2 ** min(attempt, 30))
        return random.uniform(self.min_ms, max(self.min_ms, ceiling)) / 1000


@dataclass(slots=True)
class Totals:
    """What the server said, summed: for reports (the importer prints them)."""

    acked_batches: int = 0
    accepted: int = 0  # events newly stored
    duplicate_batches: int = 0
    duplicate_events: int = 0  # events of batches the server already had
    dropped_batches: int = 0
    dropped_events: int = 0
    retried: int = 0  # retryable ERROR answers (unavailable, rate_limited, …): their batches went again
    connections: int = 0  # connections opened (1 + reconnects)
    last_ack: float = field(default_factory=time.monotonic)


OnError = Callable[[UploadError], None]
OnAck = Callable[[Batch, int, bool], None]


class Link:
    """Keeps one connection up and the outbox's batches flowing through it; run() until cancelled."""

    def __init__(
        self,
        url: str,
        outbox: Outbox,
        *,
        headers: dict[str, str],
        max_in_flight: int,
        backoff: Backoff,
        on_error: OnError,
        open_timeout: float = 10.0,
        ping_seconds: float = 20.0,
    ) -> None:
        self.url = url
        self.outbox = outbox
        self.headers = headers
        self.max_in_flight = max_in_flight
        self.backoff = backoff
        self.on_error = on_error
        self.open_timeout = open_timeout
        self.ping_seconds = ping_seconds  # a silent network (no RST, no FIN) is noticed within about twice this
        self.totals = Totals()
        self.on_ack: list[OnAck] = []
        self.connected = False
        self._attempt = 0
        self._to_send: deque[Batch] = deque()
        self._in_flight: deque[tuple[int, Batch]] = deque()
        self._frames = 0
        self._wake = asyncio.Event()
        self._rewind = False
        self._hold_until = 0.0
        self._suspects: set[str] = set()  # in flight when the server closed with 1009: sent one at a time
        self._refusal: str | None = None  # the last handshake refusal reported (reported once per streak)
        outbox.listeners.append(self._sealed)

    def _sealed(self, batch: Batch) -> None:
        self._to_send.append(batch)
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                async with connect(
                    self.url,
                    additional_headers=self.headers,
                    open_timeout=self.open_timeout,
                    ping_interval=self.ping_seconds,
                    ping_timeout=self.ping_seconds,
                    close_timeout=self.ping_seconds,  # a silent peer never answers the closing handshake either
                    max_size=4 * 1024 * 1024,
                    compression=None,
                ) as ws:
                    self._refusal = None
                    self.totals.connections += 1
                    await self._serve(ws)
            except InvalidStatus as exc:
                self._refused(exc)
            except ConnectionClosed as exc:
                self._closed(exc)
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                log.info("eventservice connection failed: %s", exc)
            except Exception:  # a bug or an answer we cannot read: reconnect and resend, never stop uploading
                log.exception("eventservice connection broke")
            finally:
                self.connected = False
            self._attempt += 1
            await asyncio.sleep(self.backoff.delay(self._attempt))

    async def _serve(self, ws: ClientConnection) -> None:
        """One connection: everything unsettled goes first, in order; then what gets sealed."""
        self.connected = True
        self._frames = 0
        self._in_flight.clear()
        # The sender starts by rewinding: everything unsettled, in order, once a pending
        # retry delay (rate_limited, unavailable) has passed.
        self._to_send.clear()
        self._rewind = True
        sender = asyncio.create_task(self._send(ws))
        try:
            await self._receive(ws)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def _send(self, ws: ClientConnection) -> None:
        while True:
            self._wake.clear()
            if self._rewind:
                if not self._in_flight:
                    wait = self._hold_until - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                        continue
                    self._to_send = deque(self.outbox.unsettled())
                    self._rewind = False
                    continue
            elif self._to_send and len(self._in_flight) < self._window():
                batch = self._to_send.popleft()
                if batch.batch_id in self.outbox.sealed:
                    self._frames += 1
                    self._in_flight.append((self._frames, batch))
                    await ws.send(batch.frame())
                continue
            await self._wake.wait()

    def _window(self) -> int:
        return 1 if self._suspects else self.max_in_flight

    async def _receive(self, ws: ClientConnection) -> None:
        async for message in ws:
            answer = json.loads(message)
            if not self._in_flight:
                log.warning("eventservice answer with no frame in flight: %.200s", message)
                return
            number, batch = self._in_flight.popleft()
            self._wake.set()
            if answer.get("batch") != number:
                log.warning("eventservice answered frame %s, expected %s: reconnecting", answer.get("batch"), number)
                return
            if answer.get("type") == "ACK":
                self._acked(batch, answer)
            else:
                self._errored(batch, answer)

    def _acked(self, batch: Batch, answer: dict[str, Any]) -> None:
        if self.outbox.settle(batch.batch_id) is None:
            return
        self._attempt = 0
        self._suspects.discard(batch.batch_id)
        totals = self.totals
        totals.last_ack = time.monotonic()
        totals.acked_batches += 1
        duplicate = bool(answer.get("duplicate"))
        accepted = int(answer.get("accepted", 0))
        totals.accepted += accepted
        if duplicate:
            totals.duplicate_batches += 1
            totals.duplicate_events += len(batch.events)
        for listener in self.on_ack:
            listener(batch, accepted, duplicate)

    def _errored(self, batch: Batch, answer: dict[str, Any]) -> None:
        code = str(answer.get("error", "unknown"))
        if code in RETRYABLE:
            self.totals.retried += 1
            retry_ms = answer.get("retry_after_ms")
            if isinstance(retry_ms, int) and retry_ms >= 0:
                delay = retry_ms / 1000
            else:
                self._attempt += 1
                delay = self.backoff.delay(self._attempt)
            self._hold_until = max(self._hold_until, time.monotonic() + delay)
            self._rewind = True
            return
        self._drop(batch, code, str(answer.get("message", "")), list(answer.get("details") or []))

    def _drop(self, batch: Batch, code: str, message: str, details: list[dict[str, Any]]) -> None:
        if self.outbox.settle(batch.batch_id) is None:
            return
        self._suspects.discard(batch.batch_id)
        self.totals.dropped_batches += 1
        self.totals.dropped_events += len(batch.events)
        self.on_error(UploadError(code, message, batch.batch_id, details, len(batch.events), batch.lines))

    def _closed(self, exc: ConnectionClosed) -> None:
        code = exc.rcvd.code if exc.rcvd is not None else None
        if code == CLOSE_MESSAGE_TOO_BIG:
            if len(self._in_flight) == 1 and self._suspects:
                # Alone in flight and the frame was too big: this batch is the one.
                batch = self._in_flight[0][1]
                self._drop(batch, "too_large", "The server closed the connection (1009): this batch's frame is too big.", [])
            else:
                self._suspects = {batch.batch_id for _, batch in self._in_flight}
        log.info("eventservice connection closed: %s", exc)

    def _refused(self, exc: InvalidStatus) -> None:
        status = exc.response.status_code
        try:
            body = json.loads(exc.response.body or b"{}")
        except ValueError:
            body = {}
        code = str(body.get("error") or f"http_{status}")
        message = str(body.get("message") or f"The server refused the WebSocket handshake with HTTP {status}.")
        log.info("eventservice refused the connection: HTTP %s %s", status, code)
        if status in (400, 401, 403, 404) and self._refusal != code:
            self._refusal = code
            self.on_error(UploadError(code, message))
