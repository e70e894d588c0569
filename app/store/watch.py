"""Background upkeep of the database: the insert lock, batch_id retention, the stats fold.

The insert lock (schema/001: every INSERT into events takes advisory lock
727401,1 until its transaction ends) is what a forgotten plain-SQL transaction
holds to stall all ingest. Writers give up after INGEST_LOCK_TIMEOUT_SECONDS; this
watch makes the cause visible: /readyz answers 503 naming the holder, one log line
names it, /metrics shows how long it has been held.

The stats fold (schema/005_stats_sessions.sql stats_fold) runs here, four times a
second in slices of FOLD_SLICE events up to the head it saw, rather than inside a
writer's statement: the writers are serialised, so
every millisecond spent there is ingest throughput lost, while here it runs beside
them. Readers add up whatever is not folded yet, so how often only bounds that.
The breakdown rollups (schema/010_breakdown_rollups.sql) follow the same watermark,
in slices of their own after the stats fold's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app import metrics
from app.background import Background, Loop
from app.store import store
from app.store.db import DatabaseUnavailable

log = logging.getLogger("eventservice.watch")

CHECK_SECONDS = 1.0
PRUNE_SLICE = 10_000
FOLD_SECONDS = 0.25
# Events per fold transaction. The fold's CPU in PostgreSQL competes with the writer's
# backend for the same cores: one fold of a second of events at half load (~70k)
# took 55-145 ms, and the groups committing meanwhile took 20-30 ms instead of 3
# (ACK p99 spikes). Slices of this size take ~10 ms each.
FOLD_SLICE = 10_000
FOLD_MAX_SLICES = 1_000  # with the slice above, as much as one stats_fold() call (1,000,000 events)
# Breakdown rollup slices per fold: a pair catching up on a large database takes
# several folds, and the stats fold goes on between them.
BREAKDOWN_FOLD_MAX_SLICES = 100
FOLD_TIMEOUT_SECONDS = 300.0  # one fold covers at most 1,000,000 events: seconds, not minutes


@dataclass(frozen=True, slots=True)
class LockHolder:
    pid: int
    application_name: str
    state: str
    since: datetime
    held_seconds: float
    waiting: int

    def as_json(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "application_name": self.application_name,
            "state": self.state,
            "since": self.since.isoformat(),
            "held_seconds": round(self.held_seconds, 1),
            "waiting_backends": self.waiting,
        }


class Watch(Background):
    """`async with` it: three periodic jobs, cancelled on exit (nothing of theirs needs finishing)."""

    def __init__(self, pool: asyncpg.Pool, lock_report_seconds: float, retention_hours: float) -> None:
        super().__init__()
        self._pool = pool
        self._report_after = lock_report_seconds
        self._retention_seconds = retention_hours * 3600
        # Often enough that the window is kept to about a tenth of itself, rarely
        # enough to cost nothing (once a minute at most, at the default a week).
        self._prune_every = min(max(self._retention_seconds / 10, 1.0), 60.0)
        self.lock_holder: LockHolder | None = None
        self._reported: tuple[int, datetime] | None = None

    def loops(self) -> dict[str, Loop]:
        return {
            "watch-lock": lambda: self._every(CHECK_SECONDS, self.check_lock),
            "watch-prune": lambda: self._every(self._prune_every, self.prune_batch_ids),
            "watch-fold": lambda: self._every(FOLD_SECONDS, self.fold_stats),
        }

    async def _every(self, seconds: float, check: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await check()
            except Exception as exc:  # noqa: BLE001 - a check must outlive a database outage
                log.debug("%s failed: %r", getattr(check, "__name__", "check"), exc)
            await asyncio.sleep(seconds)

    async def check_lock(self) -> LockHolder | None:
        async with asyncio.timeout(5), store.connection(self._pool, timeout=None) as conn:
            row = await store.insert_lock_holder(conn, self._report_after)
        holder = (
            None
            if row is None
            else LockHolder(row.pid, row.application_name or "", row.state or "", row.xact_start, row.held_seconds, row.waiting)
        )
        self.lock_holder = holder
        metrics.INSERT_LOCK_HELD.set(holder.held_seconds if holder else 0)
        metrics.INSERT_LOCK_WAITING.set(holder.waiting if holder else 0)
        if holder is not None and self._reported != (holder.pid, holder.since):
            self._reported = (holder.pid, holder.since)
            log.warning(
                "insert lock held by backend pid=%d application_name=%r (%s) since %s (%.0fs); %d backends waiting: "
                "ingest is stalled until it commits or rolls back (pg_terminate_backend(%d) ends it)",
                holder.pid,
                holder.application_name,
                holder.state,
                holder.since.isoformat(),
                holder.held_seconds,
                holder.waiting,
                holder.pid,
            )
        return holder

    async def fold_stats(self) -> None:
        try:
            async with asyncio.timeout(FOLD_TIMEOUT_SECONDS), store.connection(self._pool, timeout=None) as conn:
                head = await store.stream_head(conn, FOLD_TIMEOUT_SECONDS)
                for _ in range(FOLD_MAX_SLICES):
                    await store.stats_fold_up_to(conn, FOLD_SLICE, FOLD_TIMEOUT_SECONDS)
                    if head is None or await store.stats_watermark(conn) >= head:
                        break
                # Then the breakdown rollups, in slices of their own: a pair asked for
                # on a large database catches up over many of them (and folds).
                for _ in range(BREAKDOWN_FOLD_MAX_SLICES):
                    if await store.breakdown_fold_up_to(conn, FOLD_SLICE, FOLD_TIMEOUT_SECONDS):
                        break
        except DatabaseUnavailable:
            raise  # an outage: the loop retries quietly
        except Exception as exc:  # anything else leaves the stats folding nowhere: say so
            log.warning("stats fold failed, readers add up more until one succeeds: %r", exc)
            raise

    async def prune_batch_ids(self) -> int:
        pruned = 0
        while True:
            async with asyncio.timeout(30), store.connection(self._pool, timeout=None) as conn:
                count = await store.prune_batch_ids(conn, self._retention_seconds, PRUNE_SLICE)
            pruned += count
            if count < PRUNE_SLICE:
                return pruned
