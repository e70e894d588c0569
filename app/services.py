"""The long-lived objects a request needs, created and torn down by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from app.config import Settings
from app.ingest.rejected import RejectedRecorder
from app.ingest.writer import Writer
from app.lifecycle import Drain
from app.reads.tree_cache import TreeCache
from app.store.retention import Retention
from app.store.watch import Watch
from app.stream.hub import Hub


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    pool: asyncpg.Pool
    writer: Writer
    hub: Hub
    drain: Drain
    rejected: RejectedRecorder  # app/ingest/rejected.py: every ERROR'd batch is kept for inspection
    trees: TreeCache  # encoded session trees, checked against the session's version
    watch: Watch | None = None  # app/store/watch.py: the insert lock's holder, batch_id retention
    retention: Retention | None = None  # app/store/retention.py: old pieces of events removed
