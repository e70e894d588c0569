"""Every error code a client can receive, in one place. Pure: imported by validation too.

The values are the wire contract (`{"error": code}` bodies, WebSocket ERROR frames,
the rejected_batches table, metric labels): renaming a member is free, changing a
value is a breaking change. A StrEnum is a str, so JSON encoders, asyncpg and
prometheus labels see exactly the value.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # A batch over /ws (ERROR frames; also rejected_batches.error).
    INVALID_JSON = "invalid_json"
    INVALID_BATCH = "invalid_batch"
    INVALID_EVENT = "invalid_event"
    SESSION_MISMATCH = "session_mismatch"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    # The database or the server cannot take or answer it now: retry.
    UNAVAILABLE = "unavailable"
    SHUTTING_DOWN = "shutting_down"
    OVER_CAPACITY = "over_capacity"
    # Access control (app/edge/auth.py).
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    INVALID_PREFLIGHT = "invalid_preflight"  # a CORS preflight for a method or header not allowed
    # POST /batch's body.
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    REQUEST_TIMEOUT = "request_timeout"
    # The query string of /ws and POST /batch.
    UNKNOWN_PARAMETER = "unknown_parameter"
    INVALID_SESSION_ID = "invalid_session_id"
    INVALID_TIMESTAMP_UNIT = "invalid_timestamp_unit"
    # Read endpoints' query parameters.
    INVALID_LIMIT = "invalid_limit"
    INVALID_CURSOR = "invalid_cursor"
    INVALID_FILTER = "invalid_filter"
    INVALID_LAST_EVENT_ID = "invalid_last_event_id"
    INVALID_TAIL = "invalid_tail"
    INVALID_FROM = "invalid_from"
    INVALID_TO = "invalid_to"
    INVALID_RANGE = "invalid_range"
    INVALID_BUCKET = "invalid_bucket"
    INVALID_NAME = "invalid_name"
    INVALID_KEY = "invalid_key"
    INVALID_STEP = "invalid_step"
    INVALID_WITHIN = "invalid_within"
    TOO_MANY_BUCKETS = "too_many_buckets"
    # Routing (app/errors.py http_exception; other statuses get their HTTP phrase).
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UPGRADE_REQUIRED = "upgrade_required"
