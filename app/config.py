"""One frozen Settings object, read from the environment and overridden by CLI flags.

Every setting has one name: the environment variable is the upper-case form of the
flag (``--max-batch-events`` <-> ``MAX_BATCH_EVENTS``), so the settings table (docs/settings.md), ``--help``
and docker-compose can never drift apart.

Everything about a setting stands in its one field: the default, the ``--help`` group
and text, and what values are allowed (``setting(...)`` puts them in the field's
metadata). A value outside them is a ``SettingError`` naming the setting and what is
allowed; ``python -m app`` prints it as one line and exits 2, so a typo never starts
a server with a surprise and never ends in a traceback.

To add a setting: one field, ``name: type = setting(default, GROUP, "help", ...)``,
with ``minimum``/``maximum`` for numbers and ``choices`` for words.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

# The --help groups, in the order they are printed.
SERVER = "server"
DATABASE = "database"
INGEST = "ingest limits"
STREAM = "stream"
SECURITY = "security"
LOGGING = "logging"
GROUPS = (SERVER, DATABASE, INGEST, STREAM, SECURITY, LOGGING)


class SettingError(ValueError):
    """A setting's value is not allowed; the message is the one line a user reads."""


class _Refused(ValueError):
    """A value refused for a reason of its own (not merely outside what is allowed)."""


def setting(
    default: Any,
    group: str,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    choices: tuple[str, ...] = (),
) -> Any:
    """A Settings field: its default, where --help shows it, and what it accepts.

    ``above`` is an exclusive lower bound (a timeout of 0 seconds means nothing).
    """
    return dataclasses.field(
        default=default,
        metadata={"group": group, "help": help, "minimum": minimum, "maximum": maximum, "above": above, "choices": choices},
    )


@dataclass(frozen=True)
class Settings:
    database_url: str | None = setting(
        None,
        DATABASE,
        "PostgreSQL URL (postgresql://user:password@host:5432/db); unset: run an embedded PostgreSQL in --data-dir",
    )
    data_dir: Path = setting(Path("postgres-data"), DATABASE, "where the embedded PostgreSQL keeps its files")
    database_connect_timeout: float = setting(
        30.0, DATABASE, "seconds to keep retrying an unreachable database at start-up before giving up", minimum=0
    )
    host: str = setting("127.0.0.1", SERVER, "bind address")
    port: int = setting(8000, SERVER, "bind port", minimum=1, maximum=65535)
    workers: int = setting(1, SERVER, "uvicorn worker processes (each with its own LISTEN hub)", minimum=1, maximum=256)
    insecure: bool = setting(False, SECURITY, "allow a non-loopback bind without tokens")
    log_format: str = setting("text", LOGGING, "log line format", choices=("text", "json"))
    log_level: str = setting("info", LOGGING, "lowest level logged", choices=("debug", "info", "warning", "error"))

    ingest_tokens: tuple[str, ...] = setting((), SECURITY, "comma-separated tokens accepted on /ws (or @/path/to/file)")
    read_tokens: tuple[str, ...] = setting((), SECURITY, "comma-separated tokens accepted on read endpoints (or @/path/to/file)")
    allowed_origins: tuple[str, ...] = setting(
        (), SECURITY, "comma-separated Origins (https://host[:port], or *) allowed for WebSocket and CORS; empty: same host only"
    )

    max_frame_bytes: int = setting(
        1024 * 1024, INGEST, "largest batch: a /ws frame (larger: close 1009) or a POST /batch body (413)", minimum=64
    )
    max_batch_events: int = setting(10_000, INGEST, "most events in one batch (more: too_large)", minimum=1)
    max_data_bytes: int = setting(16 * 1024, INGEST, "largest event data object, as compact UTF-8 JSON", minimum=2)
    max_data_depth: int = setting(64, INGEST, "deepest nesting of event data", minimum=1)
    max_inflight_batches: int = setting(16, INGEST, "batches a connection may have awaiting commit before reads pause", minimum=1)
    max_connections: int = setting(
        20_000, SECURITY, "cap on concurrent WebSocket + SSE connections + POST /batch requests in progress", minimum=1
    )
    handshake_timeout_seconds: float = setting(
        10.0, SECURITY, "seconds a new TCP connection may take to send its request head (WebSocket handshakes too)", above=0
    )
    idle_timeout_seconds: float = setting(
        300.0, INGEST, "seconds a WebSocket may go without sending a frame before it is closed (1001); 0: never", minimum=0
    )
    # Ingest rate limits (token buckets, batches per second; 0 = off). See app/ingest/rate.py.
    ingest_rate_per_connection: float = setting(
        0.0, INGEST, "batches per second one WebSocket may send, token bucket; 0: unlimited", minimum=0
    )
    ingest_burst_per_connection: int = setting(
        100, INGEST, "batches one WebSocket may send at once before its rate applies", minimum=1
    )
    ingest_rate_per_token: float = setting(
        0.0, INGEST, "batches per second all WebSockets of one ingest token may send (per process); 0: unlimited", minimum=0
    )
    ingest_burst_per_token: int = setting(
        1_000, INGEST, "batches all WebSockets of one ingest token may send at once before its rate applies", minimum=1
    )

    pool_min_size: int = setting(2, DATABASE, "database pool minimum connections", minimum=0)
    pool_max_size: int = setting(10, DATABASE, "database pool maximum connections (at least --pool-min-size)", minimum=1)
    writer_max_events: int = setting(20_000, DATABASE, "most events merged into one group-commit transaction", minimum=1)
    ingest_lock_timeout_seconds: float = setting(
        10.0, INGEST, "seconds a batch waits for the insert lock before it is answered unavailable", above=0
    )
    ingest_lock_report_seconds: float = setting(
        5.0, DATABASE, "seconds a transaction may hold the insert lock before /readyz says 503 and the log names it", above=0
    )
    batch_id_retention_hours: float = setting(
        168.0, INGEST, "hours a batch_id is remembered (a resend within them is a duplicate); older ones are pruned", above=0
    )
    name_cache_size: int = setting(100_000, DATABASE, "event names cached in-process (bounded)", minimum=1)
    tree_cache_bytes: int = setting(
        64 * 1024 * 1024, DATABASE, "bytes of encoded session trees cached per process (0: off)", minimum=0
    )
    tree_store_after_seconds: float = setting(
        60.0,
        DATABASE,
        "seconds a session must stay unchanged before its encoded tree is stored for cold GET /session (0: never)",
        minimum=0,
    )

    sse_ping_seconds: float = setting(15.0, STREAM, "seconds between SSE keep-alive comments", above=0)
    sse_retry_ms: int = setting(2_000, STREAM, "reconnect delay hinted to EventSource clients", minimum=0)
    sse_client_buffer: int = setting(20_000, STREAM, "messages buffered per SSE client before it is dropped", minimum=1)
    sse_send_timeout_seconds: float = setting(
        30.0, STREAM, "seconds a write to an SSE client may block before it is dropped", above=0
    )
    hub_poll_seconds: float = setting(
        2.0, STREAM, "safety poll of the events table and liveness probe of the LISTEN connection when idle", above=0
    )
    hub_timeout_seconds: float = setting(
        3.0, STREAM, "seconds any query of the LISTEN hub may take before its connection is replaced", above=0
    )

    breakdown_rollups: int = setting(
        8,
        DATABASE,
        "(name, key) pairs of /stats/breakdown kept as rollups, each from the first time it is asked for (0: none)",
        minimum=0,
    )

    rejected_max_rows: int = setting(10_000, DATABASE, "rejected batches kept for inspection (oldest pruned)", minimum=0)
    rejected_max_frame_bytes: int = setting(4_096, DATABASE, "bytes of each rejected frame kept", minimum=0)

    retention_days: float | None = setting(
        None, DATABASE, "days entries are kept, by when they were stored (fractions allowed); unset: keep everything", above=0
    )
    retention_check_seconds: float = setting(
        3600.0, DATABASE, "seconds between retention checks that remove pieces older than --retention-days", above=0
    )

    graceful_timeout_seconds: float = setting(10.0, SERVER, "seconds to finish in-flight work on shutdown", minimum=0)

    @property
    def tokens_required(self) -> bool:
        return bool(self.ingest_tokens or self.read_tokens)


