"""`python -m app` as a new user runs it: bad settings, a port in use, a database that is
not there (yet). Each case is a real subprocess; what is asserted is what a person reads
on stderr and the exit status a supervisor sees."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from app.config import Settings
from test.support.postgres import StandalonePostgres, free_port
from test.support.service import REPO, Service

if TYPE_CHECKING:
    from test.support.postgres import TestPostgres

# The machine's variables a process needs; a developer's DATABASE_URL or PORT never leaks in.
_KEEP = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "XDG_RUNTIME_DIR", "USER"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in _KEEP}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run_app(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=timeout
    )


def refused_url() -> str:
    """A PostgreSQL URL on a local port where nothing listens."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"


def assert_one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize(
    ("args", "env", "named", "says"),
    [
        (["--port", "abc"], {}, "--port", "an integer from 1 to 65535"),
        ([], {"PORT": "abc"}, "PORT", "an integer from 1 to 65535"),
        (["--log-level", "verbose"], {}, "--log-level", "one of debug, info, warning, error"),
        ([], {"LOG_LEVEL": "verbose"}, "LOG_LEVEL", "one of debug, info, warning, error"),
        (["--log-format", "xml"], {}, "--log-format", "one of text, json"),
        (["--workers", "0"], {}, "--workers", "from 1 to 256"),
        ([], {"WORKERS": "-1"}, "WORKERS", "from 1 to 256"),
        (["--max-batch-events", "-5"], {}, "--max-batch-events", "at least 1"),
        ([], {"SSE_PING_SECONDS": "soon"}, "SSE_PING_SECONDS", "greater than 0"),
        ([], {"INSECURE": "maybe"}, "INSECURE", "one of 1, 0, true, false"),
        (["--database-url", "localhost:5432"], {}, "--database-url", "postgresql://"),
        (["--database-connect-timeout", "-1"], {}, "--database-connect-timeout", "at least 0"),
        (["--ingest-tokens", "@/nonexistent/tokens"], {}, "--ingest-tokens", "cannot read /nonexistent/tokens"),
        (["--prot", "9000"], {}, "--prot", "did you mean --port?"),
        (["--port"], {}, "--port", "expected one argument"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_and_exit_2(args: list[str], env: dict[str, str], named: str, says: str) -> None:
    # A database URL that would fail differently proves nothing else ran before the check.
    result = run_app(*args, timeout=30, **{"DATABASE_URL": refused_url(), **env})
    assert result.returncode == 2, result.stderr
    line = assert_one_line(result.stderr)
    assert named in line and says in line, line
    assert result.stdout == ""


def test_help_groups_every_setting() -> None:
    result = run_app("--help", timeout=30)
    assert result.returncode == 0 and result.stderr == ""
    text = result.stdout
    headings = ["server:", "database:", "ingest limits:", "stream:", "security:", "logging:"]
    positions = [text.index("\n" + h + "\n") for h in headings]
    assert positions == sorted(positions), "in this order"
    assert text.count("\n  --") == len(dataclasses.fields(Settings))
    body = " ".join(text.split())
    assert "--port PORT bind port [PORT] (default: 8000; an integer from 1 to 65535)" in body
    assert "--database-connect-timeout" in text[positions[1] : positions[2]]


# --------------------------------------------------------------------------- the port


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_fails_at_once_with_a_hint_and_no_ready(occupied_port: int, workers: str) -> None:
    # The database is unreachable too: the port is checked first, before anything slow.
    started = time.monotonic()
    result = run_app("--port", str(occupied_port), "--workers", workers, timeout=30, DATABASE_URL=refused_url())
    assert result.returncode != 0
    line = assert_one_line(result.stderr)
    assert f"cannot listen on 127.0.0.1:{occupied_port}: address already in use" in line
    assert "--port" in line
    assert not re.search(r"\bready\b", result.stderr)
    assert time.monotonic() - started < 20


async def test_ready_is_logged_once_the_port_listens(postgres: TestPostgres) -> None:
    svc = Service(await postgres.create_database("cli_ready"))
    svc.start()
    try:
        logs = svc.logs()
        assert logs.count(" ready ") == 1, logs
        assert logs.index(" starting on ") < logs.index(" ready ")
        assert "address already in use" not in logs
    finally:
        assert svc.stop() == 0


# --------------------------------------------------------------------------- the database


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unreachable_database_is_retried_then_one_readable_line(workers: str) -> None:
    url = refused_url()
    port = url.rsplit(":", 1)[1].split("/")[0]
    started = time.monotonic()
    result = run_app("--port", str(free_port()), "--workers", workers, DATABASE_URL=url, DATABASE_CONNECT_TIMEOUT="2")
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"python -m app: cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused"
        " (retried for 2s, DATABASE_CONNECT_TIMEOUT)"
    )
    assert any(f"waiting for PostgreSQL at 127.0.0.1:{port}: connection refused" in line for line in lines[:-1])
    assert all(len(line) < 300 for line in lines), "no line with a whole traceback folded into it"
    assert not re.search(r"\bready\b", result.stderr)
    assert 2 <= elapsed < 30


def test_a_missing_database_fails_at_once_without_waiting(postgres: TestPostgres) -> None:
    url = postgres.url_for("no_such_database")
    started = time.monotonic()
    result = run_app("--port", str(free_port()), DATABASE_URL=url, DATABASE_CONNECT_TIMEOUT="60")
    assert result.returncode != 0
    line = assert_one_line(result.stderr)
    assert 'refused the connection: database "no_such_database" does not exist' in line
    assert time.monotonic() - started < 30, "a retry cannot create a database: no 60s wait"


def test_a_database_that_comes_up_during_the_wait_is_used(standalone_postgres: StandalonePostgres) -> None:
    standalone_postgres.stop()
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="es-cli-wait-", suffix=".log")[1])
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port)],
            cwd=REPO,
            env=_env(DATABASE_URL=standalone_postgres.url, DATABASE_CONNECT_TIMEOUT="120"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "waiting for PostgreSQL" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        standalone_postgres.start()
        deadline = time.monotonic() + 60
        while not _ready(port):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert "Traceback" not in log_path.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
        log_path.unlink(missing_ok=True)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
