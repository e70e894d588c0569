"""Validation of WebSocket frames into typed batches. Pure: no I/O, no web imports.

A frame is validated whole before anything is written, so a batch is either
entirely acceptable or rejected with every problem listed (bounded), which is what
makes "all of it or none" cheap to honour in the write path.

Two paths. The fast one decodes the frame with msgspec into typed Structs (a tagged
union on `type`), so JSON syntax, field types, the EVENT name's length and the
shape of `data` are checked in compiled code; Python adds only what a type cannot
say (timestamp units and range, session ids, NUL characters, data size and depth).
At the first problem it gives up, and the slow path re-reads the frame as plain
values and lists every problem of every event. Both use the field checks below
(the fast path inlines the common cases), and a property test holds them to the
same answer for every frame. The slow path runs only for frames that are going to
be refused (or, rarely, ones msgspec cannot read at all, such as a lone surrogate
in a field the service ignores).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Annotated, Any, Literal

import msgspec

from app.codes import ErrorCode
from app.ids import known_uuid, parse_uuid

ENTRY_TYPES = ("SESSION_START", "EVENT", "SESSION_END")
_ENTRY_TYPE_SET = frozenset(ENTRY_TYPES)
MAX_TIMESTAMP_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z, exclusive
# ?timestampUnit=auto: a number below this is seconds (as milliseconds it would be
# before 1973-03-03; as seconds it is before the year 5138).
AUTO_SECONDS_BELOW = 100_000_000_000
TimestampUnit = Literal["auto", "ms", "s"]
TIMESTAMP_UNITS: dict[str, TimestampUnit] = {"auto": "auto", "ms": "ms", "s": "s"}  # ?timestampUnit= to the mode
MAX_NAME_CHARS = 255
MAX_BATCH_ID_CHARS = 64
MAX_DETAILS = 50

_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# RFC 3339 section 5.6 date-time, exactly: "T" and "Z" in either case, a zone always,
# the offset with a colon. [0-9], not \d, which would admit other scripts' digits.
_RFC3339_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:([0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})")
# The start of each minute seen (date, hour, minute and zone) in ms: a batch's
# date-times share a few. Bounded: cleared when full.
_MINUTE_CACHE: dict[str, int] = {}
_MINUTE_CACHE_SIZE = 4096

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
    session_id: str | None  # the connection's sessionId, None in relay mode (app/ids.py)
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
    timestamp_unit: TimestampUnit  # how numbers are read: "auto" (the default), "ms" or "s"
    max_batch_events: int
    max_data_bytes: int
    max_data_depth: int


class _Invalid(Exception):
    """A field breaks a rule; the message completes the sentence "<field> ..."."""


class _Mismatch(_Invalid):
    """A valid session_id other than the connection's: answered as session_mismatch."""


_MISMATCH = "does not match the connection's sessionId"
_TYPE_RULE = "must be SESSION_START, EVENT or SESSION_END"
_NAME_RULE = f"is required for EVENT: a string of 1 to {MAX_NAME_CHARS} characters"
_TIMESTAMP_EXAMPLE = '"2019-10-01T23:21:22.123Z" or "2019-10-02T01:21:22+02:00"'
_TOO_LATE = "is after the year 9999: at most 253402300799999 milliseconds (253402300799 seconds) since the Unix epoch"
_ENCODER = msgspec.json.Encoder()


# --- the fast path: typed decoding ------------------------------------------------

_Timestamp = int | float | str
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]  # characters, not bytes
_Data = dict[str, Any] | None


# gc=False: these hold only decoded JSON, which cannot refer back to them (no cycles),
# and 10,000 of them per frame would otherwise feed the cyclic collector.
class _SessionStart(msgspec.Struct, tag_field="type", tag="SESSION_START", gc=False):
    timestamp: _Timestamp
    session_id: str | None = None
    data: _Data = None  # name is not a field: ignored, whatever it holds


class _Event(msgspec.Struct, tag_field="type", tag="EVENT", gc=False):
    timestamp: _Timestamp
    name: _Name
    session_id: str | None = None
    data: _Data = None


