"""What waits for an ACK: open events, sealed batches in order, and where they are kept.

The outbox knows nothing of WebSockets (the link in link.py sends what it holds and
tells it what was answered); its storage is memory or a SQLite spool (spool.py), the
same interface either way. A batch is sealed by count, by size or by time, gets its
`batch_id` then, and keeps it until an answer settles it, so every resend carries the
same id and the server's batch_id memory makes it exactly once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

# A frame is at most 1 MiB on the server (MAX_FRAME_BYTES); half of it leaves room.
MAX_BATCH_BYTES = 512 * 1024
_ENVELOPE_BYTES = 100  # {"batch_id":"…","events":[…]} around the events


class QueueFull(RuntimeError):
    """track() refused: max_queue_events are waiting for their ACK (never a silent drop)."""

    error = "queue_full"


def new_batch_id() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 random bits


@dataclass(slots=True)
class Batch:
    """A sealed batch: its id, its events' compact JSON, its place in the send order."""

    batch_id: str
    events: list[bytes]
    seq: int = 0
    lines: list[int] | None = field(default=None, repr=False)  # an import's line numbers, for messages

    def frame(self) -> str:
        """The envelope the server reads, built from the events' JSON without decoding them."""
        head = '{"batch_id":"' + self.batch_id + '","events":['
        return head + ",".join(event.decode() for event in self.events) + "]}"


class Storage(Protocol):
    """Where the outbox keeps what is not yet ACKed. Each call is durable when it returns."""

    def load(self) -> tuple[list[Batch], list[bytes]]:
        """What a previous run left: sealed batches in order, then open (unsealed) events."""
        ...

    def add(self, event: bytes) -> None: ...

    def seal(self, batch_id: str) -> None:
        """Every open event becomes part of the batch `batch_id`."""
        ...

    def put(self, batch: Batch) -> bool:
        """A batch sealed elsewhere (an import's); False when its id is already kept."""
        ...

    def remove(self, batch_id: str) -> None: ...

    def close(self) -> None: ...


class MemoryStorage:
    """No spool: everything lives in the outbox itself; a crash loses what was not ACKed."""

    def load(self) -> tuple[list[Batch], list[bytes]]:
        return [], []

    def add(self, event: bytes) -> None:
        pass

    def seal(self, batch_id: str) -> None:
        pass

    def put(self, batch: Batch) -> bool:
        return True

    def remove(self, batch_id: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Batching:
    """When a batch is sealed: `flush_events` events, `max_batch_bytes`, or `flush_ms` after its first event."""

    flush_events: int = 50
    flush_ms: int = 1000
    max_batch_bytes: int = MAX_BATCH_BYTES
    max_queue_events: int = 100_000


class Outbox:
    """Open events and sealed batches, in order, each batch kept until settled."""

    def __init__(self, storage: Storage, batching: Batching) -> None:
        self.storage = storage
        self.batching = batching
        self.open: list[bytes] = []
        self._open_bytes = 0
        self.sealed: dict[str, Batch] = {}  # insertion order is send order
        self._sealed_events = 0
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.listeners: list[Callable[[Batch], None]] = []  # told of each newly sealed batch

    @property
    def pending(self) -> int:
        """Events tracked and not yet settled (ACKed, or dropped after an ERROR)."""
        return len(self.open) + self._sealed_events

    def restore(self) -> None:
        """Take back what the storage kept from a previous run; its open events are sealed at once, to go first."""
        batches, events = self.storage.load()
        for batch in batches:
            self._append(batch)
        for event in events:
            self.open.append(event)
            self._open_bytes += len(event) + 1
        self.seal()

    def add(self, event: bytes) -> None:
        """One checked event; stored before this returns."""
        if self.pending >= self.batching.max_queue_events:
            raise QueueFull(f"{self.pending} events are waiting for their ACK (max_queue_events); event refused")
        if self.open and self._open_bytes + len(event) + _ENVELOPE_BYTES > self.batching.max_batch_bytes:
            self.seal()
        self.storage.add(event)
        self.open.append(event)
        self._open_bytes += len(event) + 1
        if len(self.open) >= self.batching.flush_events:
            self.seal()
        elif len(self.open) == 1:
            self._timer = asyncio.get_running_loop().call_later(self.batching.flush_ms / 1000, self.seal)

    def seal(self) -> Batch | None:
        """The open events become a batch with a fresh random id (None when there are none)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.open:
            return None
        batch = Batch(new_batch_id(), self.open)
        self.storage.seal(batch.batch_id)
        self.open, self._open_bytes = [], 0
        return self._append(batch)

    def put(self, batch: Batch) -> bool:
        """A batch sealed by the caller with its own id (the importer's); False when that id is already waiting."""
        if batch.batch_id in self.sealed or not self.storage.put(batch):
            return False
        self._append(batch)
        return True

    def _append(self, batch: Batch) -> Batch:
        self._seq += 1
        batch.seq = self._seq
        self.sealed[batch.batch_id] = batch
        self._sealed_events += len(batch.events)
        for listener in self.listeners:
            listener(batch)
        return batch

    def unsettled(self) -> Iterable[Batch]:
        return list(self.sealed.values())

    def settle(self, batch_id: str) -> Batch | None:
        """ACKed (duplicate or not) or dropped: forgotten here and in the storage."""
        batch = self.sealed.pop(batch_id, None)
        if batch is None:
            return None
        self.storage.remove(batch_id)
        self._sealed_events -= len(batch.events)
        self._wake_waiters()
        return batch

    def settled_through(self) -> asyncio.Future[None]:
        """Resolves once every batch sealed so far (the open events are sealed now) is settled."""
        self.seal()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._seq, future))
        self._wake_waiters()
        return future

    def _wake_waiters(self) -> None:
        lowest = next(iter(self.sealed.values())).seq if self.sealed else self._seq + 1
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if future.done():
                continue
            if target < lowest:
                future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.storage.close()
