"""Timestamps in every unit mode: numbers, fractional seconds, RFC 3339 strings, the range.

parse_frame on its own (no server). Hypothesis covers the seconds/milliseconds
boundary and rounding with exact arithmetic as the oracle, and RFC 3339 strings by
formatting random aware datetimes and reading them back.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.ingest.validation import AUTO_SECONDS_BELOW, MAX_TIMESTAMP_MS, Batch, FrameRules, Rejection, parse_frame

SESSION = "0d856b46-48cd-4fba-946b-53d15b7b43e0"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rules(unit: str) -> FrameRules:
    return FrameRules(SESSION, unit, 10_000, 16 * 1024, 64)  # type: ignore[arg-type]


def frame_of(timestamp_json: str) -> str:
    return f'[{{"type":"EVENT","timestamp":{timestamp_json},"name":"a"}}]'


class Lit(str):
    """JSON text for a timestamp as written, for what Python's json cannot write (NaN, 1e400, 1.6e12)."""


def as_json(timestamp: Any) -> str:
    return str(timestamp) if isinstance(timestamp, Lit) else json.dumps(timestamp, ensure_ascii=False)


def stored(timestamp: Any, unit: str = "auto") -> int:
    """The milliseconds stored for one event's timestamp (a Python value, or Lit JSON text)."""
    text = as_json(timestamp)
    result = parse_frame(frame_of(text), 1, rules(unit))
    assert isinstance(result, Batch), result
    ms = result.entries[0][2]
    assert type(ms) is int
    return ms


def refusal(timestamp: Any, unit: str = "auto") -> str:
    """The message of the timestamp problem, which must be the event's only problem."""
    text = as_json(timestamp)
    result = parse_frame(frame_of(text), 1, rules(unit))
    assert isinstance(result, Rejection), f"{timestamp!r} was accepted as {result}"
    assert result.error == "invalid_event"
    assert [(p.index, p.field) for p in result.details] == [(0, "timestamp")], result.details
    return result.details[0].message


def half_up_ms(seconds: float) -> int:
    """The exact nearest millisecond of a double number of seconds, halves up."""
    return math.floor(Fraction(seconds) * 1000 + Fraction(1, 2))


# --- numbers -----------------------------------------------------------------------


def test_auto_is_seconds_below_100_billion_and_milliseconds_from_it() -> None:
    assert stored(1_569_972_082) == 1_569_972_082_000  # the assignment's seconds: 2019
    assert stored(1_624_422_533_298) == 1_624_422_533_298  # its Go implementation's milliseconds
    assert stored(AUTO_SECONDS_BELOW - 1) == (AUTO_SECONDS_BELOW - 1) * 1000
    assert stored(AUTO_SECONDS_BELOW) == AUTO_SECONDS_BELOW
    assert stored(0) == 0 and stored(1) == 1000
    assert stored(MAX_TIMESTAMP_MS - 1) == MAX_TIMESTAMP_MS - 1


@given(st.integers(min_value=0, max_value=AUTO_SECONDS_BELOW - 1))
@example(0)
@example(AUTO_SECONDS_BELOW - 1)
def test_auto_reads_any_integer_below_the_boundary_as_seconds(seconds: int) -> None:
    assert stored(seconds) == seconds * 1000


@given(st.integers(min_value=AUTO_SECONDS_BELOW, max_value=MAX_TIMESTAMP_MS - 1))
@example(AUTO_SECONDS_BELOW)
@example(MAX_TIMESTAMP_MS - 1)
def test_auto_reads_any_integer_from_the_boundary_as_milliseconds(ms: int) -> None:
    assert stored(ms) == ms


@given(st.floats(min_value=0, max_value=AUTO_SECONDS_BELOW, exclude_max=True))
@example(1569972082.25)
@example(0.0625)  # exactly 62.5 ms: a true half, rounded up
@example(0.0005)
@example(AUTO_SECONDS_BELOW - 0.0001)
def test_fractional_seconds_round_to_the_nearest_millisecond(seconds: float) -> None:
    assert stored(seconds) == half_up_ms(seconds)


