"""POST /batch: one /ws frame over plain HTTP, for uploaders that cannot hold a socket.

A page that is closing (navigator.sendBeacon), a serverless function, a cron job,
curl. The body is the frame and goes through the ingest flow (app/ingest/flow.py)
like a frame of /ws: the same validation, the same writer and its batch_id
memory, the same rejected_batches rows and metrics. So a batch sent on /ws and
again here, same session and batch_id, is stored once, and the 200 comes after
COMMIT like an ACK frame.

What is this door's own: the body is read with a byte limit (MAX_FRAME_BYTES,
the size /ws allows a frame) before anything is parsed; `text/plain` is accepted
besides `application/json` because that is what sendBeacon sends for a string,
a CORS-simple request that a closing page can send without a preflight; and the
ERROR's code is also said by the status (400, 413, 429, 503), with Retry-After
where the client should wait. A request is one batch, so it has no rate bucket
of its own: only its token's bucket, shared with that token's WebSockets, applies.
"""

from __future__ import annotations

import asyncio
import math

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app.codes import ErrorCode
from app.edge.auth import PRINCIPAL_KEY
from app.errors import error_response
from app.ingest import flow
from app.ingest.rate import IngestRateLimiter
from app.ingest.validation import Rejection
from app.services import Services

# The batch number the ACK or ERROR carries: one request, one batch.
_NUMBER = 1
_MEDIA_TYPES = frozenset({"application/json", "text/plain"})
_STATUS: dict[str, int] = {ErrorCode.TOO_LARGE: 413, ErrorCode.RATE_LIMITED: 429, ErrorCode.UNAVAILABLE: 503}
# The database is down or the writer is stopping: about when a retry may succeed.
_UNAVAILABLE_RETRY_SECONDS = 1


async def _read_body(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None as soon as it is over max_bytes (the rest is never buffered)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)


def _response(answer: flow.Answer) -> Response:
    if answer.error is None:
        return Response(answer.body, media_type="application/json")
    headers: dict[str, str] = {}
    if answer.retry_after_ms is not None:
        headers["Retry-After"] = str(max(1, math.ceil(answer.retry_after_ms / 1000)))
    elif answer.error == ErrorCode.UNAVAILABLE:
        headers["Retry-After"] = str(_UNAVAILABLE_RETRY_SECONDS)
    return Response(answer.body, status_code=_STATUS.get(answer.error, 400), headers=headers, media_type="application/json")


def _unsupported(content_type: str) -> Response:
    message = (
        f"Content-Type {content_type!r} is not accepted: send the batch as application/json "
        "(curl: -H 'Content-Type: application/json') or text/plain."
    )
    return error_response(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, message)


def routes(
    limits: flow.IngestLimits, rates: IngestRateLimiter, max_body_bytes: int, body_timeout_seconds: float
) -> list[BaseRoute]:
    """POST /batch with the values it uses; `rates` is the one /ws uses, so a token's bucket is shared.

    `body_timeout_seconds` bounds reading the body, as the request head is bounded
    (HANDSHAKE_TIMEOUT_SECONDS): a client that trickles a body cannot hold a request open.
    """

    async def endpoint(request: Request) -> Response:
        services: Services = request.app.state.services
        if services.drain.draining:
            message = "The server is shutting down; send the batch again (to another instance)."
            return _response(await flow.answer(Rejection(_NUMBER, None, ErrorCode.UNAVAILABLE, message), services.rejected, None))
        unknown = flow.unknown_parameter([name for name, _ in request.query_params.multi_items()], "/batch")
        if unknown is not None:
            return error_response(400, *unknown)
        rules = flow.frame_rules(request.query_params, limits)
        if isinstance(rules, tuple):
            return error_response(400, *rules)
        content_type = request.headers.get("content-type", "")
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type and media_type not in _MEDIA_TYPES:
            return _unsupported(content_type)
        try:
            async with asyncio.timeout(body_timeout_seconds):
                body = await _read_body(request, max_body_bytes)
        except ClientDisconnect:  # the client left mid-body: nothing to store, nobody to answer
            return Response(status_code=400)
        except TimeoutError:
            message = f"The body did not arrive within {body_timeout_seconds:g} s; nothing was stored."
            return error_response(408, ErrorCode.REQUEST_TIMEOUT, message, {"Connection": "close"})
        pending: flow.Submitted | Rejection
        if body is None:
            message = f"The body is over {max_body_bytes} bytes (MAX_FRAME_BYTES); send fewer events per batch."
            pending = flow.refuse(
                Rejection(_NUMBER, None, ErrorCode.TOO_LARGE, message), None, rules.session_id, services.rejected, None
            )
        else:
            try:
                frame = body.decode()
            except UnicodeDecodeError as exc:
                message = f"The body is not UTF-8 (byte {exc.start}); nothing was stored."
                rejection = Rejection(_NUMBER, None, ErrorCode.INVALID_JSON, message)
                pending = flow.refuse(rejection, body, rules.session_id, services.rejected, None)
            else:
                rate = rates.for_request(request.scope.get(PRINCIPAL_KEY))
                pending = flow.admit(frame, _NUMBER, rules, rate, services.writer, services.rejected, None)
        return _response(await flow.answer(pending, services.rejected, None))

    return [Route("/batch", endpoint, methods=["POST"], name="ingest_batch")]
