"""The whole tree (encoded by PostgreSQL in one query) is byte for byte what the keyset
pages (encoded in Python) give for the same children, whatever the names and data hold."""

from __future__ import annotations

from typing import Any

import aiohttp

from test.support.clients import event, new_session, upload
from test.support.service import Service

TS = 1_700_000_000_000

# Every character JSON must escape, and a few it must not.
ASCII = "".join(chr(c) for c in range(1, 128))
NAMES = [ASCII[:100], ASCII[100:], 'quo"te\\back/slash', "é ü ß 漢字 \u2028\u2029 \U0001f600", "x" * 255, "plain"]
DATA: list[Any] = [
    None,
    {},
    {"s": ASCII, "u": "漢字\U0001f600", "n": [1, -2.5, 1e300, 123456789012345678901234567890, None, True, False]},
    {"nested": {"deep": [{"a": "b"}, []]}, "dup": 1},
]


async def raw(service: Service, path: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(service.url + path) as response:
        return response.status, await response.read()


async def assert_same_as_pages(service: Service, session: str) -> bytes:
    status, whole = await raw(service, f"/session/{session}")
    assert status == 200, whole
    status, paged = await raw(service, f"/session/{session}?limit=10000")
    assert status == 200, paged
    assert whole.endswith(b"]}")
    assert paged == whole[:-2] + b'],"next":null}'
    return whole


async def test_whole_tree_bytes_equal_the_pages(service: Service) -> None:
    session = new_session()
    events = [{"type": "SESSION_START", "timestamp": TS}]
    for i, name in enumerate(NAMES * 3):
        extra = {} if DATA[i % len(DATA)] is None else {"data": DATA[i % len(DATA)]}
        events.append(event(name, TS + i % 4, **extra))
    events.append({"type": "SESSION_END", "timestamp": TS + 99})
    answers = await upload(service.ws_url, session, events)
    assert answers[0]["type"] == "ACK", answers
    whole = await assert_same_as_pages(service, session)
    assert whole.count(b'"type":"EVENT"') == len(NAMES) * 3


async def test_sessions_without_events_bytes_equal_the_pages(service: Service) -> None:
    session = new_session()
    answers = await upload(service.ws_url, session, [{"type": "SESSION_START", "timestamp": TS}])
    assert answers[0]["type"] == "ACK", answers
    whole = await assert_same_as_pages(service, session)
    assert whole.endswith(b'"children":[]}')
