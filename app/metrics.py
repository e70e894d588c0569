"""Prometheus instruments, defined once; the /metrics route only renders them."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)

BATCHES = Counter("eventservice_batches_total", "WebSocket batches by result", ["result"], registry=REGISTRY)
EVENTS = Counter("eventservice_events_total", "Events by result", ["result"], registry=REGISTRY)
ACK_LATENCY = Histogram(
    "eventservice_ack_latency_seconds",
    "Time from a batch being queued for commit to its commit",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
REJECTED = Counter("eventservice_rejected_batches_total", "Rejected batches by error code", ["reason"], registry=REGISTRY)
# multiprocess_mode only matters under --workers (PROMETHEUS_MULTIPROC_DIR set):
# live gauges are summed over the workers that are alive.
WS_CONNECTIONS = Gauge(
    "eventservice_websocket_connections", "Open ingest WebSockets", registry=REGISTRY, multiprocess_mode="livesum"
)
SSE_CLIENTS = Gauge("eventservice_sse_clients", "Connected SSE clients", registry=REGISTRY, multiprocess_mode="livesum")
SSE_MESSAGES = Counter(
    "eventservice_sse_messages_total", "SSE messages queued for clients (live) or replayed to them", registry=REGISTRY
)
SSE_DROPPED = Counter("eventservice_sse_clients_dropped_total", "SSE clients reset or dropped", ["reason"], registry=REGISTRY)
HUB_LAG = Histogram(
    "eventservice_notification_lag_seconds",
    "Time from a NOTIFY arriving to its rows being fanned out",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
LISTEN_RECONNECTS = Counter(
    "eventservice_listen_reconnects_total", "Times the LISTEN connection was re-established", registry=REGISTRY
)
REPLAY_ROWS = Counter("eventservice_replay_rows_total", "Rows served from the database to resuming clients", registry=REGISTRY)
# app/store/watch.py: a transaction holding the insert lock past INGEST_LOCK_REPORT_SECONDS.
INSERT_LOCK_HELD = Gauge(
    "eventservice_insert_lock_held_seconds",
    "How long a transaction has held the insert lock, once past INGEST_LOCK_REPORT_SECONDS (0: none)",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
INSERT_LOCK_WAITING = Gauge(
    "eventservice_insert_lock_waiting_backends",
    "Backends (writers) waiting for that insert lock",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
# app/store/retention.py: what retention keeps and when it last removed a piece.
RETENTION_OLDEST = Gauge(
    "eventservice_retention_retained_from_seconds",
    "Store time (Unix seconds) since which every entry is retained (absent: nothing removed)",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
RETENTION_LAST_REMOVAL = Gauge(
    "eventservice_retention_last_removal_seconds",
    "When retention last removed a piece (Unix seconds)",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
RETENTION_PIECES = Counter("eventservice_retention_pieces_removed_total", "Pieces of events removed", registry=REGISTRY)
RETENTION_ROWS = Counter("eventservice_retention_rows_removed_total", "Entries removed with their pieces", registry=REGISTRY)
POOL_SIZE = Gauge(
    "eventservice_pool_connections",
    "Database pool connections by state (per worker as of its last scrape, summed)",
    ["state"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)

# --- security (app/edge/auth.py, app/edge/limits.py, app/ingest/rejected.py) ------------------------
CONNECTIONS_REFUSED = Counter(
    "eventservice_connections_refused_total",
    "Requests and connections refused at the edge (origin, unauthorized, capacity)",
    ["reason"],
    registry=REGISTRY,
)
CONNECTIONS_TIMED_OUT = Counter(
    "eventservice_connections_timed_out_total",
    "Connections closed by a timeout (handshake: no request head in time; idle: a WebSocket sent nothing)",
    ["reason"],
    registry=REGISTRY,
)
REJECTED_UNRECORDED = Counter(
    "eventservice_rejected_batches_unrecorded_total",
    "Rejected batches that could not be kept in rejected_batches (queue full or database failure)",
    registry=REGISTRY,
)


def exposition_registry() -> CollectorRegistry:
    """What /metrics renders: this process's registry, or every worker's under --workers.

    With several workers a scrape reaches one of them at random; prometheus_client's
    multiprocess mode (files in PROMETHEUS_MULTIPROC_DIR, set by python -m app)
    makes every scrape report the sum over all workers.
    """
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client ships no annotation here
    return registry
