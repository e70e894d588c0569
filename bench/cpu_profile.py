"""Where the CPU of a measured window goes, process by process (``bench ingest --profile``).

``perf record`` samples every core at a fixed rate while the window runs, and
``pg_stat_activity`` is read meanwhile so that each PostgreSQL backend can be named by what
it was doing (the writer's COPY, the stream's read-back, the fold...). The result says which
part of the work is serialised (one backend near a whole core while others idle) and what
each part costs per acknowledged event, so that a bound on events/s follows from the
machine's cores without guessing.

Needs ``perf`` on the PATH and permission to sample every CPU (root, or
``kernel.perf_event_paranoid`` <= 0); otherwise the profile says why it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .report import Row
from .service import Meter

HZ = 999
TOP_SYMBOLS = 4

# The first words of a backend's query name its role; the rest (values, ids) would
# split one role into many.
_ACTIVITY = """
SELECT pid, coalesce(nullif(left(regexp_replace(query, '\\s+', ' ', 'g'), 60), ''), backend_type) AS what
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND state IS DISTINCT FROM 'idle'
"""


@dataclass
class Profile:
    samples: dict[int, int] = field(default_factory=dict)  # pid -> samples
    comms: dict[int, str] = field(default_factory=dict)
    symbols: dict[int, Counter[str]] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    missing: str | None = None  # why there is no profile

    def cpu_seconds(self, pid: int) -> float:
        return self.samples.get(pid, 0) / HZ


class ProfilingMeter(Meter):
    """A Meter that also records a perf profile of the whole machine over the same span."""

    def __init__(self, server: Any, database: Any, database_url: str) -> None:
        super().__init__(server, database)
        self._url = database_url
        self._dir = tempfile.mkdtemp(prefix="bench-perf-")
        self._perf: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[Counter[tuple[int, str]]] | None = None
        self.profile = Profile()

    def start(self) -> None:
        super().start()
        if shutil.which("perf") is None:
            self.profile.missing = "perf is not on the PATH"
            return
        self._perf = subprocess.Popen(
            ["perf", "record", "-F", str(HZ), "-a", "-o", os.path.join(self._dir, "perf.data")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._watch = asyncio.get_running_loop().create_task(_watch_activity(self._url))

    def stop(self) -> dict[str, float | None]:
        result = super().stop()
        self.profile.seconds = result.get("wall") or 0.0
        if self._perf is None:
            return result
        self._perf.send_signal(2)  # SIGINT: perf writes its file and exits
        _, err = self._perf.communicate(timeout=30)
        if self._perf.returncode not in (0, -2, 130):
            self.profile.missing = f"perf record failed: {err.decode(errors='replace').strip()[-300:]}"
        return result

    async def finish(self) -> Profile:
        """Reads the perf file and the backends' roles; call once after stop()."""
        try:
            if self._watch is not None:
                self._watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):  # cancelled before it started
                    _name_roles(self.profile, await self._watch)
            if self._perf is not None and self.profile.missing is None:
                await asyncio.to_thread(_read_perf, os.path.join(self._dir, "perf.data"), self.profile)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
        return self.profile


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


def _read_perf(path: str, profile: Profile) -> None:
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "comm,pid,ip,sym"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    parse_script(out, profile)


def parse_script(out: str, profile: Profile) -> None:
    """Adds the samples of ``perf script -F comm,pid,ip,sym`` output to the profile."""
    for line in out.splitlines():
        parts = line.split(None, 3)  # comm, pid, address, symbol
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        comm, pid = parts[0], int(parts[1])
        sym = parts[3].strip() if len(parts) > 3 else "?"
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
        elif comm == "postgres":
            role = profile.roles.get(pid, "postgres (never seen in a query)")
        else:
            role = comm
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
    idle = profile.samples.get(0, 0) / HZ
    out.append({"process": "idle", "doing": "no process ran", "cores": idle / wall, "CPU s": idle})
    return out


def bound_note(profile: Profile, events: int, ceiling: float | None, server_pids: set[int]) -> str:
    """What the profile implies: the events/s of the same work spread perfectly over every core."""
    cores = os.cpu_count() or 1
    wall = profile.seconds or 1.0
    product = sum(n for pid, n in profile.samples.items() if pid in server_pids or profile.comms.get(pid) == "postgres")
    others = sum(n for pid, n in profile.samples.items() if pid != 0) - product
    if not events or not product:
        return "The profile saw no work."
    per_event = product / HZ / events * 1e6
    bound = cores / (per_event / 1e6)
    text = (
        f"Profile: the service and PostgreSQL together spent **{per_event:.2f} µs of CPU per ACKed event** "
        f"(the load generator and everything else another {others / HZ / events * 1e6:.2f}). That work spread "
        f"perfectly over all {cores} cores, nothing serialised, nothing idle and no load generator, would ACK at "
        f"most **{bound:,.0f} events/s**"
    )
    if ceiling:
        text += f" = **{bound / ceiling:.2f}× the COPY ceiling** of this run"
    idle = profile.samples.get(0, 0) / HZ / wall
    return text + f". Meanwhile {idle:.2f} of the {cores} cores stood idle."
