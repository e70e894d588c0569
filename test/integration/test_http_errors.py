"""Every HTTP error is JSON `{"error","message"}`, the router's own included, and /ws
refuses query parameters it does not read instead of ignoring a typo."""

from __future__ import annotations

import base64
import os
from typing import Any

import aiohttp
import pytest

from test.conftest import StartService
from test.support.clients import Uploader, event, new_session
from test.support.service import Service

HANDSHAKE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}


async def request(service: Service, method: str, path: str) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as http, http.request(method, service.url + path) as response:
        body = await response.json(content_type=None) if method != "HEAD" else None
        return response.status, dict(response.headers), body


def assert_json_error(headers: dict[str, str], body: Any, code: str) -> None:
    assert headers["Content-Type"] == "application/json"
    assert set(body) == {"error", "message"} and body["error"] == code
    assert body["message"].endswith(".") and len(body["message"]) > 20


@pytest.mark.parametrize("path", ["/nope", "/sessions/extra", "/static/missing.js", "/session/a/b", "/ws/extra"])
async def test_an_unknown_path_is_a_json_404(service: Service, path: str) -> None:
    status, headers, body = await request(service, "GET", path)
    assert status == 404
    assert_json_error(headers, body, "not_found")
    assert path in body["message"] and "/openapi.json" in body["message"]


@pytest.mark.parametrize("path", ["/session/", "/session"])
async def test_a_session_lookup_without_an_id_says_what_is_missing(service: Service, path: str) -> None:
    status, headers, body = await request(service, "GET", path)
    assert status == 404
    assert_json_error(headers, body, "not_found")
    assert "session id is missing" in body["message"] and "/session/<UUID>" in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthcheck", {"GET", "HEAD"}),
        ("DELETE", f"/session/{'0d856b46-48cd-4fba-946b-53d15b7b43e0'}", {"GET", "HEAD"}),
        ("PUT", "/sessions", {"GET", "HEAD"}),
        ("POST", "/database_events", {"GET", "HEAD"}),
        ("POST", "/static/monitor.js", {"GET", "HEAD"}),
        ("PATCH", "/", {"GET", "HEAD"}),
    ],
)
async def test_a_wrong_method_is_a_json_405_with_allow(service: Service, method: str, path: str, allow: set[str]) -> None:
    status, headers, body = await request(service, method, path)
    assert status == 405
    assert {m.strip() for m in headers["Allow"].split(",")} == allow
    assert_json_error(headers, body, "method_not_allowed")
    assert method in body["message"] and path in body["message"]


async def test_plain_http_to_the_websocket_endpoint_says_to_upgrade(service: Service) -> None:
    status, headers, body = await request(service, "GET", "/ws")
    assert status == 426 and headers["Upgrade"] == "websocket"
    assert_json_error(headers, body, "upgrade_required")
    assert "WebSocket" in body["message"]


async def test_head_of_an_unknown_path_is_404_without_a_body(service: Service) -> None:
    status, headers, _ = await request(service, "HEAD", "/nope")
    assert status == 404 and headers["Content-Type"] == "application/json"


# --------------------------------------------------------------------------- /ws query parameters


async def ws_handshake(service: Service, query: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    key = {"Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{service.url}/ws{query}", headers={**HANDSHAKE, **key, **(headers or {})}) as response,
    ):
        return response.status, await response.json(content_type=None) if response.status != 101 else None


@pytest.mark.parametrize(
    ("query", "name", "meant"),
    [
        ("?sessionid=0d856b46-48cd-4fba-946b-53d15b7b43e0", "sessionid", "sessionId"),
        ("?session_id=0d856b46-48cd-4fba-946b-53d15b7b43e0", "session_id", "sessionId"),
        ("?sessionId=0d856b46-48cd-4fba-946b-53d15b7b43e0&timestampunit=s", "timestampunit", "timestampUnit"),
        ("?Token=x", "Token", "token"),
        ("?batch=1", "batch", None),
    ],
)
async def test_an_unknown_ws_parameter_refuses_the_handshake(service: Service, query: str, name: str, meant: str | None) -> None:
    status, body = await ws_handshake(service, query)
    assert status == 400
    assert body["error"] == "unknown_parameter"
    message = body["message"]
    assert repr(name) in message
    assert "sessionId, timestampUnit and token" in message
    assert (f"did you mean {meant}?" in message) if meant else ("did you mean" not in message)


async def test_a_library_client_with_a_typo_fails_to_connect_instead_of_storing_nothing(service: Service) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await Uploader.open(service.ws_url, f"?sessionid={new_session()}")
    assert raised.value.status == 400


async def test_the_accepted_parameters_still_connect(service: Service) -> None:
    session = new_session()
    async with await Uploader.open(service.ws_url, f"?sessionId={session}&timestampUnit=ms") as up:
        assert (await up.send([event("fine", 1_700_000_000_000)]))["type"] == "ACK"


async def test_a_token_in_the_query_string_is_accepted_by_ws(start_service: StartService) -> None:
    svc = await start_service(env={"INGEST_TOKENS": "query-token-123"})
    session = new_session()
    async with await Uploader.open(svc.ws_url, f"?sessionId={session}&token=query-token-123") as up:
        assert (await up.send([event("with-token", 1_700_000_000_000)]))["type"] == "ACK"
    # The token check comes first: a bad token is still a 401, whatever else is in the query.
    status, body = await ws_handshake(svc, f"?sessionId={session}&token=wrong-token")
    assert status == 401 and body["error"] == "unauthorized"
