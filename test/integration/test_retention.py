"""Retention (SPEC "Retention"): a window of seconds, a real PostgreSQL and server.

RETENTION_DAYS is a fraction of a day here (WINDOW seconds), so pieces are a tenth
of that and checks run five times a second; every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable

import aiohttp
import asyncpg

from app.store import store
from test.conftest import StartService
from test.support.clients import SSEReader, Uploader, event, metric, new_session, readyz, upload
from test.support.invariants import run_load
from test.support.postgres import TestPostgres as Cluster
from test.support.service import Service
from test.support.waits import folded, until

WINDOW = 3.0
RETENTION = ("--retention-days", str(WINDOW / 86_400), "--retention-check-seconds", "0.2")
TS = 1_700_000_000_000
HOUR_MS = 3_600_000


async def _count(sql: asyncpg.Connection, session: str) -> int:
    return int(await sql.fetchval("SELECT count(*) FROM events WHERE session_id = $1", session))


_PENDING = "SELECT i.inhdetachpending FROM pg_inherits i WHERE i.inhrelid = to_regclass($1)"


async def _roll(sql: asyncpg.Connection) -> str:
    """Close the piece in use (as the service does every tenth of a window) once the fold has
    counted it, so that it can be marked: its name."""
    await sql.execute("SELECT retention_roll()")
    await until(lambda: folded(sql))
    return str(await sql.fetchval("SELECT name FROM retention_pieces WHERE closed_at IS NOT NULL ORDER BY lo DESC LIMIT 1"))


async def _events_bytes(sql: asyncpg.Connection) -> int:
    return int(
        await sql.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits WHERE inhparent = 'events'::regclass"
        )
    )


async def _get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def test_old_entries_go_in_pieces_new_ones_all_stay_and_disk_is_freed(start_service: StartService) -> None:
    svc = await start_service(*RETENTION)
    sql = await asyncpg.connect(svc.database_url)
    try:
        old = new_session()
        big = [{"type": "SESSION_START", "timestamp": TS}] + [event("old", TS + i, data={"pad": "x" * 100}) for i in range(3000)]
        assert (await upload(svc.ws_url, old, big))[0]["accepted"] == 3001
        full = await _events_bytes(sql)
        # Batches keep committing while pieces are rolled and removed.
        acked: list[tuple[str, float]] = []
        async with await Uploader.open(svc.ws_url) as up:
            started = time.monotonic()
            while time.monotonic() - started < WINDOW * 2.5:
                session = new_session()
                answer = await up.send([{**event("keep", TS), "session_id": session}])
                assert answer["type"] == "ACK"
                acked.append((session, time.time()))
                await asyncio.sleep(0.02)
        await until(lambda: _awaitable_zero(sql, old))
        checked_at = time.time()
        present = {str(r[0]) for r in await sql.fetch("SELECT DISTINCT session_id FROM events")}
        recent = [s for s, at in acked if at > checked_at - WINDOW + 0.5]
        assert recent and all(s in present for s in recent), "an ACKed entry inside the window was removed"
        assert any(s not in present for s, _ in acked), "nothing of the steady ingest was removed"
        # The piece of the 3,000 padded entries is gone with its disk; what stays is
        # about a window of pieces (ten, plus the one in use and the spare).
        assert await _events_bytes(sql) < full
        assert await sql.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass") <= 14
        # Sessions and rollups stay: over whole minutes the summary still counts the
        # removed entries, exactly; a partial minute is read from entries and says so.
        minute = TS - TS % 60_000
        status, summary = await _get(f"{svc.url}/stats/summary?from={minute}&to={minute + 60_000}")
        assert status == 200 and summary["events"] == 3000 + len(acked) and "retained_from" not in summary
        status, partial = await _get(f"{svc.url}/stats/summary?from={TS}&to={TS + 10_000}")
        assert status == 200 and "retained_from" in partial
    finally:
        await sql.close()


async def _awaitable_zero(sql: asyncpg.Connection, session: str) -> bool:
    return await _count(sql, session) == 0


async def test_answers_say_what_retention_removed(start_service: StartService) -> None:
    svc = await start_service(*RETENTION)
    sql = await asyncpg.connect(svc.database_url)
    try:
        lost = new_session()
        await upload(svc.ws_url, lost, [{"type": "SESSION_START", "timestamp": TS}, event("gone", TS + 1)])
        async with await SSEReader.open(svc.url, f"?session_id={lost}&tail=2") as stream:
            first = await stream.next()
        await until(lambda: _awaitable_zero(sql, lost))
        # Something stored after the removal (the stream's live part, the kept session).
        kept = new_session()
        await upload(svc.ws_url, kept, [{"type": "SESSION_START", "timestamp": TS}, event("kept", TS + 1)])

        status, tree = await _get(f"{svc.url}/session/{lost}")
        assert status == 200 and tree["children"] == [] and tree["start"] == TS
        retained_from = tree["retained_from"]
        assert isinstance(retained_from, int) and retained_from > 0
        status, fresh = await _get(f"{svc.url}/session/{kept}")
        assert status == 200 and "retained_from" not in fresh and len(fresh["children"]) == 1  # type: ignore[arg-type]

        status, names = await _get(f"{svc.url}/stats/names?from=0&to={TS + 10}")
        assert status == 200 and names["retained_from"] == retained_from
        now = int(time.time() * 1000)
        status, later = await _get(f"{svc.url}/stats/names?from={now}&to={now + 1000}")
        assert status == 200 and "retained_from" not in later
        status, funnel = await _get(f"{svc.url}/stats/funnel?from=0&to={TS + 10}&step=gone&step=kept")
        assert status == 200 and funnel["retained_from"] == retained_from
        status, breakdown = await _get(f"{svc.url}/stats/breakdown?from=0&to={TS + 10}&name=gone&key=k")
        assert status == 200 and breakdown["retained_from"] == retained_from
        status, later = await _get(f"{svc.url}/stats/breakdown?from={now}&to={now + 1000}&name=kept&key=k")
        assert status == 200 and "retained_from" not in later

        # A resume from a removed position is reset, never a silent gap.
        async with await SSEReader.open(svc.url, "", headers={"Last-Event-ID": first.id or ""}) as resumed:
            reset = await resumed.next()
        assert reset.event == "reset" and reset.json["reason"] == "removed"
        # ?tail= never reaches past what is retained.
        async with await SSEReader.open(svc.url, f"?session_id={lost}&tail=100") as tail:
            await upload(svc.ws_url, lost, [event("after", TS + 2)])
            message = await tail.next()
        assert message.json["name"] == "after"

        status, ready = await readyz(svc.url)
        assert status == 200 and ready["retained_from"] >= retained_from
        assert await metric(svc.url, "eventservice_retention_retained_from_seconds") * 1000 >= retained_from
    finally:
        await sql.close()


async def _presences(sql: asyncpg.Connection, before_hour_ms: int | None = None) -> int:
    return int(
        await sql.fetchval("SELECT count(*) FROM breakdown_presences WHERE $1::bigint IS NULL OR hour_ms < $1", before_hour_ms)
    )


async def _presences_at_least(sql: asyncpg.Connection, count: int) -> bool:
    return await _presences(sql) >= count


async def _no_presences_before(sql: asyncpg.Connection, hour_ms: int) -> bool:
    return await _presences(sql, hour_ms) == 0


async def _retained_from_past(sql: asyncpg.Connection, ms: int) -> bool:
    return (await store.retained_from(sql) or 0) > ms


async def test_breakdown_presences_follow_the_window(start_service: StartService) -> None:
    svc = await start_service(*RETENTION)
    sql = await asyncpg.connect(svc.database_url)
    try:
        lost = new_session()
        await upload(svc.ws_url, lost, [event("gone", TS, data={"k": "x"})])
        # Asked for before the rest arrives: the pair's rollup folds it with the stats.
        status, _ = await _get(f"{svc.url}/stats/breakdown?from=0&to={TS + HOUR_MS}&name=gone&key=k")
        assert status == 200
        await upload(svc.ws_url, lost, [event("gone", TS + i * HOUR_MS, data={"k": i % 3}) for i in range(5)])
        await until(lambda: _presences_at_least(sql, 5))
        await until(lambda: _awaitable_zero(sql, lost))
        retained_from = await store.retained_from(sql)
        assert retained_from is not None
        await until(lambda: _no_presences_before(sql, retained_from - retained_from % HOUR_MS))
        # The answer says that it reaches before what is retained.
        status, body = await _get(f"{svc.url}/stats/breakdown?from=0&to={TS + 6 * HOUR_MS}&name=gone&key=k")
        assert status == 200 and body["retained_from"] == retained_from
        # Presences of the hours retained stay through the next removals; the hourly counts stay.
        now = int(time.time() * 1000)
        await upload(svc.ws_url, new_session(), [event("gone", now, data={"k": "now"})])
        await until(lambda: _presences_at_least(sql, 1))
        await until(lambda: _retained_from_past(sql, retained_from))
        assert await _presences(sql) == 1
        assert await sql.fetchval("SELECT sum(events) FROM breakdown_event_hours WHERE hour_ms < $1", now - now % HOUR_MS) == 6
    finally:
        await sql.close()


async def test_two_processes_and_a_plain_sql_writer_during_removals(start_service: StartService) -> None:
    first = await start_service(*RETENTION)
    second = await start_service(*RETENTION, database_url=first.database_url)
    sql = await asyncpg.connect(first.database_url)
    try:
        session = new_session()
        written: list[tuple[int, float]] = []
        started = time.monotonic()
        while time.monotonic() - started < WINDOW * 2:
            position = await sql.fetchval(
                "INSERT INTO events (session_id, type, ts, name_id) "
                "VALUES ($1, 'EVENT', $2, event_name_id('sql')) RETURNING position",
                session,
                TS,
            )
            written.append((int(position), time.time()))
            await asyncio.sleep(0.02)
        checked_at = time.time()
        present = {int(r[0]) for r in await sql.fetch("SELECT position FROM events WHERE session_id = $1", session)}
        recent = [p for p, at in written if at > checked_at - WINDOW + 0.5]
        assert recent and all(p in present for p in recent)
        assert len(present) < len(written)
        # No piece is left half-removed, both processes log no failed check. Both go on
        # removing meanwhile, so a removal may be under way right now (under a CPU hog one
        # was): each piece seen mid-removal must finish it.
        removing_sql = "SELECT name FROM retention_pieces WHERE state = 'removing'"
        seen = {r[0] for r in await sql.fetch(removing_sql)}

        async def finished() -> bool:
            return not seen & {r[0] for r in await sql.fetch(removing_sql)}

        await until(finished, timeout=30.0)
        for svc in (first, second):
            assert "retention check failed" not in svc.logs()
    finally:
        await sql.close()


async def test_a_run_cut_after_marking_is_finished_by_the_next(start_service: StartService, postgres: Cluster) -> None:
    """What kill -9 between marking and dropping leaves: a marked piece, maybe detached."""
    url = await postgres.create_database("retention_cut")
    svc = await start_service(database_url=url)  # no retention: this process removes nothing
    sql = await asyncpg.connect(url)
    try:
        session = new_session()
        await upload(svc.ws_url, session, [{"type": "SESSION_START", "timestamp": TS}, event("cut", TS)])
        await sql.execute("SELECT retention_roll()")
        await until(lambda: folded(sql))
        await asyncio.sleep(0.01)
        marked = [r[0] for r in await sql.fetch("SELECT * FROM retention_mark(0)")]
        assert marked
        svc.stop()
        again = Service(url, *RETENTION)
        again.start()
        try:
            await until(lambda: _awaitable_zero(sql, session))
            await until(lambda: _none_removing(sql))  # the piece's row goes right after its table
        finally:
            again.stop()
    finally:
        await sql.close()


async def test_a_database_at_migration_005_migrates_keeping_every_entry(start_service: StartService, postgres: Cluster) -> None:
    from app.store import db

    url = await postgres.create_database("retention_from_005")
    sql = await asyncpg.connect(url)
    try:
        for path in db.migration_files():
            if path.name >= "006":
                break
            await sql.execute(path.read_text())
            await sql.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.name)
        await sql.execute(
            "INSERT INTO events (session_id, type, ts, name_id) "
            "SELECT gen_random_uuid(), 'EVENT', $1::bigint + g, event_name_id('before') FROM generate_series(1, 20000) g",
            TS,
        )
        before = await sql.fetch("SELECT position, session_id, ts FROM events ORDER BY position")
        svc: Service = await start_service(database_url=url)
        after = await sql.fetch("SELECT position, session_id, ts FROM events ORDER BY position")
        assert after == before
        assert await sql.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass") >= 2
        session = new_session()
        await upload(svc.ws_url, session, [event("after", TS)])
        newest = await sql.fetchval("SELECT max(position) FROM events")
        assert newest > before[-1]["position"]
        status, summary = await _get(f"{svc.url}/stats/summary?from={TS}&to={TS + 100_000}")
        assert status == 200 and summary["events"] == 20001
    finally:
        await sql.close()


async def test_a_detach_cut_halfway_is_finalized_by_the_next_run(start_service: StartService, postgres: Cluster) -> None:
    """The backend running DETACH ... CONCURRENTLY dies between its two steps (as it
    does when the service is killed there): the piece is left detach-pending."""
    url = await postgres.create_database("retention_pending")
    svc = await start_service(database_url=url)
    sql, reader, detacher = [await asyncpg.connect(url) for _ in range(3)]
    try:
        session = new_session()
        await upload(svc.ws_url, session, [{"type": "SESSION_START", "timestamp": TS}, event("pending", TS)])
        piece = await _roll(sql)
        assert piece in [r[0] for r in await sql.fetch("SELECT * FROM retention_mark(0)")]
        # A reader that started before the detach makes its second step wait.
        async with reader.transaction():
            await reader.fetchval("SELECT count(*) FROM events")
            detach = asyncio.ensure_future(detacher.execute(f"ALTER TABLE events DETACH PARTITION {piece} CONCURRENTLY"))
            await until(lambda: _true(sql.fetchval(_PENDING, piece)))
            await sql.execute("SELECT pg_terminate_backend($1)", detacher.get_server_pid())
            try:
                await detach
            except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError):
                pass
        assert await sql.fetchval(_PENDING, piece) is True
        svc.stop()
        again = Service(url, *RETENTION)
        again.start()
        try:
            await until(lambda: _gone(sql, piece))
            assert await _count(sql, session) == 0
            await upload(again.ws_url, session, [event("after", TS + 1)])
            assert await _count(sql, session) == 1
        finally:
            again.stop()
    finally:
        for conn in (sql, reader):
            await conn.close()
        detacher.terminate()


async def _true(value: Awaitable[object]) -> bool:
    return bool(await value)


async def _gone(sql: asyncpg.Connection, piece: str) -> bool:
    return bool(
        await sql.fetchval(
            "SELECT to_regclass($1) IS NULL AND NOT EXISTS (SELECT 1 FROM retention_pieces WHERE name = $1)", piece
        )
    )


async def test_the_database_restarting_during_removals(start_service: StartService, standalone_postgres: object) -> None:
    from test.support.postgres import StandalonePostgres

    assert isinstance(standalone_postgres, StandalonePostgres)
    svc = await start_service(*RETENTION, database_url=standalone_postgres.url)
    acked: list[tuple[str, float]] = []
    started = time.monotonic()
    restarted = False
    while time.monotonic() - started < WINDOW * 3:
        if not restarted and time.monotonic() - started > WINDOW * 1.2:
            standalone_postgres.crash()
            standalone_postgres.start()
            restarted = True
        session = new_session()
        try:
            answer = (await upload(svc.ws_url, session, [event("keep", TS)]))[0]
        except (AssertionError, aiohttp.ClientError, OSError):
            continue
        if answer["type"] == "ACK":
            acked.append((session, time.time()))
        await asyncio.sleep(0.02)
    sql = await asyncpg.connect(standalone_postgres.url)
    try:
        checked_at = time.time()
        present = {str(r[0]) for r in await sql.fetch("SELECT DISTINCT session_id FROM events")}
        recent = [s for s, at in acked if at > checked_at - WINDOW + 0.5]
        assert recent and all(s in present for s in recent), "an ACKed entry inside the window was lost"
        assert any(s not in present for s, _ in acked)
        await until(lambda: _none_removing(sql))
        before = await sql.fetchval("SELECT last_removal_at FROM retention_state")
        await until(lambda: _removed_since(sql, before))  # the next removal completes
    finally:
        await sql.close()


async def _none_removing(sql: asyncpg.Connection) -> bool:
    return await sql.fetchval("SELECT count(*) FROM retention_pieces WHERE state = 'removing'") == 0


async def _removed_since(sql: asyncpg.Connection, before: object) -> bool:
    return bool(await sql.fetchval("SELECT last_removal_at > $1 FROM retention_state", before))


# --- the real faults: kill -9 of the service and a database crash, each in the middle of a removal ---
# A day's window, so that nothing the load writes is ever due; the one piece due is
# made so by moving its closing time back (what the service reads to decide; its
# retained_from then reads two days early, which these tests do not check), and a
# reader's open transaction holds its DETACH ... CONCURRENTLY in the second step,
# where a real removal of a big piece spends its time: the fault lands mid-removal
# by construction, not by timing.
LONG_RETENTION = ("--retention-days", "1", "--retention-check-seconds", "0.2")
_DETACHING = (
    "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'ALTER TABLE events DETACH PARTITION %' AND wait_event_type = 'Lock'"
)


async def _make_due(sql: asyncpg.Connection, piece: str) -> None:
    """Past a day's window: its closing time moved back, which is what the service reads to decide."""
    await sql.execute("UPDATE retention_pieces SET closed_at = closed_at - interval '2 days' WHERE name = $1", piece)


