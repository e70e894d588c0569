"""Identifiers read from clients: session ids as UUIDs, in one canonical form. Pure.

Every reader of a session id (the /ws query string and events, the SSE filters,
GET /session/<id>, the connection log) goes through parse_uuid, so the same text
is the same id everywhere: lower case, hyphenated.

"No session" is None in Python, everywhere. Only the database key of an upload's
batch_id needs a value there (ingest_batches.scope is NOT NULL, part of the
primary key): the writer alone turns None into the nil UUID (app/ingest/writer.py).
"""

from __future__ import annotations

import re

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_UUID_CACHE: dict[str, str] = {}
_UUID_CACHE_SIZE = 65_536


def parse_uuid(value: object) -> str | None:
    """Canonical lower-case form of a hyphenated UUID, or None when it is not one.

    A relay repeats the same few session ids in every event; the regex was ~12% of
    ingest CPU, a dict hit is a fraction of that. Bounded: cleared when full.
    """
    if not isinstance(value, str):
        return None
    known = _UUID_CACHE.get(value)
    if known is not None:
        return known
    if len(value) == 36 and _UUID_RE.fullmatch(value):
        if len(_UUID_CACHE) >= _UUID_CACHE_SIZE:
            _UUID_CACHE.clear()
        canonical = _UUID_CACHE[value] = value.lower()
        return canonical
    return None


# The cache alone, for a hot loop that falls back to parse_uuid on a miss: the
# canonical form of a string already seen, else None. Bound once (the cache is
# cleared, never replaced).
known_uuid = _UUID_CACHE.get


__all__ = ["known_uuid", "parse_uuid"]
