"""The request-head deadline (slowloris), on a real socket: uvicorn's protocol, no uvicorn Server, no database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from app import metrics
from app.edge.protocol import with_head_deadline

OK = b"HTTP/1.1 200"
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


async def _app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _serve(head_timeout: float) -> tuple[asyncio.Server, Connect]:
    # Keep-alive far longer than the head deadline: a close within the deadline is ours, not uvicorn's.
    config = uvicorn.Config(_app, timeout_keep_alive=60, log_config=None, lifespan="off")
    config.load()
    state = ServerState()
    factory = with_head_deadline(head_timeout)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: factory(config=config, server_state=state, app_state={}, _loop=loop), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    return server, lambda: asyncio.open_connection("127.0.0.1", port)


@pytest.fixture
async def short_deadline() -> AsyncIterator[Connect]:
    server, connect = await _serve(0.2)
    yield connect
    server.close()


@pytest.fixture
async def deadline() -> AsyncIterator[Connect]:
    """Long enough that a busy machine still gets a prompt client's head in, short enough to wait out."""
    server, connect = await _serve(1.0)
    yield connect
    server.close()


def _timed_out() -> float:
    value = metrics.REGISTRY.get_sample_value("eventservice_connections_timed_out_total", {"reason": "handshake"})
    return value or 0.0


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent before closing; fails if it does not close in time."""
    return await asyncio.wait_for(reader.read(), seconds)


async def test_a_silent_connection_is_closed_and_counted(short_deadline: Connect) -> None:
    before = _timed_out()
    reader, writer = await short_deadline()
    assert await _closed_within(reader, 10) == b""
    writer.close()
    assert _timed_out() == before + 1


async def test_half_a_request_line_is_closed(short_deadline: Connect) -> None:
    reader, writer = await short_deadline()
    writer.write(b"GET / HT")
    assert await _closed_within(reader, 10) == b""
    writer.close()


async def test_a_complete_head_is_answered(deadline: Connect) -> None:
    reader, writer = await deadline()
    writer.write(REQUEST)
    assert (await asyncio.wait_for(reader.readuntil(b"ok"), 10)).startswith(OK)
    writer.close()


async def test_a_later_request_on_a_kept_alive_connection_has_its_own_deadline(deadline: Connect) -> None:
    reader, writer = await deadline()
    writer.write(REQUEST)
    assert (await asyncio.wait_for(reader.readuntil(b"ok"), 10)).startswith(OK)
    writer.write(b"GET / HTTP/1.1\r\nHost: te")  # the second head starts and stalls
    assert await _closed_within(reader, 10) == b""
    writer.close()


async def test_a_zero_deadline_disables_it() -> None:
    server, connect = await _serve(0)
    try:
        reader, writer = await connect()
        with pytest.raises(TimeoutError):
            await _closed_within(reader, 0.5)  # still open well past what a deadline would allow
        writer.write(REQUEST)
        assert (await asyncio.wait_for(reader.readuntil(b"ok"), 10)).startswith(OK)
        writer.close()
    finally:
        server.close()
