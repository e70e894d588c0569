"""The database: embedded PostgreSQL when no URL is given, the pool, and migrations."""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from app.store import queries

log = logging.getLogger("eventservice.db")

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"


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


class StoreError(Exception):
    """Root of what the store raises in place of driver errors (the driver's in __cause__)."""


class DatabaseUnavailable(StoreError):
    """The database cannot answer now (down, restarting, overloaded, a statement or a
    pool wait timed out): nothing was done, a retry may succeed. Reads answer 503."""


class DataRefused(StoreError):
    """The database refused the data itself (SQLSTATE class 22 or 23): a retry fails too."""


def translate(exc: BaseException) -> StoreError | None:
    """The store's kind of a driver failure; None for one that is neither (a bug, a lock
    timeout, a client-side error), which callers see unchanged."""
    if is_data_error(exc):
        return DataRefused(str(exc))
    if is_unavailable(exc):
        return DatabaseUnavailable(str(exc))
    return None


@contextmanager
def wrap_exceptions() -> Iterator[None]:
    """The one place driver failures become store errors, cause kept (procrastinate's
    `wrap_exceptions`): every operation in app/store/store.py runs inside it."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        translated = translate(exc)
        if translated is None:
            raise
        raise translated from exc


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
    with warnings.catch_warnings():
        # pgserver computes its lock directory from platformdirs' user_runtime_path
        # when it is imported; with XDG_RUNTIME_DIR unset or unusable (containers,
        # CI, su shells) platformdirs warns and falls back to a private directory of
        # its own (/tmp/runtime-<uid>, checked to be ours with mode 0700), which is
        # all a lock file needs. Only that warning, only during this import.
        runtime_dir_warning = getattr(importlib.import_module("platformdirs"), "RuntimeDirWarning", None)
        if runtime_dir_warning is not None:
            warnings.simplefilter("ignore", runtime_dir_warning)
        from pgserver.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve(), cleanup_mode="stop")
    return str(server.get_uri())


async def _init_connection(conn: asyncpg.Connection) -> None:
    set_keepalive(conn)
    # json/jsonb travel as text: event data is stored and returned verbatim,
    # spliced into responses without a decode/encode round trip.
    # json's binary wire format is its UTF-8 text, which is what COPY needs.
    await conn.set_type_codec("json", encoder=str.encode, decoder=_decode_utf8, schema="pg_catalog", format="binary")


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
    conn: asyncpg.Connection = await asyncpg.connect(database_url, **kwargs)
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


class DatabaseUnreachable(Exception):
    """Start-up gave up on the database; the message is one line a person can act on."""


def describe_location(database_url: str) -> str:
    """`host:port` of a URL, for messages (never the password)."""
    parts = urlsplit(database_url)
    # libpq style ?host=/run/postgresql (a Unix socket directory) wins over the netloc.
    host = parse_qs(parts.query).get("host", [parts.hostname or "localhost"])[0]
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_failure_cause(exc: BaseException, attempt_timeout: float) -> str:
    """Why a connection attempt failed, in words: the last element of a readable line."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, TimeoutError):
        return f"no answer within {attempt_timeout:g}s"
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


async def wait_for_database(
    database_url: str,
    timeout: float,
    progress: Callable[[str], None],
    progress_every: float = 5.0,
) -> None:
    """Connect once, retrying for `timeout` seconds while the database is not there.

    Compose starts the app and its database together, so at first the database may
    refuse connections, not resolve, or be starting up: those are retried, with a
    progress line every few seconds. What a retry cannot fix (a wrong password, a
    missing database) fails at once. Either way the failure is DatabaseUnreachable
    with one line naming host, port and cause, not a traceback.
    """
    where = describe_location(database_url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    next_progress = loop.time()  # the first failure says so at once, then every few seconds
    delay = 0.2
    while True:
        attempt_timeout = max(1.0, min(5.0, deadline - loop.time()))
        try:
            conn = await asyncpg.connect(database_url, timeout=attempt_timeout)
        except Exception as exc:  # every failure is reported, and retried only if transient
            cause = connect_failure_cause(exc, attempt_timeout)
            if not is_unavailable(exc):
                raise DatabaseUnreachable(f"PostgreSQL at {where} refused the connection: {cause}") from exc
            now = loop.time()
            if now >= deadline:
                waited = f" (retried for {timeout:g}s, DATABASE_CONNECT_TIMEOUT)" if timeout > 0 else ""
                raise DatabaseUnreachable(f"cannot reach PostgreSQL at {where}: {cause}{waited}") from exc
            if now >= next_progress:
                progress(f"waiting for PostgreSQL at {where}: {cause}; retrying for another {deadline - now:.0f}s")
                next_progress = now + progress_every
            await asyncio.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 2, 2.0)
        else:
            await conn.close()
            return
