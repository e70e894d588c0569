"""Event name -> id, cached in-process with a bound so hostile cardinality cannot grow memory."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import asyncpg

from app.store import store


class NameCache:
    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def _remember(self, name: str, name_id: int) -> None:
        if len(self._ids) >= self._capacity:
            # Dicts keep insertion order: dropping the oldest half is O(n) once per
            # n/2 inserts, cheaper than LRU bookkeeping on every hit.
            for old in list(islice(self._ids, max(1, self._capacity // 2))):
                del self._ids[old]
        self._ids[name] = name_id

    async def resolve(self, conn: asyncpg.Connection, names: Iterable[str], timeout: float | None = None) -> dict[str, int]:
        """Ids for all names, creating the missing ones (committed on their own).

        Returns a mapping of its own rather than relying on the cache, which may
        evict entries while a large batch is being resolved.
        """
        found: dict[str, int] = {}
        missing: list[str] = []
        for name in names:
            cached = self._ids.get(name)
            if cached is None:
                missing.append(name)
            else:
                found[name] = cached
        missing.sort()
        # Concurrent writers may commit the same new name between our INSERT and
        # SELECT; a second pass always sees it. Three passes is belt and braces.
        for _ in range(3):
            if not missing:
                break
            for name_id, name in await store.upsert_event_names(conn, missing, timeout):
                found[name] = name_id
                self._remember(name, name_id)
            missing = [name for name in missing if name not in found]
        if missing:
            raise RuntimeError(f"event names could not be resolved: {missing[:3]}")
        return found
