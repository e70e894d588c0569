"""The assignment's original example, verbatim, end to end."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from test.support.clients import Uploader
from test.support.service import Service

SESSION = "0d856b46-48cd-4fba-946b-53d15b7b43e0"
FRAME = """[{"timestamp":1624422533298,"type":"SESSION_START","session_id":"0d856b46-48cd-4fba-946b-53d15b7b43e0"},
 {"timestamp":1624422533298,"type":"EVENT","name":"event2"},
 {"timestamp":1624422533298,"type":"EVENT","name":"test"},
 {"timestamp":1624422533298,"type":"EVENT","name":"event2"},
 {"timestamp":1624422533298,"type":"SESSION_END","session_id":"0d856b46-48cd-4fba-946b-53d15b7b43e0"}]"""


async def test_original_frame_is_acked_and_returned_as_a_tree(service: Service) -> None:
    async with await Uploader.open(service.ws_url, f"?sessionId={SESSION}") as up:
        ack = await up.send(FRAME)
    assert ack == {"type": "ACK", "batch": 1, "batch_id": None, "accepted": 5, "duplicate": False}

    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/session/{SESSION}") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    assert body == {
        "type": "SESSION",
        "session_id": SESSION,
        "start": 1624422533298,
        "end": 1624422533298,
        "children": [
            {"type": "EVENT", "timestamp": 1624422533298, "name": "event2"},
            {"type": "EVENT", "timestamp": 1624422533298, "name": "test"},
            {"type": "EVENT", "timestamp": 1624422533298, "name": "event2"},
        ],
    }


async def test_the_assignments_seconds_land_in_2019_not_1970(service: Service) -> None:
    """The assignment sends seconds; on a plain connection (timestampUnit=auto) they are read as such."""
    session = "5a3c1a2e-5f0e-4b8e-9c39-2d6a7f1e0b44"
    frame = f"""[{{"timestamp":1569972082,"type":"SESSION_START","session_id":"{session}"}},
 {{"timestamp":1569972082,"type":"EVENT","name":"cart"}},
 {{"timestamp":1569972083,"type":"SESSION_END","session_id":"{session}"}}]"""
    async with await Uploader.open(service.ws_url, f"?sessionId={session}") as up:
        assert (await up.send(frame))["accepted"] == 3
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/session/{session}") as response:
        body = await response.json()
    assert (body["start"], body["end"]) == (1_569_972_082_000, 1_569_972_083_000)
    assert body["children"] == [{"type": "EVENT", "timestamp": 1_569_972_082_000, "name": "cart"}]
    started = datetime.fromtimestamp(body["start"] / 1000, UTC)
    assert started.isoformat() == "2019-10-01T23:21:22+00:00"


async def test_healthcheck_is_plain_ok(service: Service) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/healthcheck") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert await response.text() == "OK"
