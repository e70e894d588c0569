"""The app factory and its lifespan, which owns every long-lived resource."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NamedTuple

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app import errors
from app.config import Settings, load_settings
from app.edge import security
from app.ingest.flow import IngestLimits
from app.ingest.names import NameCache
from app.ingest.rate import IngestRateLimiter
from app.ingest.rejected import RejectedRecorder
from app.ingest.writer import Writer
from app.lifecycle import Drain, install_signal_handlers
from app.reads.tree_cache import TreeCache
from app.reads.tree_store import TreeStore
from app.routes import batch, health, metrics, openapi, page, sdk, session, sessions, stream, ws
from app.routes import stats as stats_routes
from app.services import Services
from app.store import db
from app.store.db import DatabaseUnavailable
from app.store.retention import Retention
from app.store.watch import Watch
from app.stream.hub import Hub
from app.stream.response import RAW_SEND_KEY

log = logging.getLogger("eventservice")

_SSE_PATH = "/database_events"


class _App(Starlette):
    """Starlette, recording uvicorn's send for the SSE stream before any middleware wraps it.

    The stream writes its body with it, one call per wake-up instead of five
    nested wrappers (app/stream/response.py); everything else, the stream's response
    start included, goes through the middleware as usual.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == _SSE_PATH:
            scope[RAW_SEND_KEY] = send
        await super().__call__(scope, receive, send)


