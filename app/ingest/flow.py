"""One ingest flow behind two doors: a /ws frame and a POST /batch body.

Both doors call the same three steps, so a batch meets the same rules, the same
writer (and its batch_id memory: a batch sent on one door and resent on the
other is stored once) and the same answers, whichever way it came:

1. `frame_rules`: the query string (sessionId, timestampUnit) to FrameRules;
2. `admit`: the rate limit, then validation; a refusal is recorded in
   rejected_batches, a valid batch is submitted to the writer;
3. `answer`: once the outcome is known (after COMMIT), the metrics, the
   rejected_batches row of a batch the database refused, and the ACK or ERROR.

What differs stays in the doors: /ws pipelines frames on a connection and
answers in order; POST /batch reads one body and maps the answer to a status.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from app import metrics
from app.codes import ErrorCode
from app.ids import parse_uuid
from app.ingest.rate import ConnectionRate, RateLimited
from app.ingest.rejected import RejectedRecorder
from app.ingest.validation import TIMESTAMP_UNITS, Batch, FrameRules, Problem, Rejection, parse_frame
from app.ingest.writer import Outcome, Writer

log = logging.getLogger("eventservice.ingest")

# A submitted batch keeps its raw frame until answered: an ERROR keeps it in rejected_batches.
Submitted = tuple[Batch, "asyncio.Future[Outcome]", str | bytes | None]

# Everything an ingest door reads from its query string. `token` is read by the
# access control (app/edge/auth.py) before the route runs, and stays in the query string.
ACCEPTED_PARAMETERS = ("sessionId", "timestampUnit", "token")


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """What one batch, and one /ws connection, may carry (the settings of the same names)."""

    max_inflight_batches: int
    max_batch_events: int
    max_data_bytes: int
    max_data_depth: int


@dataclass(frozen=True, slots=True)
class Answer:
    """A batch's answer: the ACK or ERROR object, and what a door needs to frame it."""

    body: bytes
    error: str | None = None  # None: an ACK
    retry_after_ms: int | None = None  # rate_limited: when to send again


def unknown_parameter(names: list[str], door: str) -> tuple[str, str] | None:
    """A refusal for the first query parameter the doors do not read, naming what they accept.

    A misspelt parameter is otherwise silent: `?sessionid=…` would take batches
    with no session, and every event would then be refused for a reason that
    does not point at the typo.
    """
    for name in names:
        if name in ACCEPTED_PARAMETERS:
            continue
        accepted = ", ".join(ACCEPTED_PARAMETERS[:-1]) + " and " + ACCEPTED_PARAMETERS[-1]
        lowered = {p.lower(): p for p in ACCEPTED_PARAMETERS}
        key = name.lower() if name.lower() in lowered else next(iter(difflib.get_close_matches(name.lower(), lowered)), None)
        guess = f" (did you mean {lowered[key]}?)" if key else ""
        return (ErrorCode.UNKNOWN_PARAMETER, f"Unknown query parameter {name!r}{guess}; {door} accepts {accepted}.")
    return None


def frame_rules(params: Mapping[str, str], limits: IngestLimits) -> FrameRules | tuple[str, str]:
    """The rules every batch of this connection or request is validated by, or the refusal."""
    session_id = None
    if "sessionId" in params:
        session_id = parse_uuid(params["sessionId"])
        if session_id is None:
            return (ErrorCode.INVALID_SESSION_ID, "sessionId must be a UUID like 0d856b46-48cd-4fba-946b-53d15b7b43e0.")
    unit = params.get("timestampUnit", "auto")
    if unit not in TIMESTAMP_UNITS:
        message = "timestampUnit must be auto (the default: seconds below 100000000000), ms or s."
        return (ErrorCode.INVALID_TIMESTAMP_UNIT, message)
    return FrameRules(
        session_id=session_id,
        timestamp_unit=TIMESTAMP_UNITS[unit],
        max_batch_events=limits.max_batch_events,
        max_data_bytes=limits.max_data_bytes,
        max_data_depth=limits.max_data_depth,
    )


