"""The insert-lock holder as /readyz reports it: what the OpenAPI document promises, in JSON types."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from app.routes.openapi import document
from app.store.watch import LockHolder

HOLDER = LockHolder(
    pid=4242,
    application_name="psql",
    state="idle in transaction",
    since=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    held_seconds=12.3456,
    waiting=3,
)


def test_the_holder_has_exactly_the_documented_fields_with_their_types() -> None:
    schema = document(secured=False)["components"]["schemas"]["Ready"]["properties"]["lock_holder"]["properties"]
    doc = orjson.loads(orjson.dumps(HOLDER.as_json()))
    assert set(doc) == set(schema)
    json_type: dict[str, type | tuple[type, ...]] = {"integer": int, "string": str, "number": (int, float)}
    for key, value in doc.items():
        assert isinstance(value, json_type[schema[key]["type"]]), key


def test_since_is_an_rfc3339_date_time_and_the_duration_is_rounded() -> None:
    doc = HOLDER.as_json()
    assert datetime.fromisoformat(str(doc["since"])) == HOLDER.since
    assert str(doc["since"]).endswith("+00:00")
    assert doc["held_seconds"] == 12.3
    assert doc["waiting_backends"] == 3
