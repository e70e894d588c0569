"""One error shape: every HTTP error is JSON {error, message}; a refused WebSocket gets it too, or a close code."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from app.errors import deny_websocket, error_response, http_exception, unavailable_response


async def _nothing(_: Any) -> None:
    return None


APP = Starlette(routes=[Route("/session/{id}", _nothing), WebSocketRoute("/ws", _nothing)])


def _request(path: str, method: str = "GET") -> Request:
    return Request({"type": "http", "method": method, "path": path, "headers": [], "query_string": b"", "app": APP})


def _body(response: Response) -> dict[str, Any]:
    assert response.media_type == "application/json"
    doc: dict[str, Any] = orjson.loads(response.body)
    assert set(doc) == {"error", "message"}, "exactly the two documented fields"
    assert isinstance(doc["message"], str) and doc["message"]
    return doc


def _handle(path: str, exc: HTTPException, method: str = "GET") -> Response:
    return asyncio.run(http_exception(_request(path, method), exc))


def test_error_response_is_the_shape_with_status_and_headers() -> None:
    response = error_response(429, "rate_limited", "Slow down.", {"Retry-After": "3"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert _body(response) == {"error": "rate_limited", "message": "Slow down."}


def test_unavailable_asks_for_a_retry_soon() -> None:
    response = unavailable_response()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert _body(response)["error"] == "unavailable"


def test_an_unknown_path_is_a_json_404_pointing_at_the_endpoint_list() -> None:
    response = _handle("/nope", HTTPException(404))
    assert response.status_code == 404
    doc = _body(response)
    assert doc["error"] == "not_found"
    assert "/nope" in doc["message"] and "/openapi.json" in doc["message"]


@pytest.mark.parametrize("path", ["/session", "/session/"])
def test_a_session_path_without_an_id_says_the_id_is_missing(path: str) -> None:
    doc = _body(_handle(path, HTTPException(404)))
    assert doc["error"] == "not_found"
    assert "session id is missing" in doc["message"]


def test_a_very_long_path_is_cut_in_the_message() -> None:
    path = "/" + "x" * 5000
    doc = _body(_handle(path, HTTPException(404)))
    assert len(doc["message"]) < 400
    assert "…" in doc["message"]


def test_http_on_the_websocket_path_is_426_upgrade_required() -> None:
    response = _handle("/ws", HTTPException(404))
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"
    assert _body(response)["error"] == "upgrade_required"


def test_wrong_method_names_the_allowed_ones_and_keeps_allow() -> None:
    response = _handle("/session/x", HTTPException(405, headers={"Allow": "GET, HEAD"}), method="DELETE")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    doc = _body(response)
    assert doc["error"] == "method_not_allowed"
    assert "DELETE" in doc["message"] and "GET, HEAD" in doc["message"]


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "bad_request"), (429, "too_many_requests"), (431, "request_header_fields_too_large"), (502, "bad_gateway")],
)
def test_other_statuses_get_a_code_from_their_phrase(status: int, code: str) -> None:
    response = _handle("/x", HTTPException(status))
    assert response.status_code == status
    assert _body(response)["error"] == code


def test_a_status_python_does_not_name_is_a_plain_error() -> None:
    response = _handle("/x", HTTPException(599, detail="Upstream gave up."))
    assert response.status_code == 599
    assert _body(response) == {"error": "error", "message": "Upstream gave up."}


def test_a_specific_detail_is_kept_as_the_message() -> None:
    assert _body(_handle("/x", HTTPException(400, detail="Bad cursor.")))["message"] == "Bad cursor."


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses_stay_bodiless(status: int) -> None:
    response = _handle("/x", HTTPException(status, headers={"ETag": '"1"'}))
    assert response.status_code == status
    assert response.body == b""
    assert response.headers["etag"] == '"1"'


class _Socket:
    """The ASGI side of a WebSocket handshake: records what the app sends."""

    def __init__(self, denial: bool) -> None:
        self.sent: list[dict[str, Any]] = []
        self.scope: dict[str, Any] = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
        if denial:
            self.scope["extensions"] = {"websocket.http.response": {}}

    async def receive(self) -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(dict(message))


def _deny(denial: bool) -> list[dict[str, Any]]:
    socket = _Socket(denial)

    async def run() -> None:
        websocket = WebSocket(socket.scope, socket.receive, socket.send)
        await websocket.receive()  # the handshake request, as a route would have it
        await deny_websocket(websocket, error_response(401, "unauthorized", "No token."), "unauthorized: " + "x" * 300)

    asyncio.run(run())
    return socket.sent


def test_deny_websocket_answers_http_where_the_server_can() -> None:
    sent = _deny(denial=True)
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 401
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert orjson.loads(body) == {"error": "unauthorized", "message": "No token."}


def test_deny_websocket_closes_with_a_code_and_a_short_reason_elsewhere() -> None:
    sent = _deny(denial=False)
    assert len(sent) == 1 and sent[0]["type"] == "websocket.close"
    assert sent[0]["code"] == 1008
    # A close frame's reason must fit in 123 bytes.
    assert 0 < len(sent[0]["reason"].encode()) <= 123
