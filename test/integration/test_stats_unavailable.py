"""The analytics endpoints while the database is down: the one 503 of every read, then figures again."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from app.errors import unavailable_response
from test.support.postgres import StandalonePostgres
from test.support.service import Service

PATHS = (
    "/stats/summary?from=0&to=86400000",
    "/stats/timeseries?from=0&to=86400000&bucket=hour",
    "/stats/names?from=0&to=86400000",
    "/stats/funnel?from=0&to=86400000&step=a&step=b",
)


async def _get(svc: Service, path: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(f"{svc.url}{path}") as response:
        return response.status, dict(response.headers), await response.read()


async def test_stats_answer_the_unavailable_503_while_the_database_is_down(
    start_service, standalone_postgres: StandalonePostgres
) -> None:
    svc = await start_service(database_url=standalone_postgres.url)
    for path in PATHS:
        assert (await _get(svc, path))[0] == 200, path

    await asyncio.to_thread(standalone_postgres.stop)
    expected = unavailable_response()
    for path in PATHS:
        status, headers, body = await _get(svc, path)
        assert status == 503 and body == expected.body, (path, status, body)
        assert headers["Retry-After"] == expected.headers["retry-after"] == "1"
        assert headers["Content-Type"] == expected.headers["content-type"]

    await asyncio.to_thread(standalone_postgres.start)
    for path in PATHS:
        deadline = time.monotonic() + 20
        while (answer := await _get(svc, path))[0] != 200:
            assert answer[0] == 503 and time.monotonic() < deadline, (path, answer)
            await asyncio.sleep(0.1)
    assert "Exception in ASGI application" not in svc.logs()
