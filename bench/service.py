"""Start (and always stop) a throwaway PostgreSQL and the app under test; measure them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop when it is installed (as the app runs), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (the app subprocess inherits it); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        if hard != resource.RLIM_INFINITY and wanted > hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))  # root may raise the hard limit
            return wanted
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- process stats


def _cpu(proc: psutil.Process, *, with_reaped: bool) -> float:
    try:
        t = proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
    total = t.user + t.system
    if with_reaped:  # children that already exited and were waited for (postgres backends, workers)
        total += t.children_user + t.children_system
    return total


@dataclass
class ProcTree:
    """A root process and its descendants; CPU seconds include reaped children."""

    root_pid: int | None

    def processes(self) -> list[psutil.Process]:
        if self.root_pid is None:
            return []
        try:
            root = psutil.Process(self.root_pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float | None:
        procs = self.processes()
        if not procs:
            return None
        return _cpu(procs[0], with_reaped=True) + sum(_cpu(p, with_reaped=False) for p in procs[1:])

    def rss_bytes(self) -> int | None:
        total = 0
        procs = self.processes()
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                total += proc.memory_info().rss
        return total if procs else None


@dataclass
class AllPostgres:
    """Every local process named ``postgres`` (for a DATABASE_URL we did not start)."""

    def cpu_seconds(self) -> float | None:
        total, seen = 0.0, False
        for proc in psutil.process_iter(["name", "ppid"]):
            if proc.info["name"] != "postgres":
                continue
            seen = True
            try:
                parent_is_pg = psutil.Process(proc.info["ppid"]).name() == "postgres"
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                parent_is_pg = False
            total += _cpu(proc, with_reaped=not parent_is_pg)
        return total if seen else None


@dataclass
class Meter:
    """CPU seconds of server, database and this load generator between start() and stop()."""

    server: ProcTree
    database: ProcTree | AllPostgres
    _start: dict[str, float | None] = field(default_factory=dict)
    result: dict[str, float | None] = field(default_factory=dict)

    def _sample(self) -> dict[str, float | None]:
        me = psutil.Process()
        server_pids = {p.pid for p in self.server.processes()}
        helpers = [c for c in me.children(recursive=True) if c.pid not in server_pids]  # SSE client processes
        sys_times = psutil.cpu_times()
        return {
            "server": self.server.cpu_seconds(),
            "db": self.database.cpu_seconds(),
            "client": _cpu(me, with_reaped=False) + sum(_cpu(c, with_reaped=False) for c in helpers),
            "busy": sum(getattr(sys_times, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq")),
        }

    def start(self) -> None:
        self._start = self._sample()
        self._t0 = time.monotonic()

    async def span(self, start: float, end: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Start at ``start`` and stop at ``end`` (both read on ``clock``)."""
        await asyncio.sleep(max(0.0, start - clock()))
        self.start()
        await asyncio.sleep(max(0.0, end - clock()))
        self.stop()

    def stop(self) -> dict[str, float | None]:
        end = self._sample()
        self.result = {"wall": time.monotonic() - self._t0}
        for key, value in end.items():
            before = self._start.get(key)
            self.result[key] = None if value is None or before is None else value - before
        busy = self.result.pop("busy", None)
        if busy is not None:  # whatever else ran on the machine meanwhile (other test suites skew the figures)
            mine = sum(self.result.get(k) or 0.0 for k in ("server", "db", "client"))
            self.result["other"] = max(0.0, busy - mine)
        return self.result


# --------------------------------------------------------------------------- database


@dataclass
class Database:
    url: str
    tree: ProcTree | AllPostgres
    owned: bool
    warmed: bool = False  # a throwaway cluster whose WAL files were made before measuring


# WAL written (and recycled) before a throwaway cluster is measured. A new cluster has
# no WAL segment files to reuse: every 16 MB of WAL the committing backend creates and
# zero-fills a new one while holding the WAL write lock, and the commits in flight wait
# ~50 ms each time (IO:WALInitWrite, every 0.6 s at half load). A cluster that has run
# for a while recycles the files of its past checkpoints instead, so a throwaway one is
# warmed up first with max_wal_size of WAL (1 GB by default): as many files as the
# cluster keeps. `--fresh-wal` measures the new cluster instead.
_WAL_FILES = "SELECT count(*) FROM pg_ls_waldir()"


def warm_wal(url: str) -> int:
    """Writes max_wal_size of WAL and checkpoints, so that later WAL reuses those files; the MB written."""

    async def write() -> int:
        conn = await asyncpg.connect(url)
        try:
            megabytes = int(await conn.fetchval("SELECT pg_size_bytes(current_setting('max_wal_size')) / 1048576"))
            await conn.execute(
                "CREATE TABLE bench_wal_warmup AS SELECT repeat('x', 1000) AS pad FROM generate_series(1, $1::int * 1000)",
                megabytes,
            )
            await conn.execute("DROP TABLE bench_wal_warmup")
            await conn.execute("CHECKPOINT")
            return megabytes
        finally:
            await conn.close()

    return asyncio.run(write())


