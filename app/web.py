"""The app factory and its lifespan, which owns every long-lived resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from app import db, errors, security
from app.config import Settings, load_settings
from app.hub import Hub
from app.lifecycle import Drain, install_signal_handlers
from app.names import NameCache
from app.rejected import RejectedRecorder
from app.routes import health, metrics, openapi, page, session, sessions, stream, ws
from app.routes import stats as stats_routes
from app.services import Services
from app.tree_cache import TreeCache
from app.watch import Watch
from app.writer import Writer

log = logging.getLogger("eventservice")


def create_app(settings: Settings | None = None) -> Starlette:
    """Built from the environment when uvicorn imports it in a worker process."""
    settings = settings or load_settings()
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL must be set before the app is built (python -m app sets it)")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        url = settings.database_url
        assert url is not None
        await db.migrate(url)
        pool = await db.create_pool(url, settings.pool_min_size, settings.pool_max_size)
        writer = Writer(
            pool,
            NameCache(settings.name_cache_size),
            settings.writer_max_events,
            database_url=url,
            lock_timeout_seconds=settings.ingest_lock_timeout_seconds,
        )
        hub = Hub(url, settings.hub_poll_seconds, replay_slots=settings.pool_max_size - 2, timeout=settings.hub_timeout_seconds)
        rejected = RejectedRecorder(pool, settings.rejected_max_rows, settings.rejected_max_frame_bytes)
        watch = Watch(pool, settings.ingest_lock_report_seconds, settings.batch_id_retention_hours)
        try:
            writer.start()
            rejected.start()
            watch.start()
            await hub.start()
            drain = Drain()
            install_signal_handlers(drain, settings.graceful_timeout_seconds)
            trees = TreeCache(settings.tree_cache_bytes)
            app.state.services = Services(settings, pool, writer, hub, drain, rejected, trees, watch=watch)
            log.info("ready", extra={"host": settings.host, "port": settings.port})
            yield
        finally:
            # Reverse order of creation: commit what was accepted, then stop
            # fanning out, then release the database.
            await writer.close()
            await rejected.close()  # after the last ERROR was answered, before the pool goes
            await watch.close()
            await hub.stop()
            await pool.close()

    routes = [*health.routes, *ws.routes, *session.routes, *sessions.routes, *stream.routes, *metrics.routes, *page.routes]
    routes += openapi.routes
    routes += stats_routes.routes
    # Tokens, origins, CORS, connection limits, per-connection logs: app/security.py.
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=security.middleware(settings),
        # Unknown paths and methods answer in the JSON shape of every other error.
        exception_handlers={HTTPException: errors.http_exception},
    )
