"""The hub's pure parts: filters, a subscriber's bounded buffer, and its one-waiter wake flag."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.stream.hub import Filters, Item, Subscriber, Wake, item_from_row

SESSIONS = ["0d856b46-48cd-4fba-946b-53d15b7b43e0", "5f1d7c3e-0000-4000-8000-000000000001"]
KINDS = ["SESSION_START", "EVENT", "SESSION_END"]
NAMES = ["click", "view", None]

items = st.builds(
    Item,
    position=st.integers(1, 10**9),
    kind=st.sampled_from(KINDS),
    session_id=st.sampled_from(SESSIONS),
    name=st.sampled_from(NAMES),
    payload=st.just(b"x"),
)
filters = st.builds(
    Filters,
    session_ids=st.none() | st.frozensets(st.sampled_from(SESSIONS)),
    names=st.none() | st.frozensets(st.sampled_from(["click", "view"])),
    types=st.none() | st.frozensets(st.sampled_from(KINDS)),
)


def _item(position: int, kind: str = "EVENT", session: str = SESSIONS[0], name: str | None = "click") -> Item:
    return Item(position, kind, session, name, b"payload %d" % position)


@given(f=filters, item=items)
def test_a_filter_matches_when_every_given_dimension_admits_the_item(f: Filters, item: Item) -> None:
    expected = all(
        allowed is None or value in allowed
        for allowed, value in ((f.session_ids, item.session_id), (f.names, item.name), (f.types, item.kind))
    )
    assert f.matches(item) is expected


def test_no_filter_matches_everything_and_is_empty() -> None:
    assert Filters().empty
    assert Filters().matches(_item(1, "SESSION_END", name=None))
    assert not Filters(names=frozenset({"click"})).empty


def test_a_name_filter_excludes_entries_without_a_name() -> None:
    assert not Filters(names=frozenset({"click"})).matches(_item(1, "SESSION_START", name=None))


def test_an_empty_set_matches_nothing() -> None:
    assert not Filters(types=frozenset()).matches(_item(1))


@given(f=filters, batch=st.lists(items, max_size=30))
def test_offer_keeps_exactly_the_matching_items_in_order(f: Filters, batch: list[Item]) -> None:
    subscriber = Subscriber(f, limit=1000, start_position=0)
    taken = subscriber.offer(batch)
    expected = [item for item in batch if f.matches(item)]
    assert taken == len(expected)
    assert subscriber.wake.is_set() is bool(expected)
    assert subscriber.drain() == expected
    assert subscriber.drain() == [] and not subscriber.wake.is_set()


def test_offers_accumulate_until_drained() -> None:
    subscriber = Subscriber(Filters(), limit=10, start_position=0)
    assert subscriber.offer([_item(1), _item(2)]) == 2
    assert subscriber.offer([_item(3)]) == 1
    assert [i.position for i in subscriber.drain()] == [1, 2, 3]


def test_overflow_drops_the_buffer_flags_it_and_wakes_the_client() -> None:
    subscriber = Subscriber(Filters(), limit=3, start_position=0)
    assert subscriber.offer([_item(1), _item(2), _item(3)]) == 3
    subscriber.drain()
    assert subscriber.offer([_item(4), _item(5)]) == 2
    assert subscriber.offer([_item(6), _item(7)]) == -1  # 4 buffered > limit 3
    assert subscriber.overflowed
    assert subscriber.reset_reason == "slow_client"
    assert subscriber.wake.is_set(), "the stream must wake to send its reset"
    assert subscriber.drain() == [], "nothing partial is delivered after an overflow"


def test_only_matching_items_count_against_the_limit() -> None:
    subscriber = Subscriber(Filters(names=frozenset({"view"})), limit=2, start_position=0)
    assert subscriber.offer([_item(i) for i in range(100)] + [_item(100, name="view")]) == 1
    assert not subscriber.overflowed


def test_an_offer_with_nothing_matching_does_not_wake() -> None:
    subscriber = Subscriber(Filters(types=frozenset({"SESSION_END"})), limit=5, start_position=0)
    assert subscriber.offer([_item(1)]) == 0
    assert not subscriber.wake.is_set()


def test_item_from_row_keeps_the_fields_the_filters_use_and_frames_the_payload() -> None:
    row = (42, "EVENT", SESSIONS[1], 1_700_000_000_000, "view", '{"k":1}')
    item = item_from_row(row)
    assert (item.position, item.kind, item.session_id, item.name) == (42, "EVENT", SESSIONS[1], "view")
    assert item.payload.startswith(b"id: 42\ndata: {") and item.payload.endswith(b"\n\n")


async def test_wake_wait_returns_at_once_when_set() -> None:
    wake = Wake()
    wake.set()
    await asyncio.wait_for(wake.wait(), 1)
    assert wake.is_set(), "waiting does not clear the flag: drain() does"


async def test_wake_wait_blocks_until_set() -> None:
    wake = Wake()
    waiter = asyncio.ensure_future(wake.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    wake.set()
    await asyncio.wait_for(waiter, 1)
    assert wake.is_set()


async def test_wake_clear_makes_the_next_wait_block_again() -> None:
    wake = Wake()
    wake.set()
    wake.clear()
    assert not wake.is_set()
    waiter = asyncio.ensure_future(wake.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    wake.set()
    await asyncio.wait_for(waiter, 1)


async def test_setting_twice_is_harmless_and_a_cancelled_waiter_does_not_break_set() -> None:
    wake = Wake()
    waiter = asyncio.ensure_future(wake.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    wake.set()
    wake.set()
    assert wake.is_set()
