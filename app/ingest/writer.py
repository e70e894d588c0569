"""The write path: validated batches -> one group-commit transaction -> outcomes.

One writer task per process takes every batch queued since its last commit (up to
a bound) and commits them together: COPY of all their entries in one transaction,
so a commit's fsync is shared by many connections' batches. Each batch is still
all-or-nothing: batches are only merged when each would commit on its own, and a
group the database refuses for its data (SQLSTATE class 22/23) is retried batch by
batch.

Exactly once: a group is ACKed iff its transaction committed. Before COMMIT is
sent a failure means "not stored" (unavailable, a resend is safe). Once COMMIT
returned the group is ACKed whatever happens next. A failure of the COMMIT itself
leaves the outcome unknown; it is resolved on a fresh connection by the
transaction id read at BEGIN (txid_status), never guessed, and confirmed by the
group's first row: after a database crash the id of a transaction that never
reached the disk is handed out again, and txid_status then speaks for another one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import asyncpg

from app import metrics
from app.background import Background, Loop
from app.codes import ErrorCode
from app.ingest.names import NameCache
from app.ingest.validation import Batch
from app.store import db, store
from app.store.db import DatabaseUnavailable, DataRefused

log = logging.getLogger("eventservice.writer")

# How long an unknown COMMIT outcome may take to resolve before the batches are
# answered unavailable (the database restarting, say).
RESOLVE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Outcome:
    accepted: int = 0
    duplicate: bool = False
    error: ErrorCode | None = None  # when the batch was not stored
    message: str = ""


@dataclass(slots=True)
class _Pending:
    batch: Batch
    future: asyncio.Future[Outcome]
    queued_at: float


class Writer(Background):
    """`async with` it: on exit it commits and answers everything already submitted, however long that takes."""

    drain_seconds = None

    def __init__(
        self,
        pool: asyncpg.Pool,
        names: NameCache,
        max_events: int,
        *,
        database_url: str,
        lock_timeout_seconds: float = 10.0,
    ) -> None:
        super().__init__()
        self._pool = pool
        self._database_url = database_url
        # A batch waits at most this long for the insert lock (a plain-SQL
        # transaction holding it), then is answered unavailable.
        self._lock_timeout = f"{max(1, round(lock_timeout_seconds * 1000))}ms"
        # Client-side bound on every write statement: a connection gone silent
        # (network black hole) fails the group instead of hanging it.
        self._statement_timeout = lock_timeout_seconds + 10
        self._names = names
        self._max_events = max_events
        self._queue: deque[_Pending] = deque()

    def loops(self) -> dict[str, Loop]:
        return {"writer": self._run}

    def submit(self, batch: Batch) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if self._stopping:
            future.set_result(Outcome(error=ErrorCode.UNAVAILABLE, message="The server is shutting down; resend to another."))
            return future
        self._queue.append(_Pending(batch, future, time.perf_counter()))
        self._wake.set()
        return future

    async def _run(self) -> None:
        while await self._until(lambda: bool(self._queue)):
            group = self._take_group()
            try:
                await self._commit_group(group)
            except Exception:
                log.exception("writer group failed")
                _settle_all(group, _WRITE_FAILED)

    def _take_group(self) -> list[_Pending]:
        group = [self._queue.popleft()]
        size = len(group[0].batch.entries)
        while self._queue and size + len(self._queue[0].batch.entries) <= self._max_events:
            pending = self._queue.popleft()
            size += len(pending.batch.entries)
            group.append(pending)
        return group

    async def _commit_group(self, group: list[_Pending]) -> None:
        try:
            outcomes = await self._commit(group)
        except _CommitUnknown as unknown:
            # The COMMIT was sent and no answer came back: find out before answering.
            status = await self._resolve(unknown)
            if status != "committed":
                log.warning(
                    "connection lost during COMMIT of %d batches; transaction %s was %s: answered unavailable",
                    len(group),
                    unknown.xid,
                    status or "not resolved",
                )
                _settle_all(group, _UNAVAILABLE)
                return
            log.warning("connection lost during COMMIT of %d batches; transaction %s committed: ACKed", len(group), unknown.xid)
            outcomes = unknown.outcomes
        except DataRefused as exc:
            if len(group) > 1:
                # One batch the database refuses must not fail its neighbours.
                for pending in group:
                    await self._commit_group([pending])
                return
            log.warning("database refused batch %s: %s", group[0].batch.number, exc)
            _settle(group[0], Outcome(error=ErrorCode.INVALID_BATCH, message=f"The database refused the batch: {exc}."))
            return
        except Exception as exc:  # noqa: BLE001 - anything but a refusal of the data
            # Not the batches' fault (database gone, lock timeout, cancelled,
            # client-side error): nothing was committed, a resend is safe.
            log.warning("database unavailable for %d batches: %s", len(group), exc)
            _settle_all(group, _UNAVAILABLE)
            return
        now = time.perf_counter()
        for pending, outcome in zip(group, outcomes, strict=True):
            metrics.ACK_LATENCY.observe(now - pending.queued_at)
            _settle(pending, outcome)

    async def _commit(self, group: list[_Pending]) -> list[Outcome]:
        """The group's transaction on a pool connection; its outcomes once COMMIT returned.

        Raises _CommitUnknown when the COMMIT itself failed (its outcome is then
        unknown), anything else when nothing was committed. Once COMMIT returned,
        nothing that follows (returning the connection to the pool raised
        InternalClientError after the backend was terminated) can undo the ACK.
        """
        names = {entry[3] for p in group for entry in p.batch.entries if entry[3] is not None}
        conn: asyncpg.Connection = await self._pool.acquire(timeout=10)  # type: ignore[assignment]
        try:
            name_ids = await self._names.resolve(conn, names, self._statement_timeout) if names else {}
            return await self._transaction(conn, group, name_ids)
        except (TimeoutError, DatabaseUnavailable, _CommitUnknown) as exc:
            if _timed_out(exc):
                await self._drop_silent(conn)
            raise
        finally:
            await self._release(conn)

    async def _transaction(self, conn: asyncpg.Connection, group: list[_Pending], name_ids: dict[str, int]) -> list[Outcome]:
        """BEGIN (the insert lock), claim the batch ids, COPY the fresh batches' entries, COMMIT."""
        timeout = self._statement_timeout
        claims = _claims(group)
        xid = await store.begin_write(conn, self._lock_timeout, timeout)
        fresh: set[tuple[str, str]] = set()
        if claims:
            keys = sorted(claims)  # one lock order for every writer: no deadlock
            sizes = [len(group[claims[k]].batch.entries) for k in keys]
            fresh = await store.claim_batch_ids(conn, keys, sizes, timeout)
        outcomes, records = _records(group, claims, fresh, name_ids)
        if records:
            await store.copy_events(conn, records, timeout)
        pid = conn.get_server_pid()
        try:
            await store.commit(conn, timeout)
        except Exception as exc:
            raise _CommitUnknown(xid, pid, outcomes, records[0] if records else None) from exc
        return outcomes

    async def _drop_silent(self, conn: asyncpg.Connection) -> None:
        """A statement got no answer: the connection is probably dead silently (network black hole).

        Its idle siblings likely are too: drop it (a reset would wait as long) and
        have the pool replace the others rather than let each one stall a group in turn.
        """
        conn.terminate()
        await self._pool.expire_connections()

    async def _release(self, conn: asyncpg.Connection) -> None:
        try:
            # Rolls back whatever was not committed (asyncpg's reset).
            await self._pool.release(conn, timeout=5)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the commit's outcome is already decided
            log.warning("returning a write connection to the pool failed: %r", exc)

    async def _resolve(self, unknown: _CommitUnknown) -> str | None:
        """'committed' or 'aborted' for a transaction whose COMMIT got no answer; None if unknowable.

        Asked on a fresh connection (the pool's may be as dead as the lost one). A
        backend still inside the transaction (the COMMIT not yet arrived, e.g. a
        network black hole) is terminated first, so the answer cannot change after
        we gave it.
        """
        deadline = time.monotonic() + RESOLVE_SECONDS
        terminated = False
        while time.monotonic() < deadline:
            try:
                conn = await db.connect(self._database_url, timeout=max(0.5, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - the database may be restarting: try again
                log.info("resolving transaction %s: %r", unknown.xid, exc)
                await asyncio.sleep(0.2)
                continue
            try:
                while time.monotonic() < deadline:
                    status = await store.transaction_status(conn, unknown.xid, timeout=5)
                    if status == "committed" and unknown.first is not None:
                        if not await store.write_stored(conn, unknown.first, unknown.xid, timeout=5):
                            return "aborted, its id reused after a restart"
                    if status != "in progress":
                        return status
                    if not terminated:
                        await store.terminate_writer(conn, unknown.pid, unknown.xid, timeout=5)
                        terminated = True
                    await asyncio.sleep(0.05)
            except Exception as exc:  # noqa: BLE001 - as above
                log.info("resolving transaction %s: %r", unknown.xid, exc)
                await asyncio.sleep(0.2)
            finally:
                conn.terminate()
        return None


# ingest_batches.scope is NOT NULL (part of the primary key): a connection without
# a sessionId claims its batch ids under the nil UUID. The only place "no session"
# (None everywhere else, app/ids.py) takes another form.
NO_SESSION_SCOPE = "00000000-0000-0000-0000-000000000000"


def _claim_key(session_id: str | None, batch_id: str) -> tuple[str, str]:
    """The (scope, batch_id) key of ingest_batches, as the database returns it."""
    return (session_id or NO_SESSION_SCOPE, batch_id)


class _CommitUnknown(Exception):
    """COMMIT was sent, no answer came back: committed or not is for _resolve to find out."""

    def __init__(self, xid: int, pid: int, outcomes: list[Outcome], first: Record | None) -> None:
        super().__init__(f"outcome of transaction {xid} unknown")
        self.xid = xid
        self.pid = pid
        self.outcomes = outcomes
        self.first = first  # the first row copied (None: every batch was a duplicate, nothing copied)


def _claims(group: list[_Pending]) -> dict[tuple[str, str], int]:
    """(scope, batch_id) -> the index of the first batch of the group carrying it: that one claims it,
    later ones in the same group are duplicates of it."""
    claims: dict[tuple[str, str], int] = {}
    for i, pending in enumerate(group):
        b = pending.batch
        if b.batch_id is not None:
            claims.setdefault(_claim_key(b.session_id, b.batch_id), i)
    return claims


Record = store.Record  # (session_id, type, ts, name_id, data)


def _records(
    group: list[_Pending], claims: dict[tuple[str, str], int], fresh: set[tuple[str, str]], name_ids: dict[str, int]
) -> tuple[list[Outcome], list[Record]]:
    """Each batch's outcome and the rows to COPY: a batch whose id was claimed already (here or
    before) is a duplicate and adds none."""
    outcomes: list[Outcome] = []
    records: list[Record] = []
    for i, pending in enumerate(group):
        b = pending.batch
        if b.batch_id is not None:
            key = _claim_key(b.session_id, b.batch_id)
            if key not in fresh or claims[key] != i:
                outcomes.append(Outcome(duplicate=True))
                continue
        for session_id, kind, ts, name, data in b.entries:
            records.append((session_id, kind, ts, name_ids[name] if name is not None else None, data))
        outcomes.append(Outcome(accepted=len(b.entries)))
    return outcomes, records


def _timed_out(exc: BaseException) -> bool:
    """A statement that got no answer, seen through the COMMIT's and the store's wrapping."""
    cause = exc.__cause__ if isinstance(exc, _CommitUnknown) else exc
    if isinstance(cause, DatabaseUnavailable):
        cause = cause.__cause__
    return isinstance(cause, TimeoutError)


# Outcomes are frozen, so the "nothing was stored, resend later" answers are shared.
_UNAVAILABLE = Outcome(error=ErrorCode.UNAVAILABLE, message="The database is unavailable; retry later.")
_WRITE_FAILED = Outcome(error=ErrorCode.UNAVAILABLE, message="The write failed; retry later.")


def _settle_all(group: list[_Pending], outcome: Outcome) -> None:
    for pending in group:
        _settle(pending, outcome)


def _settle(pending: _Pending, outcome: Outcome) -> None:
    if not pending.future.done():
        pending.future.set_result(outcome)
