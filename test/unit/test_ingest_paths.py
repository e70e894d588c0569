"""Every problem of every event, and the fast (msgspec) and slow paths agreeing.

parse_frame decodes with typed msgspec Structs and falls back to a plain reading
that lists every problem. The property test below feeds both the same hostile,
event-shaped frames and requires the same answer, so the compiled path can never
accept what the rules refuse, or store something different.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest.validation import MAX_DETAILS, MAX_TIMESTAMP_MS, Batch, FrameRules, Rejection, _slow, parse_frame

SESSION = "0d856b46-48cd-4fba-946b-53d15b7b43e0"
OTHER = "1b7e3f5a-9c2d-4e8f-a1b0-c3d4e5f60718"
ON_SESSION = FrameRules(SESSION, "auto", 10_000, 16 * 1024, 64)
RELAY = FrameRules(None, "auto", 10_000, 16 * 1024, 64)


def rejected(events: Any, rules: FrameRules = ON_SESSION) -> Rejection:
    result = parse_frame(json.dumps(events), 1, rules)
    assert isinstance(result, Rejection), result
    return result


def fields(result: Rejection) -> list[tuple[int | None, str]]:
    return [(p.index, p.field) for p in result.details]


def test_a_wrong_type_does_not_hide_a_wrong_timestamp() -> None:
    result = rejected([{"type": "CLICK", "timestamp": "now"}])
    assert result.error == "invalid_event"
    assert fields(result) == [(0, "type"), (0, "timestamp")]
    assert "RFC 3339" in result.details[1].message


def test_every_field_of_one_event_is_reported_in_field_order() -> None:
    event = {"type": "EVENT", "timestamp": -1, "session_id": "nope", "name": "", "data": []}
    result = rejected([event])
    assert fields(result) == [(0, "timestamp"), (0, "session_id"), (0, "name"), (0, "data")]
    assert "1 of 1" in result.message


def test_an_unknown_type_leaves_name_unchecked_but_checks_the_rest() -> None:
    """Whether name is required depends on the type, which is unknown."""
    result = rejected([{"type": "OTHER", "timestamp": 1, "name": 5, "data": {"a": "\u0000"}}])
    assert fields(result) == [(0, "type"), (0, "data")]


def test_problems_of_every_event_are_listed_in_order() -> None:
    good = {"type": "EVENT", "timestamp": 1, "name": "ok"}
    events = [good, {"type": "EVENT", "timestamp": True}, good, {"timestamp": "2019-10-01T23:21:22", "name": "x" * 256}]
    result = rejected(events)
    assert fields(result) == [(1, "timestamp"), (1, "name"), (3, "type"), (3, "timestamp")]
    assert "2 of 4" in result.message


def test_details_stay_within_the_cap_while_the_count_covers_every_event() -> None:
    result = rejected([{"type": "X", "timestamp": -1, "session_id": 5}] * 40)
    assert len(result.details) == MAX_DETAILS
    assert fields(result)[:3] == [(0, "type"), (0, "timestamp"), (0, "session_id")]
    assert "40 of 40" in result.message


def test_a_mismatch_next_to_another_problem_of_the_same_event_is_invalid_event() -> None:
    result = rejected([{"type": "EVENT", "timestamp": 1, "name": "a", "session_id": OTHER, "data": 5}])
    assert result.error == "invalid_event"
    assert fields(result) == [(0, "session_id"), (0, "data")]


def test_mismatches_alone_are_session_mismatch() -> None:
    result = rejected([{"type": "EVENT", "timestamp": 1, "name": "a", "session_id": OTHER}] * 2)
    assert result.error == "session_mismatch"
    assert fields(result) == [(0, "session_id"), (1, "session_id")]


def test_relay_connections_report_the_missing_session_id_with_the_rest() -> None:
    result = rejected([{"type": "EVENT", "timestamp": 1}], RELAY)
    assert fields(result) == [(0, "session_id"), (0, "name")]


# --- the two paths agree ---------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
timestamps = (
    st.integers(min_value=-5, max_value=MAX_TIMESTAMP_MS + 5)
    | st.integers(min_value=99_999_999_990, max_value=100_000_000_010)
    | st.floats(min_value=-1, max_value=3e14)
    | st.sampled_from([-1, 0, MAX_TIMESTAMP_MS - 1, MAX_TIMESTAMP_MS, 2**64, 1.5, -0.5, 1e11 - 0.5, 1e11 + 0.5, 1e300])
    | st.sampled_from(["2019-10-01T23:21:22.123Z", "2019-10-01T23:21:22", "1569972082", "1969-12-31T23:59:59Z"])
    | scalars
)
hostile_events = st.fixed_dictionaries(
    {"type": st.sampled_from(["SESSION_START", "EVENT", "SESSION_END", "event"]) | scalars, "timestamp": timestamps},
    optional={
        "name": st.sampled_from(["click", "", "x" * 255, "x" * 256, "a\u0000b", "é" * 255]) | scalars,
        "session_id": st.sampled_from([SESSION, SESSION.upper(), OTHER, "nope"]) | scalars,
        "data": st.dictionaries(st.text(max_size=6), values, max_size=4) | values,
        "extra": values,
    },
)
valid_events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["SESSION_START", "EVENT", "SESSION_END"]),
        "timestamp": st.integers(min_value=0, max_value=MAX_TIMESTAMP_MS - 1)
        | st.floats(min_value=0, max_value=1e11, exclude_max=True)
        | st.just("2019-10-01T23:21:22.123+02:00"),
        "name": st.text(min_size=1, max_size=20).filter(lambda n: "\u0000" not in n),
        "session_id": st.just(SESSION),
    },
    optional={"data": st.dictionaries(st.text(max_size=6), values, max_size=4)},
)
mutations = st.sampled_from(["type", "timestamp", "name", "session_id", "data"]).flatmap(
    lambda key: st.tuples(st.just(key), hostile_events.map(lambda e: e.get(key, ...)))
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event, a valid event with one field hostile, or a hostile event."""
    kind = draw(st.integers(0, 2))
    if kind == 2:
        return draw(hostile_events)
    event = draw(valid_events)
    if kind == 1:
        key, value = draw(mutations)
        if value is ...:
            event.pop(key, None)
        else:
            event[key] = value
    return event


