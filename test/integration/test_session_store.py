"""Stored session trees (schema/008, app/reads/tree_store.py): byte-identical, never stale.

Every server here runs with the per-process cache off, so each GET /session reads
the database: the stored tree when it is current, else the events. Trees are stored
after QUIET seconds without change; every wait polls with a deadline.
"""

from __future__ import annotations

import signal
from typing import Any

import aiohttp
import asyncpg

from test.conftest import StartService
from test.support.clients import event, new_session, upload
from test.support.service import Service
from test.support.waits import folded, until

QUIET = 0.3
STORE = ("--tree-cache-bytes", "0", "--tree-store-after-seconds", str(QUIET))
TS = 1_700_000_000_000


async def _body(svc: Service, session: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/session/{session}") as response:
        assert response.status == 200
        return await response.read()


async def _stored_count(sql: asyncpg.Connection, session: str) -> int | None:
    """The event_count the stored tree was built at (None: no stored tree)."""
    value = await sql.fetchval("SELECT event_count FROM session_trees WHERE session_id = $1", session)
    return None if value is None else int(value)


async def _stored_at(sql: asyncpg.Connection, session: str, count: int) -> None:
    async def built() -> bool:
        return await _stored_count(sql, session) == count

    await until(built)


async def _upload(svc: Service, session: str, events: list[dict[str, Any]]) -> None:
    answers = await upload(svc.ws_url, session, events)
    assert [a["type"] for a in answers] == ["ACK"], answers


def _events(count: int, base: int = TS) -> list[dict[str, Any]]:
    """EVENTs that exercise the encoding: escapes, non-ASCII, no data, nested data, equal timestamps."""
    names = ['quote"d', "back\\slash", "tab\tname", "ünïcødé ✓", "emoji 🎉", "plain"]
    out: list[dict[str, Any]] = []
    for i in range(count):
        extra: dict[str, Any] = {}
        if i % 3 == 0:
            extra["data"] = {"i": i, "s": 'a"b\\c\u2028', "nested": {"list": [1, 2.5, None, True]}}
        elif i % 3 == 1:
            extra["data"] = {"list": [i, "x"], "empty": {}}
        out.append(event(names[i % len(names)], base + i // 2, **extra))  # pairs share a timestamp
    return out


async def test_a_stored_tree_is_byte_identical_and_is_what_is_served(start_service: StartService) -> None:
    svc = await start_service(*STORE)
    sql = await asyncpg.connect(svc.database_url)
    try:
        session = new_session()
        await _upload(svc, session, [{"type": "SESSION_START", "timestamp": TS}, *_events(150)])
        await _upload(svc, session, [*_events(50, TS - 100), {"type": "SESSION_END", "timestamp": TS + 999}])
        await _stored_at(sql, session, 200)
        stored = await _body(svc, session)

        # The same tree encoded from events: the stored one hidden (a version that
        # matches nothing), then put back.
        await sql.execute("UPDATE session_trees SET event_count = -1 WHERE session_id = $1", session)
        from_events = await _body(svc, session)
        assert stored == from_events
        children = await sql.fetchval("SELECT children FROM session_trees WHERE session_id = $1", session)
        assert from_events.endswith(b'"children":[' + children + b"]}")
        assert len(children) > 10_000  # compressed by TOAST, returned whole

        # And GET really reads the stored row when it is current.
        await sql.execute(
            "UPDATE session_trees SET event_count = 200, children = convert_to('{\"marker\":1}', 'UTF8') WHERE session_id = $1",
            session,
        )
        assert (await _body(svc, session)).endswith(b'"children":[{"marker":1}]}')
    finally:
        await sql.close()


async def test_a_session_that_changes_after_its_tree_was_stored_is_never_served_stale(start_service: StartService) -> None:
    svc = await start_service("--tree-cache-bytes", "0", "--tree-store-after-seconds", str(QUIET))
    sql = await asyncpg.connect(svc.database_url)
    try:
        session = new_session()
        await _upload(svc, session, [{"type": "SESSION_START", "timestamp": TS}, *_events(120)])
        await _stored_at(sql, session, 120)
        # Freeze the builder, so each change below is read against the old stored tree.
        async with sql.transaction():
            await sql.execute("SELECT pg_advisory_xact_lock(727401, 4)")
            # A service upload.
            await _upload(svc, session, [event("late", TS + 5_000)])
            tree = await _json(svc, session)
            assert len(tree["children"]) == 121 and tree["children"][-1]["name"] == "late"
            # A plain-SQL writer, ordered before the others by its timestamp.
            other = await asyncpg.connect(svc.database_url)
            try:
                await other.execute(
                    "INSERT INTO events (session_id, type, ts, name_id, data) "
                    "VALUES ($1, 'EVENT', $2, event_name_id('sql'), '{\"by\":\"psql\"}')",
                    session,
                    TS - 1,
                )
                tree = await _json(svc, session)
                assert len(tree["children"]) == 122 and tree["children"][0] == {
                    "type": "EVENT",
                    "timestamp": TS - 1,
                    "name": "sql",
                    "data": {"by": "psql"},
                }
                # A late SESSION_END (no child added: only end moves), then an earlier start.
                await _upload(svc, session, [{"type": "SESSION_END", "timestamp": TS + 9_000}])
                assert (await _json(svc, session))["end"] == TS + 9_000
                await other.execute(
                    "INSERT INTO events (session_id, type, ts) VALUES ($1, 'SESSION_START', $2)", session, TS - 50
                )
                tree = await _json(svc, session)
                assert tree["start"] == TS - 50 and len(tree["children"]) == 122
            finally:
                await other.close()
            assert await _stored_count(sql, session) == 120  # still the old tree: the answers above were not it
        # The builder goes on: the tree is rebuilt at the new version, identical to the events'.
        await _stored_at(sql, session, 122)
        stored = await _body(svc, session)
        await sql.execute("UPDATE session_trees SET event_count = -1 WHERE session_id = $1", session)
        assert stored == await _body(svc, session)
    finally:
        await sql.close()


async def _json(svc: Service, session: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/session/{session}") as response:
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


async def test_small_and_streamed_sessions_are_not_stored(start_service: StartService) -> None:
    svc = await start_service(*STORE)
    sql = await asyncpg.connect(svc.database_url)
    try:
        small, large, marker = new_session(), new_session(), new_session()
        await _upload(svc, small, [event("a", TS + i) for i in range(10)])
        await _upload(svc, large, [event("a", TS + i) for i in range(2_000)])
        await _upload(svc, marker, [event("a", TS + i) for i in range(100)])
        await _stored_at(sql, marker, 100)  # uploaded last: the other two were due before it
        assert await _stored_count(sql, small) is None and await _stored_count(sql, large) is None
        assert len((await _json(svc, large))["children"]) == 2_000
        # A stored session that outgrows the bound loses its stored tree (it is streamed now).
        await _upload(svc, marker, [event("b", TS + 5_000 + i) for i in range(1_900)])

        async def dropped() -> bool:
            return await _stored_count(sql, marker) is None

        await until(dropped)
        assert len((await _json(svc, marker))["children"]) == 2_000
    finally:
        await sql.close()


async def test_retention_removes_stored_trees_with_their_entries(start_service: StartService) -> None:
    # Retention runs only once the tree is stored, in a process of its own: with a
    # seconds-long window from the start, a busy machine could remove the entries
    # before the tree was ever stored, and the test would prove nothing.
    first = await start_service(*STORE)
    sql = await asyncpg.connect(first.database_url)
    try:
        lost = new_session()
        await _upload(first, lost, [{"type": "SESSION_START", "timestamp": TS}, *_events(100)])
        await _stored_at(sql, lost, 100)
        assert "retained_from" not in await _json(first, lost)
        await sql.execute("SELECT retention_roll()")  # the session's piece closes now
        await until(lambda: folded(sql))
        first.stop()
        window = 1.0
        svc = await start_service(
            *STORE, "--retention-days", str(window / 86_400), "--retention-check-seconds", "0.2", database_url=first.database_url
        )

        async def removed() -> bool:
            return int(await sql.fetchval("SELECT count(*) FROM events WHERE session_id = $1", lost)) == 0

        await until(removed)
        tree = await _json(svc, lost)  # never the stored tree: it lost its entries
        assert tree["children"] == [] and tree["start"] == TS and isinstance(tree["retained_from"], int)

        async def pruned() -> bool:
            return await _stored_count(sql, lost) is None

        await until(pruned)  # and it does not outlive them
        svc.stop()
        # A new session after the removal is stored and served as usual.
        last = await start_service(*STORE, database_url=first.database_url)
        kept = new_session()
        await _upload(last, kept, _events(100))
        await _stored_at(sql, kept, 100)
        assert "retained_from" not in await _json(last, kept)
    finally:
        await sql.close()


async def test_a_stored_tree_hidden_by_retention_is_not_served_before_its_prune(start_service: StartService) -> None:
    """retained_from moves before pieces go and before trees are pruned: the read checks it itself."""
    svc = await start_service(*STORE)
    sql = await asyncpg.connect(svc.database_url)
    try:
        session = new_session()
        await _upload(svc, session, _events(100))
        await _stored_at(sql, session, 100)
        # What retention_mark does first (nothing is detached here, so all entries remain).
        await sql.execute("UPDATE retention_state SET retained_from = now()")
        tree = await _json(svc, session)
        assert isinstance(tree["retained_from"], int) and len(tree["children"]) == 100
        assert await _stored_count(sql, session) == 100  # still there, but not what answered
        # Left so by a run killed between its removal and its prune: the next process
        # with retention prunes at its first check, removal or not.
        await start_service("--retention-days", "1", "--retention-check-seconds", "0.2", database_url=svc.database_url)

        async def pruned() -> bool:
            return await _stored_count(sql, session) is None

        await until(pruned)
    finally:
        await sql.close()


async def test_a_service_killed_in_the_middle_of_a_build_leaves_it_to_the_next(start_service: StartService) -> None:
    """The build's INSERT waits for a lock held here, so SIGKILL lands inside a step's transaction."""
    svc = await start_service(*STORE)
    sql, holder = await asyncpg.connect(svc.database_url), await asyncpg.connect(svc.database_url)
    building = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        " AND query LIKE '%INSERT INTO session_trees AS t%'"
    )
    running = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND query LIKE '%INSERT INTO session_trees AS t%' AND pid <> pg_backend_pid()"
    )
    try:
        session = new_session()
        await holder.execute("BEGIN")
        await holder.execute("LOCK TABLE session_trees IN EXCLUSIVE MODE")  # reads go on, writes wait
        await _upload(svc, session, _events(120))

        async def waiting() -> bool:
            return int(await sql.fetchval(building)) > 0

        await until(waiting)
        svc.signal(signal.SIGKILL)
        assert svc.wait() == -signal.SIGKILL
        await holder.execute("COMMIT")

        async def gone() -> bool:  # the orphaned step ran on, found its client gone, rolled back
            return int(await sql.fetchval(running)) == 0

        await until(gone)
        assert await _stored_count(sql, session) is None  # nothing of the killed step was kept
        svc.start()
        assert len((await _json(svc, session))["children"]) == 120
        await _stored_at(sql, session, 120)  # the next process builds it
        assert len((await _json(svc, session))["children"]) == 120
    finally:
        await holder.close()
        await sql.close()


async def test_a_kill_and_restart_never_leave_a_stale_tree(start_service: StartService) -> None:
    svc = await start_service(*STORE)
    sql = await asyncpg.connect(svc.database_url)
    try:
        session = new_session()
        await _upload(svc, session, _events(150))
        await _stored_at(sql, session, 150)
        svc.signal(signal.SIGKILL)
        svc.wait()
        # While no service runs: a plain-SQL writer adds to the session.
        await sql.execute(
            "INSERT INTO events (session_id, type, ts, name_id) VALUES ($1, 'EVENT', $2, event_name_id('offline'))",
            session,
            TS + 10_000,
        )
        svc.start()
        tree = await _json(svc, session)
        assert len(tree["children"]) == 151 and tree["children"][-1]["name"] == "offline"
        # The restarted builder picks the change up from its watermark and rebuilds.
        await _stored_at(sql, session, 151)
        assert len((await _json(svc, session))["children"]) == 151
        # A kill right after an upload, before the session went quiet: built by the next process.
        second = new_session()
        await _upload(svc, second, _events(100))
        svc.signal(signal.SIGKILL)
        svc.wait()
        svc.start()
        await _stored_at(sql, second, 100)
        assert len((await _json(svc, second))["children"]) == 100
    finally:
        await sql.close()
