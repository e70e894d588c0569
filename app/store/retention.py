"""Retention: old entries of events removed in whole pieces (schema/007_retention.sql).

events is partitioned by stream position into pieces; the piece in use is closed
(retention_roll) once it is a tenth of the window old, so a piece holds at most a
tenth of the window's entries. Every RETENTION_CHECK_SECONDS the pieces closed more
than the window ago are marked (retained_from and removed_through move first), then
each is detached CONCURRENTLY (inserts and reads go on) and dropped: the cost of a
piece is a catalog change whatever its number of rows, and the disk is freed at once.

One run at a time across every process (a session advisory lock); every step reads
the catalog first, so a run killed with kill -9 or cut by a database restart is
finished by the next one. With RETENTION_DAYS unset nothing is removed, but the
state is still read, for /metrics, /readyz and the monitor page.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from app import metrics
from app.background import Background, Loop
from app.store import store
from app.store.store import RetentionState

log = logging.getLogger("eventservice.retention")

STATE_SECONDS = 10.0  # how often the state is read when this process does not remove
REMOVE_TIMEOUT_SECONDS = 600.0  # a detach waits for the readers that started before it
PRESENCE_SLICE = 10_000
HOUR_MS = 3_600_000


class Retention(Background):
    """`async with` it: one loop that rolls pieces and removes the old ones."""

    def __init__(self, pool: asyncpg.Pool, days: float | None, check_seconds: float) -> None:
        super().__init__()
        self._pool = pool
        self.window_seconds = None if days is None else days * 86_400
        self._check_seconds = check_seconds
        self.state: RetentionState | None = None
        self._last_check = -float("inf")
        self._swept = False

    @property
    def piece_seconds(self) -> float | None:
        return None if self.window_seconds is None else self.window_seconds / 10

    def loops(self) -> dict[str, Loop]:
        return {"retention": self._run}

    def _tick(self) -> float:
        if self.piece_seconds is None:
            return STATE_SECONDS
        return max(min(self._check_seconds, self.piece_seconds / 2, STATE_SECONDS), 0.05)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.check()
            except Exception as exc:  # noqa: BLE001 - an outage or a killed statement: the next check redoes it
                log.warning("retention check failed, the next one redoes it: %r", exc)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._tick())
            except TimeoutError:
                pass

    async def check(self) -> list[store.RemovedPiece]:
        """One check: roll the piece in use when due, keep a spare, remove what is past the window."""
        removed: list[store.RemovedPiece] = []
        async with store.connection(self._pool, timeout=10) as conn:
            if self.window_seconds is not None and await store.retention_try_lock(conn):
                try:
                    removed = await self._locked(conn, self.window_seconds)
                finally:
                    await store.retention_unlock(conn)
            self._publish(await store.retention_state(conn))
        return removed

    async def _locked(self, conn: asyncpg.Connection, window: float) -> list[store.RemovedPiece]:
        # First what a cut run left: a piece pending detach refuses every ATTACH.
        removed = [await self._remove(conn, name) for name in await store.retention_marked(conn)]
        # A spare before the roll too: a roll from psql may have used the last one.
        await store.retention_ensure_spare(conn)
        age = await store.retention_in_use_age(conn)
        if age is not None and age >= window / 10:
            opened = await store.retention_roll(conn)
            log.debug("retention: piece %s opened", opened)
        await store.retention_ensure_spare(conn)
        if time.monotonic() - self._last_check < self._check_seconds:
            return removed
        self._last_check = time.monotonic()
        for name in await store.retention_mark(conn, window):
            removed.append(await self._remove(conn, name))
        state = await store.retention_state(conn)
        # After a removal, and once per process: a run killed between its removal and
        # these prunes left them to whichever process checks next.
        if (removed or not self._swept) and state is not None and state.retained_from_ms is not None:
            self._swept = True
            cutoff = state.retained_from_ms - state.retained_from_ms % HOUR_MS
            while await store.retention_prune_presences(conn, cutoff, PRESENCE_SLICE) == PRESENCE_SLICE:
                pass
            # Stored trees of sessions that lost entries are never served; they go too.
            await store.tree_store_prune(conn)
        return removed

    async def _remove(self, conn: asyncpg.Connection, name: str) -> store.RemovedPiece:
        piece = await store.retention_remove(conn, name, REMOVE_TIMEOUT_SECONDS)
        metrics.RETENTION_PIECES.inc()
        metrics.RETENTION_ROWS.inc(piece.rows)
        log.info(
            "retention removed piece %s: %d entries, %d bytes, in %.1f ms",
            piece.name,
            piece.rows,
            piece.bytes,
            piece.seconds * 1000,
            extra={"piece": piece.name, "rows": piece.rows, "bytes": piece.bytes, "ms": round(piece.seconds * 1000, 1)},
        )
        return piece

    def _publish(self, state: RetentionState | None) -> None:
        self.state = state
        if state is None:
            return
        if state.retained_from_ms is not None:
            metrics.RETENTION_OLDEST.set(state.retained_from_ms / 1000)
        if state.last_removal_ms is not None:
            metrics.RETENTION_LAST_REMOVAL.set(state.last_removal_ms / 1000)

    @property
    def retained_from_ms(self) -> int | None:
        return None if self.state is None else self.state.retained_from_ms


__all__ = ["Retention"]
