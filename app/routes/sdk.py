"""GET /sdk/eventservice.js and /sdk/eventservice.d.ts: the browser uploader, served by the app.

Read once at import: the files ship with the code, so their bytes (and the ETag,
a hash of them) change only with a deploy. A page of another origin imports the
module with a CORS fetch (module scripts always are), hence
`Access-Control-Allow-Origin: *`: the library is public code, and it carries no
credential (the token is the page's, given to createUploader). `no-cache` with a
strong ETag: browsers keep it and revalidate with a 304, so a deploy reaches every
page at its next load while an unchanged library costs one round trip and no body.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SDK_DIR = Path(__file__).resolve().parent.parent / "static" / "sdk"
_CACHE_CONTROL = "no-cache"


class _Asset(NamedTuple):
    body: bytes
    media_type: str
    etag: str


def _load(name: str, media_type: str) -> _Asset:
    body = (SDK_DIR / name).read_bytes()
    return _Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


_ASSETS = {
    "eventservice.js": _load("eventservice.js", "text/javascript; charset=utf-8"),
    "eventservice.d.ts": _load("eventservice.d.ts", "application/typescript; charset=utf-8"),
}


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison, as If-None-Match uses: `*`, a list, W/ prefixes."""
    if if_none_match is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


async def asset(request: Request) -> Response:
    found = _ASSETS[request.url.path.rsplit("/", 1)[-1]]
    headers = {
        "ETag": found.etag,
        "Cache-Control": _CACHE_CONTROL,
        "Access-Control-Allow-Origin": "*",
        "X-Content-Type-Options": "nosniff",
    }
    if _matches(request.headers.get("if-none-match"), found.etag):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


routes = [Route(f"/sdk/{name}", asset, methods=["GET"]) for name in _ASSETS]
