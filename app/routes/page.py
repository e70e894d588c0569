"""GET /: the live monitor page, plain files served by the app (no build step)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# The page renders uploaded names and data as text only; this makes a future slip
# harmless: no script, style, connection or frame from anywhere but this origin,
# no inline script, no plugins, no <base> rewriting, not framable. The favicon is
# an empty data: URL. Charts are SVG built by the page's own script; style changes
# made through the CSSOM (element.style) are not inline styles and stay allowed.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


async def index(_request: Request) -> Response:
    headers = {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=headers)


routes = [
    Route("/", index, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
]
