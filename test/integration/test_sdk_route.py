"""GET /sdk/eventservice.js and .d.ts: open with tokens set, cacheable by ETag, CORS `*`, < 10 KB gzipped."""

from __future__ import annotations

import gzip
import hashlib

import aiohttp

from app.routes.sdk import SDK_DIR
from test.conftest import StartService

GZIP_BUDGET_BYTES = 10 * 1024


async def test_module_is_served_open_with_a_strong_etag_and_cors(start_service: StartService) -> None:
    service = await start_service(env={"INGEST_TOKENS": "in-secret", "READ_TOKENS": "read-secret"})
    on_disk = (SDK_DIR / "eventservice.js").read_bytes()
    async with aiohttp.ClientSession() as http:
        async with http.get(service.url + "/sdk/eventservice.js", headers={"Origin": "https://shop.example"}) as response:
            assert response.status == 200  # no token: the library is public
            body = await response.read()
            headers = response.headers
        assert body == on_disk
        assert headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert headers["Cache-Control"] == "no-cache"
        etag = headers["ETag"]
        assert etag == '"' + hashlib.sha256(on_disk).hexdigest()[:32] + '"'  # strong: no W/

        for tag in (etag, f'"other", W/{etag}', "*"):
            async with http.get(service.url + "/sdk/eventservice.js", headers={"If-None-Match": tag}) as response:
                assert response.status == 304, tag
                assert await response.read() == b""
                assert response.headers["ETag"] == etag
        async with http.get(service.url + "/sdk/eventservice.js", headers={"If-None-Match": '"stale"'}) as response:
            assert response.status == 200
            assert await response.read() == on_disk

        async with http.get(service.url + "/sdk/eventservice.d.ts") as response:
            assert response.status == 200
            assert "createUploader" in await response.text()
            assert response.headers["ETag"] != etag
        async with http.get(service.url + "/sdk/other.js") as response:
            assert response.status == 404
            assert (await response.json())["error"]


def test_module_is_under_ten_kilobytes_gzipped() -> None:
    size = len(gzip.compress((SDK_DIR / "eventservice.js").read_bytes(), compresslevel=9))
    assert size < GZIP_BUDGET_BYTES, size
