"""Stored session trees: each quiet session's encoded children kept in session_trees.

A cold GET /session of a 1,000-event session read ~1,000 heap pages (sessions are
ingested interleaved, so one session's rows are spread over the table): ~5 ms of
PostgreSQL CPU per tree, most of a cold lookup (docs/performance.md, "Cold
GET /session"). Sessions stop changing soon after they end, so this loop builds
each session's tree once it has been unchanged for TREE_STORE_AFTER_SECONDS, and
the route reads one row instead (queries.SESSION_TREE_WHOLE).

What is served never depends on this loop: a stored tree is served only when the
version it was built at is the session's present one and the session lost nothing
to retention, checked in the reading statement (schema/008_session_trees.sql). The
loop only decides what is worth building: it reads the session ids of new
positions beside the writers (like the stats fold), marks them pending, and builds
those that stayed quiet. A killed step rolls back whole; one process steps at a time.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from app.background import Background, Loop
from app.store import store
from app.store.db import DatabaseUnavailable
from app.store.store import TreeStoreRun

log = logging.getLogger("eventservice.tree_store")

# A tick marks every session changed since the last one. Measured (backend CPU, 1,000
# sessions): 30,000 new positions 10-20 ms, 150,000 positions 30-40 ms, so the cost is
# mostly per distinct session upserted into the pending set, ~0.2 us per position past
# that: ticks are as rare as the quiet time allows. A session is stored between 1 and
# 1.5 quiet times after its last change; at most every 5 s the active ones are upserted.
TICK_MAX_SECONDS = 5.0
# Positions read per step (~50 ms of PostgreSQL); a tick steps until it is at the head.
MARK_ROWS = 200_000
# Trees built per step: ~5 ms of PostgreSQL each for 1,000 EVENTs, so a step's
# transaction stays around a tenth of a second.
BUILD_AT_MOST = 20
# Smaller sessions are cheap to read cold (a few pages); storing them would only
# duplicate their rows.
MIN_EVENTS = 100
STEPS_PER_TICK = 1_000  # a backlog (a migrated database) is worked through in ticks of at most this
STEP_TIMEOUT_SECONDS = 60.0


class TreeStore(Background):
    """`async with` it: one loop marking changed sessions and storing the quiet ones' trees."""

    def __init__(self, pool: asyncpg.Pool, quiet_seconds: float, below: int) -> None:
        super().__init__()
        self._pool = pool
        self._quiet = quiet_seconds
        self._below = below  # sessions of this many EVENTs or more are streamed, not stored
        self.tick_seconds = min(TICK_MAX_SECONDS, max(quiet_seconds / 2, 0.05))

    def loops(self) -> dict[str, Loop]:
        return {"tree-store": self._run} if self._quiet > 0 else {}

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.catch_up()
            except DatabaseUnavailable as exc:  # an outage: the next tick redoes the step, quietly
                log.debug("tree store step failed, the next tick redoes it: %r", exc)
            except Exception as exc:  # noqa: BLE001 - anything else leaves trees unbuilt (never stale): say so
                log.warning("tree store step failed, the next tick redoes it: %r", exc)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick_seconds)
            except TimeoutError:
                pass

    async def catch_up(self) -> tuple[int, int]:
        """Steps until the watermark is at the head and nothing quiet is left: (positions marked, trees built)."""
        marked = built = 0
        for _ in range(STEPS_PER_TICK):
            if self._stopping:
                break
            run = await self.step()
            if run is None:
                break
            marked += run.marked
            built += run.built
            if run.marked < MARK_ROWS and run.due < BUILD_AT_MOST:
                break
        return marked, built

    async def step(self) -> TreeStoreRun | None:
        async with asyncio.timeout(STEP_TIMEOUT_SECONDS), store.connection(self._pool, timeout=None) as conn:
            return await store.tree_store_run(
                conn,
                mark_rows=MARK_ROWS,
                quiet_seconds=self._quiet,
                build_at_most=BUILD_AT_MOST,
                min_events=MIN_EVENTS,
                below=self._below,
            )


__all__ = ["TreeStore"]
