"""The documentation tests' fixture: the files' servers, one at a time, stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from test.docs.documents import DocRuns
from test.support import postgres as pg


@pytest.fixture(scope="module")
def doc_runs(postgres: pg.TestPostgres) -> Iterator[DocRuns]:
    runs = DocRuns(postgres)
    try:
        yield runs
    finally:
        runs.close()
