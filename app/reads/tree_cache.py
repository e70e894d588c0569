"""Encoded session trees kept per process, checked against the session's version.

Events are append-only and every insert bumps the session's event_count (or its
start/end) in the same statement, so (start, end, event_count) read in one
snapshot names exactly one tree. A hit costs one primary-key lookup instead of
reading, sorting and encoding every event: measured on a 1,000-event session,
most of a lookup's server and PostgreSQL CPU (see docs/performance.md).
"""

from __future__ import annotations

from collections import OrderedDict

Version = tuple["int | None", "int | None", int]


class TreeCache:
    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[str, tuple[Version, bytes]] = OrderedDict()

    def get(self, session_id: str) -> tuple[Version, bytes] | None:
        entry = self._entries.get(session_id)
        if entry is not None:
            self._entries.move_to_end(session_id)
        return entry

    def put(self, session_id: str, version: Version, body: bytes) -> None:
        if len(body) > self._max_bytes // 8:
            return  # one huge tree must not evict everything else
        old = self._entries.pop(session_id, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._entries[session_id] = (version, body)
        self._bytes += len(body)
        while self._bytes > self._max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= len(evicted)
