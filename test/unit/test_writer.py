"""Group commit's grouping: batches in arrival order, as many as fit the event bound, never split.

Only the queue side of the Writer (no pool is touched before start()): what one
transaction will take. Committing is exercised against PostgreSQL by the integration tests.
"""

from __future__ import annotations

from typing import Any, cast

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from app.ingest.names import NameCache
from app.ingest.validation import Batch, Entry
from app.ingest.writer import Writer

SESSION = "0d856b46-48cd-4fba-946b-53d15b7b43e0"
NO_POOL = cast(asyncpg.Pool, None)


def _batch(number: int, events: int) -> Batch:
    entries: list[Entry] = [(SESSION, "EVENT", i, "n", None) for i in range(events)]
    return Batch(number, None, SESSION, entries)


def _groups(writer: Any) -> list[list[int]]:
    groups = []
    while writer._queue:
        groups.append([pending.batch.number for pending in writer._take_group()])
    return groups


@given(max_events=st.integers(1, 50), sizes=st.lists(st.integers(0, 60), min_size=1, max_size=30))
async def test_groups_keep_order_fit_the_bound_and_are_maximal(max_events: int, sizes: list[int]) -> None:
    writer = Writer(NO_POOL, NameCache(10), max_events, database_url="unused")
    futures = [writer.submit(_batch(number, size)) for number, size in enumerate(sizes)]
    groups = _groups(writer)
    assert [n for group in groups for n in group] == list(range(len(sizes))), "every batch once, in arrival order"
    for index, group in enumerate(groups):
        total = sum(sizes[n] for n in group)
        # A batch larger than the bound goes alone (validation caps batches; the writer must not stall on one).
        assert total <= max_events or len(group) == 1
        if index + 1 < len(groups):
            following = sizes[groups[index + 1][0]]
            assert total + following > max_events, "a group takes the next batch whenever it fits"
    assert not any(future.done() for future in futures), "grouping answers nobody: the commit does"


async def test_a_batch_that_would_overflow_waits_for_the_next_group_even_if_a_later_one_fits() -> None:
    writer = Writer(NO_POOL, NameCache(10), 10, database_url="unused")
    for number, size in enumerate([6, 5, 1]):
        writer.submit(_batch(number, size))
    assert _groups(writer) == [[0], [1, 2]]


async def test_a_closing_writer_refuses_new_batches_at_once() -> None:
    async with Writer(NO_POOL, NameCache(10), 10, database_url="unused") as writer:
        pass  # nothing submitted: leaving commits nothing and stops the writer
    outcome = await writer.submit(_batch(0, 1))
    assert outcome.error == "unavailable" and "shutting down" in outcome.message
    assert not writer._queue
