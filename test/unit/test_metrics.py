"""Every metric the metrics table (docs/operations.md) documents exists with its labels, and every metric is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase

from app import metrics

README = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
# A table row's metric cells: `eventservice_name{label}` (label optional).
_DOCUMENTED = re.compile(r"`(eventservice_[a-z_]+)(?:\{([a-z_]+)(?:=\"[a-z_]+\")?\})?`")


def _instruments() -> dict[str, MetricWrapperBase]:
    """Exposed name (counters with their _total) -> instrument, from the module itself."""
    found: dict[str, MetricWrapperBase] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                found[family.name + ("_total" if family.type == "counter" else "")] = value
    return found


def _documented() -> dict[str, str | None]:
    rows = [line for line in README.splitlines() if line.lstrip().startswith("|") and "`eventservice_" in line]
    assert len(rows) >= 10, "the README's metrics table was not found"
    documented: dict[str, str | None] = {}
    for row in rows:
        first_cell = row.strip().strip("|").split("|")[0]
        for name, label in _DOCUMENTED.findall(first_cell):
            documented[name] = label or None
    return documented


def test_the_module_defines_instruments_in_its_registry() -> None:
    assert len(_instruments()) >= 15
    exposition = generate_latest(metrics.REGISTRY).decode()
    for name in _instruments():
        assert f"# HELP {name.removesuffix('_total')}" in exposition or f"# HELP {name}" in exposition


@pytest.mark.parametrize(("name", "label"), sorted(_documented().items()))
def test_documented_metric_exists_with_its_label(name: str, label: str | None) -> None:
    instrument = _instruments().get(name)
    assert instrument is not None, f"README documents {name}, app/metrics.py does not define it"
    if label is None:
        return
    probe = "unit-test-probe"
    instrument.labels(**{label: probe})  # a wrong label name raises ValueError
    instrument.remove(probe)


def test_every_metric_is_mentioned_in_the_readme() -> None:
    undocumented = [name for name in _instruments() if name not in README]
    assert undocumented == []


def test_one_process_exposes_its_own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert metrics.exposition_registry() is metrics.REGISTRY


def test_workers_expose_the_multiprocess_sum(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = metrics.exposition_registry()
    assert registry is not metrics.REGISTRY
    assert generate_latest(registry) == b""  # no worker wrote a file yet: nothing, not this process's values