@given(st.floats(min_value=0, max_value=MAX_TIMESTAMP_MS / 1000, exclude_max=True))
def test_unit_s_reads_every_number_as_seconds(seconds: float) -> None:
    expected = half_up_ms(seconds)
    if expected < MAX_TIMESTAMP_MS:
        assert stored(seconds, "s") == expected
    else:  # 253402300799.9996 rounds into the year 10000
        assert "year 9999" in refusal(seconds, "s")


@given(st.integers(min_value=0, max_value=MAX_TIMESTAMP_MS - 1))
def test_unit_ms_reads_every_integer_as_milliseconds(ms: int) -> None:
    assert stored(ms, "ms") == ms


@pytest.mark.parametrize("unit", ["auto", "ms"])
@pytest.mark.parametrize(("literal", "expected"), [("1.6e12", 1_600_000_000_000), ("1624422533298.0", 1_624_422_533_298)])
def test_whole_milliseconds_may_be_written_as_floats(unit: str, literal: str, expected: int) -> None:
    assert stored(Lit(literal), unit) == expected


@pytest.mark.parametrize(("value", "unit"), [(1.5, "ms"), (1_700_000_000_000.5, "ms"), (1_700_000_000_000.5, "auto")])
def test_milliseconds_must_be_whole(value: float, unit: str) -> None:
    assert "whole milliseconds" in refusal(value, unit)


def test_small_numbers_are_milliseconds_only_when_the_connection_says_so() -> None:
    assert stored(1.5) == 1500  # auto: seconds
    assert stored(5, "ms") == 5
    assert stored(5, "s") == 5000


@pytest.mark.parametrize("unit", ["auto", "ms", "s"])
@pytest.mark.parametrize("value", [-1, -0.5, -1_700_000_000_000, -(2**70)])
def test_negatives_are_refused(value: float, unit: str) -> None:
    assert "negative" in refusal(value, unit)


