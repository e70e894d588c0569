"""GET /openapi.json: the HTTP endpoints as an OpenAPI 3.1 document.

Hand-written rather than generated: the endpoints are few, their bodies are
built by hand for speed (no models to introspect), and a reader of this file
sees the contract at a glance. The WebSocket (/ws) is not HTTP and is described
in docs/ instead; POST /batch, its HTTP door, is here.

The document describes the running server: an operation carries a `security`
requirement only when that kind of token is configured (READ_TOKENS for reads,
INGEST_TOKENS for POST /batch), so a
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


_COUNT = {"type": "integer", "minimum": 0}
_MS_OR_NULL = {"type": ["integer", "null"]}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_POINTS = {
    "type": "array",
    "description": "[[bucket start ms, count], …] for every bucket, zeros included",
    "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


_RANGE = {"from": {"type": "integer"}, "to": {"type": "integer"}}
# Optional, so outside _object's required list (SPEC "Retention").
RETAINED_FROM = {
    "type": "integer",
    "description": "store time (ms) of the oldest retained entry; present only when the range (or session) reaches "
    "before it, and the figures that need entries are then computed over what is retained",
}


def _with_retained_from(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "properties": {**schema["properties"], "retained_from": RETAINED_FROM}}


_STATS_SCHEMAS: dict[str, Any] = {
    "StatsSummary": _object(
        {
            **_RANGE,
            "sessions": _object({"started": _COUNT, "ended": _COUNT, "open": _COUNT}),
            "events": _COUNT,
            "names": _COUNT,
            "duration_ms": _object({"p50": _MS_OR_NULL, "p90": _MS_OR_NULL, "p99": _MS_OR_NULL, "mean": _NUMBER_OR_NULL}),
            "events_per_session": _object({"p50": _MS_OR_NULL, "p90": _MS_OR_NULL, "mean": _NUMBER_OR_NULL}),
            "duration_histogram": {"type": "array", "items": _object({"le_ms": _MS_OR_NULL, "sessions": _COUNT})},
        }
    ),
    "StatsTimeseries": _object(
        {
            **_RANGE,
            "bucket": {"enum": ["minute", "hour", "day"]},
            "total": _POINTS,
            "sessions_started": _POINTS,
            "series": {"type": "array", "items": _object({"name": {"type": "string"}, "points": _POINTS})},
        }
    ),
    "StatsNames": _object(
        {
            **_RANGE,
            "names": {
                "type": "array",
                "items": _object({"name": {"type": "string"}, "events": _COUNT, "sessions": _COUNT}),
            },
        }
    ),
    "StatsFunnel": _object(
        {
            **_RANGE,
            "steps": {
                "type": "array",
                "items": _object({"name": {"type": "string"}, "sessions": _COUNT, "conversion": _NUMBER_OR_NULL}),
            },
        }
    ),
    "StatsBreakdown": {
        "type": "object",
        "required": ["from", "to", "name", "key", "values", "other", "missing"],
        "properties": {
            **_RANGE,
            "name": {"type": "string"},
            "key": {"type": "string"},
            "values": {
                "type": "array",
                "items": _object(
                    {
                        "value": {"description": "the value as JSON: a string, number, boolean or null"},
                        "events": _COUNT,
                        "sessions": _COUNT,
                    }
                ),
            },
            "other": _object({"events": _COUNT, "sessions": _COUNT}),
            "missing": _object({"events": _COUNT, "sessions": _COUNT}),
            "series": {
                "type": "array",
                "description": "with ?bucket= only",
                "items": _object({"value": {}, "points": _POINTS}),
            },
        },
    },
}
_STATS_SCHEMAS = {name: _with_retained_from(schema) for name, schema in _STATS_SCHEMAS.items()}
_TIME = {
    "type": "string",
    "description": "milliseconds since the Unix epoch, or an RFC 3339 date-time with a zone",
}
_RANGE_PARAMETERS: list[dict[str, Any]] = [
    {"name": "from", "in": "query", "description": "inclusive; default: to minus 24 hours", "schema": _TIME},
    {"name": "to", "in": "query", "description": "exclusive; default: now", "schema": _TIME},
]
_NAME_LIST = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 255}}


def _stats(summary: str, operation_id: str, schema: str, parameters: list[dict[str, Any]], secured: bool) -> dict[str, Any]:
    return {
        "get": _read(
            {
                "summary": summary,
                "operationId": operation_id,
                "parameters": [*_RANGE_PARAMETERS, *parameters],
                "responses": {
                    "200": _json("The figures", schema),
                    "400": _error("A malformed or contradictory parameter (from >= to, unknown bucket, too many buckets, ...)"),
                    "503": _UNAVAILABLE,
                },
            },
            secured,
        )
    }


def _stats_paths(secured: bool) -> dict[str, Any]:
    return {
        "/stats/summary": _stats(
            "Sessions started in the range, EVENTs in it, durations and events per session",
            "statsSummary",
            "StatsSummary",
            [],
            secured,
        ),
        "/stats/timeseries": _stats(
            "EVENTs and sessions started per UTC-aligned bucket, in total and per name",
            "statsTimeseries",
            "StatsTimeseries",
            [
                {"name": "bucket", "in": "query", "schema": {"enum": ["minute", "hour", "day"], "default": "hour"}},
                {
                    "name": "name",
                    "in": "query",
                    "style": "form",
                    "explode": True,
                    "schema": _NAME_LIST,
                    "description": "the series to return (repeatable); default: the 5 names with the most events",
                },
            ],
            secured,
        ),
        "/stats/names": _stats(
            "Event names in the range, most events first",
            "statsNames",
            "StatsNames",
            [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}}],
            secured,
        ),
        "/stats/funnel": _stats(
            "Sessions started in the range that did the steps in order",
            "statsFunnel",
            "StatsFunnel",
            [
                {
                    "name": "step",
                    "in": "query",
                    "required": True,
                    "style": "form",
                    "explode": True,
                    "schema": {**_NAME_LIST, "minItems": 2, "maxItems": 10},
                    "description": "2 to 10 event names, in order",
                },
                {
                    "name": "within",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "every step at most this many ms after the chain's first step",
                },
            ],
            secured,
        ),
        "/stats/breakdown": _stats(
            "The EVENTs of one name grouped by the value of one top-level data key",
            "statsBreakdown",
            "StatsBreakdown",
            [
                {"name": "name", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
                {
                    "name": "key",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    "description": "a top-level key of the events' data",
                },
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}},
                {
                    "name": "bucket",
                    "in": "query",
                    "schema": {"enum": ["minute", "hour", "day"]},
                    "description": "adds series: the top values per UTC-aligned bucket",
                },
            ],
            secured,
        ),
    }


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
                "retained_from": RETAINED_FROM,
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
                "retained_from": RETAINED_FROM,
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
        **_STATS_SCHEMAS,
        "BatchAck": _object(
            {
                "type": {"const": "ACK"},
                "batch": {"const": 1},
                "batch_id": {"type": ["string", "null"]},
                "accepted": _COUNT,
                "duplicate": {"type": "boolean"},
            }
        ),
        "BatchError": {
            "type": "object",
            "required": ["type", "batch", "batch_id", "error", "message", "details"],
            "properties": {
                "type": {"const": "ERROR"},
                "batch": {"const": 1},
                "batch_id": {"type": ["string", "null"]},
                "error": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
                "retry_after_ms": {"type": "integer", "description": "rate_limited: when to send again"},
            },
        },
    },
    "securitySchemes": {
        "bearerToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "Authorization: Bearer <token>: a read token, or an ingest token for /batch",
        },
        "queryToken": {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "?token=<token>, for EventSource, links and sendBeacon, which cannot set headers",
        },
    },
}


def _health_paths() -> dict[str, Any]:
    """Liveness and readiness: always open, for load balancers and orchestrators."""
    return {
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
    }


def _session_paths(secured: bool) -> dict[str, Any]:
    """One session as a tree, optionally paged."""
    return {
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
    }


_SESSION_FILTERS: list[dict[str, Any]] = [
    {
        "name": "name",
        "in": "query",
        "style": "form",
        "explode": True,
        "schema": {**_NAME_LIST, "maxItems": 10},
        "description": "sessions with an EVENT of each name (repeatable: all required)",
    },
    {"name": "from", "in": "query", "description": "sessions whose start is at or after this", "schema": _TIME},
    {"name": "to", "in": "query", "description": "sessions whose start is before this", "schema": _TIME},
    {
        "name": "ended",
        "in": "query",
        "schema": {"type": "boolean"},
        "description": "sessions with (true) or without (false) an end",
    },
    {
        "name": "min_duration_ms",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0},
        "description": "ended sessions with end - start >= this",
    },
    {
        "name": "max_duration_ms",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0},
        "description": "ended sessions with end - start <= this",
    },
    {
        "name": "data",
        "in": "query",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "maxItems": 10, "items": {"type": "string", "pattern": "^.+:.*$"}},
        "description": "<key>:<value> (repeatable): an EVENT whose data has that top-level key with that value as a "
        'JSON string, number or boolean (plan:pro, n:3, ok:true; plan:"pro" for the string only; "a:b":1 for a key '
        "with a colon); with name, the same EVENT has one of the names",
    },
]


def _sessions_paths(secured: bool) -> dict[str, Any]:
    """The list of recently first-seen sessions."""
    return {
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
                        *_SESSION_FILTERS,
                    ],
                    "responses": {
                        "200": _json("A page of sessions", "SessionList"),
                        "400": _error("Malformed limit, cursor or filter (invalid_filter names it), or an unknown parameter"),
                        "503": _UNAVAILABLE,
                    },
                },
                secured,
            )
        },
    }


def _stream_paths(secured: bool) -> dict[str, Any]:
    """The live SSE stream of every entry, with its filters and resume position."""
    return {
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
                        {
                            "name": "tail",
                            "in": "query",
                            "description": "Fresh connection only: start with the last N stored entries that match the "
                            "filters, oldest first, then continue live. A resume position takes precedence.",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 10000},
                        },
                    ],
                    "responses": {
                        "200": _text("The event stream", "text/event-stream"),
                        "400": _error("Malformed filter, last_event_id or tail"),
                        "503": _error("At the connection limit, or shutting down", _RETRY_AFTER),
                    },
                },
                secured,
            )
        },
    }


def _metrics_paths(secured: bool) -> dict[str, Any]:
    """Prometheus metrics: a read endpoint like the others."""
    return {
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
    }


_BATCH_ERRORS = "ERROR object: invalid_json, invalid_batch, invalid_event, session_mismatch"


def _batch_paths(ingest_secured: bool) -> dict[str, Any]:
    """POST /batch: one /ws frame over HTTP (the frame's format: docs/ingest.md)."""
    frame = {"description": 'A /ws frame: a JSON array of events, or {"batch_id": "…", "events": […]}'}
    batch_error = {"$ref": "#/components/schemas/BatchError"}
    operation: dict[str, Any] = {
        "summary": "One batch of events over HTTP, stored exactly once by batch_id like a /ws frame",
        "operationId": "postBatch",
        "parameters": [
            {"name": "sessionId", "in": "query", "schema": {"type": "string", "format": "uuid"}},
            {"name": "timestampUnit", "in": "query", "schema": {"enum": ["auto", "ms", "s"], "default": "auto"}},
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": frame}, "text/plain": {"schema": {"type": "string"}}},
        },
        "responses": {
            "200": _json("Committed: the ACK object (duplicate: true when this batch_id was stored before)", "BatchAck"),
            "400": {
                "description": f"{_BATCH_ERRORS}; or a query error (unknown_parameter, invalid_session_id, …)",
                "content": {"application/json": {"schema": {"anyOf": [batch_error, {"$ref": "#/components/schemas/Error"}]}}},
            },
            "401": _error("No ingest token, or not a valid one (only when INGEST_TOKENS is set)"),
            "403": _error("A browser Origin that ALLOWED_ORIGINS does not list"),
            "408": _error("request_timeout: the body did not arrive within HANDSHAKE_TIMEOUT_SECONDS"),
            "413": _json("ERROR too_large: more events than MAX_BATCH_EVENTS, or a body over MAX_FRAME_BYTES", "BatchError"),
            "415": _error("A Content-Type other than application/json or text/plain"),
            "429": {**_json("ERROR rate_limited (retry_after_ms)", "BatchError"), "headers": _RETRY_AFTER},
            "503": {
                "description": "unavailable: the database cannot take it now, or shutting down; send it again",
                "headers": _RETRY_AFTER,
                "content": {"application/json": {"schema": {"anyOf": [batch_error, {"$ref": "#/components/schemas/Error"}]}}},
            },
        },
    }
    if ingest_secured:
        operation["security"] = [{"bearerToken": []}, {"queryToken": []}]
    return {"/batch": {"post": operation}}


def _self_paths() -> dict[str, Any]:
    """This document and the monitor page: always open."""
    return {
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
        **_sdk_paths(),
    }


def _sdk_paths() -> dict[str, Any]:
    """The browser uploader library and its declarations: open, cacheable, CORS `*`."""
    not_modified = {"description": "Not modified: the If-None-Match ETag is current"}
    files = {
        "/sdk/eventservice.js": ("sdkModule", "The browser uploader (an ES module, docs/uploader-browser.md)", "text/javascript"),
        "/sdk/eventservice.d.ts": ("sdkTypes", "Its TypeScript declarations", "application/typescript"),
    }
    return {
        path: {
            "get": {
                "summary": summary,
                "operationId": operation,
                "responses": {"200": _text(summary, media_type), "304": not_modified},
            }
        }
        for path, (operation, summary, media_type) in files.items()
    }


def document(*, secured: bool, ingest_secured: bool = False) -> dict[str, Any]:
    """The whole document; `secured`: READ_TOKENS is set (reads then need a token); `ingest_secured`: INGEST_TOKENS."""
    paths: dict[str, Any] = {
        **_health_paths(),
        **_batch_paths(ingest_secured),
        **_session_paths(secured),
        **_sessions_paths(secured),
        **_stream_paths(secured),
        **_metrics_paths(secured),
        **_stats_paths(secured),
        **_self_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "eventservice",
            "version": "1",
            "description": "Session analytics events. Ingestion is a WebSocket (/ws, not described here: see docs/ingest.md) "
            "or POST /batch, one /ws frame per request; these are the HTTP endpoints. Errors are JSON {error, message}. "
            "Read endpoints need a read token when the server has READ_TOKENS set, POST /batch an ingest token when "
            "it has INGEST_TOKENS set.",
        },
        "paths": paths,
        "components": _COMPONENTS,
    }


async def openapi(request: Request) -> Response:
    settings: Settings = request.app.state.services.settings
    body = document(secured=bool(settings.read_tokens), ingest_secured=bool(settings.ingest_tokens))
    return Response(orjson.dumps(body), media_type="application/json")


routes = [Route("/openapi.json", openapi, methods=["GET"])]
