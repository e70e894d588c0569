from app.reads.tree_cache import TreeCache


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
