"""GET /openapi.json: the HTTP endpoints as an OpenAPI 3.1 document.

Hand-written rather than generated: the endpoints are few, their bodies are
built by hand for speed (no models to introspect), and a reader of this file
sees the contract at a glance. The WebSocket (/ws) is not HTTP and is described
in the README instead.

The document describes the running server: an operation carries a `security`
requirement only when that kind of token is configured (READ_TOKENS), so a
client generator or a fuzzer (schemathesis, in the tests) is told exactly what
this deployment enforces. The endpoint itself is always open.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.config import Settings

UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


_UNAUTHORIZED = _error(
    "No read token, or not a valid one (only when READ_TOKENS is set)",
    {"WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="eventservice"'}},
)
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}}}
_UNAVAILABLE = _error("The database is unavailable; retry later", _RETRY_AFTER)


def _text(description: str, media_type: str = "text/plain") -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _json(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _json_object(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


def _read(operation: dict[str, Any], secured: bool) -> dict[str, Any]:
    """A read endpoint: 401 documented, security required where READ_TOKENS is set."""
    operation["responses"]["401"] = _UNAUTHORIZED
    if secured:
        operation["security"] = [{"bearerToken": []}, {"queryToken": []}]
    return operation


_COMPONENTS: dict[str, Any] = {
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "a stable code, e.g. invalid_session_id, not_found, unauthorized"},
                "message": {"type": "string", "description": "a human sentence"},
            },
        },
        "Ready": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string"},
                "reason": {"type": "string"},
                "lock_holder": {
                    "type": "object",
                    "description": "the transaction holding the insert lock, when that is why ingest is stalled",
                    "properties": {
                        "pid": {"type": "integer"},
                        "application_name": {"type": "string"},
                        "state": {"type": "string"},
                        "since": {"type": "string", "format": "date-time"},
                        "held_seconds": {"type": "number"},
                        "waiting_backends": {"type": "integer"},
                    },
                },
            },
        },
        "Event": {
            "type": "object",
            "required": ["type", "timestamp", "name"],
            "properties": {
                "type": {"const": "EVENT"},
                "timestamp": {"type": "integer", "description": "milliseconds since the Unix epoch"},
                "name": {"type": "string"},
                "data": {"type": "object", "description": "present when the event had data"},
            },
        },
        "Session": {
            "type": "object",
            "required": ["type", "session_id", "start", "end", "children"],
            "properties": {
                "type": {"const": "SESSION"},
                "session_id": {"type": "string", "format": "uuid"},
                "start": {"type": ["integer", "null"], "description": "earliest SESSION_START, ms"},
                "end": {"type": ["integer", "null"], "description": "latest SESSION_END, ms"},
                "children": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                "next": {"type": ["string", "null"], "description": "with ?limit: the cursor of the next page, null on the last"},
            },
        },
        "SessionSummary": {
            "type": "object",
            "required": ["session_id", "start", "end", "events"],
            "properties": {
                "session_id": {"type": "string", "format": "uuid"},
                "start": {"type": ["integer", "null"]},
                "end": {"type": ["integer", "null"]},
                "events": {"type": "integer", "description": "number of EVENT entries"},
            },
        },
        "SessionList": {
            "type": "object",
            "required": ["sessions", "next"],
            "properties": {
                "sessions": {"type": "array", "items": {"$ref": "#/components/schemas/SessionSummary"}},
                "next": {"type": ["string", "null"], "description": "pass as ?before= for the next page"},
            },
        },
    },
    "securitySchemes": {
        "bearerToken": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <read token>"},
        "queryToken": {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "?token=<read token>, for EventSource and links, which cannot set headers",
        },
    },
}


def document(settings: Settings) -> dict[str, Any]:
    secured = bool(settings.read_tokens)
    paths: dict[str, Any] = {
        "/healthcheck": {
            "get": {
                "summary": "Liveness: the process answers",
                "operationId": "healthcheck",
                "responses": {"200": _text("OK")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the database answers",
                "operationId": "readyz",
                "responses": {
                    "200": _json("Ready", "Ready"),
                    "503": {
                        "description": "Not ready (database unreachable, insert lock held by a transaction, or shutting down)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Ready"}}},
                    },
                },
            }
        },
        "/session/{session_id}": {
            "get": _read(
                {
                    "summary": "One session as a tree: its start, end and EVENT children by timestamp then arrival",
                    "operationId": "getSession",
                    "parameters": [
                        {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "description": "page size; the body then carries next",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "description": "the next cursor of the previous page",
                            "schema": {"type": "string", "pattern": "^[0-9]{1,16}\\.[0-9]{1,18}$"},
                        },
                    ],
                    "responses": {
                        "200": _json("The session", "Session"),
                        "400": _error("Malformed session id, limit or cursor"),
                        "404": _error("No such session"),
                        "503": _UNAVAILABLE,
                    },
                },
                secured,
            )
        },
        "/sessions": {
            "get": _read(
                {
                    "summary": "Recently first-seen sessions, newest first",
                    "operationId": "listSessions",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                        },
                        {
                            "name": "before",
                            "in": "query",
                            "description": "the next cursor of the previous page",
                            "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                        },
                    ],
                    "responses": {
                        "200": _json("A page of sessions", "SessionList"),
                        "400": _error("Malformed limit or cursor"),
                        "503": _UNAVAILABLE,
                    },
                },
                secured,
            )
        },
        "/database_events": {
            "get": _read(
                {
                    "summary": "Every entry the database takes, live, as Server-Sent Events (resumable)",
                    "description": "Each message: `id: <stream position>` and `data: <entry JSON>`; an `event: reset` "
                    "message when a position cannot be honoured. The stream does not end.",
                    "operationId": "streamDatabaseEvents",
                    "parameters": [
                        {
                            "name": "session_id",
                            "in": "query",
                            "schema": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                            "style": "form",
                            "explode": True,
                        },
                        {
                            "name": "name",
                            "in": "query",
                            "schema": {"type": "array", "items": {"type": "string"}},
                            "style": "form",
                            "explode": True,
                        },
                        {
                            "name": "type",
                            "in": "query",
                            "schema": {"type": "array", "items": {"enum": ["SESSION_START", "EVENT", "SESSION_END"]}},
                            "style": "form",
                            "explode": True,
                        },
                        {"name": "last_event_id", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}},
                        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _text("The event stream", "text/event-stream"),
                        "400": _error("Malformed filter or last_event_id"),
                        "503": _error("At the connection limit, or shutting down", _RETRY_AFTER),
                    },
                },
                secured,
            )
        },
        "/metrics": {
            "get": _read(
                {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "responses": {"200": _text("Prometheus text exposition")},
                },
                secured,
            )
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": _json_object("This OpenAPI 3.1 document")},
            }
        },
        "/": {
            "get": {
                "summary": "The live monitor page (HTML)",
                "operationId": "monitorPage",
                "responses": {"200": _text("The page", "text/html")},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "eventservice",
            "version": "1",
            "description": "Session analytics events. Ingestion is a WebSocket (/ws, not described here: see the README); "
            "these are the HTTP endpoints. Errors are JSON {error, message}. Read endpoints need a read token when "
            "the server has READ_TOKENS set.",
        },
        "paths": paths,
        "components": _COMPONENTS,
    }


async def openapi(request: Request) -> Response:
    settings: Settings = request.app.state.services.settings
    return Response(orjson.dumps(document(settings)), media_type="application/json")


routes = [Route("/openapi.json", openapi, methods=["GET"])]
