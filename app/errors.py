"""The one JSON error body every HTTP endpoint answers with, and its WebSocket form."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def unavailable_response() -> JSONResponse:
    """What a read answers while the database is down: retry soon, not a 500."""
    return error_response(503, "unavailable", "The database is unavailable; retry later.", {"Retry-After": "1"})


async def deny_websocket(websocket: WebSocket, response: Response, reason: str, close_code: int = 1008) -> None:
    """Refuse a handshake with an HTTP answer where the server supports denial
    responses (uvicorn does), else with a close code before accept."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=close_code, reason=reason[:120])
