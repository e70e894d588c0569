"""The OpenAPI document: byte-for-byte what it was, and consistent with itself.

The snapshots in test/unit/snapshots/ were written from the document as served
before `document` was split into per-endpoint builders; a refactor that changes
one byte of the served JSON (key order included) fails here. If the contract is
changed on purpose, regenerate them with the snippet in `_regenerate`'s docstring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from app.config import Settings
from app.routes.openapi import document

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _document(settings: Settings) -> dict[str, Any]:
    return document(secured=bool(settings.read_tokens), ingest_secured=bool(settings.ingest_tokens))


def _regenerate() -> None:
    """python -c 'from test.unit.test_openapi import _regenerate; _regenerate()'"""
    for name, settings in CASES.items():
        (SNAPSHOTS / name).write_bytes(orjson.dumps(_document(settings), option=orjson.OPT_INDENT_2) + b"\n")


CASES = {
    "openapi_default.json": Settings(),
    "openapi_read_tokens.json": Settings(read_tokens=("tok-1",)),
    "openapi_ingest_tokens.json": Settings(ingest_tokens=("tok-1",)),
}


@pytest.mark.parametrize("snapshot", sorted(CASES))
def test_openapi_document_matches_snapshot(snapshot: str) -> None:
    served = orjson.dumps(_document(CASES[snapshot]), option=orjson.OPT_INDENT_2) + b"\n"
    assert served == (SNAPSHOTS / snapshot).read_bytes()
