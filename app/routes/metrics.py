"""GET /metrics: Prometheus text exposition of app.metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import metrics
from app.services import Services


async def prometheus(request: Request) -> Response:
    services: Services = request.app.state.services
    pool = services.pool
    # Pool figures are read at scrape time: there is nothing to count between scrapes.
    metrics.POOL_SIZE.labels("idle").set(pool.get_idle_size())
    metrics.POOL_SIZE.labels("in_use").set(pool.get_size() - pool.get_idle_size())
    metrics.POOL_SIZE.labels("max").set(pool.get_max_size())
    return Response(generate_latest(metrics.exposition_registry()), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", prometheus, methods=["GET"])]
