"""The SSE response: sse-starlette's EventSourceResponse driven by one task per stream.

Why not `EventSourceResponse.__call__` as is: it runs a task group of four or five
tasks per stream (body, ping, shutdown listener, disconnect listener, and a stall
watchdog of ours), which measured ~55 KiB of RSS per idle client and ~30-40 µs of
CPU per wake-up at 1,000 clients. Here:

- one writer task per stream writes everything -- queued entries and a keep-alive
  comment when one is due -- in one `send` per wake-up. It is a task of its own,
  not the request's: that one sits a dozen middleware frames deep, and resuming a
  task re-enters every frame it is suspended in;
- the request's task itself waits for `http.disconnect` (the only way ASGI tells)
  and then cancels the writer, whose cleanup closes the body and so the replay;
- one `_Sweeper` task per event loop, for all streams: it marks pings due every
  `ping` seconds, drops a stream whose write has blocked longer than
  `send_timeout` (by cancelling its writer: the response is left incomplete and
  uvicorn closes the socket), and ends every stream once sse-starlette's
  `AppStatus.should_exit` is set (app/lifecycle.py sets it after the ingest drain).

Only sse-starlette's public API is used: the constructor (media type, the
`Cache-Control: no-store`, `X-Accel-Buffering: no` and `Connection` headers, the
`ping` and `send_timeout` settings and their validation, `sep`,
`ping_message_factory`), `ServerSentEvent`/`ensure_bytes` for the keep-alive
comment, `AppStatus.should_exit`, and `EventSourceResponse.__call__` itself for
HEAD (headers, no body, the iterator never started) and for non-HTTP scopes.
test/unit/test_sse_response.py fails when any of that changes.

The body iterator yields bytes, already framed (app/stream/sse_format.py), and must
yield -- `b""` is fine -- whenever `wake` is set with nothing to send, so the
writer can send a due ping or notice the end of the stream.

Body writes skip the middleware send wrappers: the app records uvicorn's own
`send` in the scope (RAW_SEND_KEY, app/web.py); the response start still goes
through every middleware (CORS headers, the connection log's `open` line), and
the size of each body write goes to `on_written` (the stream route passes the
connection log's counter, app/edge/connlog.py, for its `close` line).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.event import ensure_bytes
from sse_starlette.sse import AppStatus
from starlette.types import Receive, Scope, Send

from app import metrics
from app.background import Background, Loop

# uvicorn's send for this request, stored by the app before any middleware wraps it.
RAW_SEND_KEY = "eventservice.raw_send"

# How often the sweeper looks at least: AppStatus.should_exit is noticed within this.
_MAX_TICK_SECONDS = 0.5


_SHARED_HEADERS: dict[tuple[tuple[bytes, bytes], ...], list[tuple[bytes, bytes]]] = {}


class Wakeable(Protocol):
    def set(self) -> None: ...


class StreamResponse(EventSourceResponse):
    """An endless SSE body, written by one shallow task per stream (see the module docstring).

    `on_close` runs exactly once however the stream ends, HEAD and a client gone
    before the first chunk included (the body iterator may then never start).
    """

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        wake: Wakeable,
        on_close: Callable[[], None],
        ping: float,
        send_timeout: float,
        headers: Mapping[str, str] | None = None,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(content, headers=headers, ping=ping, send_timeout=send_timeout or None)
        # Every stream has the same headers: one shared list instead of ~0.5 KiB each.
        key = tuple(self.raw_headers)
        if key in _SHARED_HEADERS or len(_SHARED_HEADERS) < 8:
            self.raw_headers = _SHARED_HEADERS.setdefault(key, self.raw_headers)
        self._content = content
        self._wake = wake
        self._on_close = on_close
        self._on_written = on_written
        self._closed = False
        self._listener: asyncio.Task[Any] | None = None  # the request's task, in receive()
        self._writer: asyncio.Task[None] | None = None
        self._stopping_listener = False
        # Set by the sweeper, read by the writer.
        self.ping_due = False
        self.ending = False
        self.stalled = False
        self.writing_since: float | None = None  # loop time a blocked write began
        self.next_ping = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request's task listens for the disconnect; a task of its own writes.

        Writing from the request's task, a dozen frames deep, cost ~15% of the
        fan-out's CPU in frame re-entry alone; the writer task is three frames deep.
        """
        if scope["type"] != "http" or scope["method"].upper() == "HEAD":
            try:
                await super().__call__(scope, receive, send)
            finally:
                self._close()
            return
        loop = asyncio.get_running_loop()
        writer: asyncio.Task[None] | None = None
        try:
            self._listener = listener = asyncio.current_task()
            assert listener is not None
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            write: Send = scope.get(RAW_SEND_KEY) or send
            self._writer = writer = loop.create_task(self._write(write))
            writer.add_done_callback(self._written)
            try:
                while not writer.done() and (await receive())["type"] != "http.disconnect":
                    pass
            except asyncio.CancelledError:
                if not self._stopping_listener:
                    raise
                listener.uncancel()  # the writer finished and woke us: not a cancellation
            self._listener = None
            if not writer.done():
                writer.cancel()  # the client is gone: the body's cleanup runs now
                await asyncio.wait((writer,))
            if not writer.cancelled() and (error := writer.exception()) is not None:
                raise error
        finally:
            self._listener = None
            if writer is not None and not writer.done():
                writer.cancel()  # we are being cancelled (server shutdown timeout)
            self._close()

    async def _write(self, write: Send) -> None:
        loop = asyncio.get_running_loop()
        written = self._on_written
        sweeper = _Sweeper.for_loop(loop)
        sweeper.add(self)
        try:
            async for chunk in self._content:
                if self.ending:
                    break
                if self.ping_due:
                    self.ping_due = False
                    chunk += self._ping_bytes()
                if not chunk:
                    continue
                self.writing_since = loop.time()
                await write({"type": "http.response.body", "body": chunk, "more_body": True})
                self.writing_since = None
                if written is not None:
                    written(len(chunk))
            await write({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self.stalled:
                raise
            metrics.SSE_DROPPED.labels("send_timeout").inc()
            # The response stays incomplete on purpose: uvicorn closes the socket.
        finally:
            sweeper.discard(self)
            aclose = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()  # the body's own cleanup (a replay's pool connection)

    def _written(self, writer: asyncio.Task[None]) -> None:
        listener = self._listener
        if listener is not None and not listener.done():
            self._stopping_listener = True
            listener.cancel()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close()

    def _ping_bytes(self) -> bytes:
        event = (
            self.ping_message_factory()
            if self.ping_message_factory
            else ServerSentEvent(comment=f"ping - {datetime.now(UTC)}", sep=self.sep)
        )
        return ensure_bytes(event, self.sep)

    # --- called by the sweeper -------------------------------------------------
    def mark_ping(self) -> None:
        self.ping_due = True
        self._wake.set()

    def end(self) -> None:
        self.ending = True
        self._wake.set()

    def stall(self) -> None:
        if not self.stalled and self._writer is not None:
            self.stalled = True
            self._writer.cancel()


class _Sweeper(Background):
    """One per event loop: pings, stalled writes and shutdown for every stream at once.

    Not entered by the lifespan: it starts with the loop's first stream and its
    loop returns with the last one (an idle server does not tick), which is also
    how it ends at shutdown, once the drain has ended every stream.
    """

    _current: _Sweeper | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.streams: set[StreamResponse] = set()
        self.tick = _MAX_TICK_SECONDS

    def loops(self) -> dict[str, Loop]:
        return {"sse-sweeper": self._run}

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> _Sweeper:
        current = cls._current
        if current is None or current.loop is not loop or current.loop.is_closed():
            current = cls._current = cls(loop)
        return current

    def add(self, stream: StreamResponse) -> None:
        now = self.loop.time()
        if stream.ping_interval > 0:
            stream.next_ping = now + stream.ping_interval
            self.tick = min(self.tick, stream.ping_interval / 4)
        if stream.send_timeout:
            self.tick = min(self.tick, stream.send_timeout / 4)
        self.streams.add(stream)
        if AppStatus.should_exit:
            stream.end()
        self.start()  # a no-op while the loop runs

    def discard(self, stream: StreamResponse) -> None:
        self.streams.discard(stream)

    async def _run(self) -> None:
        # No await between the last check and returning: a stream added meanwhile
        # finds the task either still running or done, and start() restarts it.
        while self.streams:
            await asyncio.sleep(self.tick)
            self.sweep()

    def sweep(self) -> None:
        now = self.loop.time()
        exiting = AppStatus.should_exit
        for stream in list(self.streams):
            since = stream.writing_since
            if since is not None and stream.send_timeout and now - since > stream.send_timeout:
                stream.stall()
            elif exiting:
                stream.end()
            elif stream.ping_interval > 0 and now >= stream.next_ping:
                stream.next_ping = now + stream.ping_interval
                stream.mark_ping()


__all__ = ["RAW_SEND_KEY", "StreamResponse"]
