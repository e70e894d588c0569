"""The event-name cache: bounded however many names arrive, and never wrong about an id.

The database side (UPSERT_EVENT_NAMES) is exercised by the integration tests; here a
stand-in connection answers it like PostgreSQL would (ids by name, stable), so the
cache's own behaviour is visible: what it asks for, and how big it gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.ingest.names import NameCache


class _Names:
    """Stands in for the event_names table: one stable id per name, and a log of what was asked."""

    def __init__(self, lose_first: int = 0) -> None:
        self.ids: dict[str, int] = {}
        self.asked: list[list[str]] = []
        self._lose = lose_first  # answers missing rows, as a concurrent writer's race would

    async def fetch(self, _query: str, names: Sequence[str], timeout: float | None = None) -> list[dict[str, Any]]:
        self.asked.append(list(names))
        rows = [{"name": name, "id": self.ids.setdefault(name, len(self.ids) + 1)} for name in names]
        if self._lose:
            self._lose -= 1
            return rows[1:]
        return rows

    def conn(self) -> asyncpg.Connection:
        return cast(asyncpg.Connection, self)


async def test_hits_are_not_asked_again() -> None:
    db = _Names()
    cache = NameCache(capacity=100)
    first = await cache.resolve(db.conn(), ["b", "a", "b"])
    again = await cache.resolve(db.conn(), ["a", "b"])
    assert first == again == {"a": db.ids["a"], "b": db.ids["b"]}
    assert db.asked == [["a", "b", "b"]], "one round trip, sorted (a stable lock order between writers)"


@settings(max_examples=50, deadline=None)
@given(capacity=st.integers(1, 20), batches=st.lists(st.lists(st.text(min_size=1, max_size=3), max_size=30), max_size=8))
async def test_the_cache_never_exceeds_its_capacity_and_every_id_is_right(capacity: int, batches: list[list[str]]) -> None:
    db = _Names()
    cache = NameCache(capacity=capacity)
    for names in batches:
        resolved = await cache.resolve(db.conn(), names)
        assert resolved == {name: db.ids[name] for name in names}, "a large batch is whole even if the cache evicted"
        assert len(cache) <= capacity


async def test_hostile_cardinality_is_bounded() -> None:
    db = _Names()
    cache = NameCache(capacity=1000)
    for start in range(0, 50_000, 5_000):
        await cache.resolve(db.conn(), [f"name-{i}" for i in range(start, start + 5_000)])
    assert len(cache) <= 1000


async def test_recent_names_survive_an_eviction() -> None:
    db = _Names()
    cache = NameCache(capacity=10)
    await cache.resolve(db.conn(), [f"old-{i}" for i in range(10)])
    await cache.resolve(db.conn(), ["new"])  # full: the oldest half goes
    db.asked.clear()
    await cache.resolve(db.conn(), ["new", "old-9"])
    assert db.asked == []


async def test_a_name_a_racing_writer_hid_is_asked_for_again() -> None:
    db = _Names(lose_first=1)
    resolved = await NameCache(capacity=10).resolve(db.conn(), ["a", "b"])
    assert resolved == {"a": 1, "b": 2}
    assert db.asked == [["a", "b"], ["a"]]


async def test_a_name_that_never_resolves_is_an_error_not_a_wrong_id() -> None:
    db = _Names(lose_first=3)
    with pytest.raises(RuntimeError, match="could not be resolved"):
        await NameCache(capacity=10).resolve(db.conn(), ["a"])


async def test_a_capacity_below_one_is_clamped_to_one() -> None:
    db = _Names()
    cache = NameCache(capacity=0)
    assert await cache.resolve(db.conn(), ["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
    assert len(cache) == 1
