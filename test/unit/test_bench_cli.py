"""The benchmarks are not run in CI, so a broken import there would go unseen: load each one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.__main__ import SCENARIOS


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_bench_scenario_loads_and_describes_itself(scenario: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", scenario, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
