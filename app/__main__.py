"""CLI: parse settings, start the embedded PostgreSQL if no URL is given, run uvicorn."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import signal
import socket
import sys
import tempfile

import uvicorn
from uvicorn.supervisors import Multiprocess

from app import logs
from app.config import Settings, load_or_exit, settings_to_environ
from app.edge import protocol
from app.store import db

log = logging.getLogger("eventservice")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> str | None:
    """Why the service must not start as configured, or None."""
    if not _is_loopback(settings.host) and not settings.tokens_required and not settings.insecure:
        return (
            f"Refusing to bind {settings.host} with no INGEST_TOKENS or READ_TOKENS set: anyone could write "
            "and read every event. Set tokens, bind 127.0.0.1, or pass --insecure to accept the risk."
        )
    return None


# How the process exits on each stopping signal: SIGTERM is an ordinary stop, Ctrl-C
# (SIGINT) the shell's convention for "interrupted", 128 + 2.
EXIT_STATUS: dict[int, int] = {signal.SIGTERM: 0, signal.SIGINT: 130}


def _exit_cleanly(signum: int, _frame: object) -> None:
    """SystemExit rather than the default action: no KeyboardInterrupt traceback, and
    atexit runs, which stops the embedded PostgreSQL cleanly."""
    raise SystemExit(EXIT_STATUS.get(signum, 0))


def install_exit_handlers() -> None:
    """Before anything slow starts, so a Ctrl-C during start-up also exits quietly.

    uvicorn puts its own handlers in front while it serves and, after its graceful
    shutdown, restores these and re-raises the signal: they end the process. They
    also keep asyncio.run from installing its SIGINT handler, which would turn that
    re-raised Ctrl-C into a KeyboardInterrupt traceback.
    """
    for sig in EXIT_STATUS:
        signal.signal(sig, _exit_cleanly)


def _fail(message: str) -> int:
    """A start-up failure: one line on stderr, no traceback, a non-zero status."""
    print(f"python -m app: {message}", file=sys.stderr)
    return 1


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything slow starts (uvicorn binds after the
    lifespan, so its "ready" would come before an "address already in use").

    Listening already: a client that connects as soon as "ready" is logged waits in the
    backlog for the first accept instead of being refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        cause = (exc.strerror or str(exc)).lower()
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = " (another process listens there: stop it, or choose another port with --port or PORT)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            hint = " (no interface of this machine has that address: check --host or HOST)"
        elif exc.errno == errno.EACCES:
            hint = " (ports below 1024 need privileges: choose another with --port or PORT)"
        raise OSError(exc.errno, f"cannot listen on {where}: {cause}{hint}") from exc
    sock.set_inheritable(True)  # --workers: the worker processes accept on it
    return sock


def main(argv: list[str] | None = None) -> int:
    settings = load_or_exit(sys.argv[1:] if argv is None else argv)
    install_exit_handlers()
    refusal = check_exposure(settings)
    if refusal:
        print(f"python -m app: {refusal}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        "app.web:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        timeout_graceful_shutdown=int(settings.graceful_timeout_seconds),
        log_level=settings.log_level,
        access_log=False,
        # One format, tokens redacted (app/logs.py).
        log_config=logs.log_config(
            settings.log_format, settings.log_level, secrets=[*settings.ingest_tokens, *settings.read_tokens]
        ),
        loop="uvloop",
        http=protocol.with_head_deadline(settings.handshake_timeout_seconds),  # httptools + slowloris deadline
        ws="websockets-sansio",  # the legacy one never reports a 1009 close to the app
    )
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        return _fail(exc.strerror or str(exc))
    if not settings.database_url:
        url = db.start_embedded(settings.data_dir)
        settings = Settings(**{**settings.__dict__, "database_url": url})
        print(f"embedded PostgreSQL running in {settings.data_dir.resolve()}", file=sys.stderr)
    assert settings.database_url is not None
    try:
        # Once, here, rather than in each worker: compose starts the app and the
        # database together, and the wait prints progress instead of tracebacks.
        asyncio.run(db.wait_for_database(settings.database_url, settings.database_connect_timeout, log.warning))
    except db.DatabaseUnreachable as exc:
        sock.close()
        return _fail(str(exc))
    if settings.workers > 1:
        # Before any worker imports prometheus_client: one directory of metric files
        # for all of them, fresh per run so a dead run's counters are not summed in.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="eventservice-metrics-")
    # Workers (and the factory in this process) read settings from the environment.
    os.environ.update(settings_to_environ(settings))
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info(f"starting on http://{shown}:{settings.port} (ready follows)", extra={"workers": settings.workers})
    if settings.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
        return 0
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    # The lifespan failed (uvicorn logged why): not a clean exit.
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main())