async def _old_piece_mid_removal(svc: Service, sql: asyncpg.Connection, reader: asyncpg.Connection) -> tuple[str, str, int]:
    """Entries in a piece that is due, and its removal started and held: (piece, session, first position).

    The reader's transaction must be open (and have read events) before the detach starts."""
    old = new_session()
    assert (
        await upload(svc.ws_url, old, [{"type": "SESSION_START", "timestamp": TS}] + [event("old", TS + i) for i in range(500)])
    )[0]["accepted"] == 501
    first = int(await sql.fetchval("SELECT min(position) FROM events WHERE session_id = $1", old))
    piece = await _roll(sql)
    await reader.execute("BEGIN")
    await reader.fetchval("SELECT count(*) FROM events")
    await _make_due(sql, piece)
    await until(lambda: _true(sql.fetchval(_PENDING, piece)))
    await until(lambda: _true(sql.fetchval(_DETACHING)))
    # Held: the piece is out of events' view (as a pending detach is) but still holds every entry.
    assert await _count(sql, old) == 0
    assert await sql.fetchval(f"SELECT count(*) FROM {piece}") == 501
    return piece, old, first


async def _finished(sql: asyncpg.Connection, svc: Service, piece: str, old: str, first: int) -> None:
    """The held removal completed, its entries are gone, and a resume from one of them is reset."""
    await until(lambda: _gone(sql, piece))
    assert await _count(sql, old) == 0
    assert await _none_removing(sql)
    assert await sql.fetchval("SELECT last_removal_rows FROM retention_state") == 501
    async with await SSEReader.open(svc.url, "", headers={"Last-Event-ID": str(first)}) as resumed:
        reset = await resumed.next()
    assert reset.event == "reset" and reset.json["reason"] == "removed"


