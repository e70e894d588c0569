"""Logging set-up: one line per record, text or JSON, and never a secret.

Why a formatter that redacts rather than care at each call site: uvicorn itself
logs WebSocket paths with their query string even with its access log off
(`"WebSocket /ws?token=..." [accepted]`), and exceptions can quote a URL or a
header. Redacting the finished line catches every record of every logger,
ours and the libraries', whatever the call site did. Three passes:

- `token=<value>` in anything that looks like a query string;
- `Authorization: <scheme> <credential>` and `Bearer <credential>`;
- the configured token values themselves, literally (belt and braces: a token
  quoted some other way is still caught).

The configuration is handed to uvicorn as its `log_config`, so the same set-up
applies in every worker process and to uvicorn's own loggers.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from typing import Any

import orjson

REDACTED = "[redacted]"

_QUERY_TOKEN = re.compile(r"(?i)((?:^|[?&;\s\"'])token=)[^&;\s\"'#\\]*")
_AUTH_HEADER = re.compile(r"(?i)(authorization[\"']?\s*[:=,]\s*[\"']?)(?:(bearer|basic|token)\s+)?[^\s\"',;)}\]]+")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+")

# Tokens shorter than this are not replaced literally: a one-character "token"
# would otherwise shred every line. (Such a token is a deployment mistake anyway.)
_MIN_LITERAL_CHARS = 6

# Attributes every LogRecord has; anything else came in through `extra=` and is
# printed as a field.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class Redactor:
    """Removes credentials from a finished log line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        literal = sorted({s for s in secrets if len(s) >= _MIN_LITERAL_CHARS}, key=len, reverse=True)
        self._literal = re.compile("|".join(re.escape(s) for s in literal)) if literal else None

    def __call__(self, text: str) -> str:
        if self._literal is not None:
            text = self._literal.sub(REDACTED, text)
        if "oken=" in text or "OKEN=" in text:
            text = _QUERY_TOKEN.sub(r"\1" + REDACTED, text)
        text = _AUTH_HEADER.sub(lambda m: m[1] + (m[2] + " " if m[2] else "") + REDACTED, text)
        return _BEARER.sub(r"\1" + REDACTED, text)


# uvicorn adds these to its records: an ANSI-coloured copy of the message, and the
# protocol object itself (whose repr is noise).
_DROPPED_ATTRS = frozenset({"color_message", "websocket"})
_PLAIN = (str, int, float, bool, list, tuple, dict)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields worth printing: plain values, None left out."""
    return {
        k: v
        for k, v in record.__dict__.items()
        if k not in _STANDARD_ATTRS and k not in _DROPPED_ATTRS and not k.startswith("_") and isinstance(v, _PLAIN)
    }


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """`2024-05-01T12:00:00.000Z INFO eventservice.conn ws open conn=1a2b remote=…` for a terminal.

    Extra fields are key=value; values with spaces or quotes are JSON-quoted so a
    hostile value (an event name, a path) cannot forge a second line or field.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, _one_line(record.getMessage())]
        parts.extend(f"{key}={_text_value(value)}" for key, value in _fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return self._redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: ts, level, logger, msg, then the fields."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        # Redacted value by value, before encoding: redacting the encoded line
        # could cut through a JSON escape and leave a line that does not parse.
        redact = self._redact
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in _fields(record).items():
            out.setdefault(key, redact(value) if isinstance(value, str) else value)
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        line = orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        # Non-string fields (lists, dicts) are few and ours; one last pass for them.
        return line if all(isinstance(v, str | int | float | bool) for v in out.values()) else redact(line)


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and not any(c in text for c in ' "=\n\r\t'):
        return text
    return orjson.dumps(text).decode()


def log_config(log_format: str = "text", log_level: str = "info", secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A logging.config.dictConfig dict for uvicorn's `log_config`.

    Every logger, uvicorn's included, writes through one stderr handler with the
    chosen formatter ("json", else text); uvicorn's access log stays off (one line
    per request would be noise, and per-connection lines come from app.edge.connlog
    instead). `secrets` (the configured tokens) are redacted literally from every line.
    """
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    level = log_level.upper()
    secrets = list(secrets)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": f"{formatter.__module__}.{formatter.__qualname__}", "secrets": secrets}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            "eventservice": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }


__all__ = ["REDACTED", "JsonFormatter", "Redactor", "TextFormatter", "log_config"]
