"""The SQLite spool: the outbox's storage when `spool=` is given.

Every tracked event is one committed row before track() returns, so a `kill -9` right
after it loses nothing. Sealing a batch writes its `batch_id` onto its events in the
same transaction, and the batch is deleted only when settled: a restart resends every
kept batch with the id it had, and the server answers `duplicate` for those it had
already stored. WAL mode with synchronous=NORMAL: a commit is a write to the WAL file,
not an fsync, which survives the process dying at any instant (the kernel holds the
write); only a power cut or an OS crash can take the last commits with it
(`synchronous="FULL"` closes that too, at the price of an fsync per event).
"""

from __future__ import annotations

import fcntl
import sqlite3
from pathlib import Path
from typing import IO

from eventservice_client.outbox import Batch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- send order, kept across restarts
    batch_id TEXT NOT NULL UNIQUE,
    lines TEXT                               -- an import's line numbers (comma-separated), for its messages
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT,                           -- NULL: tracked, not yet sealed
    body BLOB NOT NULL                       -- the event's compact JSON
);
CREATE INDEX IF NOT EXISTS events_by_batch ON events (batch_id);
"""


class SpoolStorage:
    """Storage (outbox.py) in one SQLite file; one uploader at a time per file (SpoolBusy otherwise)."""

    def __init__(self, path: str | Path, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self._lock = _lock(Path(str(path) + ".lock"))
        # isolation_level=None: autocommit, every statement (or explicit BEGIN…COMMIT) is durable on return.
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)

    def load(self) -> tuple[list[Batch], list[bytes]]:
        events: dict[str | None, list[bytes]] = {}
        for batch_id, body in self.db.execute("SELECT batch_id, body FROM events ORDER BY seq"):
            events.setdefault(batch_id, []).append(bytes(body))
        batches = []
        for batch_id, lines in self.db.execute("SELECT batch_id, lines FROM batches ORDER BY seq"):
            kept = events.get(batch_id)
            if kept:
                batches.append(Batch(batch_id, kept, lines=[int(n) for n in lines.split(",")] if lines else None))
        return batches, events.get(None, [])

    def add(self, event: bytes) -> None:
        self.db.execute("INSERT INTO events (body) VALUES (?)", (event,))

    def seal(self, batch_id: str) -> None:
        with self._transaction():
            self.db.execute("INSERT INTO batches (batch_id) VALUES (?)", (batch_id,))
            self.db.execute("UPDATE events SET batch_id = ? WHERE batch_id IS NULL", (batch_id,))

    def put(self, batch: Batch) -> bool:
        lines = ",".join(map(str, batch.lines)) if batch.lines else None
        with self._transaction():
            inserted = self.db.execute("INSERT OR IGNORE INTO batches (batch_id, lines) VALUES (?, ?)", (batch.batch_id, lines))
            if inserted.rowcount == 0:
                return False
            self.db.executemany("INSERT INTO events (batch_id, body) VALUES (?, ?)", [(batch.batch_id, e) for e in batch.events])
        return True

    def remove(self, batch_id: str) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM events WHERE batch_id = ?", (batch_id,))
            self.db.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))

    def close(self) -> None:
        self.db.close()
        self._lock.close()  # releases the lock

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)


class SpoolBusy(RuntimeError):
    """Another uploader (this process or another) has the spool open.

    Two owners would each seal the other's open events into their own batches and
    send them under two batch ids: stored twice. So a spool has one owner at a time.
    """


def _lock(path: Path) -> IO[bytes]:
    """An exclusive lock for as long as the process keeps the returned file open (a kill -9 releases it)."""
    handle = path.open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SpoolBusy(f"the spool {path.with_suffix('')} is in use by another uploader") from None
    return handle


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
