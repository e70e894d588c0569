"""One event, checked by the server's field rules before it joins a batch. Pure.

The server validates a batch whole: one bad event makes it refuse the batch and every
neighbour with it. So the uploader checks each event the way the server will (name,
timestamp, session id, data size, depth and characters PostgreSQL cannot store) and
refuses a bad one at once, alone. An event that passes is kept as its compact JSON
text, ready to be joined into a frame.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

ENTRY_TYPES = ("SESSION_START", "EVENT", "SESSION_END")
MAX_NAME_CHARS = 255
MAX_DATA_BYTES = 16 * 1024  # the server's default MAX_DATA_BYTES
MAX_DATA_DEPTH = 64  # the server's default MAX_DATA_DEPTH
MAX_TIMESTAMP_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z, exclusive
AUTO_SECONDS_BELOW = 100_000_000_000  # ?timestampUnit=auto: a number below it is seconds

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_RFC3339_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:([0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})")
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=True)


class EventError(ValueError):
    """An event the server would refuse: raised by track() before it is queued."""

    error = "invalid_event"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Limits:
    """The server's per-event limits (its MAX_DATA_BYTES and MAX_DATA_DEPTH settings)."""

    max_data_bytes: int = MAX_DATA_BYTES
    max_data_depth: int = MAX_DATA_DEPTH


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def session_uuid(value: object) -> str:
    """The canonical (lower-case) form of a session id, or EventError."""
    if not isinstance(value, str) or len(value) != 36 or not _UUID_RE.fullmatch(value):
        raise EventError("session_id", "must be a UUID like 0d856b46-48cd-4fba-946b-53d15b7b43e0")
    return value.lower()


def encode_event(
    kind: str, session_id: str, timestamp_ms: int, name: str | None, data: Mapping[str, Any] | None, limits: Limits
) -> bytes:
    """The compact JSON of one event tracked by a relay: checked, or EventError."""
    event: dict[str, Any] = {"type": kind, "timestamp": timestamp_ms, "session_id": session_uuid(session_id)}
    if kind == "EVENT":
        event["name"] = check_name(name)
    if data is not None:
        check_data(data, limits)
        event["data"] = data
    return _ENCODER.encode(event).encode()


def check_object(event: object, limits: Limits) -> bytes:
    """An event object as an import file carries it: checked, then its compact JSON, or EventError.

    The fields go to the server as given (timestamps in any form the server reads with
    timestampUnit=auto), so what is stored is what a direct upload would store.
    """
    if not isinstance(event, dict):
        raise EventError("", "must be a JSON object")
    kind = event.get("type")
    if kind not in ENTRY_TYPES:
        raise EventError("type", "must be SESSION_START, EVENT or SESSION_END")
    check_timestamp(event.get("timestamp"))
    session_uuid(event.get("session_id"))
    if kind == "EVENT":
        check_name(event.get("name"))
    if event.get("data") is not None:
        check_data(event["data"], limits)
    try:
        return _ENCODER.encode(event).encode()
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise EventError("", f"cannot be encoded as JSON ({exc})") from None


def check_name(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
        raise EventError("name", f"must be a string of 1 to {MAX_NAME_CHARS} characters")
    if "\x00" in name or _SURROGATE_RE.search(name):
        raise EventError("name", "contains a NUL character or a lone surrogate, which PostgreSQL cannot store")
    return name


def check_data(data: object, limits: Limits) -> None:
    """data: a JSON object of at most max_data_bytes as compact UTF-8 JSON, storable by PostgreSQL."""
    if not isinstance(data, Mapping):
        raise EventError("data", "must be a JSON object (a dict)")
    try:
        text = _ENCODER.encode(data)
    except (TypeError, ValueError, RecursionError) as exc:
        raise EventError("data", f"is not JSON: {exc}") from None
    if _SURROGATE_RE.search(text):
        raise EventError("data", "contains a lone surrogate, which PostgreSQL cannot store")
    size = len(text.encode())
    if size > limits.max_data_bytes:
        raise EventError("data", f"is {size} bytes as compact JSON; at most {limits.max_data_bytes} are allowed")
    if "\\u0000" in text:
        raise EventError("data", "contains a \\u0000 character, which PostgreSQL cannot store")
    if _depth(data) > limits.max_data_depth:
        raise EventError("data", f"nests deeper than {limits.max_data_depth} levels")


def check_timestamp(value: object) -> None:
    """The server's timestampUnit=auto rules: a number (seconds below 1e11, else whole ms) or RFC 3339."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise EventError("timestamp", "must be a number or an RFC 3339 date-time string")
    if isinstance(value, str):
        _check_rfc3339(value)
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise EventError("timestamp", "must be a finite number")
    if value < 0:
        raise EventError("timestamp", "must not be negative")
    if value < AUTO_SECONDS_BELOW:
        ms = value * 1000
    elif isinstance(value, float) and not value.is_integer():
        raise EventError("timestamp", "must be whole milliseconds (100000000000 or more is read as milliseconds)")
    else:
        ms = value
    if ms >= MAX_TIMESTAMP_MS:
        raise EventError("timestamp", "must be before the year 10000")


def _check_rfc3339(text: str) -> None:
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        raise EventError("timestamp", "must be a number or an RFC 3339 date-time with a zone, like 2019-10-01T23:21:22.123Z")
    second, _, zone = match.groups()
    try:
        moment = datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]), tzinfo=UTC)
    except ValueError:
        raise EventError("timestamp", "is not a date and time of the calendar") from None
    if int(second) > 60 or int(text[11:13]) > 23:
        raise EventError("timestamp", "is not a date and time of the calendar")
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise EventError("timestamp", "has an offset out of range")
        try:
            moment -= sign * timedelta(hours=hours, minutes=minutes)
        except OverflowError:
            raise EventError("timestamp", "is outside the storable range") from None
    if moment.year < 1970:
        raise EventError("timestamp", "is before 1970-01-01T00:00:00Z, which cannot be stored")


def _depth(value: object) -> int:
    """Iterative, so a deep document cannot exhaust the Python stack."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, Mapping):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node)
    return deepest
