"""Rejected batches are kept, not thrown away: a bounded table an operator can read.

Every ERROR answered to a batch (invalid JSON, invalid events, too large, rate
limited, database refusal or outage) becomes one row of `rejected_batches`
(schema/002_rejected_batches.sql): when, which connection and session, the
error code and message, the first REJECTED_MAX_FRAME_BYTES of the frame and the
frame's full size. So a client whose data "disappears" can be debugged from the
server side, and an attack leaves a trace.

Why a queue and one background task, not an INSERT per ERROR on the connection:
- the ERROR is answered at once; a flood of bad frames costs the database one
  batched INSERT per flush, whatever the number of connections;
- memory is bounded: at most QUEUE_LIMIT rows wait in the queue, each at most
  REJECTED_MAX_FRAME_BYTES of frame. When the queue is full the oldest waiting
  row is dropped -- counted in eventservice_rejected_batches_unrecorded_total
  and logged, so even that loss is visible, never silent;
- a database outage does not lose what is queued: the flush is retried with
  backoff, and the queue is flushed once more at shutdown.

The table is pruned to REJECTED_MAX_ROWS, oldest first, in the same transaction
as each flush, so it cannot fill the disk. Every rejected batch is also counted
in eventservice_rejected_batches_total{reason} and gets a log line (at most
LOG_PER_SECOND a second, the rest summed up, so a flood cannot flood the logs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from dataclasses import dataclass

import asyncpg

from app import metrics
from app.background import Background, Loop
from app.store import store

log = logging.getLogger("eventservice.rejected")

QUEUE_LIMIT = 1_000
FLUSH_ROWS = 200
LOG_PER_SECOND = 20
_BACKOFF_MAX = 10.0


@dataclass(frozen=True, slots=True)
class RejectedRow:
    received_at: dt.datetime
    connection: str | None
    session_id: str | None
    batch: int
    batch_id: str | None
    error: str
    message: str
    frame: str
    frame_bytes: int

    def as_record(self) -> tuple[object, ...]:
        return (
            self.received_at,
            self.connection,
            self.session_id,
            self.batch,
            self.batch_id,
            self.error,
            self.message,
            self.frame,
            self.frame_bytes,
        )


def excerpt(frame: str | bytes | None, limit: int) -> tuple[str, int]:
    """(the first `limit` bytes of the frame as storable text, the frame's size in bytes).

    Text frames are valid UTF-8 (the WebSocket layer enforces it); the cut falls on
    a character boundary. Binary frames are shown with undecodable bytes as \\xNN.
    PostgreSQL text cannot hold NUL, so a NUL is written as the JSON escape \\u0000.
    """
    if frame is None:
        return "", 0
    if isinstance(frame, str):
        if frame.isascii():  # O(1) in CPython: no encoding for the common case
            size, head = len(frame), frame[:limit]
        else:
            encoded = frame.encode("utf-8", "surrogatepass")
            size, head = len(encoded), encoded[:limit].decode("utf-8", "ignore")
    else:
        size, head = len(frame), frame[:limit].decode("utf-8", "backslashreplace")
    return head.replace("\x00", "\\u0000"), size


class RejectedRecorder(Background):
    """`async with` it: on exit what is queued is flushed, for at most drain_seconds."""

    # Bounded: shutdown must not hang on a dead database.
    drain_seconds = 5.0

    def __init__(self, pool: asyncpg.Pool, max_rows: int, max_frame_bytes: int) -> None:
        super().__init__()
        self._pool = pool
        self._max_rows = max_rows
        self._max_frame_bytes = max_frame_bytes
        self._queue: deque[RejectedRow] = deque()
        self._log_window = 0.0
        self._logged = 0
        self._suppressed = 0

    def loops(self) -> dict[str, Loop]:
        return {"rejected-recorder": self._run}

    async def _close(self) -> None:
        if self.drained:
            return
        lost = len(self._queue)
        if lost:
            metrics.REJECTED_UNRECORDED.inc(lost)
            log.warning("rejected batches not recorded at shutdown", extra={"count": lost})

    @property
    def pending(self) -> int:
        return len(self._queue)

    def record(
        self,
        *,
        error: str,
        message: str,
        frame: str | bytes | None,
        batch: int,
        batch_id: str | None,
        session_id: str | None,
        connection: str | None,
    ) -> None:
        """Queue one rejected batch. Never blocks and never raises into the ingest path."""
        metrics.REJECTED.labels(error).inc()
        text, size = excerpt(frame, self._max_frame_bytes)
        row = RejectedRow(
            received_at=dt.datetime.now(dt.UTC),
            connection=connection,
            session_id=session_id,
            batch=batch,
            batch_id=batch_id,
            error=error,
            message=message[:1000],
            frame=text,
            frame_bytes=size,
        )
        if len(self._queue) >= QUEUE_LIMIT:
            self._queue.popleft()
            metrics.REJECTED_UNRECORDED.inc()
            self._log(logging.WARNING, "rejected batch queue full: oldest waiting row dropped", {"limit": QUEUE_LIMIT})
        self._queue.append(row)
        self._wake.set()
        self._log(
            logging.INFO,
            "batch rejected",
            {"conn": connection, "batch": batch, "error": error, "frame_bytes": size},
        )

    def _log(self, level: int, message: str, fields: dict[str, object]) -> None:
        now = time.monotonic()
        if now - self._log_window >= 1.0:
            if self._suppressed:
                log.warning("rejected batch log lines suppressed", extra={"count": self._suppressed})
            self._log_window, self._logged, self._suppressed = now, 0, 0
        if self._logged >= LOG_PER_SECOND:
            self._suppressed += 1
            return
        self._logged += 1
        log.log(level, message, extra=fields)

    async def _run(self) -> None:
        backoff = 0.1
        while await self._until(lambda: bool(self._queue)):
            rows = [self._queue[i] for i in range(min(FLUSH_ROWS, len(self._queue)))]
            try:
                await self._flush(rows)
            except Exception as exc:  # noqa: BLE001 - any failure: keep the rows and retry
                if self._stopping:
                    metrics.REJECTED_UNRECORDED.inc(len(self._queue))
                    fields = {"count": len(self._queue), "reason": str(exc)[:300]}
                    log.warning("rejected batches not recorded at shutdown", extra=fields)
                    return
                log.warning("recording rejected batches failed; retrying", extra={"rows": len(rows), "reason": str(exc)[:300]})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = 0.1
            # Rows queued meanwhile were appended at the right; the flushed ones are
            # still the leftmost unless the queue overflowed and dropped some of them.
            for row in rows:
                if self._queue and self._queue[0] is row:
                    self._queue.popleft()

    async def _flush(self, rows: list[RejectedRow]) -> None:
        await store.record_rejected(self._pool, [row.as_record() for row in rows], self._max_rows)


__all__ = ["QUEUE_LIMIT", "RejectedRecorder", "RejectedRow", "excerpt"]
