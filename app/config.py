"""One frozen Settings object, read from the environment and overridden by CLI flags.

Every setting has one name: the environment variable is the upper-case form of the
flag (``--max-batch-events`` <-> ``MAX_BATCH_EVENTS``), so the README table, ``--help``
and docker-compose can never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _split_csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = Path("postgres-data")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    insecure: bool = False
    log_format: str = "text"
    log_level: str = "info"

    ingest_tokens: tuple[str, ...] = ()
    read_tokens: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()

    max_frame_bytes: int = 1024 * 1024
    max_batch_events: int = 10_000
    max_data_bytes: int = 16 * 1024
    max_data_depth: int = 64
    max_inflight_batches: int = 16
    max_connections: int = 20_000
    handshake_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 300.0
    # Ingest rate limits (token buckets, batches per second; 0 = off). See app/limits.py.
    ingest_rate_per_connection: float = 0.0
    ingest_burst_per_connection: int = 100
    ingest_rate_per_token: float = 0.0
    ingest_burst_per_token: int = 1_000

    pool_min_size: int = 2
    pool_max_size: int = 10
    writer_max_events: int = 20_000
    ingest_lock_timeout_seconds: float = 10.0
    ingest_lock_report_seconds: float = 5.0
    batch_id_retention_hours: float = 168.0
    name_cache_size: int = 100_000
    tree_cache_bytes: int = 64 * 1024 * 1024

    sse_ping_seconds: float = 15.0
    sse_retry_ms: int = 2_000
    sse_client_buffer: int = 20_000
    sse_send_timeout_seconds: float = 30.0
    hub_poll_seconds: float = 2.0
    hub_timeout_seconds: float = 3.0

    rejected_max_rows: int = 10_000
    rejected_max_frame_bytes: int = 4_096

    graceful_timeout_seconds: float = 10.0

    @property
    def tokens_required(self) -> bool:
        return bool(self.ingest_tokens or self.read_tokens)


_HELP: dict[str, str] = {
    "database_url": "PostgreSQL URL; unset: run an embedded PostgreSQL in --data-dir",
    "data_dir": "where the embedded PostgreSQL keeps its files",
    "host": "bind address",
    "port": "bind port",
    "workers": "uvicorn worker processes (each with its own LISTEN hub)",
    "insecure": "allow a non-loopback bind without tokens",
    "log_format": "text or json",
    "log_level": "debug, info, warning, error",
    "ingest_tokens": "comma-separated tokens accepted on /ws (or @/path/to/file)",
    "read_tokens": "comma-separated tokens accepted on read endpoints (or @/path/to/file)",
    "allowed_origins": "comma-separated Origins allowed for WebSocket and CORS; empty: same host only",
    "max_frame_bytes": "largest WebSocket frame; larger frames close the socket with 1009",
    "max_batch_events": "most events in one batch (more: too_large)",
    "max_data_bytes": "largest event data object, as compact UTF-8 JSON",
    "max_data_depth": "deepest nesting of event data",
    "max_inflight_batches": "batches a connection may have awaiting commit before reads pause",
    "max_connections": "cap on concurrent WebSocket + SSE connections",
    "handshake_timeout_seconds": "seconds a new TCP connection may take to send its request head (WebSocket handshakes too)",
    "idle_timeout_seconds": "seconds a WebSocket may go without sending a frame before it is closed (1001); 0: never",
    "ingest_rate_per_connection": "batches per second one WebSocket may send, token bucket; 0: unlimited",
    "ingest_burst_per_connection": "batches one WebSocket may send at once before its rate applies",
    "ingest_rate_per_token": "batches per second all WebSockets of one ingest token may send (per process); 0: unlimited",
    "ingest_burst_per_token": "batches all WebSockets of one ingest token may send at once before its rate applies",
    "pool_min_size": "database pool minimum connections",
    "pool_max_size": "database pool maximum connections",
    "writer_max_events": "most events merged into one group-commit transaction",
    "ingest_lock_timeout_seconds": "seconds a batch waits for the insert lock before it is answered unavailable",
    "ingest_lock_report_seconds": "seconds a transaction may hold the insert lock before /readyz says 503 and the log names it",
    "batch_id_retention_hours": "hours a batch_id is remembered (a resend within them is a duplicate); older ones are pruned",
    "name_cache_size": "event names cached in-process (bounded)",
    "tree_cache_bytes": "bytes of encoded session trees cached per process (0: off)",
    "sse_ping_seconds": "seconds between SSE keep-alive comments",
    "sse_retry_ms": "reconnect delay hinted to EventSource clients",
    "sse_client_buffer": "messages buffered per SSE client before it is dropped",
    "sse_send_timeout_seconds": "seconds a write to an SSE client may block before it is dropped",
    "hub_poll_seconds": "safety poll of the events table and liveness probe of the LISTEN connection when idle",
    "hub_timeout_seconds": "seconds any query of the LISTEN hub may take before its connection is replaced",
    "rejected_max_rows": "rejected batches kept for inspection (oldest pruned)",
    "rejected_max_frame_bytes": "bytes of each rejected frame kept",
    "graceful_timeout_seconds": "seconds to finish in-flight work on shutdown",
}


def _coerce(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if "tuple" in kind:
        if raw.startswith("@"):
            raw = Path(raw[1:]).read_text().replace("\n", ",")
        return _split_csv(raw)
    if kind == "bool":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "Path":
        return Path(raw)
    if "None" in kind:
        return raw or None
    return raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="eventservice: session analytics events over WebSocket, SSE and HTTP. "
        "Every flag can also be set by the environment variable named in brackets.",
    )
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        env = f.name.upper()
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", default=None, help=f"{_HELP[f.name]} [{env}]")
        else:
            parser.add_argument(
                flag, default=None, metavar=env, help=f"{_HELP[f.name]} [{env}] (default: {_show(default)})"
            )
    return parser


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return str(value)


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Environment first, then flags: a flag given on the command line always wins."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = environ.get(f.name.upper())
        if raw is not None and raw != "":
            values[f.name] = _coerce(f, raw)
    if argv is not None:
        parsed = vars(build_parser().parse_args(list(argv)))
        for f in dataclasses.fields(Settings):
            given = parsed.get(f.name)
            if given is None:
                continue
            values[f.name] = given if f.type == "bool" else _coerce(f, given)
    return Settings(**values)


def settings_to_environ(settings: Settings) -> dict[str, str]:
    """Worker processes re-read settings from the environment; this is the inverse of load."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        if isinstance(value, tuple):
            out[f.name.upper()] = ",".join(value)
        elif isinstance(value, bool):
            out[f.name.upper()] = "1" if value else "0"
        else:
            out[f.name.upper()] = str(value)
    return out


__all__ = ["Settings", "build_parser", "load_settings", "settings_to_environ"]
