"""Faults injected into a running service, and what must still hold (docs/faults.md).

Real faults only: PostgreSQL stopped, crashed and restarted; backends terminated and
statements cancelled with plain SQL; a lock held by a forgotten transaction; a TCP
proxy that black-holes the service's database connections; the app killed with
SIGKILL. The load tests check everything with one shared checker
(test/support/invariants.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import time
from collections.abc import Iterator

import aiohttp
import asyncpg
import pytest

from app.store import db, store
from test.support.clients import SSEReader, Uploader, event, metric, new_session, readyz, upload
from test.support.invariants import run_load
from test.support.postgres import StandalonePostgres
from test.support.proxy import FaultProxy
from test.support.service import Service

pytestmark = pytest.mark.faults

TS = 1_700_000_000_000


@pytest.fixture
def proxied_postgres(standalone_postgres: StandalonePostgres) -> Iterator[tuple[StandalonePostgres, FaultProxy]]:
    proxy = FaultProxy("127.0.0.1", standalone_postgres.port)
    proxy.start()
    try:
        yield standalone_postgres, proxy
    finally:
        proxy.close()


async def _until(predicate, timeout: float, what: str, every: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(every)


async def _missed_rows(svc: Service, count: int) -> tuple[str, int, list[str]]:
    """A session with one row a client saw and `count` rows it then missed."""
    session = new_session()
    async with await SSEReader.open(svc.url, f"?session_id={session}") as stream:
        await upload(svc.ws_url, session, [event("seen", TS)])
        seen = await stream.next()
    names = [f"missed-{i}" for i in range(count)]
    await upload(svc.ws_url, session, [event(n, TS + i) for i, n in enumerate(names)])
    return session, seen.position, names


# --- 1. a resume whose replay read fails ---------------------------------------------


async def test_replay_read_cancelled_mid_resume_retries_and_leaves_no_gap(service: Service, sql: asyncpg.Connection) -> None:
    session, seen, missed = await _missed_rows(service, 30)
    holder = await asyncpg.connect(service.database_url)
    try:
        # Every read of events now waits behind this lock, so the replay's
        # statement can be caught in flight and cancelled, as often as we like.
        await holder.execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        headers = {"Last-Event-ID": str(seen)}
        async with await SSEReader.open(service.url, f"?session_id={session}", headers=headers) as resumed:
            for _ in range(2):
                await _until(
                    lambda: sql.fetchval(
                        "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = 'eventservice' AND wait_event_type = 'Lock'"
                    ),
                    10,
                    "a replay read waiting on the lock to cancel",
                )
            await holder.execute("ROLLBACK")
            replayed = await resumed.take(len(missed), timeout=20)
            assert [m.json["name"] for m in replayed] == missed
            await upload(service.ws_url, session, [event("live", TS)])
            live = await resumed.next(timeout=20)
            assert live.json["name"] == "live" and live.event is None
            positions = [seen] + [m.position for m in replayed] + [live.position]
            assert positions == sorted(set(positions))
    finally:
        await holder.close()


async def test_replay_while_postgres_is_down_ends_without_reset_then_resumes_exactly(
    start_service, standalone_postgres: StandalonePostgres
) -> None:
    svc = await start_service(database_url=standalone_postgres.url)
    session, seen, missed = await _missed_rows(svc, 25)
    await asyncio.to_thread(standalone_postgres.stop)
    try:
        headers = {"Last-Event-ID": str(seen)}
        async with await SSEReader.open(svc.url, f"?session_id={session}", headers=headers) as resumed:
            started = time.monotonic()
            # Nothing can be replayed: the stream must end (the client resumes from
            # its last id), not go live past the rows it missed, and not reset.
            assert await resumed.ended(timeout=30)
            assert time.monotonic() - started < 20
            assert resumed._pending == []  # no reset, no row
    finally:
        await asyncio.to_thread(standalone_postgres.start)
    await _until(lambda: _ready(svc), 30, "ready again")
    async with await SSEReader.open(svc.url, f"?session_id={session}", headers={"Last-Event-ID": str(seen)}) as resumed:
        assert [m.json["name"] for m in await resumed.take(len(missed), timeout=30)] == missed
        answer = None
        for _ in range(5):  # the pool may hand out a connection that died with the old server once
            answer = (await upload(svc.ws_url, session, [event("live", TS)]))[0]
            if answer["type"] == "ACK":
                break
        assert answer is not None and answer["type"] == "ACK"
        assert (await resumed.next(timeout=20)).json["name"] == "live"


async def _ready(svc: Service) -> bool:
    try:
        return (await readyz(svc.url))[0] == 200
    except aiohttp.ClientError:
        return False


# --- 2. exactly once when COMMIT's answer is lost ------------------------------------------


async def test_commit_whose_answer_is_lost_is_resolved_and_acked_once(
    start_service, standalone_postgres: StandalonePostgres
) -> None:
    """A COMMIT that waits for a synchronous standby that does not exist never answers.

    The transaction is committed locally, so the true answer is ACK. First the
    backend is terminated under the COMMIT (the connection is lost during COMMIT),
    then the COMMIT is left to time out (the writer must end the backend itself
    before it can know).
    """
    svc = await start_service(env={"INGEST_LOCK_TIMEOUT_SECONDS": "1"}, database_url=standalone_postgres.url)
    admin = await asyncpg.connect(standalone_postgres.url)
    try:
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        await admin.execute("SELECT pg_reload_conf()")
        session = new_session()
        async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as up:
            # SESSION_START/END only: no new event name, whose upsert would wait too.
            await up.send_raw(json.dumps([{"type": "SESSION_START", "timestamp": TS}]))
            killed = await _until(
                lambda: admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
                ),
                15,
                "a COMMIT waiting for the standby",
            )
            assert killed == 1
            first = await up.receive(timeout=20)
            assert first["type"] == "ACK" and first["accepted"] == 1, first
            started = time.monotonic()
            await up.send_raw(json.dumps([{"type": "SESSION_END", "timestamp": TS + 1}]))
            second = await up.receive(timeout=40)
            assert time.monotonic() - started < 30
        assert second["type"] == "ACK" and second["accepted"] == 1, second
        types = await admin.fetch("SELECT type FROM events WHERE session_id = $1 ORDER BY position", session)
        assert [r["type"] for r in types] == ["SESSION_START", "SESSION_END"]
        assert "committed: ACKed" in svc.logs()
    finally:
        await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()


async def test_a_committed_id_is_not_taken_for_proof_that_the_rows_are_stored(service: Service, sql: asyncpg.Connection) -> None:
    """After a crash, the id of a transaction that never reached the disk is handed out
    again, and txid_status answers "committed" for whatever got it (seen once in
    test_retention's crash test). The writer then checks its first row: stored by
    that very transaction, or not at all. Here the id is another transaction's."""
    name_id = int(await sql.fetchval("SELECT event_name_id('probe')"))
    first: store.Record = (new_session(), "EVENT", TS, name_id, '{"a": 1}')
    async with sql.transaction():
        mine = int(await sql.fetchval("SELECT txid_current()"))
        await sql.execute("INSERT INTO events (session_id, type, ts, name_id, data) VALUES ($1, $2, $3, $4, $5)", *first)
    async with sql.transaction():
        other = int(await sql.fetchval("SELECT txid_current()"))
        await sql.execute("INSERT INTO events (session_id, type, ts) VALUES ($1, 'SESSION_START', $2)", new_session(), TS)
    assert await sql.fetchval("SELECT txid_status($1)", other) == "committed"
    assert await store.write_stored(sql, first, mine, timeout=5)
    assert not await store.write_stored(sql, first, other, timeout=5)
    assert not await store.write_stored(sql, (*first[:4], '{"a": 2}'), mine, timeout=5)
    assert not await store.write_stored(sql, (new_session(), *first[1:]), mine, timeout=5)


# --- the load tests: exactly once and no gap, with one checker ----------------------------


async def test_writer_and_hub_backends_terminated_under_load_exactly_once_no_gap(
    service: Service, start_service, sql: asyncpg.Connection
) -> None:
    second = await start_service(database_url=service.database_url)
    killed = 0

    async def inject(seconds: float) -> None:
        nonlocal killed
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(random.uniform(0.01, 0.1))
            killed += await sql.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )

    assert service.database_url is not None
    summary = await run_load([service, second], service.database_url, inject)
    assert killed >= 30, killed
    assert summary["errored"].get("unavailable", 0) >= 1, summary  # type: ignore[union-attr]


