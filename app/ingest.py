"""Validation of WebSocket frames into typed batches. Pure: no I/O, no web imports.

A frame is validated whole before anything is written, so a batch is either
entirely acceptable or rejected with every problem listed (bounded), which is what
makes "all of it or none" cheap to honour in the write path.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

ENTRY_TYPES = ("SESSION_START", "EVENT", "SESSION_END")
_ENTRY_TYPE_SET = frozenset(ENTRY_TYPES)
MAX_TIMESTAMP_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z, exclusive
MAX_NAME_CHARS = 255
MAX_BATCH_ID_CHARS = 64
MAX_DETAILS = 50
NIL_SCOPE = "00000000-0000-0000-0000-000000000000"

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# How orjson writes a float of magnitude 1e18 or more. orjson reads an integer
# literal past 64 bits as such a float, so data holding one may not be what the
# client sent (false positives, e.g. "e+20" inside a string, only cost a re-read).
_ROUNDED_INT_RE = re.compile(r"e\+(?:1[89]|[2-9][0-9]|[0-9]{3})")


_UUID_CACHE: dict[str, str] = {}
_UUID_CACHE_SIZE = 65_536


def parse_uuid(value: object) -> str | None:
    """Canonical lower-case form of a hyphenated UUID, or None when it is not one.

    A relay repeats the same few session ids in every event; the regex was ~12% of
    ingest CPU, a dict hit is a fraction of that. Bounded: cleared when full.
    """
    if not isinstance(value, str):
        return None
    known = _UUID_CACHE.get(value)
    if known is not None:
        return known
    if len(value) == 36 and _UUID_RE.fullmatch(value):
        if len(_UUID_CACHE) >= _UUID_CACHE_SIZE:
            _UUID_CACHE.clear()
        canonical = _UUID_CACHE[value] = value.lower()
        return canonical
    return None


# An entry as the write path wants it, in COPY column order except that the name
# is still text: (session_id, type, timestamp_ms, name or None, data JSON text or None).
Entry = tuple[str, str, int, "str | None", "str | None"]


@dataclass(frozen=True, slots=True)
class Problem:
    index: int | None
    field: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


@dataclass(slots=True)
class Batch:
    number: int
    batch_id: str | None
    scope: str
    entries: list[Entry]
    raw_size: int = 0


@dataclass(slots=True)
class Rejection:
    number: int
    batch_id: str | None
    error: str
    message: str
    details: list[Problem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FrameRules:
    """What one connection accepts; built once per connection."""

    session_id: str | None  # from the query string, canonical, or None (relay mode)
    timestamp_scale: int  # 1 for milliseconds, 1000 for timestampUnit=s
    max_batch_events: int
    max_data_bytes: int
    max_data_depth: int


def _loads(frame: str | bytes, exact: bool = False) -> tuple[Any, str | None, bool]:
    """Parse JSON; orjson first (fast), the stdlib as a second opinion.

    orjson refuses some documents the stdlib reads (lone surrogates). Re-reading
    those lets validation name the event and field at fault instead of answering a
    bare invalid_json. orjson also reads integers past 64 bits as (rounded) floats;
    `exact` skips it so such a frame can be re-read with every integer intact. The
    third value says whether the document was read exactly (by the stdlib).
    """
    first_error: str | None = None
    if not exact:
        try:
            return orjson.loads(frame), None, False
        except orjson.JSONDecodeError as exc:
            first_error = str(exc)
    try:
        text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float), None, True
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        return None, first_error or str(exc), True
    except RecursionError:
        return None, "nested too deeply", True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    """The stdlib reads 1e400 as infinity, which orjson would then write as null."""
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {literal[:40]} is too large to represent")
    return value


def parse_frame(frame: str | bytes | None, number: int, rules: FrameRules, *, exact: bool = False) -> Batch | Rejection:
    """One frame to a Batch, or a Rejection naming what is wrong (nothing is stored).

    `exact` re-reads the frame with the stdlib parser; parse_frame does so itself
    when orjson may have rounded an integer in some event's data.
    """
    if frame is None or isinstance(frame, bytes):
        return Rejection(
            number, None, "invalid_json", "Binary frames are not accepted: send each batch as a text frame of JSON."
        )
    doc, error, exact = _loads(frame, exact)
    if error is not None:
        return Rejection(number, None, "invalid_json", f"The frame is not valid JSON: {error}.")

    batch_id: str | None = None
    if isinstance(doc, dict):
        raw_id = doc.get("batch_id")
        if "events" not in doc:
            return Rejection(
                number, None, "invalid_batch", 'An object frame must be an envelope {"batch_id": "...", "events": [...]}.'
            )
        if raw_id is not None:
            bad_text = isinstance(raw_id, str) and ("\x00" in raw_id or _SURROGATE_RE.search(raw_id))
            if not isinstance(raw_id, str) or not 1 <= len(raw_id) <= MAX_BATCH_ID_CHARS or bad_text:
                return Rejection(
                    number, None, "invalid_batch", f"batch_id must be a string of 1 to {MAX_BATCH_ID_CHARS} characters."
                )
            batch_id = raw_id
        events = doc["events"]
    else:
        events = doc
    if not isinstance(events, list):
        return Rejection(number, batch_id, "invalid_batch", "A batch must be a JSON array of event objects.")
    if not events:
        return Rejection(number, batch_id, "invalid_batch", "A batch must hold at least one event.")
    if len(events) > rules.max_batch_events:
        return Rejection(
            number,
            batch_id,
            "too_large",
            f"A batch may hold at most {rules.max_batch_events} events; this one has {len(events)}.",
        )

    entries: list[Entry] = []
    problems: list[Problem] = []
    mismatch_only = True
    for index, event in enumerate(events):
        result = _validate_event(index, event, rules)
        if isinstance(result, Problem):
            if len(problems) < MAX_DETAILS:
                problems.append(result)
            if result.field != "session_id" or not result.message.startswith("does not match"):
                mismatch_only = False
        else:
            entries.append(result)
    if problems:
        if mismatch_only:
            return Rejection(
                number, batch_id, "session_mismatch", "Events carry a session_id other than the connection's sessionId.", problems
            )
        count = len(events) - len(entries)
        return Rejection(
            number, batch_id, "invalid_event", f"{count} of {len(events)} events are invalid; nothing was stored.", problems
        )
    if not exact and any(e[4] is not None and "e+" in e[4] and _ROUNDED_INT_RE.search(e[4]) for e in entries):
        # Rare: a float this large may be an integer orjson rounded; read it exactly.
        return parse_frame(frame, number, rules, exact=True)
    scope = rules.session_id or NIL_SCOPE
    return Batch(number, batch_id, scope, entries, len(frame))


def _validate_event(index: int, event: Any, rules: FrameRules) -> Entry | Problem:
    if not isinstance(event, dict):
        return Problem(index, "", "must be a JSON object")
    kind = event.get("type")
    # isinstance first: a list or object there is unhashable and would raise.
    if not isinstance(kind, str) or kind not in _ENTRY_TYPE_SET:
        return Problem(index, "type", "must be SESSION_START, EVENT or SESSION_END")

    raw_ts = event.get("timestamp")
    ts = _timestamp(raw_ts, rules.timestamp_scale)
    if ts is None:
        unit = "whole seconds" if rules.timestamp_scale != 1 else "integer milliseconds"
        return Problem(index, "timestamp", f"must be {unit} since the Unix epoch, from 0 to before year 10000")

    session_id = rules.session_id
    raw_session = event.get("session_id")
    if raw_session is not None:
        given = parse_uuid(raw_session)
        if given is None:
            return Problem(index, "session_id", "must be a UUID")
        if session_id is None:
            session_id = given
        elif given != session_id:
            return Problem(index, "session_id", "does not match the connection's sessionId")
    elif session_id is None:
        return Problem(index, "session_id", "is required when the connection has no sessionId")

    name: str | None = None
    if kind == "EVENT":
        name = event.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
            return Problem(index, "name", f"is required for EVENT: a string of 1 to {MAX_NAME_CHARS} characters")
        if "\x00" in name or _SURROGATE_RE.search(name):
            return Problem(index, "name", "contains a NUL character or a lone surrogate, which PostgreSQL cannot store")

    data_text: str | None = None
    data = event.get("data")
    if data is not None:
        checked = _data_text(data, rules)
        if isinstance(checked, Problem):
            return Problem(index, checked.field, checked.message)
        data_text = checked
    return (session_id, kind, ts, name, data_text)


def _timestamp(value: Any, scale: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        ms = value * scale
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        ms = int(value) * scale
    else:
        return None
    return ms if 0 <= ms < MAX_TIMESTAMP_MS else None


def _data_text(data: Any, rules: FrameRules) -> str | Problem:
    if not isinstance(data, dict):
        return Problem(None, "data", "must be a JSON object")
    try:
        encoded = orjson.dumps(data)
    except TypeError:
        # orjson refuses what it cannot write faithfully: lone surrogates, integers
        # past 64 bits. The stdlib writes the latter exactly; the former we refuse.
        try:
            encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        except (ValueError, UnicodeEncodeError):
            return Problem(None, "data", "contains a lone surrogate or a non-finite number, which PostgreSQL cannot store")
        except RecursionError:
            # orjson stops writing at 255 levels, the stdlib near the interpreter's
            # recursion limit: either way far past max_data_depth.
            return Problem(None, "data", f"nests deeper than {rules.max_data_depth} levels")
    if len(encoded) > rules.max_data_bytes:
        return Problem(None, "data", f"is {len(encoded)} bytes as compact JSON; at most {rules.max_data_bytes} are allowed")
    # A document cannot nest deeper than it has brackets: skip the walk when cheap.
    depth_possible = len(encoded) > rules.max_data_depth and encoded.count(b"{") + encoded.count(b"[") > rules.max_data_depth
    if depth_possible and _depth(data) > rules.max_data_depth:
        return Problem(None, "data", f"nests deeper than {rules.max_data_depth} levels")
    if b"\\u0000" in encoded and _has_nul(data):
        return Problem(None, "data", "contains a \\u0000 character, which PostgreSQL cannot store")
    return encoded.decode()


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _depth(value: Any) -> int:
    """Iterative, so a hostile document cannot exhaust the Python stack."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node)
    return deepest