class _SessionEnd(msgspec.Struct, tag_field="type", tag="SESSION_END", gc=False):
    timestamp: _Timestamp
    session_id: str | None = None
    data: _Data = None


class _Envelope(msgspec.Struct, gc=False):
    events: list[_SessionStart | _Event | _SessionEnd]
    batch_id: str | None = None


_FRAME = msgspec.json.Decoder(list[_SessionStart | _Event | _SessionEnd] | _Envelope)


def parse_frame(frame: str | bytes | None, number: int, rules: FrameRules) -> Batch | Rejection:
    """One frame to a Batch, or a Rejection naming every problem (nothing is stored)."""
    if frame is None or isinstance(frame, bytes):
        message = "Binary frames are not accepted: send each batch as a text frame of JSON."
        return Rejection(number, None, ErrorCode.INVALID_JSON, message)
    try:
        doc = _FRAME.decode(frame)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError: types, fields
        return _slow(frame, number, rules)
    if type(doc) is _Envelope:
        events = doc.events
        try:
            batch_id = _batch_id(doc.batch_id)
        except _Invalid:
            return _slow(frame, number, rules)
    else:
        events, batch_id = doc, None
    refused = _count_rejection(number, batch_id, len(events), rules)
    if refused is not None:
        return refused
    entries = _fast_entries(events, rules)
    if entries is None:
        return _slow(frame, number, rules)
    return Batch(number, batch_id, rules.session_id, entries, len(frame))


def _fast_entries(events: list[_SessionStart | _Event | _SessionEnd], rules: FrameRules) -> list[Entry] | None:
    """Entries of typed events, or None at the first problem (the slow path then lists them all).

    The usual cases are inlined (integer timestamps, known session ids, small data):
    this loop is most of the Python time left per event.
    """
    session = rules.session_id
    unit = rules.timestamp_unit
    auto = unit == "auto"
    scale = 1000 if unit == "s" else 1
    max_bytes = rules.max_data_bytes
    max_depth = rules.max_data_depth
    known = known_uuid
    encode = _ENCODER.encode
    entries: list[Entry] = []
    append = entries.append
    try:
        for event in events:
            ts = event.timestamp
            if type(ts) is int:
                ms = (ts * 1000 if ts < AUTO_SECONDS_BELOW else ts) if auto else ts * scale
                if not 0 <= ms < MAX_TIMESTAMP_MS:
                    return None
            else:
                ms = _timestamp_ms(ts, unit)
            session_id = event.session_id
            if session_id is None:
                if session is None:
                    return None
                session_id = session
            else:
                canonical = known(session_id)
                session_id = _session_id(session_id, session) if canonical is None else canonical
                if session is not None and session_id != session:
                    return None
            if type(event) is _Event:
                name: str | None = event.name
                if "\x00" in event.name:  # msgspec already refused lone surrogates
                    return None
                kind = "EVENT"
            else:
                name = None
                kind = "SESSION_START" if type(event) is _SessionStart else "SESSION_END"
            data = event.data
            if data is None:
                append((session_id, kind, ms, name, None))
                continue
            encoded = encode(data)  # msgspec decoded it: no lone surrogates, depth < 1000
            if (
                len(encoded) > max_bytes
                or b"\\u0000" in encoded
                # Each level takes two brackets, so short data cannot be too deep.
                or (len(encoded) > 2 * max_depth and encoded.count(b"{") + encoded.count(b"[") > max_depth)
            ):
                encoded = _data_text(data, rules).encode()  # decides exactly, or raises
            append((session_id, kind, ms, name, encoded.decode()))
    except _Invalid:
        return None
    return entries


# --- the slow path: every problem of every event ---------------------------------


