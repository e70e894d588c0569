"""WebSocket /ws: frames in, ACK or ERROR out, in frame order, after COMMIT.

Reading and answering are two tasks joined by a bounded queue: the reader
validates and submits frames while earlier ones commit (pipelining), and when
max_inflight_batches are waiting it stops reading, so TCP pushes back on a fast
client instead of the server's memory growing.

What a frame meets (rate limit, validation, the writer, the answer) is the
ingest flow (app/ingest/flow.py), shared with POST /batch; this module is the
connection around it. The rate limits (app/ingest/rate.py) are checked per frame,
against the connection's bucket and its token's (shared by every connection of
that token in this process). `routes(...)` takes the values the route uses, not
the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app import metrics
from app.codes import ErrorCode
from app.edge import connlog
from app.edge.auth import PRINCIPAL_KEY
from app.errors import deny_websocket, error_response
from app.ingest import flow
from app.ingest.rate import ConnectionRate, IngestRateLimiter
from app.ingest.rejected import RejectedRecorder
from app.ingest.validation import FrameRules, Rejection
from app.lifecycle import Drain
from app.services import Services

log = logging.getLogger("eventservice.ws")

Pending = flow.Submitted | Rejection | None  # None: no more frames


async def _refuse(websocket: WebSocket, code: str, message: str, status: int = 400) -> None:
    """An HTTP error to the handshake where the server supports denial responses, else a close code."""
    await deny_websocket(websocket, error_response(status, code, message), message, 1001 if status == 503 else 1008)


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


async def ingest(websocket: WebSocket, limits: flow.IngestLimits, rates: IngestRateLimiter) -> None:
    services: Services = websocket.app.state.services
    if services.drain.draining:
        await _refuse(websocket, ErrorCode.SHUTTING_DOWN, "The server is shutting down; connect again.", status=503)
        return
    unknown = flow.unknown_parameter([name for name, _ in websocket.query_params.multi_items()], "/ws")
    if unknown is not None:
        await _refuse(websocket, *unknown)
        return
    rules = flow.frame_rules(websocket.query_params, limits)
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
            await replies.put(flow.admit(raw, number, conn.rules, conn.rate, services.writer, services.rejected, conn.id))
    except WebSocketDisconnect:
        return


async def _answer(
    websocket: WebSocket, conn: _Connection, replies: asyncio.Queue[Pending], drain: Drain, rejected: RejectedRecorder
) -> None:
    """Send each frame's answer in order; after the peer is gone, keep draining."""
    connected = True
    while (pending := await replies.get()) is not None:
        reply = await flow.answer(pending, rejected, conn.id)
        if connected:
            connected = await _send(websocket, reply.body)
            if connected and conn.log is not None:
                conn.log.answered(error=reply.error is not None)
    if connected:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            # 1001 "going away" tells the client to reconnect (to another instance).
            await websocket.close(code=1001 if drain.draining else 1000)


async def _send(websocket: WebSocket, reply: bytes) -> bool:
    """False when the client has left: its batches still commit (they were submitted),
    it just cannot hear about it, and the answerer keeps draining so the reader is
    never blocked."""
    try:
        await websocket.send_text(reply.decode())
    except (WebSocketDisconnect, RuntimeError, OSError):
        return False
    return True


def routes(limits: flow.IngestLimits, rates: IngestRateLimiter) -> list[BaseRoute]:
    """/ws with the values it uses; `rates` holds this process's per-token buckets."""

    async def endpoint(websocket: WebSocket) -> None:
        await ingest(websocket, limits, rates)

    return [WebSocketRoute("/ws", endpoint, name="ingest")]
