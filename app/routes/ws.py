"""WebSocket /ws: frames in, ACK or ERROR out, in frame order, after COMMIT.

Reading and answering are two tasks joined by a bounded queue: the reader
validates and submits frames while earlier ones commit (pipelining), and when
max_inflight_batches are waiting it stops reading, so TCP pushes back on a fast
client instead of the server's memory growing.

The route owns its rate limiter (app/ingest/rate.py): a frame is checked before
it is parsed, against its connection's bucket and its token's (shared by every
connection of that token in this process). `routes(...)` takes the values the
route uses, not the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
from dataclasses import dataclass

import orjson
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app import metrics
from app.codes import ErrorCode
from app.edge import connlog
from app.edge.auth import PRINCIPAL_KEY
from app.errors import deny_websocket, error_response
from app.ids import parse_uuid
from app.ingest.rate import ConnectionRate, IngestRateLimiter, RateLimited
from app.ingest.rejected import RejectedRecorder
from app.ingest.validation import TIMESTAMP_UNITS, Batch, FrameRules, Problem, Rejection, parse_frame
from app.ingest.writer import Outcome
from app.lifecycle import Drain
from app.services import Services

log = logging.getLogger("eventservice.ws")

# A submitted batch keeps its raw frame until answered: an ERROR keeps it in rejected_batches.
Submitted = tuple[Batch, "asyncio.Future[Outcome]", str | bytes | None]
Pending = Submitted | Rejection | None  # None: no more frames


async def _refuse(websocket: WebSocket, code: str, message: str, status: int = 400) -> None:
    """An HTTP error to the handshake where the server supports denial responses, else a close code."""
    await deny_websocket(websocket, error_response(status, code, message), message, 1001 if status == 503 else 1008)


# Everything /ws reads from its query string. `token` is read by the access control
# (app/edge/auth.py) before the route runs, and stays in the query string.
ACCEPTED_PARAMETERS = ("sessionId", "timestampUnit", "token")


def unknown_parameter(names: list[str]) -> tuple[str, str] | None:
    """A refusal for the first query parameter /ws does not read, naming what it accepts.

    A misspelt parameter is otherwise silent: `?sessionid=…` would open a connection
    with no session, and every event would then be refused for a reason that does not
    point at the typo.
    """
    for name in names:
        if name in ACCEPTED_PARAMETERS:
            continue
        accepted = ", ".join(ACCEPTED_PARAMETERS[:-1]) + " and " + ACCEPTED_PARAMETERS[-1]
        lowered = {p.lower(): p for p in ACCEPTED_PARAMETERS}
        key = name.lower() if name.lower() in lowered else next(iter(difflib.get_close_matches(name.lower(), lowered)), None)
        guess = f" (did you mean {lowered[key]}?)" if key else ""
        return (ErrorCode.UNKNOWN_PARAMETER, f"Unknown query parameter {name!r}{guess}; /ws accepts {accepted}.")
    return None


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """What one /ws connection may send (the settings of the same names)."""

    max_inflight_batches: int
    max_batch_events: int
    max_data_bytes: int
    max_data_depth: int


def _rules(websocket: WebSocket, limits: IngestLimits) -> FrameRules | tuple[str, str]:
    params = websocket.query_params
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


@dataclass(frozen=True, slots=True)
class _Connection:
    """What the reader and the answerer of one connection share."""

    rules: FrameRules
    rate: ConnectionRate | None
    log: connlog.Connection | None  # the connection log's record: its id, and our answers

    @property
    def id(self) -> str | None:
        """The connection log's id, which rejected batches carry to be joined with it."""
        return self.log.id if self.log is not None else None


async def ingest(websocket: WebSocket, limits: IngestLimits, rates: IngestRateLimiter) -> None:
    services: Services = websocket.app.state.services
    if services.drain.draining:
        await _refuse(websocket, ErrorCode.SHUTTING_DOWN, "The server is shutting down; connect again.", status=503)
        return
    unknown = unknown_parameter([name for name, _ in websocket.query_params.multi_items()])
    if unknown is not None:
        await _refuse(websocket, *unknown)
        return
    rules = _rules(websocket, limits)
    if isinstance(rules, tuple):
        await _refuse(websocket, *rules)
        return
    scope = websocket.scope
    conn = _Connection(rules, rates.for_connection(scope.get(PRINCIPAL_KEY)), connlog.connection(scope))
    await websocket.accept()
    metrics.WS_CONNECTIONS.inc()
    replies: asyncio.Queue[Pending] = asyncio.Queue(maxsize=limits.max_inflight_batches)
    answerer = asyncio.create_task(_answer(websocket, conn, replies, services.drain, services.rejected))
    state = _ReadState()
    reader = asyncio.create_task(_read(websocket, conn, services, replies, state))
    # Registered until the last ACK is out, so a drain waits for the answers too.
    unregister = services.drain.register(lambda: state.stop_reading(reader))
    try:
        await asyncio.wait({reader})
        if not reader.cancelled() and reader.exception() is not None:
            log.warning("ingest reader failed: %r", reader.exception())
    finally:
        await replies.put(None)
        await answerer
        unregister()
        metrics.WS_CONNECTIONS.dec()