def _slow(frame: str, number: int, rules: FrameRules) -> Batch | Rejection:
    doc, error = _read(frame)
    if error is not None:
        return Rejection(number, None, ErrorCode.INVALID_JSON, f"The frame is not valid JSON: {error}.")
    batch_id: str | None = None
    if isinstance(doc, dict):
        if "events" not in doc:
            return Rejection(
                number, None, ErrorCode.INVALID_BATCH, 'An object frame must be an envelope {"batch_id": "...", "events": [...]}.'
            )
        try:
            batch_id = _batch_id(doc.get("batch_id"))
        except _Invalid as exc:
            return Rejection(number, None, ErrorCode.INVALID_BATCH, f"batch_id {exc}.")
        events = doc["events"]
    else:
        events = doc
    if not isinstance(events, list):
        return Rejection(number, batch_id, ErrorCode.INVALID_BATCH, "A batch must be a JSON array of event objects.")
    refused = _count_rejection(number, batch_id, len(events), rules)
    if refused is not None:
        return refused

    entries: list[Entry] = []
    details: list[Problem] = []
    invalid = 0
    mismatch_only = True
    for index, event in enumerate(events):
        result = _check_event(index, event, rules)
        if isinstance(result, tuple):
            entries.append(result)
            continue
        invalid += 1
        details.extend(result[: MAX_DETAILS - len(details)])
        mismatch_only = mismatch_only and all(p.message == _MISMATCH for p in result)
    if not invalid:
        # msgspec refused what the rules allow, e.g. a lone surrogate in a field the
        # service ignores: the plain reading decides, with the same checks.
        return Batch(number, batch_id, rules.session_id, entries, len(frame))
    if mismatch_only:
        return Rejection(
            number,
            batch_id,
            ErrorCode.SESSION_MISMATCH,
            "Events carry a session_id other than the connection's sessionId.",
            details,
        )
    return Rejection(
        number, batch_id, ErrorCode.INVALID_EVENT, f"{invalid} of {len(events)} events are invalid; nothing was stored.", details
    )


def _read(frame: str) -> tuple[Any, str | None]:
    """Plain values; the stdlib as a second reader for what msgspec refuses.

    msgspec refuses lone surrogates and very deep nesting outright; the stdlib reads
    them, so validation can name the event and field at fault instead of answering
    a bare invalid_json. Both keep integers of any size exact. NaN, Infinity and
    numbers past a double's range are not JSON numbers: in an event's timestamp
    they are that event's problem (invalid_event), anywhere else invalid_json.
    """
    try:
        return msgspec.json.decode(frame), None
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        doc = json.loads(frame, parse_constant=_NotFinite, parse_float=_float_or_not_finite)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        return None, str(exc)
    except RecursionError:
        return None, "nested too deeply"
    stray = _stray_not_finite(doc)
    if stray is not None:
        literal = stray.literal[:40]
        return None, f"{literal} is not valid JSON" if literal[-1].isalpha() else f"number {literal} is too large to represent"
    return doc, None


@dataclass(frozen=True, slots=True)
class _NotFinite:
    """Where the stdlib read NaN, Infinity or a number that overflows a double."""

    literal: str


def _float_or_not_finite(literal: str) -> float | _NotFinite:
    value = float(literal)
    return value if math.isfinite(value) else _NotFinite(literal)


def _stray_not_finite(doc: Any) -> _NotFinite | None:
    """The first _NotFinite anywhere but directly in an event's timestamp. Iterative: no stack limit."""
    events = doc.get("events") if isinstance(doc, dict) else doc
    allowed = {id(e.get("timestamp")) for e in events if isinstance(e, dict)} if isinstance(events, list) else set()
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, _NotFinite):
            if id(node) not in allowed:
                return node
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _check_event(index: int, event: Any, rules: FrameRules) -> Entry | list[Problem]:
    """The entry, or every problem of the event (a field's problem does not hide the next's)."""
    if not isinstance(event, dict):
        return [Problem(index, "", "must be a JSON object")]
    problems: list[Problem] = []
    kind = event.get("type")
    # isinstance first: a list or object there is unhashable and would raise.
    if not isinstance(kind, str) or kind not in _ENTRY_TYPE_SET:
        problems.append(Problem(index, "type", _TYPE_RULE))
        kind = None  # whether name is required is unknown: not checked
    ms = session_id = name = data = None
    try:
        ms = _timestamp_ms(event.get("timestamp"), rules.timestamp_unit)
    except _Invalid as exc:
        problems.append(Problem(index, "timestamp", str(exc)))
    try:
        session_id = _session_id(event.get("session_id"), rules.session_id)
    except _Invalid as exc:
        problems.append(Problem(index, "session_id", str(exc)))
    if kind == "EVENT":
        try:
            name = _name(event.get("name"))
        except _Invalid as exc:
            problems.append(Problem(index, "name", str(exc)))
    raw_data = event.get("data")
    if raw_data is not None:
        try:
            data = _data_text(raw_data, rules)
        except _Invalid as exc:
            problems.append(Problem(index, "data", str(exc)))
    if problems or kind is None or ms is None or session_id is None:
        return problems
    return (session_id, kind, ms, name, data)


