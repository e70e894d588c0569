"""Every example of README.md and docs/*.md, run in order against a real server.

Sybil finds the fenced blocks and the skip directives (`documents`); the evaluators in
`runner` run them (see docs/testing.md, "The documentation's examples"). One test per
example, named `<file>:<line>`; the examples of one file share a fresh database and server.
"""

from __future__ import annotations

import unittest
from pathlib import Path

import pytest
from sybil import Example

from test.docs.documents import EXAMPLES, DocRuns
from test.support.service import REPO


@pytest.mark.parametrize(
    ("path", "example"), EXAMPLES, ids=[f"{path.relative_to(REPO)}:{example.line}" for path, example in EXAMPLES]
)
def test_example(path: Path, example: Example, doc_runs: DocRuns) -> None:
    example.namespace["run"] = doc_runs.for_document(path)
    try:
        example.evaluate()
    except unittest.SkipTest as skip:  # a skip directive: say where, not Sybil's frame
        pytest.skip(f"{path.relative_to(REPO)}:{example.line}: {skip}")


def test_every_document_has_examples_collected() -> None:
    """A parser that silently found nothing would make every file pass."""
    counted = {path for path, _ in EXAMPLES}
    assert REPO / "README.md" in counted
    assert len(counted) >= 8, sorted(str(p) for p in counted)
