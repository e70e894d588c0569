"""The test command runs the same checks as the anchors' `scripts/check`: lint, format, strict types, then tests."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> list[str]:
    lines = (ROOT / "bin" / "test").read_text().splitlines()
    return [line for line in lines if line.startswith(('"$VENV/bin/', 'exec "$VENV/bin/'))]


def test_bin_test_lints_formats_and_types_before_the_tests() -> None:
    assert _commands() == [
        '"$VENV/bin/ruff" check app test bench clients/python',
        '"$VENV/bin/ruff" format --check app test bench clients/python',
        '"$VENV/bin/mypy"',
        'exec "$VENV/bin/python" -m pytest "$@"',
    ]


def test_mypy_is_strict_over_app_and_the_python_uploader() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    assert config["files"] == ["app", "clients/python/eventservice_client"]


def test_the_dev_requirements_pin_mypy_and_the_asyncpg_stubs() -> None:
    pins = {
        line.split("==")[0]: line.split("==")[1]
        for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
        if "==" in line
    }
    assert "mypy" in pins
    assert pins["asyncpg-stubs"] == "0.32.0"
