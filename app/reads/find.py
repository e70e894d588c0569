"""The pure half of `GET /sessions` filters and `GET /stats/breakdown`: parameters only.

No I/O here: app/routes/sessions.py and app/routes/stats.py run the SQL
(app/store/queries.py FIND_SESSIONS, STATS_BREAKDOWN) with what these functions
return, and test/unit/test_find.py checks them.

How `data=<key>:<value>` is read (SPEC: "that value as a JSON string, number or
boolean"):
- the key is everything before the first `:`; a key that holds a colon itself is
  written as a JSON string, `data="a:b":1`;
- the value is the rest. Written as a JSON string (`plan:"pro"`), it matches only
  that string. Otherwise it matches the string with exactly that text, and also,
  when the text is a JSON number (`n:3`), every number equal to it (`3`, `3.0`,
  `3e0`), or when it is `true`/`false`, that boolean: a query string cannot tell
  `n:3` the number from `n:3` the text, and people who write `n:3` mean either.
- JSON `null`, arrays and objects are never matched (a value `null` matches the
  string "null" only).

The database compares them as jsonb (`(data -> key)::jsonb IN (a, b)`), so number
equality is numeric equality, as in PostgreSQL's jsonb.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from app.codes import ErrorCode
from app.reads import stats as st

MAX_KEY_CHARS = 255
MAX_VALUE_CHARS = 1_000
MAX_DATA_FILTERS = 10
MAX_NAME_FILTERS = 10
DEFAULT_BREAKDOWN_LIMIT = 20
MAX_BREAKDOWN_LIMIT = 1_000
# JSON's number grammar (RFC 8259), which is also what jsonb accepts.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# Past this a number's text is refused: '1e999999' would overflow numeric in the database.
_MAX_EXPONENT = 1_000

SESSIONS_PARAMETERS = ("limit", "before", "name", "from", "to", "ended", "min_duration_ms", "max_duration_ms", "data")
BREAKDOWN_PARAMETERS = ("from", "to", "name", "key", "limit", "bucket")


def _bad(parameter: str, message: str) -> st.BadParameter:
    return st.BadParameter(ErrorCode.INVALID_FILTER, f"{parameter}: {message}")


@dataclass(frozen=True, slots=True)
class DataFilter:
    """One `data=` filter: the key, and the one or two jsonb texts its value matches."""

    key: str
    match: str  # a JSON text
    also: str | None = None  # a second JSON text, or None


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """Every filter of GET /sessions; None (or empty) means "not filtered"."""

    names: tuple[str, ...] = ()
    start_from: int | None = None
    start_to: int | None = None
    ended: bool | None = None
    min_duration_ms: int | None = None
    max_duration_ms: int | None = None
    data: tuple[DataFilter, ...] = ()


def unknown_parameters(params: Mapping[str, Sequence[str]], known: Sequence[str]) -> str | None:
    """A message naming the first parameter the endpoint does not take, or None."""
    for key in params:
        if key not in known and key != "token":
            close = [k for k in known if k.lower() == key.lower().replace("-", "_")]
            hint = f" Did you mean {close[0]}?" if close else ""
            return f"unknown parameter {key!r}; accepted: {', '.join(known)}.{hint}"
    return None


def _once(params: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = params.get(key) or []
    if len(values) > 1:
        raise _bad(key, "may be given once.")
    return values[0] if values else None


def _text_ok(value: str, most: int) -> bool:
    return 1 <= len(value) <= most and "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def parse_names(values: Sequence[str]) -> tuple[str, ...]:
    if len(values) > MAX_NAME_FILTERS:
        raise _bad("name", f"at most {MAX_NAME_FILTERS} names.")
    for value in values:
        if not _text_ok(value, st.MAX_NAME_CHARS):
            raise _bad("name", f"each name must be an event name of 1 to {st.MAX_NAME_CHARS} characters.")
    return tuple(dict.fromkeys(values))


def _time(params: Mapping[str, Sequence[str]], key: str) -> int | None:
    raw = _once(params, key)
    if raw is None:
        return None
    value = st.parse_time(raw)
    if value is None:
        raise _bad(
            key, "must be milliseconds since the Unix epoch or an RFC 3339 date-time with a zone (e.g. 2026-01-31T12:00:00Z)."
        )
    return value


def _duration(params: Mapping[str, Sequence[str]], key: str) -> int | None:
    raw = _once(params, key)
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,16}", raw) or int(raw) >= st.MAX_TIMESTAMP_MS:
        raise _bad(key, "must be a whole number of milliseconds, 0 or more.")
    return int(raw)


def parse_value(raw: str) -> tuple[str, str | None]:
    """The JSON text(s) a `data=` value matches: (string, number or boolean or None)."""
    if raw.startswith('"'):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, str):
            raise _bad("data", 'a value that starts with " must be one JSON string, e.g. plan:"pro".')
        return orjson.dumps(value).decode(), None
    as_string = orjson.dumps(raw).decode()
    if raw in ("true", "false"):
        return as_string, raw
    if _JSON_NUMBER.fullmatch(raw):
        exponent = re.search(r"[eE]([+-]?[0-9]+)$", raw)
        if exponent is not None and abs(int(exponent.group(1))) > _MAX_EXPONENT:
            raise _bad("data", f"a number's exponent must be within ±{_MAX_EXPONENT}.")
        return as_string, raw
    return as_string, None


def parse_key(raw: str) -> tuple[str, str]:
    """Split `<key>:<value>` (the key may be a JSON string holding colons); (key, value text)."""
    if raw.startswith('"'):
        decoder_end = _json_string_end(raw)
        if decoder_end is None or raw[decoder_end : decoder_end + 1] != ":":
            raise _bad("data", 'a quoted key must be one JSON string followed by ":", e.g. data="a:b":1.')
        key = orjson.loads(raw[:decoder_end])
        rest = raw[decoder_end + 1 :]
    else:
        key, colon, rest = raw.partition(":")
        if not colon:
            raise _bad("data", "must be <key>:<value>, e.g. data=plan:pro.")
    if not _text_ok(key, MAX_KEY_CHARS):
        raise _bad("data", f"the key must be 1 to {MAX_KEY_CHARS} characters.")
    if len(rest) > MAX_VALUE_CHARS or "\x00" in rest:
        raise _bad("data", f"the value must be at most {MAX_VALUE_CHARS} characters.")
    return key, rest


def _json_string_end(raw: str) -> int | None:
    """Index just past the JSON string that opens `raw`, or None when it does not close."""
    at = 1
    while at < len(raw):
        if raw[at] == "\\":
            at += 2
            continue
        if raw[at] == '"':
            try:
                orjson.loads(raw[: at + 1])
            except orjson.JSONDecodeError:
                return None
            return at + 1
        at += 1
    return None


def parse_data(values: Sequence[str]) -> tuple[DataFilter, ...]:
    if len(values) > MAX_DATA_FILTERS:
        raise _bad("data", f"at most {MAX_DATA_FILTERS} data filters.")
    filters: list[DataFilter] = []
    for raw in values:
        key, rest = parse_key(raw)
        match, also = parse_value(rest)
        filters.append(DataFilter(key, match, also))
    return tuple(dict.fromkeys(filters))


def parse_ended(params: Mapping[str, Sequence[str]]) -> bool | None:
    raw = _once(params, "ended")
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise _bad("ended", "must be true or false.")
    return raw == "true"


def parse_session_filter(params: Mapping[str, Sequence[str]]) -> SessionFilter:
    """Every filter of GET /sessions, checked before any database work."""
    start_from, start_to = _time(params, "from"), _time(params, "to")
    if start_from is not None and start_to is not None and start_from >= start_to:
        raise _bad("from", "must be before to (from is inclusive, to exclusive).")
    low, high = _duration(params, "min_duration_ms"), _duration(params, "max_duration_ms")
    if low is not None and high is not None and low > high:
        raise _bad("min_duration_ms", "must not be greater than max_duration_ms.")
    return SessionFilter(
        names=parse_names(params.get("name") or []),
        start_from=start_from,
        start_to=start_to,
        ended=parse_ended(params),
        min_duration_ms=low,
        max_duration_ms=high,
        data=parse_data(params.get("data") or []),
    )


# --- GET /stats/breakdown ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Breakdown:
    name: str
    key: str
    limit: int
    bucket: tuple[str, int] | None  # (bucket name, size in ms) when ?bucket= was given


def parse_breakdown(params: Mapping[str, Sequence[str]], rng: st.Range) -> Breakdown:
    names, keys = params.get("name") or [], params.get("key") or []
    name = names[0] if len(names) == 1 else None
    if name is None or not _text_ok(name, st.MAX_NAME_CHARS):
        raise st.BadParameter(
            ErrorCode.INVALID_NAME, f"name must be given once: an event name of 1 to {st.MAX_NAME_CHARS} characters."
        )
    key = keys[0] if len(keys) == 1 else None
    if key is None or not _text_ok(key, MAX_KEY_CHARS):
        raise st.BadParameter(
            ErrorCode.INVALID_KEY, f"key must be given once: a top-level data key of 1 to {MAX_KEY_CHARS} characters."
        )
    limit = st.parse_limit(params, DEFAULT_BREAKDOWN_LIMIT, MAX_BREAKDOWN_LIMIT)
    bucket = None
    if params.get("bucket"):
        bucket = st.parse_bucket(params)
        st.check_bucket_count(rng, *bucket)
    return Breakdown(name, key, limit, bucket)
