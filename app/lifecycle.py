"""Graceful shutdown: drain the ingest WebSockets before uvicorn closes any socket.

uvicorn's own shutdown closes every WebSocket at once (code 1012), so batches a
client sent just before SIGTERM could commit without their ACK ever leaving.
We put our handler in front of uvicorn's: on the first SIGTERM/SIGINT every
WebSocket stops reading, waits for the ACKs of what it already received, and
closes with 1001; then SSE streams are ended (clients reconnect elsewhere with
Last-Event-ID) and uvicorn's handler runs its usual shutdown, after which the
lifespan commits anything left and closes the pool.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from sse_starlette.sse import AppStatus

from app.background import spawn

log = logging.getLogger("eventservice.lifecycle")

SignalHandler = Callable[[int, FrameType | None], Any]


class Drain:
    """Ingest connections register here; draining asks each to finish and waits."""

    def __init__(self) -> None:
        self.draining = False
        self._connections: dict[int, Callable[[], None]] = {}
        self._next_key = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def register(self, stop_reading: Callable[[], None]) -> Callable[[], None]:
        key = self._next_key
        self._next_key += 1
        self._connections[key] = stop_reading
        self._idle.clear()
        if self.draining:
            stop_reading()  # accepted while the drain was already under way

        def unregister() -> None:
            self._connections.pop(key, None)
            if not self._connections:
                self._idle.set()

        return unregister

    async def run(self, timeout: float) -> None:
        self.draining = True
        log.info("draining %d ingest connections", len(self._connections))
        for stop_reading in list(self._connections.values()):
            stop_reading()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("%d ingest connections still open after %.1fs; closing them", len(self._connections), timeout)


def install_signal_handlers(drain: Drain, timeout: float) -> None:
    """Must run inside uvicorn's serve() (the lifespan), after it installed its handlers."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        uvicorn_handler = signal.getsignal(sig)
        if not callable(uvicorn_handler):
            continue  # not under uvicorn's signal capture: nothing to put ourselves in front of

        def on_signal(signum: int, frame: FrameType | None, forward: SignalHandler = uvicorn_handler) -> None:
            if drain.draining:
                forward(signum, frame)  # a second signal: let uvicorn force its way out
                return
            drain.draining = True
            loop.call_soon_threadsafe(lambda: spawn("drain", _drain_then(drain, timeout, forward, signum, frame)))

        signal.signal(sig, on_signal)


async def _drain_then(drain: Drain, timeout: float, forward: SignalHandler, signum: int, frame: FrameType | None) -> None:
    try:
        await drain.run(timeout)
    finally:
        AppStatus.should_exit = True  # sse-starlette ends every stream
        forward(signum, frame)
