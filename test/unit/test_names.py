"""The event-name cache's bound: however many names arrive, it keeps at most `capacity`.

No database here (the upsert and its races are the integration tests' business): a
hit must not need one, so `resolve` is called with no connection at all, and a name
the cache no longer holds shows up as the attempt to use it.
"""

from __future__ import annotations

from typing import cast

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.ingest.names import NameCache

NO_DATABASE = cast(asyncpg.Connection, None)


async def _cached(cache: NameCache, name: str) -> int | None:
    """The id if the cache answers alone, None if it would have to ask the database."""
    try:
        return (await cache.resolve(NO_DATABASE, [name]))[name]
    except AttributeError:  # None.fetch: it went to the database
        return None


@given(capacity=st.integers(1, 50), names=st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=300))
async def test_never_more_than_capacity_and_the_latest_name_is_kept(capacity: int, names: list[str]) -> None:
    cache = NameCache(capacity=capacity)
    for number, name in enumerate(names):
        cache._remember(name, number)
        assert len(cache) <= capacity
    assert await _cached(cache, names[-1]) == len(names) - 1


async def test_hits_need_no_database() -> None:
    cache = NameCache(capacity=10)
    cache._remember("click", 1)
    cache._remember("view", 2)
    assert await cache.resolve(NO_DATABASE, ["view", "click", "view"]) == {"click": 1, "view": 2}


async def test_when_full_the_oldest_half_goes_and_the_rest_stays() -> None:
    cache = NameCache(capacity=10)
    for i in range(10):
        cache._remember(f"old-{i}", i)
    cache._remember("new", 99)
    assert len(cache) == 6
    assert [await _cached(cache, f"old-{i}") for i in range(10)] == [None] * 5 + [5, 6, 7, 8, 9]
    assert await _cached(cache, "new") == 99


async def test_hostile_cardinality_stays_bounded() -> None:
    cache = NameCache(capacity=1000)
    for i in range(50_000):
        cache._remember(f"name-{i}", i)
    assert len(cache) <= 1000
    assert await _cached(cache, "name-49999") == 49_999


@pytest.mark.parametrize("capacity", [0, -5])
async def test_a_capacity_below_one_is_clamped_to_one(capacity: int) -> None:
    cache = NameCache(capacity=capacity)
    cache._remember("a", 1)
    cache._remember("b", 2)
    assert len(cache) == 1
    assert await _cached(cache, "b") == 2