# --- the rules, shared by both paths ---------------------------------------------


def _count_rejection(number: int, batch_id: str | None, count: int, rules: FrameRules) -> Rejection | None:
    if count == 0:
        return Rejection(number, batch_id, ErrorCode.INVALID_BATCH, "A batch must hold at least one event.")
    if count > rules.max_batch_events:
        return Rejection(
            number,
            batch_id,
            ErrorCode.TOO_LARGE,
            f"A batch may hold at most {rules.max_batch_events} events; this one has {count}.",
        )
    return None


def _batch_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_BATCH_ID_CHARS or "\x00" in value or _SURROGATE_RE.search(value):
        raise _Invalid(f"must be a string of 1 to {MAX_BATCH_ID_CHARS} characters")
    return value


def _session_id(value: Any, connection: str | None) -> str:
    """The event's session: its own session_id, else the connection's."""
    if value is None:
        if connection is None:
            raise _Invalid("is required when the connection has no sessionId")
        return connection
    given = parse_uuid(value)
    if given is None:
        raise _Invalid("must be a UUID")
    if connection is not None and given != connection:
        raise _Mismatch(_MISMATCH)
    return given


def _name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_CHARS:
        raise _Invalid(_NAME_RULE)
    if "\x00" in value or _SURROGATE_RE.search(value):
        raise _Invalid("contains a NUL character or a lone surrogate, which PostgreSQL cannot store")
    return value


