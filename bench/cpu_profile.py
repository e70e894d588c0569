"""Where the CPU of a measured window goes, process by process (``bench ingest --profile``).

``perf record`` samples every core on a fixed clock (``cpu-clock``) from before the
window opens, and only the samples inside the window count. Busy time comes out right
(it matches psutil's CPU seconds of the same processes), but a halted core is sampled
only now and then, so idle time is what the busy samples leave of the cores.
``pg_stat_activity`` is read meanwhile so that each PostgreSQL backend can be named by
what it was doing (the writer's COPY, the folds...). The result says which part of the
work is serialised (one backend near a whole core while cores idle) and what each part
costs per acknowledged event, so that a bound on events/s
follows from the machine's cores without guessing.

Needs ``perf`` on the PATH and permission to sample every CPU (root, or
``kernel.perf_event_paranoid`` <= 0); otherwise the profile says why it is missing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .report import Row
from .service import Meter, ProcTree

HZ = 999
TOP_SYMBOLS = 4
PERF_STOP_SECONDS = 60.0

# The first words of a backend's query name its role; the rest (values, ids) would
# split one role into many. Idle backends say nothing about what they do.
_ACTIVITY = """
SELECT pid, coalesce(nullif(left(regexp_replace(query, '\\s+', ' ', 'g'), 60), ''), backend_type) AS what
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND state IS DISTINCT FROM 'idle'
"""
# `perf script -F comm,pid,time,ip,sym`: a command name may hold spaces, the rest not.
_SAMPLE = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)\s+(?P<time>\d+\.\d+):\s+(?P<ip>[0-9a-f]+)\s*(?P<sym>.*)$")


@dataclass
class Profile:
    samples: dict[int, int] = field(default_factory=dict)  # pid -> samples inside the window
    comms: dict[int, str] = field(default_factory=dict)
    symbols: dict[int, Counter[str]] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    database_pids: set[int] = field(default_factory=set)  # the measured cluster's processes
    seconds: float = 0.0
    missing: str | None = None  # why there is no profile

    def is_database(self, pid: int) -> bool:
        if self.database_pids:
            return pid in self.database_pids
        return self.comms.get(pid) == "postgres"  # a cluster we did not start: every postgres


class ProfilingMeter(Meter):
    """A Meter that also records a perf profile of the whole machine over the same window.

    perf starts when the meter is made (before the phase's warm-up), so that its start-up
    does not eat into the window; samples are cut to the window by their timestamps.
    """

    def __init__(self, server: Any, database: Any, database_url: str) -> None:
        super().__init__(server, database)
        self._url = database_url
        self._dir = tempfile.mkdtemp(prefix="bench-perf-")
        self._perf: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[Counter[tuple[int, str]]] | None = None
        self._window = (0.0, 0.0)
        self._recorded = False
        self.profile = Profile()
        if shutil.which("perf") is None:
            self.profile.missing = "perf is not on the PATH"
            return
        record = ["perf", "record", "-e", "cpu-clock", "-F", str(HZ), "-a", "-k", "CLOCK_MONOTONIC", "-B"]
        self._perf = subprocess.Popen(
            [*record, "-o", os.path.join(self._dir, "perf.data")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def start(self) -> None:
        super().start()
        self._window = (time.monotonic(), 0.0)
        self.profile.database_pids |= _pids(self.database)
        if self._perf is not None:
            self._watch = asyncio.get_running_loop().create_task(_watch_activity(self._url))

    def stop(self) -> dict[str, float | None]:
        result = super().stop()
        self._window = (self._window[0], time.monotonic())
        self.profile.seconds = self._window[1] - self._window[0]
        self.profile.database_pids |= _pids(self.database)
        if self._perf is not None:
            self._perf.send_signal(signal.SIGINT)  # perf writes its file and exits; finish() waits
        return result

    async def finish(self) -> None:
        """Stops perf and the activity reader; call once after the phase, whatever happened in it.

        The samples are read later (read()): ``perf script`` takes seconds of CPU, which
        must not land in the next phase.
        """
        if self._watch is not None:
            self._watch.cancel()
            try:
                seen = await self._watch
            except asyncio.CancelledError:  # cancelled before it ever ran
                seen = Counter()
            except Exception as exc:  # noqa: BLE001 - the roles are a label: the profile stands without them
                seen = Counter()
                print(f"# profile: pg_stat_activity not read ({exc!r}); backends are unnamed", file=sys.stderr, flush=True)
            _name_roles(self.profile, seen)
            self.profile.database_pids |= {pid for pid, _ in seen}
        perf, self._perf = self._perf, None
        if perf is None:
            return
        if perf.poll() is None and self._window[1] == 0.0:  # the phase failed before stop()
            perf.send_signal(signal.SIGINT)
        try:
            _, err = await asyncio.to_thread(perf.communicate, None, PERF_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            perf.kill()
            await asyncio.to_thread(perf.wait)
            self.profile.missing = f"perf record did not stop within {PERF_STOP_SECONDS:g} s"
            return
        if perf.returncode not in (0, -signal.SIGINT, 128 + signal.SIGINT):
            self.profile.missing = f"perf record failed: {err.decode(errors='replace').strip()[-300:]}"
        self._recorded = True

    async def read(self) -> Profile:
        """The profile, once finish() ran: the samples inside the window, and the perf file removed."""
        try:
            if self._recorded and self.profile.missing is None:
                await asyncio.to_thread(_read_perf, os.path.join(self._dir, "perf.data"), self.profile, self._window)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
        return self.profile


def _pids(tree: Any) -> set[int]:
    return {p.pid for p in tree.processes()} if isinstance(tree, ProcTree) else set()


async def _watch_activity(url: str) -> Counter[tuple[int, str]]:
    """(pid, query's first words) -> how often seen, every 50 ms until cancelled."""
    seen: Counter[tuple[int, str]] = Counter()
    conn = await asyncpg.connect(url)
    try:
        while True:
            for row in await conn.fetch(_ACTIVITY):
                seen[(row["pid"], _role(row["what"]))] += 1
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        return seen
    finally:
        await conn.close()


def _role(query: str) -> str:
    return re.sub(r"\$\d+|\b\d+\b", "…", query).strip()


def _name_roles(profile: Profile, seen: Counter[tuple[int, str]]) -> None:
    by_pid: dict[int, Counter[str]] = defaultdict(Counter)
    for (pid, what), n in seen.items():
        by_pid[pid][what] += n
    for pid, counts in by_pid.items():
        profile.roles[pid] = " · ".join(what for what, _ in counts.most_common(2))


def _read_perf(path: str, profile: Profile, window: tuple[float, float]) -> None:
    done = subprocess.run(
        ["perf", "script", "-i", path, "-F", "comm,pid,time,ip,sym"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        profile.missing = f"perf script failed: {done.stderr.strip()[-300:]}"
        return
    parse_script(done.stdout, profile, window)


def parse_script(out: str, profile: Profile, window: tuple[float, float] | None = None) -> None:
    """Adds the samples of ``perf script -F comm,pid,time,ip,sym`` output inside ``window`` (monotonic s)."""
    for line in out.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        if window is not None and not window[0] <= float(m["time"]) <= window[1]:
            continue
        comm, pid, sym = m["comm"], int(m["pid"]), m["sym"].strip() or "?"
        profile.samples[pid] = profile.samples.get(pid, 0) + 1
        profile.comms[pid] = comm
        profile.symbols.setdefault(pid, Counter())[sym] += 1


def rows(profile: Profile, events: int, server_pids: set[int], min_share: float = 0.01) -> list[Row]:
    """One row per process that used at least ``min_share`` of a core, busiest first, then idle."""
    wall = profile.seconds or 1.0
    out: list[Row] = []
    for pid, n in sorted(profile.samples.items(), key=lambda kv: -kv[1]):
        if pid == 0:
            continue
        cpu = n / HZ
        if cpu / wall < min_share:
            continue
        comm = profile.comms.get(pid, "?")
        if pid in server_pids:
            role = "the service (Python)"
        elif profile.is_database(pid):
            role = profile.roles.get(pid, "postgres (never seen in a query)")
        else:
            role = f"not the service: {comm}"
        top = profile.symbols.get(pid, Counter()).most_common(TOP_SYMBOLS)
        out.append(
            {
                "process": f"{comm} {pid}",
                "doing": role,
                "cores": cpu / wall,
                "CPU s": cpu,
                "µs per ACKed event": cpu / events * 1e6 if events else None,
                "top functions (share of its samples)": ", ".join(f"{s} {c / n:.0%}" for s, c in top),
            }
        )
    idle = idle_seconds(profile)
    out.append({"process": "idle", "doing": "no process ran", "cores": idle / wall, "CPU s": idle})
    return out


def idle_seconds(profile: Profile) -> float:
    """The cores' time that no process used in the window."""
    busy = sum(n for pid, n in profile.samples.items() if pid != 0) / HZ
    return max(0.0, (os.cpu_count() or 1) * profile.seconds - busy)


def bound_note(profile: Profile, events: int, ceiling: float | None, server_pids: set[int]) -> str:
    """What the profile implies: the events/s of the same work spread perfectly over every core."""
    cores = os.cpu_count() or 1
    wall = profile.seconds or 1.0
    product = sum(n for pid, n in profile.samples.items() if pid in server_pids or (pid and profile.is_database(pid)))
    others = sum(n for pid, n in profile.samples.items() if pid != 0) - product
    if not events or not product:
        return "The profile saw no work."
    per_event = product / HZ / events * 1e6
    bound = cores / (per_event / 1e6)
    text = (
        f"Profile: the service and its PostgreSQL together spent **{per_event:.2f} µs of CPU per ACKed event** "
        f"(the load generator and everything else another {others / HZ / events * 1e6:.2f}). At that cost per event, "
        f"spread perfectly over all {cores} cores with nothing serialised, nothing idle and no load generator, they "
        f"would ACK at most **{bound:,.0f} events/s**"
    )
    if ceiling:
        text += f" = **{bound / ceiling:.2f}× the COPY ceiling** of this run"
    text += f". Meanwhile {idle_seconds(profile) / wall:.2f} of the {cores} cores stood idle."
    return text
