"""Uploader: the API a relay uses; the outbox (what waits) and the link (how it goes) joined.

async with Uploader("http://127.0.0.1:8000", spool="relay.sqlite") as up:
    up.start(session_id); up.track(session_id, "click", {"target": "#buy"}); up.end(session_id)
    await up.flush()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from eventservice_client.events import Limits, encode_event, now_ms
from eventservice_client.link import Backoff, Link, OnError, Totals, UploadError
from eventservice_client.outbox import MAX_BATCH_BYTES, Batch, Batching, MemoryStorage, Outbox, Storage
from eventservice_client.spool import SpoolStorage

log = logging.getLogger("eventservice_client")


def ws_url(base_url: str) -> str:
    """http(s)://host[:port][/prefix] → ws(s)://host[:port][/prefix]/ws (ws:// and wss:// are taken as they are)."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"base_url must be an http(s):// or ws(s):// URL, not {base_url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _log_error(err: UploadError) -> None:
    log.warning("eventservice: %s: %s (batch %s, %d events)", err.error, err.message, err.batch_id, err.events)


class Uploader:
    """Relay mode: one /ws connection for any number of sessions, exactly once through restarts and outages.

    `track()` returns once the event is the uploader's: in memory, or committed to the
    SQLite `spool` (then a `kill -9` right after it loses nothing, and the next start
    sends what was left first, with the batch ids it had).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        spool: str | Path | None = None,
        *,
        flush_events: int = 50,
        flush_ms: int = 1000,
        max_in_flight: int = 4,
        on_error: OnError | None = None,
        max_queue_events: int = 100_000,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        reconnect_min_ms: int = 250,
        reconnect_max_ms: int = 30_000,
        close_timeout: float = 10.0,
        ping_seconds: float = 20.0,
        limits: Limits = Limits(),  # noqa: B008 (frozen)
    ) -> None:
        if flush_events < 1 or flush_ms < 0 or max_in_flight < 1 or max_queue_events < 1:
            raise ValueError("flush_events, max_in_flight and max_queue_events must be at least 1, flush_ms at least 0")
        self.url = ws_url(base_url)
        self.token = token
        self.spool = spool
        self.batching = Batching(flush_events, flush_ms, max_batch_bytes, max_queue_events)
        self.max_in_flight = max_in_flight
        self.on_error: OnError = on_error or _log_error
        self.backoff = Backoff(reconnect_min_ms, reconnect_max_ms)
        self.close_timeout = close_timeout
        self.ping_seconds = ping_seconds
        self.limits = limits
        self._outbox: Outbox | None = None
        self._link: Link | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ---

    async def __aenter__(self) -> Uploader:
        await self.open()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close(flush=kind is None)

    async def open(self) -> None:
        """Load what a previous run left in the spool (sealed first, to go first) and connect."""
        storage: Storage = SpoolStorage(self.spool) if self.spool is not None else MemoryStorage()
        outbox = Outbox(storage, self.batching)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._link = Link(
            self.url,
            outbox,
            headers=headers,
            max_in_flight=self.max_in_flight,
            backoff=self.backoff,
            on_error=self._report,
            ping_seconds=self.ping_seconds,
        )
        outbox.restore()
        self._outbox = outbox
        self._task = asyncio.create_task(self._link.run(), name="eventservice-link")

    async def close(self, flush: bool = True) -> None:
        """Wait up to close_timeout for the ACKs (when `flush`), then disconnect.

        What is still unACKed stays in the spool for the next start; without a spool it is lost (and logged).
        """
        if self._outbox is None:
            return
        if flush:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), self.close_timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(self._task, return_exceptions=True)
        left = self._outbox.pending
        if left and self.spool is None:
            log.warning("eventservice: closed with %d events not ACKed and no spool: they are lost", left)
        self._outbox.close()
        self._outbox = None

    # --- tracking ---

    def start(self, session_id: str, data: Mapping[str, Any] | None = None) -> None:
        self._add("SESSION_START", session_id, None, data)

    def track(self, session_id: str, name: str, data: Mapping[str, Any] | None = None) -> None:
        """Queue one EVENT; a bad one raises EventError at once and never joins a batch."""
        self._add("EVENT", session_id, name, data)

    def end(self, session_id: str, data: Mapping[str, Any] | None = None) -> None:
        self._add("SESSION_END", session_id, None, data)

    def _add(self, kind: str, session_id: str, name: str | None, data: Mapping[str, Any] | None) -> None:
        self._opened().add(encode_event(kind, session_id, now_ms(), name, data, self.limits))

    def put_batch(self, batch: Batch) -> bool:
        """A batch sealed by the caller, with its own (deterministic) batch_id: the importer's way in.

        False when a batch with that id is already waiting (left in the spool by an earlier run).
        """
        return self._opened().put(batch)

    async def flush(self) -> None:
        """Resolves once every event tracked before the call is settled: ACKed, or dropped and reported to on_error."""
        waiter = self._opened().settled_through()
        assert self._task is not None
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            self._task.result()  # the link failed: raise its exception

    async def wait_below(self, events: int) -> None:
        """Back-pressure for producers faster than the server: returns once fewer than `events` are pending."""
        outbox = self._opened()
        while outbox.pending >= events:
            await asyncio.sleep(0.01)
            if self._task is not None and self._task.done():
                self._task.result()

    @property
    def pending(self) -> int:
        """Events tracked and not yet ACKed (nor dropped after an ERROR)."""
        return self._outbox.pending if self._outbox is not None else 0

    @property
    def totals(self) -> Totals:
        """What the server answered so far: events accepted, duplicates, dropped."""
        assert self._link is not None
        return self._link.totals

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.connected

    def _opened(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("the Uploader is not open: use `async with Uploader(...) as up:`")
        return self._outbox

    def _report(self, err: UploadError) -> None:
        try:
            self.on_error(err)
        except Exception:  # a bug in the user's callback must not stop the uploads
            log.exception("eventservice: on_error raised")