frames = st.lists(events(), max_size=5) | st.fixed_dictionaries(
    {"events": st.lists(events(), max_size=4)}, optional={"batch_id": st.text(max_size=70) | scalars}
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=frames,
    rules=st.sampled_from([ON_SESSION, RELAY, FrameRules(SESSION, "ms", 3, 64, 3), FrameRules(None, "s", 10, 200, 64)]),
)
def test_the_fast_path_answers_exactly_as_the_slow_path(doc: Any, rules: FrameRules) -> None:
    frame = json.dumps(doc, ensure_ascii=False)
    fast, slow = parse_frame(frame, 1, rules), _slow(frame, 1, rules)
    assert fast == slow
    if isinstance(fast, Batch):
        events_sent = doc["events"] if isinstance(doc, dict) else doc
        for entry, sent in zip(fast.entries, events_sent, strict=True):
            assert (json.loads(entry[4]) if entry[4] is not None else None) == sent.get("data")


@pytest.mark.parametrize(
    "frame",
    [
        '[{"type":"EVENT","timestamp":1,"name":"a","data":{"k":"v"}}]',
        '{"batch_id":"b","events":[{"type":"SESSION_START","timestamp":"2019-10-01T23:21:22Z","name":5}]}',
        '[{"type":"EVENT","timestamp":1569972082.5,"name":"é","data":{"n":123456789012345678901234567890}}]',
    ],
)
def test_valid_frames_take_the_fast_path_and_the_slow_one_agrees(frame: str) -> None:
    fast = parse_frame(frame, 1, ON_SESSION)
    assert isinstance(fast, Batch)
    assert fast == _slow(frame, 1, ON_SESSION)


def test_a_lone_surrogate_in_an_ignored_field_does_not_refuse_the_batch() -> None:
    """msgspec refuses the frame; the plain reading finds nothing wrong with what is stored."""
    frame = '[{"type":"EVENT","timestamp":1,"name":"a","extra":"\\ud800","data":{"k":1}}]'
    result = parse_frame(frame, 1, ON_SESSION)
    assert isinstance(result, Batch), result
    assert result.entries == [(SESSION, "EVENT", 1000, "a", '{"k":1}')]
