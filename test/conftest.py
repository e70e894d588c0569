"""Fixtures: one real PostgreSQL per run, a fresh database and server per test module.

`service` is the shared server of a module. Tests that need their own settings use
`start_service(*flags, env=...)`, which gives them a fresh database and process and
stops it at the end of the test.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest

from test.support.postgres import StandalonePostgres, TestPostgres
from test.support.service import Service

StartService = Callable[..., Awaitable[Service]]


@pytest.fixture(scope="session")
def postgres() -> Iterator[TestPostgres]:
    pg = TestPostgres()
    try:
        yield pg
    finally:
        pg.close()


def _label(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")


@pytest.fixture(scope="module")
async def service(postgres: TestPostgres, request: pytest.FixtureRequest) -> AsyncIterator[Service]:
    url = await postgres.create_database(_label(request))
    svc = Service(url)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
async def start_service(postgres: TestPostgres, request: pytest.FixtureRequest) -> AsyncIterator[StartService]:
    started: list[Service] = []

    async def start(*args: str, env: dict[str, str] | None = None, database_url: str | None = None) -> Service:
        url = database_url or await postgres.create_database(_label(request))
        svc = Service(url, *args, env=env)
        svc.start()
        started.append(svc)
        return svc

    try:
        yield start
    finally:
        for svc in started:
            svc.stop()


@pytest.fixture(scope="module")
async def sql(service: Service) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the module's database, as an operator's psql would be.

    Module-scoped like `service`: hypothesis tests cannot take function-scoped fixtures.
    """
    conn = await asyncpg.connect(service.database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def standalone_postgres() -> Iterator[StandalonePostgres]:
    """A PostgreSQL of its own on a TCP port, for tests that stop, crash or start it."""
    pg = StandalonePostgres()
    try:
        yield pg
    finally:
        pg.close()
