"""CLI: parse settings, start the embedded PostgreSQL if no URL is given, run uvicorn."""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import tempfile

import uvicorn

from app import db, logs, protocol
from app.config import Settings, load_settings, settings_to_environ


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


def _exit_cleanly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    refusal = check_exposure(settings)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    if not settings.database_url:
        url = db.start_embedded(settings.data_dir)
        settings = Settings(**{**settings.__dict__, "database_url": url})
        print(f"embedded PostgreSQL running in {settings.data_dir.resolve()}", file=sys.stderr)
    # uvicorn re-raises SIGTERM after its graceful shutdown; as SystemExit it lets
    # atexit run, which stops the embedded PostgreSQL cleanly.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if settings.workers > 1:
        # Before any worker imports prometheus_client: one directory of metric files
        # for all of them, fresh per run so a dead run's counters are not summed in.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="eventservice-metrics-")
    # Workers (and the factory in this process) read settings from the environment.
    os.environ.update(settings_to_environ(settings))
    uvicorn.run(
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
        log_config=logs.log_config(settings),  # one format, tokens redacted (app/logs.py)
        loop="uvloop",
        http=protocol.with_head_deadline(settings.handshake_timeout_seconds),  # httptools + slowloris deadline
        ws="websockets-sansio",  # the legacy one never reports a 1009 close to the app
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