def _timestamp_ms(value: Any, unit: str) -> int:
    """Integer milliseconds since the Unix epoch, read as the connection's unit says."""
    if isinstance(value, _NotFinite):
        raise _Invalid(f"must be a finite number, not {value.literal[:40]}")
    if value is None:
        raise _Invalid(f"is required: seconds or milliseconds since the Unix epoch, or a date-time like {_TIMESTAMP_EXAMPLE}")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        kind = "a boolean" if isinstance(value, bool) else "an array" if isinstance(value, list) else "an object"
        raise _Invalid(f"must be a number or an RFC 3339 date-time string, not {kind}")
    if isinstance(value, str):
        ms = _rfc3339_ms(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _Invalid("must be a finite number")
    elif value < 0:
        raise _Invalid("must not be negative: times before 1970 cannot be stored")
    elif unit == "s" or (unit == "auto" and value < AUTO_SECONDS_BELOW):
        ms = value * 1000 if isinstance(value, int) else _seconds_to_ms(value)
    elif isinstance(value, int):
        ms = value
    elif value.is_integer():
        ms = int(value)
    else:
        read_as = "it is read as milliseconds (100000000000 or more)" if unit == "auto" else "timestampUnit=ms"
        raise _Invalid(f"must be whole milliseconds ({read_as}); only seconds may carry a fraction")
    if ms >= MAX_TIMESTAMP_MS:
        raise _Invalid(_TOO_LATE + (" (this connection reads numbers as seconds: timestampUnit=s)" if unit == "s" else ""))
    return ms


def _seconds_to_ms(seconds: float) -> int:
    """Seconds with a fraction, rounded to the nearest millisecond (halves up)."""
    if seconds >= MAX_TIMESTAMP_MS:  # past the range however it rounds; keeps the product finite
        return MAX_TIMESTAMP_MS
    product = seconds * 1000
    ms = math.floor(product + 0.5)
    if abs(product - math.floor(product) - 0.5) < 1e-3:
        # Near a half, the product's own rounding may have crossed it: decide exactly.
        ms = math.floor(Fraction(seconds) * 1000 + Fraction(1, 2))
    return ms


def _rfc3339_ms(text: str) -> int:
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        try:
            float(text)
        except ValueError:
            raise _Invalid(f"must be a number or an RFC 3339 date-time with a zone, like {_TIMESTAMP_EXAMPLE}") from None
        raise _Invalid(f"is a number inside a string: send it as a JSON number, or as a date-time like {_TIMESTAMP_EXAMPLE}")
    second, fraction, zone = match.groups()
    minute_key = text[:16] + zone  # "YYYY-MM-DDTHH:MM": the pattern fixes every position
    minute_ms = _MINUTE_CACHE.get(minute_key)
    if minute_ms is None:
        minute_ms = _minute_ms(text, zone)
        if len(_MINUTE_CACHE) >= _MINUTE_CACHE_SIZE:
            _MINUTE_CACHE.clear()
        _MINUTE_CACHE[minute_key] = minute_ms
    # Second 60 is a leap second (RFC 3339 allows it): counted as the next second, as
    # Unix time does. Digits past the millisecond are truncated.
    if int(second) > 60:
        raise _Invalid(f"is not a date and time of the calendar, like {_TIMESTAMP_EXAMPLE}")
    ms = minute_ms + int(second) * 1000 + (int(fraction[:3].ljust(3, "0")) if fraction else 0)
    if ms < 0:
        raise _Invalid("is before 1970-01-01T00:00:00Z, which cannot be stored")
    return ms


def _minute_ms(text: str, zone: str) -> int:
    """Milliseconds since the epoch at the start of the minute, in UTC (may be negative)."""
    year, month, day, hour, minute = int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16])
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month) and hour < 24 and minute < 60):
        raise _Invalid(f"is not a date and time of the calendar, like {_TIMESTAMP_EXAMPLE}")
    offset = 0
    if zone not in ("Z", "z"):
        offset_hours, offset_minutes = int(zone[1:3]), int(zone[4:6])
        if offset_hours > 23 or offset_minutes > 59:
            raise _Invalid(f"has a zone offset out of range (at most ±23:59), like {_TIMESTAMP_EXAMPLE}")
        offset = (offset_hours * 60 + offset_minutes) * (1 if zone[0] == "+" else -1)
    return ((_days_from_civil(year, month, day) * 24 + hour) * 60 + minute - offset) * 60_000


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm; year 0 too)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _data_text(data: Any, rules: FrameRules) -> str:
    """The compact JSON text stored for `data`; keys in the order sent, integers exact."""
    if not isinstance(data, dict):
        raise _Invalid("must be a JSON object")
    try:
        encoded = _ENCODER.encode(data)
    except UnicodeEncodeError:
        raise _Invalid("contains a lone surrogate, which PostgreSQL cannot store") from None
    except RecursionError:
        # Only the stdlib reader produces such depth, far past max_data_depth.
        raise _Invalid(f"nests deeper than {rules.max_data_depth} levels") from None
    if len(encoded) > rules.max_data_bytes:
        raise _Invalid(f"is {len(encoded)} bytes as compact JSON; at most {rules.max_data_bytes} are allowed")
    # A document cannot nest deeper than it has brackets: skip the walk when cheap.
    depth_possible = len(encoded) > rules.max_data_depth and encoded.count(b"{") + encoded.count(b"[") > rules.max_data_depth
    if depth_possible and _depth(data) > rules.max_data_depth:
        raise _Invalid(f"nests deeper than {rules.max_data_depth} levels")
    if b"\\u0000" in encoded and _has_nul(data):
        raise _Invalid("contains a \\u0000 character, which PostgreSQL cannot store")
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
