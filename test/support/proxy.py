"""A TCP proxy between the service and PostgreSQL that injects network faults.

Real sockets, no mocks: the service connects to the proxy's port, the proxy to
PostgreSQL. Every accepted connection can be
- passed (the default),
- black-holed: bytes are read and dropped in both directions, the sockets stay
  open, so neither side sees an error (a network partition, a dead NAT entry),
- reset: closed with RST at once.
`blackhole()` affects the connections open now; later ones pass, which is what
lets the service recover by reconnecting.

The proxy runs its own event loop in a thread, so it keeps forwarding while the
test's loop is blocked (Service.start() polls synchronously) and its controls are
plain calls.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from test.support.postgres import free_port

T = TypeVar("T")


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    blackholed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._call_async(self._listen())

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def _call_async(self, coro) -> None:  # type: ignore[no-untyped-def]
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def url_for(self, url: str, real_port: int) -> str:
        return url.replace(f":{real_port}/", f":{self.port}/")

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer)),
            asyncio.create_task(self._pump(link, up_reader, writer)),
        ]

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                if link.blackholed:
                    continue  # swallowed: the peer waits for an answer that never comes
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if not link.blackholed:
                self._close(link)

    def _close(self, link: _Link) -> None:
        if link in self._links:
            self._links.discard(link)
            for w in (link.client, link.server):
                w.close()

    def blackhole(self) -> int:
        """Silently drop everything on the connections open now; return how many."""
        return self._call(self._blackhole)

    def _blackhole(self) -> int:
        for link in self._links:
            link.blackholed = True
        return len(self._links)

    def reset(self) -> int:
        """RST every open connection; return how many."""
        return self._call(self._reset_all)

    def _reset_all(self) -> int:
        links = list(self._links)
        for link in links:
            self._links.discard(link)
            _reset(link.client)
            _reset(link.server)
            for task in link.tasks:
                task.cancel()
        return len(links)

    def close(self) -> None:
        if self._thread.is_alive():
            self._call_async(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    async def _shutdown(self) -> None:
        self._reset_all()
        if self._server is not None:
            self._server.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
