"""GET /metrics moves as the service is driven."""

from __future__ import annotations

import aiohttp

from test.support.clients import SSEReader, event, new_session, upload
from test.support.service import Service


def _sample(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def _scrape(svc: Service) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        return await response.text()


async def test_counters_move_with_traffic(service: Service) -> None:
    before = await _scrape(service)
    session = new_session()
    async with await SSEReader.open(service.url, f"?session_id={session}") as stream:
        during = await _scrape(service)
        await upload(service.ws_url, session, [event("a", 1), event("b", 2)], "not json")
        await stream.take(2)
    after = await _scrape(service)
    assert _sample(during, "eventservice_sse_clients ") >= 1
    accepted = 'eventservice_events_total{result="accepted"}'
    assert _sample(after, accepted) - _sample(before, accepted) == 2
    assert _sample(after, 'eventservice_batches_total{result="invalid_json"}') >= 1
    assert _sample(after, "eventservice_ack_latency_seconds_count") > _sample(before, "eventservice_ack_latency_seconds_count")
    assert _sample(after, "eventservice_sse_messages_total") >= 2
    for name in [
        "eventservice_notification_lag_seconds_count",
        "eventservice_listen_reconnects_total",
        "eventservice_replay_rows_total",
        'eventservice_pool_connections{state="in_use"}',
        "eventservice_sse_clients_dropped_total",
    ]:
        assert name in after or name.split("{")[0] in after, name