@pytest.mark.parametrize(
    ("value", "unit"),
    [
        (MAX_TIMESTAMP_MS, "auto"),
        (MAX_TIMESTAMP_MS, "ms"),
        (MAX_TIMESTAMP_MS // 1000, "s"),
        (2**64, "auto"),
        (10**30, "s"),
        (1e300, "ms"),
        (1e300, "s"),
        (1.7976931348623157e308, "auto"),
    ],
)
def test_past_the_year_9999_is_refused(value: float, unit: str) -> None:
    assert "year 9999" in refusal(value, unit)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_nan_and_infinity_in_a_timestamp_are_that_events_problem(literal: str) -> None:
    assert "finite" in refusal(Lit(literal))


@pytest.mark.parametrize("value", [True, False, [1_700_000_000_000], {"ms": 1}, None])
def test_values_of_other_json_types_are_refused(value: Any) -> None:
    assert refusal(value)


def test_a_missing_timestamp_is_refused() -> None:
    result = parse_frame('[{"type":"EVENT","name":"a"}]', 1, rules("auto"))
    assert isinstance(result, Rejection)
    assert [(p.field, "required" in p.message) for p in result.details] == [("timestamp", True)]


@pytest.mark.parametrize("text", ["123", "1700000000000", "1.5e12", "-1", " 1569972082"])
def test_numbers_in_strings_are_refused_with_a_hint(text: str) -> None:
    assert "JSON number" in refusal(text)


# --- RFC 3339 strings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-10-01T23:21:22Z", 1_569_972_082_000),
        ("2019-10-01T23:21:22.123Z", 1_569_972_082_123),
        ("2019-10-01T23:21:22.1Z", 1_569_972_082_100),
        ("2019-10-01T23:21:22.123999999Z", 1_569_972_082_123),  # past ms: truncated, not rounded
        ("2019-10-02T01:21:22+02:00", 1_569_972_082_000),
        ("2019-10-01T20:51:22-02:30", 1_569_972_082_000),
        ("2019-10-01T23:21:22-00:00", 1_569_972_082_000),  # RFC 3339: UTC, local offset unknown
        ("2019-10-01t23:21:22z", 1_569_972_082_000),  # RFC 3339 allows lower case T and Z
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T01:00:00+01:00", 0),
        ("2000-02-29T12:00:00Z", 951_825_600_000),
        ("2016-12-31T23:59:60Z", 1_483_228_800_000),  # a leap second counts as the next second
        ("9999-12-31T23:59:59.999Z", MAX_TIMESTAMP_MS - 1),
        ("9999-12-31T23:59:59.999+23:59", MAX_TIMESTAMP_MS - 1 - (23 * 60 + 59) * 60_000),
    ],
)
@pytest.mark.parametrize("unit", ["auto", "ms", "s"])
def test_rfc3339_strings_are_read_in_every_unit_mode(text: str, expected: int, unit: str) -> None:
    assert stored(text, unit) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2019-10-01T23:21:22",  # no zone
        "2019-10-01T23:21:22.123",
        "2019-10-01T23:21:22+0200",  # offset without a colon
        "2019-10-01T23:21:22+02",
        "20191001T232122Z",  # ISO 8601 basic format
        "2019-10-01 23:21:22Z",  # a space for T
        "2019-10-01",
        "23:21:22Z",
        "2019-10-01T23:21Z",
        "2019-10-01T23:21:22.Z",
        "2019-10-01T23:21:22,5Z",
        "2019-10-01T23:21:22ZZ",
        "2019-10-01T23:21:22Z ",
        " 2019-10-01T23:21:22Z",
        "2019-10-01T23:21:22Z\n",
        "２０１９-10-01T23:21:22Z",  # full-width digits
        "+2019-10-01T23:21:22Z",
        "12019-10-01T23:21:22Z",
        "now",
        "",
        "Tue, 01 Oct 2019 23:21:22 GMT",
    ],
)
def test_other_strings_are_refused(text: str) -> None:
    assert "RFC 3339" in refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "2019-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2019-04-31T00:00:00Z",
        "2019-13-01T00:00:00Z",
        "2019-00-01T00:00:00Z",
        "2019-10-00T00:00:00Z",
        "2019-10-01T24:00:00Z",
        "2019-10-01T23:60:00Z",
        "2019-10-01T23:21:61Z",
        "2019-10-01T23:21:22+24:00",
        "2019-10-01T23:21:22+02:60",
    ],
)
def test_dates_and_times_not_on_the_calendar_are_refused(text: str) -> None:
    assert refusal(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("1969-12-31T23:59:59.999Z", "before 1970"),
        ("1970-01-01T00:30:00+01:00", "before 1970"),
        ("0000-01-01T00:00:00Z", "before 1970"),
        ("9999-12-31T23:59:59-00:01", "year 9999"),
    ],
)
def test_rfc3339_outside_the_range_is_refused(text: str, words: str) -> None:
    assert words in refusal(text)


offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@given(
    moment=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30, 23, 59, 59)),
    zone=offsets,
    digits=st.integers(min_value=0, max_value=12),
    extra=st.text("0123456789", min_size=6, max_size=6),
    utc_letter=st.sampled_from(["Z", "z", "+00:00", "-00:00"]),
)
def test_rfc3339_round_trip(moment: datetime, zone: timezone, digits: int, extra: str, utc_letter: str) -> None:
    """A datetime formatted as RFC 3339 (any offset, 0 to 12 fraction digits) reads back exactly."""
    local = moment.replace(tzinfo=zone)
    fraction = (f"{local.microsecond:06d}" + extra)[:digits]
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if digits else "")
    offset = local.utcoffset() or timedelta()
    if offset:
        minutes = int(offset.total_seconds()) // 60
        text += f"{'+' if minutes > 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    else:
        text += utc_letter
    whole = local.replace(microsecond=0)
    expected = (whole - EPOCH) // timedelta(seconds=1) * 1000 + int((fraction + "000")[:3])
    assert stored(text) == expected
    assert stored(text, "ms") == stored(text, "s") == expected
