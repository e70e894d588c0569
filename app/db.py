"""The database: embedded PostgreSQL when no URL is given, the pool, and migrations."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import asyncpg

from app import queries

log = logging.getLogger("eventservice.db")

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"


# SQLSTATE classes meaning "the database is not there right now", as opposed to
# "the database refuses this data": connection exceptions, insufficient resources,
# operator intervention (shutdown), system errors, and transaction rollbacks
# (deadlock, serialization failure) that a retry resolves.
_UNAVAILABLE_CLASSES = ("08", "40", "53", "57", "58")
# The only classes that mean "this data is at fault": data exceptions and integrity
# constraint violations. Everything else (a lock timeout, a cancelled statement, a
# client-side error after the backend died) says nothing about the batch.
_DATA_CLASSES = ("22", "23")

APPLICATION_NAME = "eventservice"
# Every connection of the service: an ACK means durable whatever the database's or
# role's default (a database set to synchronous_commit = off lost ACKed batches in
# a crash), and operators find the service in pg_stat_activity by name.
SERVER_SETTINGS = {"synchronous_commit": "on", "application_name": APPLICATION_NAME}
# A connection that goes silent (network black hole) is noticed by the kernel
# within about KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT seconds when
# idle, or USER_TIMEOUT_MS when data sent is never acknowledged, not the ~15
# minutes of Linux defaults; the hub's own timeouts usually notice first.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 2, 3
USER_TIMEOUT_MS = 15_000


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] in _UNAVAILABLE_CLASSES
    return isinstance(exc, (OSError, asyncpg.InterfaceError, asyncio.TimeoutError, ConnectionError))


def is_data_error(exc: BaseException) -> bool:
    """True only when the database refused the data itself (SQLSTATE class 22 or 23)."""
    return isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "")[:2] in _DATA_CLASSES


def set_keepalive(conn: asyncpg.Connection) -> None:
    """Client-side TCP keepalives (asyncpg has no option for them); no-op on Unix sockets."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    options = (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
    )
    for name, value in options:
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def start_embedded(data_dir: Path) -> str:
    """Start (or attach to) the pgserver PostgreSQL in data_dir; return its URL.

    Imported lazily: with DATABASE_URL set the service never touches pgserver.
    The server is stopped by pgserver's atexit hook when this process exits, so a
    restart reuses the same files and keeps every committed event.
    """
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir.resolve(), cleanup_mode="stop")
    return str(server.get_uri())


async def _init_connection(conn: asyncpg.Connection) -> None:
    set_keepalive(conn)
    # json/jsonb travel as text: event data is stored and returned verbatim,
    # spliced into responses without a decode/encode round trip.
    # json's binary wire format is its UTF-8 text, which is what COPY needs.
    await conn.set_type_codec(
        "json", encoder=str.encode, decoder=_decode_utf8, schema="pg_catalog", format="binary"
    )


def _decode_utf8(raw: bytes) -> str:
    return raw.decode()


async def create_pool(database_url: str, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=60,
        server_settings=SERVER_SETTINGS,
    )
    assert pool is not None
    return pool


async def connect(database_url: str, **kwargs: Any) -> asyncpg.Connection:
    kwargs["server_settings"] = {**SERVER_SETTINGS, **kwargs.get("server_settings", {})}
    conn = await asyncpg.connect(database_url, **kwargs)
    await _init_connection(conn)
    return conn


def migration_files() -> list[Path]:
    return sorted(SCHEMA_DIR.glob("[0-9][0-9][0-9]_*.sql"))


async def migrate(database_url: str) -> list[str]:
    """Apply every schema/NNN_*.sql not yet recorded, in order; return what ran.

    A session-level advisory lock serialises concurrent starters (several workers
    or hosts); files are idempotent anyway, so one that already ran as an initdb
    script is simply recorded.
    """
    conn = await asyncpg.connect(database_url, server_settings=SERVER_SETTINGS)
    applied: list[str] = []
    try:
        await conn.execute(queries.MIGRATION_LOCK)
        await conn.execute(queries.CREATE_MIGRATIONS_TABLE)
        done = {r["version"] for r in await conn.fetch(queries.APPLIED_MIGRATIONS)}
        for path in migration_files():
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(queries.RECORD_MIGRATION, path.name)
            applied.append(path.name)
            log.info("migration applied", extra={"version": path.name})
        await conn.execute(queries.MIGRATION_UNLOCK)
    finally:
        await conn.close()
    return applied