class _StreamFastPath:
    """GET and HEAD /database_events straight to the endpoint, below our own middleware.

    Innermost, so tokens, the connection cap and the connection log apply as to
    every request. What it skips is Starlette's routing for this one path (the
    exception middleware, the router, request_response: two Request objects and
    a dozen frames that every idle stream would hold, ~5 KiB of its ~27 KiB);
    other methods still reach the
    router and get its 405; the one handler it would miss, DatabaseUnavailable's
    503, it applies itself. The route stays registered for the OpenAPI document.
    """

    def __init__(self, app: ASGIApp, endpoint: stream.Endpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == _SSE_PATH and scope["method"] in ("GET", "HEAD"):
            try:
                response = await self.endpoint(Request(scope, receive))
            except DatabaseUnavailable:  # the exception handlers below never see this path
                response = errors.unavailable_response()
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections: ~10% of the fan-out's CPU, and pauses.

    Measured at 1,000 SSE clients × 20-40 events/s: the default gen-0 threshold
    (700) ran ~270 collections and 2-3 full ones (50-110 ms each, every stream
    stalled meanwhile) in a 20 s run, 0.4-0.6 s of CPU; with this, 11 collections
    and 0.015 s. What exists once the app is up (modules, classes, settings, the
    pool) lives as long as the process: frozen, it is never scanned again. The
    service makes few reference cycles, so collecting them later costs little memory.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _ingest_routes(settings: Settings) -> list[BaseRoute]:
    """The two doors of ingest, /ws and POST /batch, with one set of limits and rate buckets."""
    limits = IngestLimits(
        max_inflight_batches=settings.max_inflight_batches,
        max_batch_events=settings.max_batch_events,
        max_data_bytes=settings.max_data_bytes,
        max_data_depth=settings.max_data_depth,
    )
    rates = IngestRateLimiter(
        rate_per_connection=settings.ingest_rate_per_connection,
        burst_per_connection=settings.ingest_burst_per_connection,
        # Per token: only connections that authenticated with one have a principal.
        rate_per_token=settings.ingest_rate_per_token,
        burst_per_token=settings.ingest_burst_per_token,
    )
    return [*ws.routes(limits, rates), *batch.routes(limits, rates, settings.max_frame_bytes, settings.handshake_timeout_seconds)]


def _stream_endpoint(settings: Settings) -> stream.Endpoint:
    return stream.endpoint(
        stream.StreamOptions(
            client_buffer=settings.sse_client_buffer,
            retry_ms=settings.sse_retry_ms,
            ping_seconds=settings.sse_ping_seconds,
            send_timeout_seconds=settings.sse_send_timeout_seconds,
        )
    )


class _Components(NamedTuple):
    pool: asyncpg.Pool
    hub: Hub
    watch: Watch
    retention: Retention
    rejected: RejectedRecorder
    writer: Writer


@asynccontextmanager
async def _components(settings: Settings, url: str) -> AsyncIterator[_Components]:
    """Every long-lived resource, started in order and stopped in the order shutdown needs.

    Each is an async context manager (app/background.py), entered in the reverse of
    the order shutdown needs, which `async with` follows on exit: the writer commits
    and ACKs what it accepted; the recorder keeps the last rejected batches (their
    ERRORs are answered by then); the tree store, retention and the watch stop; the hub wakes every stream to end
    (clients reconnect elsewhere); the pool closes last. A component that fails to
    start exits the ones before it.
    """
    async with (
        await db.create_pool(url, settings.pool_min_size, settings.pool_max_size) as pool,
        Hub(
            url,
            settings.hub_poll_seconds,
            replay_slots=settings.pool_max_size - 2,
            timeout=settings.hub_timeout_seconds,
        ) as hub,
        Watch(pool, settings.ingest_lock_report_seconds, settings.batch_id_retention_hours) as watch,
        Retention(pool, settings.retention_days, settings.retention_check_seconds) as retention,
        TreeStore(pool, settings.tree_store_after_seconds, session.PAGE_ROWS),
        RejectedRecorder(pool, settings.rejected_max_rows, settings.rejected_max_frame_bytes) as rejected,
        Writer(
            pool,
            NameCache(settings.name_cache_size),
            settings.writer_max_events,
            database_url=url,
            lock_timeout_seconds=settings.ingest_lock_timeout_seconds,
        ) as writer,
    ):
        yield _Components(pool, hub, watch, retention, rejected, writer)


def _lifespan(settings: Settings) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """Migrate, start the components, publish them to the routes as Services, log "ready"."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        url = settings.database_url
        assert url is not None
        await db.migrate(url)
        async with _components(settings, url) as parts:
            drain = Drain()
            install_signal_handlers(drain, settings.graceful_timeout_seconds)
            trees = TreeCache(settings.tree_cache_bytes)
            app.state.services = Services(
                settings,
                parts.pool,
                parts.writer,
                parts.hub,
                drain,
                parts.rejected,
                trees,
                watch=parts.watch,
                retention=parts.retention,
            )
            log.info("ready", extra={"host": settings.host, "port": settings.port})
            _tune_gc()
            yield

    return lifespan


def _routes(settings: Settings, database_events: stream.Endpoint) -> list[BaseRoute]:
    """Every HTTP surface, one module each (app/routes/): a new one adds its line here."""
    return [
        *health.routes,
        *_ingest_routes(settings),
        *session.routes,
        *sessions.routes,
        *stream.routes(database_events),
        *metrics.routes,
        *page.routes,
        *sdk.routes,
        *openapi.routes,
        *stats_routes.routes,
    ]


def _middleware(settings: Settings, database_events: stream.Endpoint) -> list[Middleware]:
    """Outermost first: the edge (tokens, origins, CORS, connection limits, per-connection
    logs: app/edge/security.py), then the stream's fast path, innermost."""
    edge = security.middleware(
        ingest_tokens=settings.ingest_tokens,
        read_tokens=settings.read_tokens,
        allowed_origins=settings.allowed_origins,
        max_connections=settings.max_connections,
        idle_timeout_seconds=settings.idle_timeout_seconds,
    )
    return [*edge, Middleware(_StreamFastPath, endpoint=database_events)]


def create_app(settings: Settings | None = None) -> Starlette:
    """Built from the environment when uvicorn imports it in a worker process."""
    settings = settings or load_settings()
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL must be set before the app is built (python -m app sets it)")
    # One endpoint, two ways in: the route (for the router and OpenAPI) and the fast path.
    database_events = _stream_endpoint(settings)
    return _App(
        routes=_routes(settings, database_events),
        lifespan=_lifespan(settings),
        middleware=_middleware(settings, database_events),
        # Unknown paths and methods answer in the JSON shape of every other error.
        # A read the database cannot answer now: 503 with Retry-After, never a 500.
        exception_handlers={HTTPException: errors.http_exception, DatabaseUnavailable: errors.database_unavailable},
    )
