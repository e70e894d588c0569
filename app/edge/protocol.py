"""uvicorn's httptools protocol with a deadline on every request head (slowloris).

uvicorn closes idle keep-alive connections, but it waits forever for the head of
a request: a client that opens a TCP connection and sends nothing, or half a
request line, or one header a minute, holds a socket and a file descriptor for
as long as it likes. Enough of them and nobody else can connect. Here every
request head -- the first on a connection, and each later one from its first
byte on -- must be complete within HANDSHAKE_TIMEOUT_SECONDS, else the
connection is closed. A WebSocket handshake is a request head too, so this is
also the WebSocket handshake timeout; what a WebSocket does after it opens is
app.edge.limits' business (the idle timeout).

Passed to uvicorn as `http=` (a functools.partial carrying the timeout), so it
works the same in every worker process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app import metrics

log = logging.getLogger("eventservice.protocol")


class HeadDeadlineProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # a later request on a kept-alive connection gets its own deadline

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timeout > 0 and self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _timed_out(self) -> None:
        self._head_timer = None
        if self.transport is not None and not self.transport.is_closing():
            metrics.CONNECTIONS_TIMED_OUT.labels("handshake").inc()
            log.info("request head timeout", extra={"remote": _address(self.client), "seconds": self._head_timeout})
            self.transport.close()


def _address(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


def with_head_deadline(seconds: float) -> type[asyncio.Protocol]:
    """The `http=` argument for uvicorn.run.

    uvicorn only calls what it is given, as it would a protocol class; its annotation
    says class, so the partial is presented as one.
    """
    return cast("type[asyncio.Protocol]", functools.partial(HeadDeadlineProtocol, head_timeout=seconds))


__all__ = ["HeadDeadlineProtocol", "with_head_deadline"]
