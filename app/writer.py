"""The write path: validated batches -> one group-commit transaction -> outcomes.

One writer task per process takes every batch queued since its last commit (up to
a bound) and commits them together: COPY of all their entries in one transaction,
so a commit's fsync is shared by many connections' batches. Each batch is still
all-or-nothing: batches are only merged when each would commit on its own, and a
group the database refuses is retried batch by batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import asyncpg

from app import metrics, queries
from app.db import is_unavailable
from app.ingest import Batch
from app.names import NameCache

log = logging.getLogger("eventservice.writer")



@dataclass(frozen=True, slots=True)
class Outcome:
    accepted: int = 0
    duplicate: bool = False
    error: str | None = None  # an ERROR code when the batch was not stored
    message: str = ""


@dataclass(slots=True)
class _Pending:
    batch: Batch
    future: asyncio.Future[Outcome]
    queued_at: float


class Writer:
    def __init__(self, pool: asyncpg.Pool, names: NameCache, max_events: int) -> None:
        self._pool = pool
        self._names = names
        self._max_events = max_events
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="writer")

    async def close(self) -> None:
        """Commit everything already submitted, then stop (graceful shutdown)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    def submit(self, batch: Batch) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if self._closing:
            future.set_result(Outcome(error="unavailable", message="The server is shutting down; resend to another."))
            return future
        self._queue.append(_Pending(batch, future, time.perf_counter()))
        self._wake.set()
        return future

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            group = self._take_group()
            try:
                await self._commit_group(group)
            except Exception:
                log.exception("writer group failed")
                for pending in group:
                    _settle(pending, Outcome(error="unavailable", message="The write failed; retry later."))

    def _take_group(self) -> list[_Pending]:
        group = [self._queue.popleft()]
        size = len(group[0].batch.entries)
        while self._queue and size + len(self._queue[0].batch.entries) <= self._max_events:
            pending = self._queue.popleft()
            size += len(pending.batch.entries)
            group.append(pending)
        return group

    async def _commit_group(self, group: list[_Pending]) -> None:
        try:
            outcomes = await self._commit(group)
        except Exception as exc:  # noqa: BLE001 - classified right below
            if is_unavailable(exc):
                log.warning("database unavailable for %d batches: %s", len(group), exc)
                for pending in group:
                    _settle(pending, Outcome(error="unavailable", message="The database is unavailable; retry later."))
                return
            if len(group) > 1:
                # One batch the database refuses must not fail its neighbours.
                for pending in group:
                    await self._commit_group([pending])
                return
            log.warning("database refused batch %s: %s", group[0].batch.number, exc)
            _settle(group[0], Outcome(error="invalid_batch", message=f"The database refused the batch: {exc}."))
            return
        now = time.perf_counter()
        for pending, outcome in zip(group, outcomes, strict=True):
            metrics.ACK_LATENCY.observe(now - pending.queued_at)
            _settle(pending, outcome)

    async def _commit(self, group: list[_Pending]) -> list[Outcome]:
        names = {entry[3] for p in group for entry in p.batch.entries if entry[3] is not None}
        async with self._pool.acquire(timeout=10) as conn:
            name_ids = await self._names.resolve(conn, names) if names else {}
            # The first batch carrying a (scope, batch_id) in this group claims it;
            # later ones in the same group are duplicates of it.
            claims: dict[tuple[str, str], int] = {}
            for i, pending in enumerate(group):
                b = pending.batch
                if b.batch_id is not None:
                    claims.setdefault((b.scope, b.batch_id), i)
            async with conn.transaction():
                fresh: set[tuple[str, str]] = set()
                if claims:
                    keys = sorted(claims)  # one lock order for every writer: no deadlock
                    rows = await conn.fetch(
                        queries.CLAIM_BATCH_IDS,
                        [k[0] for k in keys],
                        [k[1] for k in keys],
                        [len(group[claims[k]].batch.entries) for k in keys],
                    )
                    fresh = {(r[0], r[1]) for r in rows}
                outcomes: list[Outcome] = []
                records: list[tuple[str, str, int, int | None, str | None]] = []
                for i, pending in enumerate(group):
                    b = pending.batch
                    if b.batch_id is not None:
                        key = (b.scope, b.batch_id)
                        if key not in fresh or claims[key] != i:
                            outcomes.append(Outcome(duplicate=True))
                            continue
                    for session_id, kind, ts, name, data in b.entries:
                        records.append((session_id, kind, ts, name_ids[name] if name is not None else None, data))
                    outcomes.append(Outcome(accepted=len(b.entries)))
                if records:
                    await conn.copy_records_to_table(
                        queries.EVENTS_TABLE, records=records, columns=queries.EVENTS_COPY_COLUMNS
                    )
        return outcomes


def _settle(pending: _Pending, outcome: Outcome) -> None:
    if not pending.future.done():
        pending.future.set_result(outcome)
