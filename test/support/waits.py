"""Waiting for a condition by polling it against a deadline, never by sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Poll `check` every 50 ms until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def folded(sql: asyncpg.Connection) -> bool:
    """Whether the stats fold has counted every entry (retention removes only counted pieces)."""
    return bool(await sql.fetchval("SELECT (SELECT position FROM stats_folded) >= (SELECT max(position) FROM events)"))


async def breakdowns_folded(sql: asyncpg.Connection) -> bool:
    """Whether every breakdown rollup (schema/010) has counted every entry (a pair given
    up folds no more: it has no rollup to wait for)."""
    return bool(
        await sql.fetchval(
            "SELECT coalesce((SELECT min(through) FROM breakdown_keys WHERE given_up_at IS NULL)"
            " >= (SELECT max(position) FROM events), true)"
        )
    )
