"""What the documentation tests collect: Sybil's parsers, the files, one DocRun per file at a time."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

from test.docs import runner
from test.support import postgres as pg
from test.support.service import REPO, Service

LANGUAGES = {
    "sh": runner.evaluate_shell,
    "shell": runner.evaluate_shell,
    "bash": runner.evaluate_shell,
    "python": runner.evaluate_python,
    "js": runner.evaluate_browser,
    "html": runner.evaluate_browser,
    "json": runner.evaluate_json,
    "sql": runner.evaluate_sql,
}


class OutputDirectiveParser:
    """`<!-- output: keys-only "why" -->`: the next block's shown values are illustrative, its keys are not."""

    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer(directive="output", arguments=r"keys-only.*?")

    def __call__(self, document: Document) -> Iterable[Region]:
        for lexed in self.lexer(document):
            reason = re.sub(r"^keys-only\s*", "", str(lexed.lexemes["arguments"]))
            yield Region(lexed.start, lexed.end, reason or '""', runner.evaluate_output_directive)


SYBIL = Sybil(
    parsers=[
        *(CodeBlockParser(language, evaluator) for language, evaluator in LANGUAGES.items()),
        SkipParser(),
        OutputDirectiveParser(),
    ],
)
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _examples() -> Iterator[tuple[Path, Example]]:
    for path in DOCUMENTS:
        for example in SYBIL.parse(path):
            yield path, example


EXAMPLES = list(_examples())


class DocRuns:
    """One DocRun at a time: the next file's first example stops the previous file's server."""

    def __init__(self, postgres: pg.TestPostgres) -> None:
        self.postgres = postgres
        self.current: tuple[Path, runner.DocRun] | None = None

    def for_document(self, path: Path) -> runner.DocRun:
        if self.current is not None and self.current[0] == path:
            return self.current[1]
        self.close()
        label = "docs_" + re.sub(r"[^a-z0-9]+", "_", path.stem.lower())

        def start() -> Service:
            service = Service(asyncio.run(self.postgres.create_database(label)))
            service.start()
            return service

        self.current = (path, runner.DocRun(start))
        return self.current[1]

    def close(self) -> None:
        if self.current is not None:
            self.current[1].close()
            self.current = None