def _parse(raw: str | bytes | None, number: int, rules: FrameRules) -> Batch | Rejection:
    """parse_frame, but a bug in it answers this batch with an ERROR, not a silent close or a 500."""
    try:
        return parse_frame(raw, number, rules)
    except Exception:  # any validator bug: logged with its traceback, answered as ERROR
        log.exception("frame %d could not be validated", number)
        return Rejection(number, None, ErrorCode.INVALID_BATCH, "The server could not validate this frame; nothing was stored.")


def admit(
    raw: str | bytes | None,
    number: int,
    rules: FrameRules,
    rate: ConnectionRate | None,
    writer: Writer,
    rejected: RejectedRecorder,
    connection: str | None,
) -> Submitted | Rejection:
    """Rate limit, then validation, then the writer. Over a rate limit the frame is not even parsed."""
    limited = rate.admit_batch(number) if rate is not None else None
    result = limited if limited is not None else _parse(raw, number, rules)
    if isinstance(result, Rejection):
        return refuse(result, raw, rules.session_id, rejected, connection)
    return (result, writer.submit(result), raw)


def refuse(
    rejection: Rejection, raw: str | bytes | None, session_id: str | None, rejected: RejectedRecorder, connection: str | None
) -> Rejection:
    """Keep a refused batch in rejected_batches; also for a body a door cannot read, and a batch the database refused."""
    rejected.record(
        error=rejection.error,
        message=rejection.message,
        frame=raw,
        batch=rejection.number,
        batch_id=rejection.batch_id,
        session_id=session_id,
        connection=connection,
    )
    return rejection


async def answer(pending: Submitted | Rejection, rejected: RejectedRecorder, connection: str | None) -> Answer:
    """A batch's answer once it is known: after COMMIT for a submitted batch."""
    if isinstance(pending, Rejection):
        metrics.BATCHES.labels(pending.error).inc()
        retry = pending.retry_after_ms if isinstance(pending, RateLimited) else None
        body = _error(pending.number, pending.batch_id, pending.error, pending.message, pending.details, retry)
        return Answer(body, pending.error, retry)
    batch, future, frame = pending
    outcome = await future
    if outcome.error is None:
        metrics.BATCHES.labels("duplicate" if outcome.duplicate else "accepted").inc()
        metrics.EVENTS.labels("accepted").inc(outcome.accepted)
        return Answer(_ack(batch, outcome))
    metrics.BATCHES.labels(outcome.error).inc()
    refused = Rejection(batch.number, batch.batch_id, outcome.error, outcome.message)
    refuse(refused, frame, batch.session_id, rejected, connection)
    return Answer(_error(refused.number, refused.batch_id, refused.error, refused.message, []), refused.error)


def _ack(batch: Batch, outcome: Outcome) -> bytes:
    return orjson.dumps(
        {
            "type": "ACK",
            "batch": batch.number,
            "batch_id": batch.batch_id,
            "accepted": outcome.accepted,
            "duplicate": outcome.duplicate,
        }
    )


def _error(
    number: int, batch_id: str | None, code: str, message: str, details: list[Problem], retry_after_ms: int | None = None
) -> bytes:
    body: dict[str, object] = {
        "type": "ERROR",
        "batch": number,
        "batch_id": batch_id,
        "error": code,
        "message": message,
        "details": [d.as_json() for d in details],
    }
    if retry_after_ms is not None:
        body["retry_after_ms"] = retry_after_ms  # rate_limited: when to send again
    return orjson.dumps(body)


__all__ = [
    "ACCEPTED_PARAMETERS",
    "Answer",
    "IngestLimits",
    "Submitted",
    "admit",
    "answer",
    "frame_rules",
    "refuse",
    "unknown_parameter",
]
