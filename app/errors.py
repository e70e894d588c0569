"""The one JSON error body every HTTP endpoint answers with, and its WebSocket form."""

from __future__ import annotations

import http

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app.codes import ErrorCode


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def unavailable_response() -> JSONResponse:
    """What a read answers while the database is down: retry soon, not a 500."""
    return error_response(503, ErrorCode.UNAVAILABLE, "The database is unavailable; retry later.", {"Retry-After": "1"})


async def database_unavailable(_request: Request, _exc: Exception) -> Response:
    """The one 503 of every HTTP read: registered for DatabaseUnavailable (app/store/db.py)."""
    return unavailable_response()


async def deny_websocket(websocket: WebSocket, response: Response, reason: str, close_code: int = 1008) -> None:
    """Refuse a handshake with an HTTP answer where the server supports denial
    responses (uvicorn does), else with a close code before accept."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=close_code, reason=reason[:120])


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no route, wrong method, a missing static file) in the
    same JSON shape as ours, instead of its text/plain "Not Found"."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    path = request.url.path if len(request.url.path) <= 200 else request.url.path[:200] + "…"
    if exc.status_code == 404 and any(isinstance(r, WebSocketRoute) and r.path == path for r in request.app.routes):
        message = f"{path} is a WebSocket endpoint: open it with a WebSocket client (ws:// or wss://)."
        return error_response(426, ErrorCode.UPGRADE_REQUIRED, message, {"Upgrade": "websocket"})
    if exc.status_code == 404:
        code: str = ErrorCode.NOT_FOUND
        if path.rstrip("/") == "/session":
            message = "The session id is missing: GET /session/<UUID>, e.g. /session/0d856b46-48cd-4fba-946b-53d15b7b43e0."
        else:
            message = f"There is nothing at {path}; GET /openapi.json lists the endpoints."
    elif exc.status_code == 405:
        code = ErrorCode.METHOD_NOT_ALLOWED
        allow = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {path}" + (f"; allowed: {allow}." if allow else ".")
    else:
        try:
            phrase = http.HTTPStatus(exc.status_code).phrase
        except ValueError:  # a status code Python does not name
            phrase = "Error"
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        message = exc.detail if exc.detail != phrase else f"{phrase}."
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))