class _ReadState:
    """Lets a drain stop the reader between frames, never mid-submit.

    Cancelling the reader while it waits in receive() loses nothing; cancelling it
    in replies.put() would lose the ACK of a batch already submitted.
    """

    __slots__ = ("receiving", "stopped")

    def __init__(self) -> None:
        self.receiving = False
        self.stopped = False

    def stop_reading(self, reader: asyncio.Task[None]) -> None:
        self.stopped = True
        if self.receiving:
            reader.cancel()


def _parse(raw: str | bytes | None, number: int, rules: FrameRules) -> Batch | Rejection:
    """parse_frame, but a bug in it answers this frame with an ERROR, not a silent close."""
    try:
        return parse_frame(raw, number, rules)
    except Exception:  # any validator bug: logged with its traceback, answered as ERROR
        log.exception("frame %d could not be validated", number)
        return Rejection(number, None, ErrorCode.INVALID_BATCH, "The server could not validate this frame; nothing was stored.")


async def _read(
    websocket: WebSocket, conn: _Connection, services: Services, replies: asyncio.Queue[Pending], state: _ReadState
) -> None:
    number = 0
    try:
        while not state.stopped:
            state.receiving = True
            try:
                message = await websocket.receive()
            finally:
                state.receiving = False
            if message["type"] == "websocket.disconnect":
                return
            number += 1
            frame = message.get("text")
            raw = frame if frame is not None else message.get("bytes")
            # Over a rate limit the frame is not even parsed.
            limited = conn.rate.admit_batch(number) if conn.rate is not None else None
            result = limited if limited is not None else _parse(raw, number, conn.rules)
            if isinstance(result, Rejection):
                services.rejected.record(
                    error=result.error,
                    message=result.message,
                    frame=raw,
                    batch=number,
                    batch_id=result.batch_id,
                    session_id=conn.rules.session_id,
                    connection=conn.id,
                )
                await replies.put(result)
            else:
                await replies.put((result, services.writer.submit(result), raw))
    except WebSocketDisconnect:
        return


async def _answer(
    websocket: WebSocket, conn: _Connection, replies: asyncio.Queue[Pending], drain: Drain, rejected: RejectedRecorder
) -> None:
    """Send each frame's answer in order; after the peer is gone, keep draining."""
    connected = True
    while (pending := await replies.get()) is not None:
        reply, is_error = await _reply(pending, conn, rejected)
        if connected:
            connected = await _send(websocket, reply)
            if connected and conn.log is not None:
                conn.log.answered(error=is_error)
    if connected:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            # 1001 "going away" tells the client to reconnect (to another instance).
            await websocket.close(code=1001 if drain.draining else 1000)


async def _reply(pending: Rejection | Submitted, conn: _Connection, rejected: RejectedRecorder) -> tuple[bytes, bool]:
    """A frame's answer once it is known (after COMMIT for a submitted batch), and whether it is an ERROR."""
    if isinstance(pending, Rejection):
        metrics.BATCHES.labels(pending.error).inc()
        retry = pending.retry_after_ms if isinstance(pending, RateLimited) else None
        return _error(pending.number, pending.batch_id, pending.error, pending.message, pending.details, retry), True
    batch, future, frame = pending
    outcome = await future
    if outcome.error is None:
        metrics.BATCHES.labels("duplicate" if outcome.duplicate else "accepted").inc()
        metrics.EVENTS.labels("accepted").inc(outcome.accepted)
        return _ack(batch, outcome), False
    metrics.BATCHES.labels(outcome.error).inc()
    rejected.record(
        error=outcome.error,
        message=outcome.message,
        frame=frame,
        batch=batch.number,
        batch_id=batch.batch_id,
        session_id=batch.session_id,
        connection=conn.id,
    )
    return _error(batch.number, batch.batch_id, outcome.error, outcome.message, []), True


async def _send(websocket: WebSocket, reply: bytes) -> bool:
    """False when the client has left: its batches still commit (they were submitted),
    it just cannot hear about it, and the answerer keeps draining so the reader is
    never blocked."""
    try:
        await websocket.send_text(reply.decode())
    except (WebSocketDisconnect, RuntimeError, OSError):
        return False
    return True


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


def routes(limits: IngestLimits, rates: IngestRateLimiter) -> list[BaseRoute]:
    """/ws with the values it uses; `rates` holds this process's per-token buckets."""

    async def endpoint(websocket: WebSocket) -> None:
        await ingest(websocket, limits, rates)

    return [WebSocketRoute("/ws", endpoint, name="ingest")]
