"""bench marks a row "disturbed" when other processes took CPU during its window."""

from __future__ import annotations

import pytest

from bench import report


def test_a_window_is_disturbed_past_the_threshold_of_other_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "DISTURBED_CORES", 0.1)
    assert report.disturbed({"other": 0.4, "wall": 5.0}) == "no"  # 0.08 cores
    assert report.disturbed({"other": 2.5, "wall": 5.0}) == "yes (0.50 cores)"
    assert report.disturbed({"other": None, "wall": 5.0}) is None  # not measured: neither yes nor no
    assert report.disturbed({}) is None


def test_the_table_explains_disturbed_rows_only_when_there_are_some(capsys: pytest.CaptureFixture[str]) -> None:
    report.emit("t", [{"run": "a", "disturbed": "no"}])
    assert "**Disturbed**" not in capsys.readouterr().out
    report.emit("t", [{"run": "a", "disturbed": "no"}, {"run": "b", "disturbed": "yes (1.20 cores)"}])
    out = capsys.readouterr().out
    assert "| b | yes (1.20 cores) |" in out and "**Disturbed** rows" in out