async def checkpoint(url: str) -> None:
    """Makes the WAL written so far recyclable: the next phase reuses its files instead of creating new ones."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def wal_files(url: str) -> int | None:
    """How many WAL files the cluster holds (None without the right to list them): a rise means files were created."""
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        return int(await conn.fetchval(_WAL_FILES))
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()


@contextlib.contextmanager
def database(url: str | None, *, warm: bool = True) -> Iterator[Database]:
    """The given URL, else $DATABASE_URL, else a throwaway pgserver deleted afterwards (its WAL warmed up)."""
    url = url or os.environ.get("DATABASE_URL") or None
    if url:
        yield Database(url=url, tree=AllPostgres(), owned=False)
        return
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pgserver  # imported lazily: only needed without a URL

    tmp = tempfile.mkdtemp(prefix="bench-pg-")
    print(f"# starting a throwaway PostgreSQL in {tmp}", file=sys.stderr, flush=True)
    server = pgserver.get_server(tmp, cleanup_mode="delete")
    try:
        if warm:
            note = "# writing max_wal_size of WAL first, as a cluster that has run a while has (--fresh-wal: not)"
            print(note, file=sys.stderr, flush=True)
            warm_wal(server.get_uri())
        yield Database(url=server.get_uri(), tree=ProcTree(server.get_pid()), owned=True, warmed=warm)
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the app


@dataclass
class Service:
    port: int
    proc: asyncio.subprocess.Process
    log_path: Path
    tree: ProcTree

    @property
    def http(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def _wait_healthy(svc: Service, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if svc.proc.returncode is not None:
                raise RuntimeError(f"the app exited with {svc.proc.returncode}:\n{svc.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with http.get(svc.http + "/healthcheck", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"the app did not answer /healthcheck within {limit_s:.0f} s:\n{svc.log_tail()}")
        while time.monotonic() < deadline:  # liveness is not readiness: wait for the database too
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with http.get(svc.http + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status in (200, 404):
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the app was not ready within {limit_s:.0f} s:\n{svc.log_tail()}")


async def _stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    if proc.returncode is not None:
        return
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=grace)
    except TimeoutError:
        proc.kill()
        await asyncio.wait_for(proc.wait(), timeout=5)
    loop = asyncio.get_running_loop()
    _, alive = await loop.run_in_executor(None, lambda: psutil.wait_procs(kids, timeout=grace))
    for kid in alive:  # only the workers this very app process started
        with contextlib.suppress(psutil.NoSuchProcess):
            kid.kill()


@contextlib.asynccontextmanager
async def service(
    db: Database,
    *,
    workers: int = 1,
    extra_args: list[str] | None = None,
    startup_timeout: float = 90.0,
    app_dir: Path | None = None,
) -> AsyncIterator[Service]:
    """``python -m app`` on a free loopback port; stopped (SIGTERM, then SIGKILL) on exit.

    ``app_dir``: another checkout's code (e.g. the previous commit, for A/B runs in one session)."""
    port = free_port()
    log_fd, log_name = tempfile.mkstemp(prefix="bench-app-", suffix=".log")
    cmd = [
        sys.executable,
        "-m",
        "app",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--database-url",
        db.url,
        "--workers",
        str(workers),
        *(extra_args or []),
    ]
    env = dict(os.environ)
    env.setdefault("LOG_LEVEL", "warning")
    env.pop("DATABASE_URL", None)  # the flag is the one source of truth here
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=app_dir or REPO_ROOT, env=env, stdout=log_fd, stderr=subprocess.STDOUT, start_new_session=True
    )
    os.close(log_fd)
    svc = Service(port=port, proc=proc, log_path=Path(log_name), tree=ProcTree(proc.pid))
    try:
        await _wait_healthy(svc, startup_timeout)
        yield svc
    finally:
        await _stop(proc, 15.0)
        problems = _log_problems(svc.log_path)
        if proc.returncode not in (0, -signal.SIGTERM, None) or problems:
            print(
                f"# app exited with {proc.returncode}; {problems} error/traceback lines in its log {log_name}:\n"
                f"{svc.log_tail(20)}",
                file=sys.stderr,
            )
        else:
            with contextlib.suppress(OSError):
                os.unlink(log_name)


def _log_problems(path: Path) -> int:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    marks = ("Traceback", "ERROR", '"level": "error"', '"level":"error"', "level=error")
    return sum(1 for line in text.splitlines() if any(mark in line for mark in marks))


def mib(value: int | None) -> float | None:
    return None if value is None else value / 2**20


def snapshot(svc: Service) -> dict[str, Any]:
    return {"server RSS MiB": mib(svc.tree.rss_bytes())}
