"""app.ingest.validation.parse_frame on its own: every rule of the SPEC's event table and limits.

Pure: no server, no database. The integration tests repeat the important cases
against the real server; these pin down the exact code, field and stored form of
each rule, including the ones a JSON parser quietly gets wrong (numbers it rounds,
documents it refuses that the fallback parser reads).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.ingest.validation import MAX_TIMESTAMP_MS, Batch, FrameRules, Rejection, parse_frame

SESSION = "0d856b46-48cd-4fba-946b-53d15b7b43e0"
OTHER = "1b7e3f5a-9c2d-4e8f-a1b0-c3d4e5f60718"
TS = 1_700_000_000_000

MS = FrameRules(session_id=SESSION, timestamp_unit="ms", max_batch_events=10_000, max_data_bytes=16 * 1024, max_data_depth=64)
SECONDS = FrameRules(session_id=SESSION, timestamp_unit="s", max_batch_events=10_000, max_data_bytes=16 * 1024, max_data_depth=64)
RELAY = FrameRules(session_id=None, timestamp_unit="ms", max_batch_events=10_000, max_data_bytes=16 * 1024, max_data_depth=64)


def ev(**fields: Any) -> dict[str, Any]:
    """A valid EVENT with fields replaced; a value of ... removes the field."""
    base: dict[str, Any] = {"type": "EVENT", "timestamp": TS, "name": "click"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def accepted(frame: str | bytes, rules: FrameRules = MS) -> Batch:
    result = parse_frame(frame, 1, rules)
    assert isinstance(result, Batch), result
    return result


def rejected(frame: str | bytes | None, rules: FrameRules = MS) -> Rejection:
    result = parse_frame(frame, 7, rules)
    assert isinstance(result, Rejection), result
    assert result.number == 7
    assert result.message.endswith("."), "messages are human sentences"
    return result


def one_bad_event(event: Any, rules: FrameRules = MS) -> tuple[str, str]:
    """Reject a batch of a good event, the bad one, a good one; return (code, field)."""
    ts = TS // 1000 if rules.timestamp_unit == "s" else TS  # neighbours valid in the connection's unit
    frame = json.dumps([ev(name="before", timestamp=ts), event, ev(name="after", timestamp=ts)])
    result = rejected(frame, rules)
    assert len(result.details) == 1, result.details
    problem = result.details[0]
    assert problem.index == 1
    assert problem.message
    return result.error, problem.field


# --- frames and batches ----------------------------------------------------------


def test_original_example_is_accepted_as_entries_in_order() -> None:
    frame = json.dumps(
        [
            {"timestamp": 1624422533298, "type": "SESSION_START", "session_id": SESSION},
            {"timestamp": 1624422533298, "type": "EVENT", "name": "event2"},
            {"timestamp": 1624422533298, "type": "SESSION_END", "session_id": SESSION},
        ]
    )
    batch = accepted(frame)
    assert batch.batch_id is None and batch.session_id == SESSION and batch.number == 1
    assert batch.entries == [
        (SESSION, "SESSION_START", 1624422533298, None, None),
        (SESSION, "EVENT", 1624422533298, "event2", None),
        (SESSION, "SESSION_END", 1624422533298, None, None),
    ]


@pytest.mark.parametrize("frame", ["", "not json", "[{]", "[1,]", '[{"type":"EVENT"}', "NaN", "[Infinity]", "[1e400]"])
def test_text_that_is_not_json_is_invalid_json(frame: str) -> None:
    assert rejected(frame).error == "invalid_json"


@pytest.mark.parametrize("frame", [b'[{"type":"EVENT","timestamp":1,"name":"a"}]', b"", None])
def test_binary_frames_are_invalid_json_even_when_they_hold_json(frame: bytes | None) -> None:
    result = rejected(frame)
    assert result.error == "invalid_json"
    assert "text" in result.message


@pytest.mark.parametrize(
    "frame",
    [
        "[]",
        "{}",
        '{"batch_id":"b"}',
        '{"events":{}}',
        '{"events":[]}',
        "5",
        '"text"',
        "null",
        "true",
        '{"batch_id":"b","events":"x"}',
    ],
)
def test_frames_that_are_not_a_batch_are_invalid_batch(frame: str) -> None:
    assert rejected(frame).error == "invalid_batch"


def test_an_empty_batch_says_so() -> None:
    assert "at least one" in rejected("[]").message


@pytest.mark.parametrize("batch_id", ["", "x" * 65, 5, 1.5, True, ["a"], {"a": 1}, "a\u0000b"])
def test_bad_batch_ids_are_invalid_batch(batch_id: Any) -> None:
    result = rejected(json.dumps({"batch_id": batch_id, "events": [ev()]}))
    assert result.error == "invalid_batch"
    assert "batch_id" in result.message


def test_lone_surrogate_batch_id_is_invalid_batch() -> None:
    assert rejected('{"batch_id":"\\ud800","events":[{"type":"EVENT","timestamp":1,"name":"a"}]}').error == "invalid_batch"


@pytest.mark.parametrize("batch_id", ["a", "x" * 64, "é" * 64, "batch 1/2"])
def test_batch_ids_of_1_to_64_characters_are_echoed(batch_id: str) -> None:
    assert accepted(json.dumps({"batch_id": batch_id, "events": [ev()]})).batch_id == batch_id


def test_a_null_batch_id_is_no_batch_id() -> None:
    assert accepted(json.dumps({"batch_id": None, "events": [ev()]})).batch_id is None


def test_rejections_of_an_envelope_echo_its_batch_id() -> None:
    assert rejected(json.dumps({"batch_id": "b-9", "events": [ev(type="CLICK")]})).batch_id == "b-9"
    assert rejected(json.dumps({"batch_id": "b-9", "events": []})).batch_id == "b-9"


def test_more_events_than_the_limit_is_too_large_and_the_limit_itself_is_fine() -> None:
    small = FrameRules(SESSION, "ms", 3, 16 * 1024, 64)
    assert len(accepted(json.dumps([ev()] * 3), small).entries) == 3
    result = rejected(json.dumps([ev()] * 4), small)
    assert result.error == "too_large"
    assert "3" in result.message and "4" in result.message


def test_a_batch_of_10_000_is_accepted_and_10_001_is_too_large() -> None:
    assert len(accepted(json.dumps([ev()] * 10_000)).entries) == 10_000
    assert rejected(json.dumps([ev()] * 10_001)).error == "too_large"


# --- the event table ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (ev(type=...), "type"),
        (ev(type="CLICK"), "type"),
        (ev(type="event"), "type"),
        (ev(type=None), "type"),
        (ev(type=1), "type"),
        (ev(type=["EVENT"]), "type"),  # unhashable: must be a Problem, not a TypeError
        (ev(type={"EVENT": 1}), "type"),
        (ev(timestamp=...), "timestamp"),
        (ev(timestamp=None), "timestamp"),
        (ev(timestamp=True), "timestamp"),
        (ev(timestamp=False), "timestamp"),
        (ev(timestamp=1.5), "timestamp"),
        (ev(timestamp=1_700_000_000_000.25), "timestamp"),
        (ev(timestamp="1700000000000"), "timestamp"),
        (ev(timestamp=-1), "timestamp"),
        (ev(timestamp=-1.0), "timestamp"),
        (ev(timestamp=MAX_TIMESTAMP_MS), "timestamp"),
        (ev(timestamp=2**64), "timestamp"),
        (ev(timestamp=[TS]), "timestamp"),
        (ev(name=...), "name"),
        (ev(name=None), "name"),
        (ev(name=""), "name"),
        (ev(name="x" * 256), "name"),
        (ev(name="é" * 256), "name"),
        (ev(name=5), "name"),
        (ev(name=["click"]), "name"),
        (ev(name="a\u0000b"), "name"),
        (ev(data=[]), "data"),
        (ev(data="text"), "data"),
        (ev(data=5), "data"),
        (ev(data=True), "data"),
        (ev(data={"s": "x" * (16 * 1024)}), "data"),
        (ev(data={"a": "\u0000"}), "data"),
        (ev(data={"\u0000": 1}), "data"),
        (ev(data={"deep": [[{"s": "x\u0000y"}]]}), "data"),
        (ev(session_id="nope"), "session_id"),
        (ev(session_id=5), "session_id"),
        (ev(session_id=SESSION[:-1]), "session_id"),
        ("not an object", ""),
        ([1], ""),
        (None, ""),
    ],
)
def test_each_bad_field_rejects_the_whole_batch_naming_index_and_field(event: Any, field: str) -> None:
    assert one_bad_event(event) == ("invalid_event", field)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"type":"EVENT","timestamp":1,"name":"\\ud800"}', "name"),
        ('{"type":"EVENT","timestamp":1,"name":"a\\udfffb"}', "name"),
        ('{"type":"EVENT","timestamp":1,"name":"a","data":{"s":"\\ud800"}}', "data"),
        ('{"type":"EVENT","timestamp":1,"name":"a","data":{"\\udc00":1}}', "data"),
        ('{"type":"EVENT","timestamp":1,"name":"a","data":{"n":[1,{"s":"x\\ud83d"}]}}', "data"),
    ],
)
def test_lone_surrogates_are_named_not_refused_as_bare_json_errors(text: str, field: str) -> None:
    result = rejected(f'[{{"type":"EVENT","timestamp":1,"name":"ok"}},{text}]')
    assert result.error == "invalid_event"
    assert [(p.index, p.field) for p in result.details] == [(1, field)]
    assert "surrogate" in result.details[0].message


def test_a_proper_surrogate_pair_is_an_ordinary_character() -> None:
    batch = accepted('[{"type":"EVENT","timestamp":1,"name":"\\ud83d\\ude00","data":{"e":"\\ud83d\\ude00"}}]')
    assert batch.entries[0][3] == "😀"
    assert json.loads(batch.entries[0][4] or "") == {"e": "😀"}


@pytest.mark.parametrize("timestamp", [0, 1, TS, MAX_TIMESTAMP_MS - 1])
def test_timestamps_in_range_are_kept(timestamp: int) -> None:
    assert accepted(json.dumps([ev(timestamp=timestamp)])).entries[0][2] == timestamp


@pytest.mark.parametrize(
    ("literal", "expected"), [("1.0e12", 10**12), ("1700000000000.0", TS), ("0.0", 0), ("-0.0", 0), ("1E3", 1000)]
)
def test_whole_floats_are_whole_milliseconds(literal: str, expected: int) -> None:
    batch = accepted(f'[{{"type":"EVENT","timestamp":{literal},"name":"a"}}]')
    assert batch.entries[0][2] == expected
    assert type(batch.entries[0][2]) is int


def test_timestamp_unit_seconds_stores_milliseconds() -> None:
    batch = accepted(json.dumps([ev(timestamp=1_624_422_533), ev(timestamp=1.0e9)]), SECONDS)
    assert [e[2] for e in batch.entries] == [1_624_422_533_000, 1_000_000_000_000]


def test_timestamp_unit_seconds_checks_the_range_in_milliseconds() -> None:
    limit_seconds = MAX_TIMESTAMP_MS // 1000
    assert accepted(json.dumps([ev(timestamp=limit_seconds - 1)]), SECONDS).entries[0][2] == (limit_seconds - 1) * 1000
    assert one_bad_event(ev(timestamp=limit_seconds), SECONDS) == ("invalid_event", "timestamp")
    # A millisecond value sent on a seconds connection is in year ~55,000: refused.
    assert one_bad_event(ev(timestamp=TS), SECONDS) == ("invalid_event", "timestamp")
    # Seconds may carry a fraction (rounded to the millisecond); milliseconds may not.
    assert accepted(json.dumps([ev(timestamp=1.5)]), SECONDS).entries[0][2] == 1_500


@pytest.mark.parametrize("name", ["a", "x" * 255, "é" * 255, "😀" * 255, "日本語", " "])
def test_names_of_1_to_255_characters_are_kept_exactly(name: str) -> None:
    assert accepted(json.dumps([ev(name=name)], ensure_ascii=False)).entries[0][3] == name


@pytest.mark.parametrize("kind", ["SESSION_START", "SESSION_END"])
@pytest.mark.parametrize("name", [..., None, "", 5, "x" * 300, ["a"]])
def test_name_is_ignored_for_session_start_and_end(kind: str, name: Any) -> None:
    batch = accepted(json.dumps([ev(type=kind, name=name)]))
    assert batch.entries == [(SESSION, kind, TS, None, None)]


def test_data_is_kept_as_compact_json_including_the_empty_object() -> None:
    data = {"a": [1, 2.5, {"b": None}], "t": True, "u": "é😀", "empty": {}, "list": []}
    batch = accepted(json.dumps([ev(data={}), ev(data=data), ev(data=None), ev()]))
    stored = [e[4] for e in batch.entries]
    assert stored[0] == "{}"
    assert stored[1] is not None and json.loads(stored[1]) == data
    assert stored[2] is None and stored[3] is None


def test_data_size_is_counted_in_utf8_bytes_of_compact_json() -> None:
    overhead = len('{"s":""}')
    exact = {"s": "x" * (16 * 1024 - overhead)}
    assert len(json.dumps(exact, separators=(",", ":"))) == 16 * 1024
    assert accepted(json.dumps([ev(data=exact)])).entries[0][4] is not None
    over = {"s": "x" * (16 * 1024 - overhead + 1)}
    assert one_bad_event(ev(data=over)) == ("invalid_event", "data")
    # 10,000 characters but 20,000 bytes: over the limit.
    assert one_bad_event(ev(data={"s": "é" * 10_000})) == ("invalid_event", "data")
    # Whitespace in the frame is not counted: the compact form is.
    spaced = '[{"type":"EVENT","timestamp":1,"name":"a","data":{"s" :   "%s"}}]' % ("x" * (16 * 1024 - overhead))
    assert accepted(spaced).entries[0][4] == json.dumps(exact, separators=(",", ":"))


def test_data_nested_past_the_depth_limit_is_refused() -> None:
    shallow = FrameRules(SESSION, "ms", 10_000, 16 * 1024, 3)
    assert accepted(json.dumps([ev(data={"a": {"b": [1]}})]), shallow).entries[0][4] == '{"a":{"b":[1]}}'
    assert one_bad_event(ev(data={"a": {"b": [[1]]}}), shallow) == ("invalid_event", "data")


@pytest.mark.parametrize("depth", [65, 300, 1_000, 1_020, 1_100, 100_000])
@pytest.mark.parametrize(("opening", "closing"), [('{"a":', "}"), ("[", "]")])
def test_data_nested_past_what_parsers_allow_is_a_clear_error(depth: int, opening: str, closing: str) -> None:
    """orjson writes 254 levels at most; the stdlib fallback then recursed out of its stack."""
    frame = '[{"type":"EVENT","timestamp":1,"name":"a","data":{"x":' + opening * depth + "1" + closing * depth + "}}]"
    result = rejected(frame)
    assert result.error in {"invalid_json", "invalid_event"}
    if result.error == "invalid_event":
        assert [(p.index, p.field) for p in result.details] == [(0, "data")]
        assert "deeper" in result.details[0].message


def test_text_that_looks_like_a_large_float_is_kept() -> None:
    frame = '[{"type":"EVENT","timestamp":1,"name":"a","data":{"s":"1e+20","f":1e20,"n":100000000000000000000}}]'
    assert json.loads(accepted(frame).entries[0][4] or "") == {"s": "1e+20", "f": 1e20, "n": 10**20}


def test_integers_past_64_bits_in_data_are_kept_exactly() -> None:
    """orjson reads 2**64 as a float; storing that would change the number sent."""
    for literal in ["18446744073709551616", "-9223372036854775809", "123456789012345678901234567890"]:
        batch = accepted(f'[{{"type":"EVENT","timestamp":1,"name":"a","data":{{"n":{literal},"m":[{literal}]}}}}]')
        assert batch.entries[0][4] == f'{{"n":{literal},"m":[{literal}]}}'


def test_large_floats_in_data_stay_floats() -> None:
    batch = accepted('[{"type":"EVENT","timestamp":1,"name":"a","data":{"f":1e300,"g":1.5e19,"h":-2.5}}]')
    assert json.loads(batch.entries[0][4] or "") == {"f": 1e300, "g": 1.5e19, "h": -2.5}


def test_64_bit_integers_in_data_are_kept_exactly() -> None:
    frame = '[{"type":"EVENT","timestamp":1,"name":"a","data":{"u":18446744073709551615,"i":-9223372036854775808}}]'
    assert accepted(frame).entries[0][4] == '{"u":18446744073709551615,"i":-9223372036854775808}'


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1E999"])
def test_numbers_too_large_for_a_double_are_refused_not_turned_into_null(literal: str) -> None:
    frame = f'[{{"type":"EVENT","timestamp":1,"name":"a","data":{{"x":{literal}}}}}]'
    result = parse_frame(frame, 1, MS)
    assert isinstance(result, Rejection), f"stored as {result.entries[0][4]!r}" if isinstance(result, Batch) else result
    assert result.error in {"invalid_json", "invalid_event"}


def test_every_problem_is_listed_with_its_index() -> None:
    frame = json.dumps([ev(), ev(type="X"), ev(), ev(timestamp=-5), ev(name="")])
    result = rejected(frame)
    assert result.error == "invalid_event"
    assert [(p.index, p.field) for p in result.details] == [(1, "type"), (3, "timestamp"), (4, "name")]
    assert "3 of 5" in result.message


def test_details_are_bounded() -> None:
    result = rejected(json.dumps([ev(type="X")] * 5_000))
    assert result.error == "invalid_event"
    assert 0 < len(result.details) <= 100
    assert "5000 of 5000" in result.message


# --- sessions --------------------------------------------------------------------


def test_session_id_equal_to_the_query_is_fine_in_any_case() -> None:
    batch = accepted(json.dumps([ev(session_id=SESSION.upper()), ev(session_id=SESSION)]))
    assert [e[0] for e in batch.entries] == [SESSION, SESSION]


def test_a_different_session_id_is_session_mismatch() -> None:
    result = rejected(json.dumps([ev(), ev(session_id=OTHER)]))
    assert result.error == "session_mismatch"
    assert [(p.index, p.field) for p in result.details] == [(1, "session_id")]


def test_a_mismatch_next_to_another_problem_is_invalid_event_listing_both() -> None:
    result = rejected(json.dumps([ev(session_id=OTHER), ev(type="X")]))
    assert result.error == "invalid_event"
    assert [(p.index, p.field) for p in result.details] == [(0, "session_id"), (1, "type")]


def test_relay_connections_take_each_events_own_session() -> None:
    batch = accepted(json.dumps([ev(session_id=SESSION), ev(type="SESSION_START", session_id=OTHER.upper())]), RELAY)
    assert batch.session_id is None  # relay mode: no connection session
    assert [(e[0], e[1]) for e in batch.entries] == [(SESSION, "EVENT"), (OTHER, "SESSION_START")]


def test_relay_connections_require_a_session_id_on_every_event() -> None:
    frame = json.dumps([ev(session_id=SESSION), ev(), ev(session_id=None)])
    result = rejected(frame, RELAY)
    assert result.error == "invalid_event"
    assert [(p.index, p.field) for p in result.details] == [(1, "session_id"), (2, "session_id")]
