"""SSE framing: every message is one well-formed event whose data line is the entry's JSON."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from app.stream import sse_format

SESSION = "0d856b46-48cd-4fba-946b-53d15b7b43e0"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


def _fields(message: bytes) -> list[tuple[str, str]]:
    """Parse one SSE message the way an EventSource does: `field: value` lines up to a blank line."""
    assert message.endswith(b"\n\n"), "a message ends with a blank line"
    lines = message[:-2].decode().split("\n")
    fields = []
    for line in lines:
        assert line, "no blank line inside a message (it would end it early)"
        name, _, value = line.partition(": ")
        fields.append((name, value))
    return fields


@given(
    position=st.integers(1, 2**63 - 1),
    kind=st.sampled_from(["SESSION_START", "EVENT", "SESSION_END"]),
    ts=st.integers(0, 253_402_300_799_999),
    name=st.none() | st.text(),
    data=st.none() | json_values,
)
def test_message_is_one_event_with_the_entry_as_json(
    position: int, kind: str, ts: int, name: str | None, data: object | None
) -> None:
    stored = None if data is None else orjson.dumps(data).decode()
    fields = _fields(sse_format.message((position, kind, SESSION, ts, name, stored)))
    assert [f for f, _ in fields] == ["id", "data"]
    assert fields[0][1] == str(position)
    expected: dict[str, object] = {"type": kind, "session_id": SESSION, "timestamp": ts}
    if name is not None:
        expected["name"] = name
    if data is not None:
        expected["data"] = data
    assert orjson.loads(fields[1][1]) == expected


def test_absent_name_and_data_are_left_out_not_null() -> None:
    doc = orjson.loads(sse_format.entry_json("SESSION_START", SESSION, 5, None, None))
    assert doc == {"type": "SESSION_START", "session_id": SESSION, "timestamp": 5}


def test_data_is_spliced_verbatim_not_re_encoded() -> None:
    stored = '{"b": 1, "a": [1.50, "é"]}'  # PostgreSQL's spacing and number spelling survive
    assert sse_format.entry_json("EVENT", SESSION, 1, "n", stored).endswith(b',"data":' + stored.encode() + b"}")


def test_a_name_with_newlines_cannot_break_the_framing() -> None:
    fields = _fields(sse_format.message((7, "EVENT", SESSION, 1, "a\n\ndata: forged\r\n", None)))
    assert [f for f, _ in fields] == ["id", "data"]
    assert orjson.loads(fields[1][1])["name"] == "a\n\ndata: forged\r\n"


@given(position=st.integers(0, 2**63 - 1), reason=st.text())
def test_reset_names_the_event_and_carries_the_position_as_a_string(position: int, reason: str) -> None:
    fields = _fields(sse_format.reset(position, reason))
    assert fields[:2] == [("event", "reset"), ("id", str(position))]
    assert fields[2][0] == "data"
    # A string: JavaScript numbers lose precision above 2**53.
    assert orjson.loads(fields[2][1]) == {"reason": reason, "position": str(position)}


def test_retry_is_a_bare_retry_field() -> None:
    assert _fields(sse_format.retry(2500)) == [("retry", "2500")]
