"""The long-lived objects a request needs, created and torn down by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from app.config import Settings
from app.hub import Hub
from app.lifecycle import Drain
from app.rejected import RejectedRecorder
from app.tree_cache import TreeCache
from app.watch import Watch
from app.writer import Writer


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    pool: asyncpg.Pool
    writer: Writer
    hub: Hub
    drain: Drain
    rejected: RejectedRecorder  # app/rejected.py: every ERROR'd batch is kept for inspection
    trees: TreeCache  # encoded session trees, checked against the session's version
    watch: Watch | None = None  # app/watch.py: the insert lock's holder, batch_id retention
