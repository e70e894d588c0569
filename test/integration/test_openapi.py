"""schemathesis against /openapi.json on a running server: no 500 on any generated request.

Two servers: one open (no tokens) and one with READ_TOKENS, whose document then
declares the security schemes; the read token is sent where the operation asks
for one (and schemathesis's ignored_auth check re-sends without it, expecting a
refusal). Every default check runs: no 5xx, status codes, content types and
bodies as documented.
Each operation gets a bounded number of examples so the suite stays fast.

/database_events never ends when it succeeds, so its cases are sent by hand with
a streaming request: a 200 must be an event stream (read no further), and
anything else a finite JSON error, which is validated against the document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from test.support import postgres as pg
from test.support.service import Service

READ = "openapi-read-token-0123456789"
# derandomize: the same examples on every run, so CI never fails on a seed that a
# previous run did not draw; a regression in what they cover still fails.
EXAMPLES = settings(max_examples=20, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


async def _start(postgres: pg.TestPostgres, label: str, env: dict[str, str]) -> Service:
    svc = Service(await postgres.create_database(label), env=env)
    svc.start()
    return svc


@pytest.fixture(scope="module")
async def open_server(postgres: pg.TestPostgres) -> AsyncIterator[Service]:
    svc = await _start(postgres, "openapi_open", {})
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
async def secured_server(postgres: pg.TestPostgres) -> AsyncIterator[Service]:
    svc = await _start(postgres, "openapi_secured", {"READ_TOKENS": READ, "INGEST_TOKENS": "openapi-ingest-token-0123"})
    try:
        yield svc
    finally:
        svc.stop()


OPERATIONS = [
    "/healthcheck",
    "/readyz",
    "/session/{session_id}",
    "/sessions",
    "/database_events",
    "/metrics",
    "/openapi.json",
    "/",
    "/stats/summary",
    "/stats/timeseries",
    "/stats/names",
    "/stats/funnel",
    "/stats/breakdown",
]
_OPEN = {"/healthcheck", "/readyz", "/", "/openapi.json"}
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# Negative cases (values the document rules out) exist only where there is a
# parameter to break: for the others schemathesis can generate nothing.
WITH_PARAMETERS = {
    "/session/{session_id}",
    "/sessions",
    "/database_events",
    "/stats/summary",
    "/stats/timeseries",
    "/stats/names",
    "/stats/funnel",
    "/stats/breakdown",
}
CASES = [(path, POSITIVE) for path in OPERATIONS] + [(path, NEGATIVE) for path in OPERATIONS if path in WITH_PARAMETERS]


def _check(case: schemathesis.Case, headers: dict[str, str] | None) -> None:
    if case.path == "/database_events":
        kwargs = case.as_transport_kwargs(headers=headers)
        with requests.request(**kwargs, stream=True, timeout=10) as response:
            assert response.status_code < 500 or response.status_code == 503, response.status_code
            if response.status_code == 200:
                assert response.headers["content-type"].startswith("text/event-stream")
                return
            case.validate_response(response, checks=[not_a_server_error], headers=headers)
        return
    # /stats/…: from < to and the bucket count are rules across parameters, which
    # OpenAPI cannot express, so a schema-valid request may rightly get a 400; every
    # other check (no 5xx, documented status, content type, body) still applies.
    # Negative cases of a string query parameter (`?name=false` for a "boolean")
    # are still strings, and any string is a valid event name, so a 200 is right.
    # /sessions filters likewise: from < to, min <= max, a time's format. POST /batch: a
    # body the schema allows (any JSON) is mostly not a batch; its 400 is right.
    loose = case.path.startswith("/stats/") or case.path in ("/sessions", "/batch")
    excluded = [positive_data_acceptance, negative_data_rejection] if loose else None
    case.call_and_validate(headers=headers, timeout=10, excluded_checks=excluded)


def _fuzz(
    server: Service, path: str, mode: schemathesis.GenerationMode, headers: dict[str, str] | None, method: str = "GET"
) -> None:
    # The pytest plugin's per-operation subtests do not run under this pytest, so
    # each operation's strategy is driven by a plain @given here.
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operation = schema[path][method]

    @EXAMPLES
    @given(case=operation.as_strategy(mode))
    def run(case: schemathesis.Case) -> None:
        _check(case, headers)

    run()


@pytest.mark.parametrize(("path", "mode"), CASES, ids=[f"{p}-{m.value}" for p, m in CASES])
def test_open_server_conforms_and_never_fails(open_server: Service, path: str, mode: schemathesis.GenerationMode) -> None:
    _fuzz(open_server, path, mode, None)


@pytest.mark.parametrize(("path", "mode"), CASES, ids=[f"{p}-{m.value}" for p, m in CASES])
def test_secured_server_conforms_and_never_fails(secured_server: Service, path: str, mode: schemathesis.GenerationMode) -> None:
    _fuzz(secured_server, path, mode, None if path in _OPEN else {"Authorization": f"Bearer {READ}"})


@pytest.mark.parametrize("mode", [POSITIVE, NEGATIVE], ids=["positive", "negative"])
def test_post_batch_conforms_and_never_fails(open_server: Service, mode: schemathesis.GenerationMode) -> None:
    _fuzz(open_server, "/batch", mode, None, method="POST")


async def test_document_is_open_and_describes_security(secured_server: Service, open_server: Service) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(secured_server.url + "/openapi.json") as response:
            assert response.status == 200
            secured = await response.json()
        async with http.get(open_server.url + "/openapi.json") as response:
            unsecured = await response.json()
    assert secured["openapi"].startswith("3.")
    assert set(secured["components"]["securitySchemes"]) == {"bearerToken", "queryToken"}
    for path in ("/session/{session_id}", "/sessions", "/database_events", "/metrics", "/stats/summary", "/stats/funnel"):
        assert secured["paths"][path]["get"]["security"] == [{"bearerToken": []}, {"queryToken": []}]
        assert "security" not in unsecured["paths"][path]["get"]
        assert "401" in secured["paths"][path]["get"]["responses"]
    assert "/ws" not in secured["paths"]
    assert secured["paths"]["/batch"]["post"]["security"] == [{"bearerToken": []}, {"queryToken": []}]
    assert "security" not in unsecured["paths"]["/batch"]["post"]
