"""All Server-Sent Events framing in one place.

Messages are encoded to bytes once, when the hub reads them, and the same bytes
object is handed to every subscriber; sse-starlette passes bytes through as is.
Entry data is spliced in as the JSON text PostgreSQL stored, never re-encoded.
"""

from __future__ import annotations

import orjson

# A row as the stream queries return it: position, type, session_id, ts, name, data.
StreamRow = tuple[int, str, str, int, "str | None", "str | None"]


def entry_json(kind: str, session_id: str, ts: int, name: str | None, data: str | None) -> bytes:
    parts = [b'{"type":"', kind.encode(), b'","session_id":"', session_id.encode(), b'","timestamp":', str(ts).encode()]
    if name is not None:
        parts += [b',"name":', orjson.dumps(name)]
    if data is not None:
        parts += [b',"data":', data.encode()]
    parts.append(b"}")
    return b"".join(parts)


def message(row: StreamRow) -> bytes:
    position, kind, session_id, ts, name, data = row
    return b"id: %d\ndata: %s\n\n" % (position, entry_json(kind, session_id, ts, name, data))


def reset(position: int, reason: str) -> bytes:
    body = orjson.dumps({"reason": reason, "position": str(position)})
    return b"event: reset\nid: %d\ndata: %s\n\n" % (position, body)


def retry(milliseconds: int) -> bytes:
    return b"retry: %d\n\n" % milliseconds
