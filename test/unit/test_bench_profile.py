"""bench ingest --profile: perf's samples become CPU per process, per ACKed event, and a bound on events/s."""

from __future__ import annotations

import pytest

from bench import cpu_profile

SCRIPT = "\n".join(
    ["  postgres  101  ffff0001 _bt_compare"] * 6
    + ["  postgres  101  ffff0002 XLogInsert"] * 3
    + ["  python  200  ffff0003 _PyEval_EvalFrameDefault"] * 3
    + ["  swapper  0  ffff0004 pv_native_safe_halt"] * 9
    + ["  kworker/u8:3-wr  300  ffff0005 ", "not a sample line"]
)


def _profile(monkeypatch: pytest.MonkeyPatch) -> cpu_profile.Profile:
    monkeypatch.setattr(cpu_profile, "HZ", 10)  # 10 samples = 1 CPU second
    monkeypatch.setattr(cpu_profile.os, "cpu_count", lambda: 2)
    profile = cpu_profile.Profile(seconds=1.0, roles={101: "COPY events"})
    cpu_profile.parse_script(SCRIPT, profile)
    return profile


def test_samples_become_cpu_seconds_per_process_busiest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = cpu_profile.rows(_profile(monkeypatch), events=1_000_000, server_pids={200}, min_share=0.0)
    assert [r["process"] for r in rows] == ["postgres 101", "python 200", "kworker/u8:3-wr 300", "idle"]
    pg, service, worker, idle = rows
    assert pg["doing"] == "COPY events" and pg["CPU s"] == pytest.approx(0.9) and pg["cores"] == pytest.approx(0.9)
    assert pg["µs per ACKed event"] == pytest.approx(0.9)
    assert pg["top functions (share of its samples)"] == "_bt_compare 67%, XLogInsert 33%"
    assert service["doing"] == "the service (Python)" and service["CPU s"] == pytest.approx(0.3)
    assert worker["top functions (share of its samples)"] == "? 100%"
    assert idle["CPU s"] == pytest.approx(0.9)


def test_the_bound_counts_the_service_and_postgres_only(monkeypatch: pytest.MonkeyPatch) -> None:
    note = cpu_profile.bound_note(_profile(monkeypatch), events=100_000, ceiling=400_000.0, server_pids={200})
    # 1.2 CPU s for 100,000 events = 12 µs each; 2 cores / 12 µs = 166,667 events/s = 0.42x of 400,000.
    assert "**12.00 µs of CPU per ACKed event**" in note
    assert "another 1.00" in note  # the kworker's one sample, 0.1 s
    assert "**166,667 events/s**" in note and "**0.42× the COPY ceiling**" in note
    assert "0.90 of the 2 cores stood idle" in note
