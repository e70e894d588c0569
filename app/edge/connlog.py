"""One structured log line per WebSocket / SSE connection: when it opens and when it closes.

An ASGI middleware, outermost after CORS, so it sees every connection however it
ends: refused at the edge (origin, token, capacity: one `refused` line with the
status), or opened and later closed (an `open` line, then a `close` line with
its duration, counts and close code). Each connection gets a `Connection`
record with a short random id, the one value this middleware leaves in the
scope (CONNECTION_KEY, read with `connection(scope)`): the other lines about the
connection (rejected batches) carry the same `conn` field, and the route reports
into it what only the route knows.

Frames received and the close code come from the ASGI messages. What a reply
meant (ACK or ERROR) is the /ws route's to say (`Connection.answered`), and the
SSE body is written below every middleware (app/stream/response.py), so the
stream route hands `Connection.wrote` to its response. Plain HTTP requests get no line
(uvicorn's access log is off, on purpose: one line per request would drown the
rest); a 5xx answer does get one, as an error.

Fields: conn, kind (ws or sse), remote, session (the sessionId or session_id
filters, when they are UUIDs; anything else a client typed is not echoed),
principal (e.g. ingest#1, never the token), then per close: seconds, frames,
acks, errors, code (WebSocket close code) or bytes (SSE).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.edge.auth import PRINCIPAL_KEY
from app.ids import parse_uuid

log = logging.getLogger("eventservice.conn")

CONNECTION_KEY = "eventservice.conn"
SSE_PATH = "/database_events"


class Connection:
    """One logged connection: its id, and the counts the route reports into it."""

    __slots__ = ("acks", "bytes_sent", "errors", "id")

    def __init__(self) -> None:
        self.id = secrets.token_hex(4)
        self.acks = 0
        self.errors = 0
        self.bytes_sent = 0

    def answered(self, *, error: bool) -> None:
        """A WebSocket frame was answered: with an ERROR, or else an ACK."""
        if error:
            self.errors += 1
        else:
            self.acks += 1

    def wrote(self, size: int) -> None:
        """Bytes of a response body written where this middleware cannot see them."""
        self.bytes_sent += size


def connection(scope: Scope) -> Connection | None:
    """The record of the connection a scope belongs to; None without this middleware."""
    return scope.get(CONNECTION_KEY)


def _remote(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _sessions(scope: Scope) -> str | None:
    """The session(s) a connection is about, only in canonical UUID form."""
    query = scope.get("query_string", b"").decode("latin-1")
    wanted = "sessionId" if scope["type"] == "websocket" else "session_id"
    found = [parse_uuid(value) for key, value in parse_qsl(query, keep_blank_values=True) if key == wanted]
    if not found:
        return None
    return ",".join(s if s is not None else "invalid" for s in found[:10])


def _fields(scope: Scope, kind: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"conn": scope[CONNECTION_KEY].id, "kind": kind, "remote": _remote(scope)}
    if (session := _sessions(scope)) is not None:
        fields["session"] = session
    return fields


def _sse_fields(scope: Scope, *, opened: bool) -> dict[str, Any]:
    fields = _fields(scope, "sse")
    if opened and (principal := scope.get(PRINCIPAL_KEY)) is not None:
        fields["principal"] = principal
    return fields


class ConnectionLog:
    """The ASGI middleware. `sse_path` is the one HTTP path logged as a connection."""

    def __init__(self, app: ASGIApp, sse_path: str = SSE_PATH) -> None:
        self.app = app
        self.sse_path = sse_path

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: one frame fewer held by every open stream.
        if scope["type"] == "websocket":
            return self._websocket(scope, receive, send)
        if scope["type"] == "http" and scope["path"] == self.sse_path:
            return self._sse(scope, receive, send)
        if scope["type"] == "http":
            return self._http(scope, receive, send)
        return self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = scope[CONNECTION_KEY] = Connection()
        fields = _fields(scope, "ws")
        started = time.monotonic()
        frames = 0
        state: dict[str, Any] = {"opened": False, "status": None, "code": None}

        async def counting_receive() -> Message:
            nonlocal frames
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                frames += 1
            elif kind == "websocket.disconnect" and state["code"] is None:
                state["code"] = message.get("code", 1005)
            return message

        async def counting_send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                state["opened"] = True
                if (principal := scope.get(PRINCIPAL_KEY)) is not None:
                    fields["principal"] = principal
                log.info("ws open", extra=fields)
            elif kind == "websocket.close":
                state["code"] = message.get("code", 1000)
                if not state["opened"]:
                    state["status"] = 403  # what uvicorn answers to a close before accept
            elif kind == "websocket.http.response.start":
                state["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            seconds = round(time.monotonic() - started, 3)
            if state["opened"]:
                counts = {"frames": frames, "acks": record.acks, "errors": record.errors}
                log.info("ws close", extra={**fields, "seconds": seconds, **counts, "code": state["code"]})
            else:
                log.warning("ws refused", extra={**fields, "status": state["status"], "code": state["code"]})

    async def _sse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The log fields are built again for the close line rather than kept: every
        # open stream holds this frame, and 10,000 idle streams are the design point.
        # The stream writes its body below every middleware (app/stream/response.py)
        # and reports what it wrote to the record; error answers pass counting_send.
        record = scope[CONNECTION_KEY] = Connection()
        started = time.monotonic()
        status: int | None = None

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 200:
                    log.info("sse open", extra=_sse_fields(scope, opened=True))
            elif message["type"] == "http.response.body":
                record.bytes_sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            seconds = round(time.monotonic() - started, 3)
            if status == 200:
                log.info("sse close", extra={**_sse_fields(scope, opened=True), "seconds": seconds, "bytes": record.bytes_sent})
            else:
                level = logging.ERROR if (status or 500) >= 500 and status != 503 else logging.WARNING
                log.log(level, "sse refused", extra={**_sse_fields(scope, opened=False), "status": status})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watching_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 500:
                fields = {"method": scope.get("method"), "path": scope["path"], "status": message["status"]}
                log.error("http error", extra={**fields, "remote": _remote(scope)})
            await send(message)

        await self.app(scope, receive, watching_send)


__all__ = ["CONNECTION_KEY", "SSE_PATH", "Connection", "ConnectionLog", "connection"]
