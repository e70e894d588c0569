"""The markdown table every scenario prints."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

import psutil

Row = dict[str, Any]

# A measured window during which other processes (other test suites, a browser, a
# profiler) used more than this many cores on average is "disturbed": the service
# competed with them for the same cores, so its figures are not its own.
# `python -m bench ... --disturbed-above CORES` changes it.
DISTURBED_CORES = 0.1


def disturbed(m: dict[str, Any]) -> str | None:
    """The "disturbed" column of a row from a Meter's result: no, or yes with the other processes' cores."""
    other, wall = m.get("other"), m.get("wall")
    if other is None or not wall:
        return None
    cores = other / wall
    return f"yes ({cores:.2f} cores)" if cores > DISTURBED_CORES else "no"


def is_disturbed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("yes")


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def table(rows: Sequence[Row]) -> str:
    """One markdown table; the columns are the union of the rows' keys, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(col)) for col in columns) + " |")
    return "\n".join(lines)


def machine() -> str:
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), {mem:.1f} GiB RAM, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def emit(title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> None:
    print()
    print(f"### {title}")
    print()
    print(f"Machine: {machine()}")
    print()
    print(table(rows))
    if any(is_disturbed(row.get("disturbed")) for row in rows):
        notes = [
            *notes,
            f"**Disturbed** rows: other processes used more than {DISTURBED_CORES:g} cores on average during their "
            "window (*other CPU s*), competing with the service, its database and the load generator for the same "
            "cores; their throughput and latency understate the service. Rerun them on a quiet machine.",
        ]
    for note in notes:
        print()
        print(note)
    print(flush=True)
