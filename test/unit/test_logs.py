"""The log redactor and formatters: no credential survives, every JSON line parses."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.logs import REDACTED, JsonFormatter, Redactor, TextFormatter

SECRET = "s3cr3t-token-value"


@pytest.mark.parametrize(
    "text",
    [
        f'127.0.0.1:1 - "WebSocket /ws?sessionId=x&token={SECRET}" [accepted]',
        f"GET /database_events?token={SECRET}&type=EVENT",
        f"Authorization: Bearer {SECRET}",
        f'{{"authorization": "Bearer {SECRET}"}}',
        f"authorization={SECRET}",
        f"failed for bearer {SECRET}",
        f"quoted some other way: <{SECRET}>",
    ],
)
def test_redactor_removes_tokens(text: str) -> None:
    out = Redactor([SECRET])(text)
    assert SECRET not in out
    assert REDACTED in out


def test_redactor_leaves_other_text_alone() -> None:
    text = "ws close conn=1a2b session=0d856b46-48cd-4fba-946b-53d15b7b43e0 frames=3 tokens_seen=2"
    assert Redactor([SECRET])(text) == text


def test_short_tokens_are_not_replaced_literally() -> None:
    assert Redactor(["a"])("a banana") == "a banana"


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("eventservice.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_parse_and_carry_fields_without_the_token() -> None:
    line = JsonFormatter([SECRET]).format(
        _record('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", f"/ws?token={SECRET}", conn="ab12", frames=3)
    )
    doc = json.loads(line)
    assert doc["msg"] == f'127.0.0.1:5 - "WebSocket /ws?token={REDACTED}" [accepted]'
    assert (doc["conn"], doc["frames"], doc["level"], doc["logger"]) == ("ab12", 3, "info", "eventservice.test")
    assert SECRET not in line


def test_text_lines_quote_hostile_values_so_they_cannot_forge_a_line() -> None:
    line = TextFormatter().format(_record("batch rejected", event="x\nINFO forged=1", conn="ab12"))
    assert "\n" not in line
    assert 'event="x\\nINFO forged=1"' in line
    assert "conn=ab12" in line


# --- any text, any field: one line, parseable, without the secret --------------------------------

_texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
_hostile = st.builds(lambda a, b: a + SECRET + b, _texts, _texts) | _texts


@given(message=_hostile, value=_hostile, listed=st.lists(_hostile, max_size=3))
def test_json_lines_hold_any_text_on_one_parseable_line_without_the_secret(message: str, value: str, listed: list[str]) -> None:
    line = JsonFormatter([SECRET]).format(_record(message, field=value, listed=listed))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["logger"] == "eventservice.test"
    assert SECRET not in line


@given(message=_hostile, value=_hostile)
def test_text_lines_hold_any_text_on_one_line_without_the_secret(message: str, value: str) -> None:
    line = TextFormatter([SECRET]).format(_record(message, field=value))
    assert "\n" not in line and "\r" not in line
    assert SECRET not in line


def test_a_traceback_is_kept_and_redacted() -> None:
    try:
        raise RuntimeError(f"connect failed for postgresql://u@db/x?token={SECRET}")
    except RuntimeError:
        record = logging.LogRecord("eventservice.test", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    doc = json.loads(JsonFormatter([SECRET]).format(record))
    assert "RuntimeError: connect failed" in doc["exc"] and SECRET not in doc["exc"]
    text = TextFormatter([SECRET]).format(record)
    assert text.splitlines()[0].endswith("boom")
    assert "Traceback" in text and SECRET not in text


def test_only_plain_extra_fields_are_printed() -> None:
    record = _record("m", conn="ab", frames=0, absent=None, obj=object(), _private="x", color_message="\x1b[1mm")
    doc = json.loads(JsonFormatter().format(record))
    assert {k: doc[k] for k in ("conn", "frames")} == {"conn": "ab", "frames": 0}
    assert not {"absent", "obj", "_private", "color_message"} & set(doc)


def test_an_extra_field_cannot_overwrite_the_standard_ones() -> None:
    doc = json.loads(JsonFormatter().format(_record("real", level="forged", ts="forged")))
    assert doc["level"] == "info" and doc["ts"] != "forged"


def test_timestamps_are_utc_with_milliseconds() -> None:
    record = _record("m")
    record.created, record.msecs = 1_700_000_000.25, 250.0
    assert json.loads(JsonFormatter().format(record))["ts"] == "2023-11-14T22:13:20.250Z"
    assert TextFormatter().format(record).startswith("2023-11-14T22:13:20.250Z INFO eventservice.test m")