async def test_app_killed_and_restarted_under_load_exactly_once_no_gap(
    service: Service, start_service, sql: asyncpg.Connection
) -> None:
    victim = await start_service(database_url=service.database_url)

    async def inject(seconds: float) -> None:
        await asyncio.sleep(seconds / 3)
        victim.signal(signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        await asyncio.to_thread(victim.start)
        await asyncio.sleep(seconds * 2 / 3)

    assert service.database_url is not None
    summary = await run_load([service, victim], service.database_url, inject)
    assert summary["errored"].get("connection_lost", 0) >= 1, summary  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["fast", "immediate"])
async def test_postgres_stopped_or_crashed_under_load_loses_no_acked_batch_and_no_stream_row(
    start_service, standalone_postgres: StandalonePostgres, how: str
) -> None:
    admin = await asyncpg.connect(standalone_postgres.url)
    # The database's default would lose ACKed batches in a crash; the service's
    # connections must not inherit it.
    await admin.execute("ALTER DATABASE postgres SET synchronous_commit = off")
    await admin.close()
    svc = await start_service(database_url=standalone_postgres.url)

    async def inject(seconds: float) -> None:
        await asyncio.sleep(seconds / 2)
        await asyncio.to_thread(standalone_postgres.crash if how == "immediate" else standalone_postgres.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(standalone_postgres.start)
        await asyncio.sleep(seconds / 2)

    await run_load([svc], standalone_postgres.url, inject)
    log = (standalone_postgres.root / "log").read_text()
    if how == "immediate":
        # The crash really happened under the load: PostgreSQL had to recover.
        assert "not properly shut down" in log
    else:
        assert "database system is shut down" in log


# --- 3. a LISTEN connection that goes silent -----------------------------------------------


async def test_blackholed_listen_connection_is_replaced_within_seconds(
    start_service, proxied_postgres: tuple[StandalonePostgres, FaultProxy]
) -> None:
    pg, proxy = proxied_postgres
    svc = await start_service(env={"INGEST_LOCK_TIMEOUT_SECONDS": "1"}, database_url=proxy.url_for(pg.url, pg.port))
    direct = await asyncpg.connect(pg.url)
    try:
        session = new_session()
        insert = "INSERT INTO events (session_id, type, ts, name_id) VALUES ($1, 'EVENT', $2, event_name_id($3))"
        async with await SSEReader.open(svc.url, f"?session_id={session}") as stream:
            await direct.execute(insert, session, TS, "before")
            assert (await stream.next()).json["name"] == "before"
            assert proxy.blackhole() >= 1  # the hub's LISTEN connection among them, silently dead
            started = time.monotonic()
            for i in range(3):
                await direct.execute(insert, session, TS + i, f"during-{i}")
            names = [m.json["name"] for m in await stream.take(3, timeout=30)]
            stalled = time.monotonic() - started
        assert names == ["during-0", "during-1", "during-2"]
        # poll (2 s) + query timeout (3 s) + reconnect: a few seconds, not TCP's 15 minutes.
        assert stalled < 15, stalled
        assert re.search(r"LISTEN connection (lost|re-established)", svc.logs())

        # The pool's connections went silent too: a batch is answered (unavailable
        # after the write timeout, or ACK on a fresh connection), never left
        # hanging, and a resend with its batch_id is stored once.
        frame = {"batch_id": "through-the-black-hole", "events": [event("written", TS)]}
        started = time.monotonic()
        async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as up:
            answers = [await up.send(frame, timeout=40)]
            while answers[-1]["type"] != "ACK":
                assert answers[-1]["error"] == "unavailable", answers
                assert time.monotonic() - started < 60, answers
                answers.append(await up.send(frame, timeout=40))
        assert len(answers) <= 3, answers
        stored = await direct.fetchval(
            "SELECT count(*) FROM events e JOIN event_names n ON n.id = e.name_id WHERE n.name = 'written'"
        )
        assert stored == 1
    finally:
        await direct.close()


# --- 4. synchronous_commit ---------------------------------------------------------------------


async def test_service_connections_commit_synchronously_whatever_the_database_default(
    service: Service, sql: asyncpg.Connection
) -> None:
    database = await sql.fetchval("SELECT current_database()")
    await sql.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = off')
    try:
        plain = await asyncpg.connect(service.database_url)
        assert await plain.fetchval("SHOW synchronous_commit") == "off"
        await plain.close()
        # The same functions the service opens its pool, hub and resolver connections with.
        pool = await db.create_pool(service.database_url, 1, 2)
        conn = await db.connect(service.database_url)
        try:
            async with pool.acquire() as pooled:
                assert await pooled.fetchval("SHOW synchronous_commit") == "on"
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
        finally:
            await conn.close()
            await pool.close()
    finally:
        await sql.execute(f'ALTER DATABASE "{database}" RESET synchronous_commit')


# --- 5. a transaction holding the insert lock --------------------------------------------


async def test_insert_lock_holder_is_named_and_waiting_batches_answered_unavailable(start_service) -> None:
    svc = await start_service(env={"INGEST_LOCK_TIMEOUT_SECONDS": "2", "INGEST_LOCK_REPORT_SECONDS": "1"})
    assert svc.database_url is not None
    holder = await asyncpg.connect(svc.database_url, server_settings={"application_name": "forgotten-psql"})
    session = new_session()
    try:
        await holder.execute("BEGIN")
        await holder.execute("INSERT INTO events (session_id, type, ts) VALUES ($1, 'SESSION_START', $2)", session, TS)
        pid = holder.get_server_pid()
        started = time.monotonic()
        answer = (await upload(svc.ws_url, session, [event("stalled", TS)]))[0]
        waited = time.monotonic() - started
        assert answer["type"] == "ERROR" and answer["error"] == "unavailable", answer
        assert 1.5 < waited < 15, waited
        _, body = await _until(lambda: _ready_body_if(svc, 503), 10, "/readyz naming the lock holder")
        assert body["lock_holder"]["pid"] == pid and body["lock_holder"]["application_name"] == "forgotten-psql"
        assert str(pid) in body["reason"] and body["lock_holder"]["since"]
        assert await metric(svc.url, "eventservice_insert_lock_held_seconds") >= 1
        lines = [line for line in svc.logs().splitlines() if "insert lock held by backend" in line]
        assert len(lines) == 1 and f"pid={pid}" in lines[0] and "forgotten-psql" in lines[0], lines
        await holder.execute("ROLLBACK")
        await _until(lambda: _ready(svc), 10, "/readyz 200 once the lock is released")
        answer = (await upload(svc.ws_url, session, [event("flowing", TS)]))[0]
        assert answer["type"] == "ACK", answer
        assert await metric(svc.url, "eventservice_insert_lock_held_seconds") == 0
    finally:
        await holder.close()


async def _ready_body_if(svc: Service, status: int) -> tuple[int, dict] | None:
    got = await readyz(svc.url)
    return got if got[0] == status else None


# --- 6. plain SQL that would break the log, and a restored database ---------------------


async def test_database_refuses_changes_to_the_log_and_unknown_names(service: Service, sql: asyncpg.Connection) -> None:
    session = new_session()
    await upload(service.ws_url, session, [event("kept", TS)])
    for statement in (
        "UPDATE events SET ts = ts + 1",
        "DELETE FROM events",
        "TRUNCATE events RESTART IDENTITY",
    ):
        with pytest.raises(asyncpg.PostgresError) as refused:
            await sql.execute(statement)
        assert "append-only" in str(refused.value), statement
        assert "Append new entries" in (refused.value.hint or ""), statement
    # The names and session summaries that cached and stored trees are versioned by (schema/009).
    for statement in (
        "UPDATE event_names SET name = 'renamed' WHERE name = 'kept'",
        "DELETE FROM event_names WHERE name = 'kept'",
        "TRUNCATE event_names CASCADE",
        f"DELETE FROM sessions WHERE id = '{session}'",
        "TRUNCATE sessions",
    ):
        with pytest.raises(asyncpg.PostgresError) as refused:
            await sql.execute(statement)
        assert "is kept by the service" in str(refused.value), statement
        assert refused.value.hint, statement
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await sql.execute("INSERT INTO events (session_id, type, ts, name_id) VALUES ($1, 'EVENT', $2, 2147483647)", session, TS)
    assert "event_names" in str(refused.value) and "event_name_id" in (refused.value.hint or "")
    # The supported way still works, and what was refused left nothing behind.
    await sql.execute(
        "INSERT INTO events (session_id, type, ts, name_id) VALUES ($1, 'EVENT', $2, event_name_id('by-sql'))", session, TS
    )
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/session/{session}") as response:
        tree = await response.json()
    assert sorted(child["name"] for child in tree["children"]) == ["by-sql", "kept"]


async def test_restored_database_resets_every_client_instead_of_going_silent(start_service) -> None:
    svc = await start_service()
    assert svc.database_url is not None
    session = new_session()
    await upload(svc.ws_url, session, [event("old", TS)])
    admin = await asyncpg.connect(svc.database_url)
    backup_head = await admin.fetchval("SELECT max(position) FROM events")
    try:
        async with await SSEReader.open(svc.url) as live, await SSEReader.open(svc.url, f"?session_id={session}") as filtered:
            await upload(svc.ws_url, session, [event("before-restore", TS)])
            assert (await live.next()).json["name"] == "before-restore"
            assert (await filtered.next()).json["name"] == "before-restore"
            # What a restore from a backup taken after "old" looks like to the
            # service: fewer rows, and the positions after them handed out again
            # (replica mode is how a restore bypasses the append-only triggers).
            await admin.execute("SET session_replication_role = replica")
            await admin.execute("DELETE FROM events WHERE position > $1", backup_head)
            await admin.execute("SELECT setval(pg_get_serial_sequence('events', 'position'), $1)", backup_head)
            await admin.execute("SET session_replication_role = DEFAULT")
            resets = [await live.next(timeout=20), await filtered.next(timeout=20)]
        for reset in resets:
            assert reset.event == "reset" and json.loads(reset.data)["reason"] == "database_reset"
            assert reset.position == backup_head
        head = resets[0].position
        # Resuming from the reset's id carries on with what is written next.
        async with await SSEReader.open(svc.url, headers={"Last-Event-ID": str(head)}) as resumed:
            await upload(svc.ws_url, session, [event("after-restore", TS)])
            message = await resumed.next(timeout=20)
            assert message.event is None and message.json["name"] == "after-restore"
        # And a changed base (a different database behind the same URL) too.
        async with await SSEReader.open(svc.url) as live:
            await admin.execute("UPDATE stream_meta SET base = base + 1000")
            reset = await live.next(timeout=20)
            assert reset.event == "reset" and json.loads(reset.data)["reason"] == "database_reset"
    finally:
        await admin.close()
    assert svc.process is not None and svc.process.poll() is None


# --- 7. batch_id retention ---------------------------------------------------------------------


async def test_batch_ids_are_pruned_after_the_retention_window(start_service) -> None:
    svc = await start_service(env={"BATCH_ID_RETENTION_HOURS": "0.001"})  # 3.6 s
    assert svc.database_url is not None
    session = new_session()
    frame = {"batch_id": "kept-a-while", "events": [event("once", TS)]}
    async with await Uploader.open(svc.ws_url, f"?sessionId={session}") as up:
        first = await up.send(frame)
        again = await up.send(frame)
        assert first["accepted"] == 1 and again["duplicate"] is True
        conn = await asyncpg.connect(svc.database_url)
        try:
            await _until(
                lambda: _is_zero(conn.fetchval("SELECT count(*) FROM ingest_batches WHERE batch_id = 'kept-a-while'")),
                20,
                "the batch_id pruned",
                every=0.2,
            )
        finally:
            await conn.close()
        # Past the window a resend is a new batch, as documented.
        later = await up.send(frame)
        assert later["type"] == "ACK" and later["duplicate"] is False and later["accepted"] == 1


async def _is_zero(value) -> bool:  # type: ignore[no-untyped-def]
    return await value == 0
