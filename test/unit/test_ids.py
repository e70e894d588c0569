"""app.ids on its own: one canonical form for every session id a client sends. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from app.ids import known_uuid, parse_uuid

SESSION = "0d856b46-48cd-4fba-946b-53d15b7b43e0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (SESSION, SESSION),
        (SESSION.upper(), SESSION),
        ("nope", None),
        ("", None),
        (SESSION.replace("-", ""), None),
        ("{" + SESSION + "}", None),
        (SESSION + "\n", None),
        ("0d856b46-48cd-4fba-946b-53d15b7b43e٠", None),  # an Arabic-Indic digit is not hex
        (5, None),
        (None, None),
    ],
)
def test_parse_uuid(value: Any, expected: str | None) -> None:
    assert parse_uuid(value) == expected


def test_known_uuid_answers_only_for_ids_already_parsed() -> None:
    fresh = "5c0ffee0-0000-4000-8000-00000000abcd"
    assert known_uuid(fresh.upper()) is None
    assert parse_uuid(fresh.upper()) == fresh
    assert known_uuid(fresh.upper()) == fresh
    assert known_uuid("nope") is None