def _meta(f: dataclasses.Field[Any]) -> Mapping[str, Any]:
    # A field declared without setting() (say, one merged from an older branch) still
    # loads, unchecked and in the server group; test_config requires setting() for all.
    return f.metadata or {"group": SERVER, "help": "", "choices": ()}


def _kind(f: dataclasses.Field[Any]) -> str:
    """The field's type by name; an optional one (`float | None`: unset allowed) as its type."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return kind.removesuffix(" | None")


def env_name(f: dataclasses.Field[Any]) -> str:
    return f.name.upper()


def flag_name(f: dataclasses.Field[Any]) -> str:
    return "--" + f.name.replace("_", "-")


def allowed(f: dataclasses.Field[Any]) -> str:
    """What a field accepts, as the end of a sentence ("an integer from 1 to 65535")."""
    meta, kind = _meta(f), _kind(f)
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    if kind == "bool":
        return "one of 1, 0, true, false, yes, no, on, off"
    if kind in ("int", "float"):
        noun = "an integer" if kind == "int" else "a number"
        low, high, above = meta.get("minimum"), meta.get("maximum"), meta.get("above")
        if low is not None and high is not None:
            return f"{noun} from {_num(low)} to {_num(high)}"
        if above is not None:
            return f"{noun} greater than {_num(above)}"
        if low is not None:
            return f"{noun} of at least {_num(low)}"
        return noun
    if "tuple" in kind:
        return "a comma-separated list, or @/path/to/a/file with one entry a line"
    if f.name == "database_url":
        return "a postgresql://user:password@host:port/database URL"
    return "a non-empty value"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    """The typed value of one raw string, or ValueError; the caller names the setting."""
    meta, kind = _meta(f), _kind(f)
    text = raw.strip()
    if "tuple" in kind:
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text().replace("\n", ",")
            except OSError as exc:
                raise _Refused(f"cannot read {text[1:]}: {exc.strerror or exc}") from None
        entries = tuple(part.strip() for part in text.split(",") if part.strip())
        if f.name == "allowed_origins":
            for entry in entries:
                if entry not in ("*", "null") and not (urlsplit(entry).scheme and urlsplit(entry).netloc):
                    raise _Refused(f"{entry!r} is not an origin: write scheme://host[:port] (https://example.com), or *")
        return entries
    if kind == "bool":
        lowered = text.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError
    if kind in ("int", "float"):
        number: float
        if kind == "int":
            number = int(text, 10)
        else:
            number = float(text)
            if not math.isfinite(number):
                raise ValueError
        low, high, above = meta.get("minimum"), meta.get("maximum"), meta.get("above")
        if (low is not None and number < low) or (high is not None and number > high) or (above is not None and number <= above):
            raise ValueError
        return number
    if not text:
        raise ValueError
    if meta.get("choices"):
        if text.lower() not in meta["choices"]:
            raise ValueError
        return text.lower()
    if kind == "Path":
        return Path(text)
    if f.name == "database_url":
        _check_database_url(text)
    return text


def _check_database_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError
    parts.port  # noqa: B018 - raises ValueError on a port that is not a number


def _setting_error(source: str, raw: str, f: dataclasses.Field[Any], reason: str = "") -> SettingError:
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    if f.name == "database_url":
        shown = _without_password(raw)
    if "tokens" in f.name:
        shown = "…"  # never echo a secret, not even a malformed one
    detail = reason or f"must be {allowed(f)}"
    return SettingError(f"invalid {source} {shown!r}: {detail}")


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@", 1)).geturl()


def _value(f: dataclasses.Field[Any], raw: str, source: str) -> Any:
    try:
        return _parse(f, raw)
    except _Refused as exc:
        raise _setting_error(source, raw, f, str(exc)) from None
    except ValueError:
        raise _setting_error(source, raw, f) from None


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage of 37 flags is a page)."""

    def error(self, message: str) -> NoReturn:
        if "unrecognized arguments:" in message:
            unknown = message.split(":", 1)[1].split()
            flags = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            guesses = [g for u in unknown for g in difflib.get_close_matches(u.split("=")[0], flags, n=1)]
            if guesses:
                message += f" (did you mean {guesses[0]}?)"
        self.exit(2, f"{self.prog}: {message}; see --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m app",
        usage="%(prog)s [--flag VALUE ...]",
        description="eventservice: session analytics events over WebSocket, SSE and HTTP. "
        "Every flag can also be set by the environment variable named in brackets; a flag wins.",
        allow_abbrev=False,
    )
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for f in dataclasses.fields(Settings):
        meta = _meta(f)
        group = groups.get(meta["group"], groups[SERVER])
        text = f"{meta['help']} [{env_name(f)}]"
        if _kind(f) == "bool":
            group.add_argument(flag_name(f), action="store_true", default=None, help=text)
        else:
            limits = f"; {allowed(f)}" if _kind(f) in ("int", "float") or _meta(f).get("choices") else ""
            text += f" (default: {_show(f.default)}{limits})"
            group.add_argument(flag_name(f), default=None, metavar=env_name(f), help=text.replace("%", "%%"))
    return parser


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return "unset" if value is None else str(value)


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Environment first, then flags: a flag given on the command line always wins.

    Raises SettingError for a value that is not allowed (argparse itself exits 2 on an
    unknown flag or a missing value).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f in dataclasses.fields(Settings):
        raw = environ.get(env_name(f))
        if raw is not None and raw != "":
            values[f.name] = _value(f, raw, env_name(f))
            sources[f.name] = env_name(f)
    if argv is not None:
        parsed = vars(build_parser().parse_args(list(argv)))
        for f in dataclasses.fields(Settings):
            given = parsed.get(f.name)
            if given is None:
                continue
            values[f.name] = given if _kind(f) == "bool" else _value(f, given, flag_name(f))
            sources[f.name] = flag_name(f)
    settings = Settings(**values)
    if settings.pool_min_size > settings.pool_max_size:
        name = sources.get("pool_min_size") or sources.get("pool_max_size") or "POOL_MIN_SIZE"
        raise SettingError(
            f"invalid {name}: the pool's minimum ({settings.pool_min_size}) exceeds its maximum ({settings.pool_max_size})"
        )
    return settings


def settings_to_environ(settings: Settings) -> dict[str, str]:
    """Worker processes re-read settings from the environment; this is the inverse of load."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        if isinstance(value, tuple):
            out[env_name(f)] = ",".join(value)
        elif isinstance(value, bool):
            out[env_name(f)] = "1" if value else "0"
        else:
            out[env_name(f)] = str(value)
    return out


def load_or_exit(argv: Sequence[str]) -> Settings:
    """For the CLI: a bad setting is one line on stderr and exit status 2, no traceback."""
    try:
        return load_settings(argv)
    except SettingError as exc:
        print(f"python -m app: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = [
    "GROUPS",
    "SettingError",
    "Settings",
    "allowed",
    "build_parser",
    "env_name",
    "flag_name",
    "load_or_exit",
    "load_settings",
    "setting",
    "settings_to_environ",
]
