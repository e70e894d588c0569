"""The log redactor and formatters: no credential survives, every JSON line parses."""

from __future__ import annotations

import json
import logging

import pytest

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
