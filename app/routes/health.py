"""Liveness and readiness: what load balancers and orchestrators poll."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from app.store import store
from app.store.db import DatabaseUnavailable


async def healthcheck(_request: Request) -> Response:
    return PlainTextResponse("OK")


async def readyz(request: Request) -> Response:
    services = request.app.state.services
    if services.drain.draining:
        return JSONResponse({"status": "unavailable", "reason": "shutting down"}, status_code=503)
    try:
        await store.ping(services.pool, seconds=2)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; classified for the body
        reason = "database unreachable" if isinstance(exc, DatabaseUnavailable) else "database error"
        return JSONResponse({"status": "unavailable", "reason": f"{reason}: {exc!s}"[:300]}, status_code=503)
    holder = services.watch.lock_holder if services.watch is not None else None
    if holder is not None:
        # Ingest is stalled behind another transaction (app/store/watch.py): say whose.
        reason = (
            f"insert lock held for {holder.held_seconds:.0f}s by backend pid {holder.pid} "
            f"({holder.application_name or 'no application_name'}, {holder.state}) since {holder.since.isoformat()}"
        )
        return JSONResponse({"status": "unavailable", "reason": reason, "lock_holder": holder.as_json()}, status_code=503)
    body: dict[str, object] = {"status": "ready"}
    retention = services.retention
    if retention is not None and retention.retained_from_ms is not None:
        body["retained_from"] = retention.retained_from_ms  # the store time (ms) of the oldest retained entry
    return JSONResponse(body)


routes = [
    Route("/healthcheck", healthcheck, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