async def test_the_service_killed_with_sigkill_in_the_middle_of_a_removal(start_service: StartService, postgres: Cluster) -> None:
    url = await postgres.create_database("retention_sigkill")
    victim = await start_service(*LONG_RETENTION, database_url=url)
    steady = await start_service(database_url=url)  # no retention: keeps ingesting while the victim is down
    sql, reader = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        piece, old, first = await _old_piece_mid_removal(victim, sql, reader)

        async def inject(seconds: float) -> None:
            await asyncio.sleep(seconds / 3)
            victim.signal(signal.SIGKILL)
            assert victim.wait(timeout=10) == -signal.SIGKILL
            # The killed process's detach is still pending (its backend waits for the reader).
            assert await sql.fetchval(_PENDING, piece) is True
            await asyncio.to_thread(victim.start)
            await asyncio.sleep(seconds / 3)
            await reader.execute("COMMIT")  # the forgotten reader goes; the removal can end
            await until(lambda: _gone(sql, piece))
            await asyncio.sleep(seconds / 3)

        # Every ACKed batch stored once, every follower (of both processes) gapless or reset.
        summary = await run_load([victim, steady], url, inject)
        assert summary["errored"].get("connection_lost", 0) >= 1, summary  # type: ignore[union-attr]
        await _finished(sql, victim, piece, old, first)
        # The restarted process removes what is due next, with no failed check.
        due = await _roll(sql)
        await _make_due(sql, due)
        await until(lambda: _gone(sql, due))
    finally:
        await reader.close()
        await sql.close()


async def test_the_database_crashing_in_the_middle_of_a_removal(start_service: StartService, standalone_postgres: object) -> None:
    from test.support.postgres import StandalonePostgres

    assert isinstance(standalone_postgres, StandalonePostgres)
    url = standalone_postgres.url
    svc = await start_service(*LONG_RETENTION, database_url=url)
    sql, reader = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        piece, old, first = await _old_piece_mid_removal(svc, sql, reader)
        await sql.close()

        async def inject(seconds: float) -> None:
            await asyncio.sleep(seconds / 2)
            await asyncio.to_thread(standalone_postgres.crash)  # the reader and the detaching backend die with it
            await asyncio.to_thread(standalone_postgres.start)
            await asyncio.sleep(seconds / 2)

        summary = await run_load([svc], url, inject)
        assert "not properly shut down" in (standalone_postgres.root / "log").read_text()
        assert summary["acked"], summary
        sql = await asyncpg.connect(url)
        # The crash left the detach pending; the service's next check finalizes it and drops the piece.
        await _finished(sql, svc, piece, old, first)
        assert "retention removed piece " + piece in svc.logs()
    finally:
        reader.terminate()
        await sql.close()
