"""The Python uploader (clients/python) against the real service: exactly once through faults.

Every test counts the stored events by a unique id in their data: each id tracked (or
each valid line imported) must be stored exactly once, whatever was killed or restarted
in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from eventservice_client import EventError, Uploader, UploadError
from eventservice_client.outbox import Batch

from test.support.postgres import StandalonePostgres
from test.support.proxy import FaultProxy
from test.support.service import REPO, Service

pytestmark = pytest.mark.faults


async def stored_uids(database_url: str, run: str) -> dict[int, int]:
    """uid → how many times it is stored, for the events of one run."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT (data->>'uid')::int AS uid, count(*) AS n FROM events WHERE data->>'run' = $1 GROUP BY 1", run
        )
    finally:
        await conn.close()
    return {row["uid"]: row["n"] for row in rows}


def assert_exactly_once(stored: dict[int, int], expected: range) -> None:
    twice = {uid: n for uid, n in stored.items() if n != 1}
    assert not twice, f"stored more than once: {dict(list(twice.items())[:10])}"
    missing = set(expected) - set(stored)
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:10]}"
    assert set(stored) <= set(expected)


def spawn(module: str, *args: str, stdin: int | None = None, output: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    """`python -m module args…` from the repository, its output piped (text)."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdin=stdin, stdout=output, stderr=output, text=True)


def relay(svc: Service, spool: Path, run: str, count: int) -> subprocess.Popen[str]:
    return spawn("test.support.relay", svc.url, str(spool), run, str(count))


def cli(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventservice_client", *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ndjson(run: str, count: int, sessions: int = 7) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(sessions)]
    return [json.dumps(imported(i, ids[i % sessions], {"run": run, "uid": i})) for i in range(count)]


def imported(i: int, session: str, data: dict[str, object]) -> dict[str, object]:
    return {"type": "EVENT", "timestamp": 1_700_000_000_000 + i, "name": "imported", "session_id": session, "data": data}


async def track_over_time(up: Uploader, run: str, uids: range, per_pause: int = 10) -> None:
    sessions = [str(uuid.uuid4()) for _ in range(4)]
    for i in uids:
        up.track(sessions[i % 4], "relayed", {"run": run, "uid": i})
        if i % per_pause == 0:
            await asyncio.sleep(0.005)


async def test_a_relay_killed_with_kill_9_and_started_again_stores_every_event_once(service: Service, tmp_path: Path) -> None:
    spool = tmp_path / "relay.sqlite"
    run = "kill9-" + uuid.uuid4().hex[:8]
    first = relay(service, spool, run, 5_000)
    assert first.stdout is not None
    last = -1
    for line in first.stdout:
        if line.startswith("tracked "):
            last = int(line.split()[1])
            if last >= 1_500:
                break
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert last >= 1_500, first.stderr.read() if first.stderr else ""
    # Killed mid-upload: what was tracked and not yet ACKed is in the spool.
    with contextlib.closing(sqlite3.connect(spool)) as db:
        spooled = db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert spooled > 0, "everything was ACKed before the kill: nothing to prove"
    again = relay(service, spool, run, 0)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0 and "done" in out, err
    stored = await stored_uids(service.database_url or "", run)
    # Every track() that returned is stored, once; the one cut mid-call may be too.
    top = max(stored)
    assert top >= last
    assert_exactly_once(stored, range(top + 1))


async def test_the_database_restarted_mid_upload_stores_every_event_once(
    start_service, standalone_postgres: StandalonePostgres, tmp_path: Path
) -> None:
    svc = await start_service(database_url=standalone_postgres.url)
    run = "dbrestart-" + uuid.uuid4().hex[:8]
    errors: list[UploadError] = []
    spool = tmp_path / "s.sqlite"
    async with Uploader(svc.url, spool=spool, flush_events=20, flush_ms=20, on_error=errors.append, reconnect_max_ms=1000) as up:
        await track_over_time(up, run, range(0, 300))
        await asyncio.to_thread(standalone_postgres.stop)
        await track_over_time(up, run, range(300, 600))
        await asyncio.sleep(0.5)  # batches meet the database down: answered unavailable, kept
        await asyncio.to_thread(standalone_postgres.start)
        await track_over_time(up, run, range(600, 900))
        await asyncio.wait_for(up.flush(), 60)
        assert up.pending == 0
        assert up.totals.retried > 0, "no batch met the database down"
    assert errors == []
    assert_exactly_once(await stored_uids(standalone_postgres.url, run), range(900))


def _stop(svc: Service, how: signal.Signals) -> None:
    if how == signal.SIGKILL:
        svc.signal(signal.SIGKILL)
        svc.wait()
    else:
        svc.stop()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill9"])
async def test_the_service_restarted_mid_upload_stores_every_event_once(start_service, how: signal.Signals) -> None:
    svc = await start_service()
    run = f"{how.name}-" + uuid.uuid4().hex[:8]
    async with Uploader(svc.url, flush_events=25, flush_ms=20, reconnect_max_ms=1000) as up:
        await track_over_time(up, run, range(0, 400))
        stopping = asyncio.create_task(asyncio.to_thread(_stop, svc, how))
        await track_over_time(up, run, range(400, 700))  # some during the drain, some while it is gone
        await stopping
        await asyncio.to_thread(svc.start)
        await track_over_time(up, run, range(700, 1_000))
        await asyncio.wait_for(up.flush(), 60)
        assert up.totals.connections >= 2
    assert_exactly_once(await stored_uids(svc.database_url or "", run), range(1_000))


async def test_the_network_reset_and_black_holed_mid_upload_stores_every_event_once(service: Service) -> None:
    proxy = FaultProxy("127.0.0.1", service.port)
    proxy.start()
    run = "network-" + uuid.uuid4().hex[:8]
    try:
        async with Uploader(f"http://127.0.0.1:{proxy.port}", flush_events=20, flush_ms=20, reconnect_max_ms=500,
                            ping_seconds=1) as up:  # fmt: skip
            await track_over_time(up, run, range(0, 300))
            assert proxy.reset() == 1  # RST: seen at once
            await track_over_time(up, run, range(300, 600))
            deadline = time.monotonic() + 10
            while not (up.connected and proxy.open_connections == 1):
                assert time.monotonic() < deadline, "never reconnected after the reset"
                await asyncio.sleep(0.02)
            assert proxy.blackhole() == 1  # silence: seen by the pings
            await track_over_time(up, run, range(600, 900))
            await asyncio.wait_for(up.flush(), 30)
            assert up.totals.connections >= 3
    finally:
        proxy.close()
    assert_exactly_once(await stored_uids(service.database_url or "", run), range(900))


async def test_an_error_answer_drops_that_batch_once_and_the_others_are_stored(service: Service) -> None:
    run = "error-" + uuid.uuid4().hex[:8]
    session = str(uuid.uuid4())
    errors: list[UploadError] = []
    async with Uploader(service.url, flush_events=5, flush_ms=10_000, on_error=errors.append) as up:
        up.track(session, "good", {"run": run, "uid": 0})
        # A bad event is refused by track() at once, alone: it never costs its neighbours.
        with pytest.raises(EventError, match="name"):
            up.track(session, "x" * 300, {"run": run, "uid": 99})
        with pytest.raises(EventError, match="data"):
            up.track(session, "big", {"pad": "x" * 17_000})
        with pytest.raises(EventError, match="session_id"):
            up.track("not-a-uuid", "good")
        up.track(session, "good", {"run": run, "uid": 1})
        await asyncio.wait_for(up.flush(), 15)
        # A batch sent raw, bypassing the checks: the server refuses it whole.
        bad = json.dumps({**imported(0, session, {"run": run, "uid": 50}), "timestamp": -5})
        assert up.put_batch(Batch("raw-" + run, [bad.encode()]))
        up.track(session, "good", {"run": run, "uid": 2})
        await asyncio.wait_for(up.flush(), 15)
        assert up.pending == 0
    assert [(e.error, e.batch_id, e.events) for e in errors] == [("invalid_event", "raw-" + run, 1)]
    assert errors[0].details and errors[0].details[0]["field"] == "timestamp"
    assert_exactly_once(await stored_uids(service.database_url or "", run), range(3))


async def test_an_import_killed_mid_way_and_run_again_stores_every_line_once(start_service, tmp_path: Path) -> None:
    # A rate limit slows the import down enough to kill it mid-way (and exercises rate_limited retries).
    svc = await start_service(env={"INGEST_RATE_PER_CONNECTION": "40", "INGEST_BURST_PER_CONNECTION": "5"})
    run = "import-" + uuid.uuid4().hex[:8]
    source = tmp_path / "events.ndjson"
    source.write_text("\n".join(ndjson(run, 12_000)) + "\n")
    args = ["import", str(source), "--url", svc.url, "--spool", str(tmp_path / "import.sqlite"), "--batch-events", "100"]
    first = spawn("eventservice_client", *args, output=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(stored := await stored_uids(svc.database_url or "", run)) < 2_000:
        assert time.monotonic() < deadline and first.poll() is None, "the import never got going"
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert len(stored) < 12_000, "the import finished before it could be killed"
    again = await asyncio.to_thread(cli, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "lines read: 12000" in again.stdout
    assert "rejected lines: 0" in again.stdout
    assert "retried: " in again.stdout  # the rate limit answered rate_limited, and those batches went again
    assert_exactly_once(await stored_uids(svc.database_url or "", run), range(12_000))


async def test_the_import_command_reports_bad_lines_by_number_and_reads_stdin(service: Service, tmp_path: Path) -> None:
    run = "cli-" + uuid.uuid4().hex[:8]
    good = ndjson(run, 6)
    yesterday = json.dumps({**imported(0, str(uuid.uuid4()), {}), "timestamp": "yesterday"})
    unnamed = json.dumps({**imported(0, str(uuid.uuid4()), {}), "name": ""})
    lines = [good[0], "{not json", good[1], "", good[2], yesterday, good[3], unnamed, good[4], good[5]]
    source = tmp_path / "mixed.ndjson"
    source.write_text("\n".join(lines) + "\n")
    result = await asyncio.to_thread(cli, "import", str(source), "--url", service.url)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "lines read: 10 (1 blank)" in out
    assert "events accepted: 6" in out
    assert "rejected lines: 3" in out
    assert "line 2: " in out and "line 6: timestamp" in out and "line 8: name" in out
    assert "Traceback" not in result.stderr
    assert_exactly_once(await stored_uids(service.database_url or "", run), range(6))

    # stdin, twice: the second run is answered duplicate, batch for batch (deterministic batch ids).
    run2 = "stdin-" + uuid.uuid4().hex[:8]
    text = "\n".join(ndjson(run2, 250)) + "\n"
    first = await asyncio.to_thread(cli, "import", "-", "--url", service.url, "--batch-events", "100", stdin=text)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "events accepted: 250" in first.stdout and "duplicates: 0 events" in first.stdout
    rerun = await asyncio.to_thread(cli, "import", "-", "--url", service.url, "--batch-events", "100", stdin=text)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "events accepted: 0" in rerun.stdout and "duplicates: 250 events in 3 batches" in rerun.stdout
    assert_exactly_once(await stored_uids(service.database_url or "", run2), range(250))

    # Usage errors: one line, exit 2, no traceback.
    missing = await asyncio.to_thread(cli, "import", str(tmp_path / "nope.ndjson"), "--url", service.url)
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
    bad_url = await asyncio.to_thread(cli, "import", str(source), "--url", "ftp://example")
    assert bad_url.returncode == 2 and "base_url" in bad_url.stderr


async def test_the_import_command_gives_up_on_a_refused_token_and_ctrl_c_exits_130(start_service, tmp_path: Path) -> None:
    svc = await start_service(env={"INGEST_TOKENS": "right-token"})
    run = "token-" + uuid.uuid4().hex[:8]
    source = tmp_path / "t.ndjson"
    source.write_text("\n".join(ndjson(run, 20)) + "\n")
    refused = await asyncio.to_thread(cli, "import", str(source), "--url", svc.url, "--token", "wrong")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "unauthorized" in refused.stderr and "Traceback" not in refused.stderr
    accepted = await asyncio.to_thread(cli, "import", str(source), "--url", svc.url, "--token", "right-token")
    assert accepted.returncode == 0 and "events accepted: 20" in accepted.stdout, accepted.stdout + accepted.stderr

    # Ctrl-C while it waits on stdin: exit 130, one line, no traceback.
    args = ["import", "-", "--url", svc.url, "--token", "right-token", "--progress", "lines"]
    proc = spawn("eventservice_client", *args, stdin=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(ndjson(run, 1)[0] + "\n")
    proc.stdin.flush()
    proc.stderr.readline()  # the first progress line: it is running
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err


async def test_a_frame_over_the_servers_limit_is_found_dropped_and_reported_once(start_service) -> None:
    svc = await start_service(env={"MAX_FRAME_BYTES": "4096"})
    run = "frame-" + uuid.uuid4().hex[:8]
    session = str(uuid.uuid4())
    errors: list[UploadError] = []
    async with Uploader(svc.url, flush_events=3, flush_ms=20, on_error=errors.append, reconnect_max_ms=500) as up:
        for i in range(12):
            # The fifth event makes its batch's frame pass 4 KiB (the server closes with 1009); the others fit.
            up.track(session, "sized", {"run": run, "uid": i, "pad": "x" * (5_000 if i == 4 else 10)})
        await asyncio.wait_for(up.flush(), 30)
    assert [(e.error, e.events) for e in errors] == [("too_large", 3)]
    # That batch (uids 3-5) is dropped whole and reported; every other batch is stored once.
    stored = await stored_uids(svc.database_url or "", run)
    assert sorted(stored) == [0, 1, 2, *range(6, 12)] and set(stored.values()) == {1}
