"""bench ingest --profile: perf's samples become CPU per process, per ACKed event, and a bound on events/s."""

from __future__ import annotations

import pytest

from bench import cpu_profile


def _lines(comm: str, pid: int, sym: str, n: int, at: float = 10.5) -> list[str]:
    return [f"  {comm}  {pid} {at + i / 1000:.6f}:  ffff0001 {sym}" for i in range(n)]


SCRIPT = "\n".join(
    _lines("postgres", 101, "_bt_compare", 6)
    + _lines("postgres", 101, "XLogInsert", 3)
    + _lines("postgres", 102, "exec_simple_query", 1)  # another cluster's backend
    + _lines("python", 200, "_PyEval_EvalFrameDefault", 3)
    + _lines("swapper", 0, "pv_native_safe_halt", 9)
    + _lines("kworker/u8:3-wr", 300, "", 1)
    + _lines("Web Content", 400, "js::RunScript", 2)  # a command name with a space
    + _lines("postgres", 101, "before the window", 5, at=9.0)
    + _lines("postgres", 101, "after the window", 5, at=12.0)
    + ["not a sample line", "  postgres  101  ffff0001 no_timestamp"]
)


def _profile(monkeypatch: pytest.MonkeyPatch) -> cpu_profile.Profile:
    monkeypatch.setattr(cpu_profile, "HZ", 10)  # 10 samples = 1 CPU second
    monkeypatch.setattr(cpu_profile.os, "cpu_count", lambda: 2)
    profile = cpu_profile.Profile(seconds=1.0, roles={101: "COPY events"}, database_pids={101})
    cpu_profile.parse_script(SCRIPT, profile, window=(10.0, 11.0))
    return profile


def test_only_samples_inside_the_window_count(monkeypatch: pytest.MonkeyPatch) -> None:
    profile = _profile(monkeypatch)
    assert profile.samples == {101: 9, 102: 1, 200: 3, 0: 9, 300: 1, 400: 2}
    assert profile.comms[400] == "Web Content"
    assert "before the window" not in profile.symbols[101] and "after the window" not in profile.symbols[101]


def test_samples_become_cpu_seconds_per_process_busiest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = cpu_profile.rows(_profile(monkeypatch), events=1_000_000, server_pids={200}, min_share=0.0)
    order = ["postgres 101", "python 200", "Web Content 400", "postgres 102", "kworker/u8:3-wr 300", "idle"]
    assert [r["process"] for r in rows] == order
    pg, service, browser, other_pg, worker, idle = rows
    assert pg["doing"] == "COPY events" and pg["CPU s"] == pytest.approx(0.9) and pg["cores"] == pytest.approx(0.9)
    assert pg["µs per ACKed event"] == pytest.approx(0.9)
    assert pg["top functions (share of its samples)"] == "_bt_compare 67%, XLogInsert 33%"
    assert service["doing"] == "the service (Python)" and service["CPU s"] == pytest.approx(0.3)
    assert other_pg["doing"] == "not the service: postgres"  # not the measured cluster's
    assert browser["doing"] == "not the service: Web Content"
    assert worker["top functions (share of its samples)"] == "? 100%"
    # 1 s on 2 cores less the 1.6 busy seconds (the swapper's own samples do not count).
    assert idle["CPU s"] == pytest.approx(0.4)


def test_the_bound_counts_the_service_and_its_own_cluster_only(monkeypatch: pytest.MonkeyPatch) -> None:
    note = cpu_profile.bound_note(_profile(monkeypatch), events=100_000, ceiling=400_000.0, server_pids={200})
    # 1.2 CPU s for 100,000 events = 12 µs each; 2 cores / 12 µs = 166,667 events/s = 0.42x of 400,000.
    assert "**12.00 µs of CPU per ACKed event**" in note
    assert "another 4.00" in note  # the other cluster's backend, the kworker and the browser: 0.4 s
    assert "**166,667 events/s**" in note and "**0.42× the COPY ceiling**" in note
    assert "0.40 of the 2 cores stood idle" in note
