"""The per-process session-tree cache: bounded in bytes, least recently used out first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.reads.tree_cache import TreeCache, Version


def test_evicts_least_recently_used_within_its_byte_bound() -> None:
    cache = TreeCache(max_bytes=80)
    cache.put("a", (1, None, 1), b"x" * 10)
    cache.put("b", (1, None, 1), b"y" * 10)
    assert cache.get("a") is not None  # a is now the most recent
    for i in range(10):
        cache.put(f"k{i}", (1, None, 1), b"z" * 10)
    assert cache.get("a") is None and cache.get("b") is None
    assert cache.get("k9") == ((1, None, 1), b"z" * 10)


def test_an_entry_larger_than_an_eighth_of_the_bound_is_not_kept() -> None:
    cache = TreeCache(max_bytes=80)
    cache.put("big", (None, None, 0), b"x" * 11)
    assert cache.get("big") is None


def test_replacing_an_entry_keeps_the_byte_count_right() -> None:
    cache = TreeCache(max_bytes=80)
    for _ in range(100):
        cache.put("same", (None, None, 0), b"x" * 10)
    cache.put("other", (None, None, 0), b"y" * 10)
    assert cache.get("same") is not None and cache.get("other") is not None


_keys = st.sampled_from([f"s{i}" for i in range(12)])
_ops = st.lists(
    st.tuples(st.sampled_from(["put", "get"]), _keys, st.integers(0, 40), st.integers(0, 5)),
    max_size=80,
)


@given(max_bytes=st.integers(8, 200), ops=_ops)
def test_any_sequence_stays_in_the_bound_and_returns_what_was_put(max_bytes: int, ops: list[tuple[str, str, int, int]]) -> None:
    cache = TreeCache(max_bytes=max_bytes)
    last_put: dict[str, tuple[Version, bytes]] = {}
    for op, key, size, count in ops:
        if op == "put":
            entry: tuple[Version, bytes] = ((1, None, count), key.encode() * size)
            body = entry[1]
            cache.put(key, *entry)
            if len(body) <= max_bytes // 8:
                assert cache.get(key) == entry, "what was just put is the most recent: never evicted at once"
                last_put[key] = entry
        else:
            got = cache.get(key)
            assert got is None or got == last_put.get(key), "a hit is the latest small tree put for that key"
    kept = [cache.get(key) for key in {k for _, k, _, _ in ops}]
    assert sum(len(entry[1]) for entry in kept if entry is not None) <= max_bytes


def test_get_refreshes_so_the_least_recently_used_goes_first() -> None:
    cache = TreeCache(max_bytes=24)
    for key in "abc":
        cache.put(key, (None, None, 0), b"x" * 3)
    cache.get("a")
    for i in range(16):  # 9 + 16 = 25 bytes: one over, so exactly the least recently used goes
        cache.put(f"n{i}", (None, None, 0), b"y")
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
