"""The browser uploader (/sdk/eventservice.js) in a real Chromium, loaded by a page of another origin.

As a shop's site would use it: a small static server on its own port serves a page
that imports the module from the service; the service lists that page's origin in
ALLOWED_ORIGINS. Each scenario tags its events with a unique `run` in their data and
counts them in the database: every tracked event stored exactly once (as many rows
as distinct indexes, as many as were tracked). Restarts, kill -9, offline periods
and closed tabs are real; waiting is by polling with a deadline, never by sleeping
(the one sleep-like thing is the page's own 200 events/s pacing, and holding the
network off for a stretch of time).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from test.conftest import StartService
from test.integration.test_monitor_page import browser  # noqa: F401 (the shared Chromium fixture)
from test.support.postgres import free_port
from test.support.service import Service

try:
    from playwright.async_api import Browser, BrowserContext, Page
except ImportError:  # the browser fixture skips visibly
    pass

pytestmark = pytest.mark.browser

DEADLINE_S = 60.0
# The library's backoff caps at 30 s; a test restarts the service within seconds,
# so a lower cap keeps its run time short without changing what is tested.
FAST_RECONNECT = {"maxReconnectDelayMs": 2000}

PAGE = """<!doctype html><meta charset="utf-8"><title>shop</title>
<script type="module">
import { createUploader } from "%(service)s/sdk/eventservice.js";
window.errors = [];
window.make = (options) => {
  window.up = createUploader({ endpoint: "%(service)s", onError: (e) => window.errors.push(e), ...options });
  return window.up.sessionId;
};
// n events tagged {run, i} at `perSecond`, from index `from`; resolves when all are tracked.
window.pace = async (run, from, n, perSecond) => {
  const t0 = performance.now();
  for (let k = 0; k < n; k++) {
    window.up.track("paced", { run, i: from + k });
    const wait = t0 + ((k + 1) * 1000) / perSecond - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
};
window.addEventListener("pageshow", (e) => { if (e.persisted) window.restored = (window.restored || 0) + 1; });
window.ready = true;
</script>"""


class Shop:
    """The page origin: serves one HTML page that imports the library from the service."""

    def __init__(self) -> None:
        self.port = free_port()
        self.service_url = ""
        self.runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"

    async def start(self, service_url: str) -> None:
        self.service_url = service_url
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/away", self._away)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _page(self, _request: web.Request) -> web.Response:
        return web.Response(text=PAGE % {"service": self.service_url}, content_type="text/html")

    async def _away(self, _request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><p>another page of the shop</p>", content_type="text/html")

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


ShopFactory = Callable[..., Awaitable[tuple[Shop, Service]]]


@pytest.fixture
async def shop_with(start_service: StartService) -> AsyncIterator[ShopFactory]:
    """A page origin and a service that allows it, the service with extra settings."""
    shops: list[Shop] = []

    async def start(**env: str) -> tuple[Shop, Service]:
        shop = Shop()
        shops.append(shop)
        service = await start_service(env={"ALLOWED_ORIGINS": shop.origin, **env})
        await shop.start(service.url)
        return shop, service

    try:
        yield start
    finally:
        for shop in shops:
            await shop.stop()


@pytest.fixture
async def shop_service(shop_with: ShopFactory) -> tuple[Shop, Service]:
    return await shop_with()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:  # noqa: F811
    ctx = await browser.new_context()
    ctx.set_default_timeout(30_000)
    try:
        yield ctx
    finally:
        await ctx.close()


async def open_page(ctx: BrowserContext, shop: Shop, page_errors: list[str] | None = None) -> Page:
    page = await ctx.new_page()
    errors = page_errors if page_errors is not None else []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(shop.origin + "/")
    await page.wait_for_function("window.ready === true")
    return page


async def make(page: Page, **options: Any) -> str:
    session: str = await page.evaluate("(o) => window.make(o)", {**FAST_RECONNECT, **options})
    return session


async def flush(page: Page) -> None:
    await page.evaluate("() => window.up.flush()")


_COUNT_RUN = "SELECT count(*) AS n, count(DISTINCT data->>'i') AS d FROM events WHERE data->>'run' = $1"


async def stored(service: Service, run: str) -> tuple[int, int]:
    """(rows, distinct indexes) of the events tagged with `run`."""
    conn = await asyncpg.connect(service.database_url)
    try:
        row = await conn.fetchrow(_COUNT_RUN, run)
    finally:
        await conn.close()
    assert row is not None
    return int(row["n"]), int(row["d"])


async def until(probe: Callable[[], Awaitable[bool]], what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s:g}s waiting for {what}")
        await asyncio.sleep(0.1)


async def assert_exactly_once(service: Service, run: str, expected: int) -> None:
    async def complete() -> bool:
        return (await stored(service, run))[1] >= expected

    await until(complete, f"{expected} events of run {run}")
    assert await stored(service, run) == (expected, expected)


async def leftovers(page: Page) -> int:
    count: int = await page.evaluate("() => Object.keys(localStorage).filter((k) => k.startsWith('eventservice:b:')).length")
    return count


async def test_sigterm_and_kill_9_mid_stream_lose_and_duplicate_nothing(
    shop_service: tuple[Shop, Service], context: BrowserContext
) -> None:
    shop, service = shop_service
    page = await open_page(context, shop)
    await make(page)
    run = uuid.uuid4().hex
    await page.evaluate("(run) => { window.done = window.pace(run, 0, 2000, 200); }", run)

    await until(lambda: _at_least(service, run, 300), "the first events")
    service.signal(signal.SIGTERM)
    assert service.wait() == 0
    service.start()
    await until(lambda: _at_least(service, run, 900), "events after the SIGTERM restart")
    service.signal(signal.SIGKILL)
    service.wait()
    service.start()
    await page.evaluate("() => window.done")
    await flush(page)
    await assert_exactly_once(service, run, 2000)
    assert await page.evaluate("() => [window.up.pending, window.errors.length]") == [0, 0]


async def test_offline_period_mid_stream(shop_service: tuple[Shop, Service], context: BrowserContext) -> None:
    shop, service = shop_service
    page = await open_page(context, shop)
    closes: list[str] = []
    page.on("websocket", lambda ws: ws.on("close", lambda _ws: closes.append("close")))
    await make(page)
    run = uuid.uuid4().hex
    await page.evaluate("(run) => { window.done = window.pace(run, 0, 600, 200); }", run)
    await until(lambda: _at_least(service, run, 100), "events before going offline")
    await context.set_offline(True)
    assert await page.evaluate("() => navigator.onLine") is False
    await until(lambda: _true(bool(closes)), "the socket to be closed when the network went away")
    offline_at = (await stored(service, run))[1]
    await asyncio.sleep(2.0)  # a stretch offline, not a synchronisation
    # Nothing got through meanwhile, beyond the frames in flight at the close (4 of 50) committing late.
    assert (await stored(service, run))[1] <= offline_at + 4 * 50
    assert await page.evaluate("() => window.up.pending") >= 300  # 2 s at 200/s, queued
    await context.set_offline(False)
    await page.evaluate("() => window.done")
    await flush(page)
    await assert_exactly_once(service, run, 600)


async def _true(value: bool) -> bool:
    return value


async def _at_least(service: Service, run: str, n: int) -> bool:
    return (await stored(service, run))[1] >= n


async def test_tab_closed_right_after_tracking_is_resent_by_the_next_page(
    shop_service: tuple[Shop, Service], context: BrowserContext
) -> None:
    shop, service = shop_service
    first = await open_page(context, shop)
    await make(first)
    run = uuid.uuid4().hex
    # 50 events, no await in the page: the tab is closed while they are still on their way.
    await first.evaluate("(run) => { for (let i = 0; i < 50; i++) window.up.track('closing', { run, i }); }", run)
    await first.close(run_before_unload=True)

    second = await open_page(context, shop)
    await make(second)
    await assert_exactly_once(service, run, 50)
    await until(lambda: _no_leftovers(second), "the leftovers to be deleted after their ACK")
    assert await stored(service, run) == (50, 50)


async def _no_leftovers(page: Page) -> bool:
    return await leftovers(page) == 0


async def test_two_tabs_at_once_one_closed(shop_service: tuple[Shop, Service], context: BrowserContext) -> None:
    shop, service = shop_service
    a, b = await open_page(context, shop), await open_page(context, shop)
    session_a, session_b = await make(a), await make(b)
    assert session_a != session_b  # one session per tab
    run = uuid.uuid4().hex
    await a.evaluate("(run) => { window.done = window.pace(run, 0, 400, 200); }", run)
    await b.evaluate("(run) => { window.done = window.pace(run, 100000, 400, 200); }", run)
    await a.evaluate("() => window.done")
    await a.close(run_before_unload=True)
    await b.evaluate("() => window.done")
    await flush(b)
    # The closed tab's unACKed batches (if any) are resent by the next uploader of the origin.
    c = await open_page(context, shop)
    await make(c)
    await assert_exactly_once(service, run, 800)
    await until(lambda: _no_leftovers(c), "every batch ACKed and deleted")


async def test_one_invalid_event_costs_only_itself(shop_service: tuple[Shop, Service], context: BrowserContext) -> None:
    shop, service = shop_service
    page = await open_page(context, shop)
    await make(page, flushEvents=10)
    run = uuid.uuid4().hex
    accepted = await page.evaluate(
        """(run) => {
          const out = [];
          for (let i = 0; i < 15; i++) out.push(window.up.track('ok', { run, i }));
          out.push(window.up.track('x'.repeat(300), { run, i: 'bad' }));
          for (let i = 15; i < 30; i++) out.push(window.up.track('ok', { run, i }));
          return out;
        }""",
        run,
    )
    assert accepted == [True] * 15 + [False] + [True] * 15
    await flush(page)
    errors = await page.evaluate("() => window.errors")
    assert [e["error"] for e in errors] == ["invalid_event"], errors
    assert errors[0]["details"][0]["field"] == "name"
    await assert_exactly_once(service, run, 30)


async def test_a_full_local_storage_is_reported_and_loses_nothing_while_the_page_lives(
    shop_service: tuple[Shop, Service], context: BrowserContext
) -> None:
    shop, service = shop_service
    page_errors: list[str] = []
    page = await open_page(context, shop, page_errors)
    try:
        await make(page, flushEvents=10)
        # Fill the origin's localStorage to its quota with someone else's keys.
        filled = await page.evaluate(
            """() => {
              const chunk = 'x'.repeat(256 * 1024);
              let n = 0;
              for (;;) {
                try { localStorage.setItem('other:' + n, chunk); n++; } catch { break; }
              }
              for (let k = 0; ; k++) {  // then the last few KiB
                try { localStorage.setItem('small:' + k, 'x'.repeat(512)); } catch { return n; }
              }
            }"""
        )
        assert filled > 0
        run = uuid.uuid4().hex
        # A handler as apps write them: it tracks an event of its own for each of the
        # first three warnings, and the first time it also throws.
        tracked = await page.evaluate(
            """(run) => {
              window.seen = [];
              window.errors = { push: (e) => {
                window.seen.push(e);
                if (e.error === 'storage_full' && window.seen.length <= 3) {
                  window.up.track('full', { run, i: 1000 + window.seen.length });
                  if (window.seen.length === 1) throw new Error('a bug in the app handler');
                }
              } };
              const out = [];
              for (let i = 0; i < 30; i++) out.push(window.up.track('full', { run, i }));
              return out;
            }""",
            run,
        )
        assert tracked == [True] * 30
        await flush(page)
        await page.wait_for_function("window.seen.length >= 3")
        await flush(page)  # the three events the handler tracked
        seen = await page.evaluate("() => window.seen")
        assert {e["error"] for e in seen} == {"storage_full"} and len(seen) >= 4, seen
        assert all(e["batch_id"] for e in seen) and "memory" in seen[0]["message"]
        await assert_exactly_once(service, run, 33)
        assert await page.evaluate("() => window.up.pending") == 0
        assert page_errors == []  # the handler's throw did not escape into the page
    finally:
        await page.evaluate("() => localStorage.clear()")


async def test_flush_resolves_after_the_ack(shop_service: tuple[Shop, Service], context: BrowserContext) -> None:
    shop, service = shop_service
    page = await open_page(context, shop)
    # Nothing is sealed by size or time: only flush() seals, so the check below sees its effect alone.
    session = await make(page, flushEvents=1000, flushMs=600_000)
    run = uuid.uuid4().hex
    await page.evaluate("(run) => { window.up.start(); for (let i = 0; i < 120; i++) window.up.track('f', { run, i }); }", run)
    assert await page.evaluate("() => window.up.pending") == 121
    await flush(page)
    assert await page.evaluate("() => window.up.pending") == 0
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/session/{session}") as response:
        assert response.status == 200
        tree = await response.json()
    assert tree["start"] is not None
    assert sorted(child["data"]["i"] for child in tree["children"]) == list(range(120))


async def test_rate_limited_batches_are_retried_after_their_delay(shop_with: ShopFactory, context: BrowserContext) -> None:
    # 4 batches/s after a burst of 2: most frames of this run are answered rate_limited first.
    shop, service = await shop_with(INGEST_RATE_PER_CONNECTION="4", INGEST_BURST_PER_CONNECTION="2")
    page = await open_page(context, shop)
    limited: list[str] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda frame: limited.append(str(frame)) if "rate_limited" in str(frame) else None),
    )
    await make(page, flushEvents=10)
    run = uuid.uuid4().hex
    await page.evaluate("(run) => { for (let i = 0; i < 120; i++) window.up.track('limited', { run, i }); }", run)
    await flush(page)
    await assert_exactly_once(service, run, 120)
    assert await page.evaluate("() => window.errors") == []
    assert limited, "no frame was answered rate_limited: the retry path was not taken"
    assert '"retry_after_ms"' in limited[0]


async def test_a_refused_batch_is_reported_once_and_dropped(shop_with: ShopFactory, context: BrowserContext) -> None:
    # The server takes at most 20 events a batch; the page seals 30: too_large, not worth resending.
    shop, service = await shop_with(MAX_BATCH_EVENTS="20")
    page = await open_page(context, shop)
    await make(page, flushEvents=30)
    run = uuid.uuid4().hex
    await page.evaluate("(run) => { for (let i = 0; i < 30; i++) window.up.track('big', { run, i }); }", run)
    await flush(page)
    errors = await page.evaluate("() => window.errors")
    assert [e["error"] for e in errors] == ["too_large"], errors
    assert isinstance(errors[0]["batch_id"], str)
    assert await page.evaluate("() => window.up.pending") == 0
    # The uploader carries on: a smaller batch after it is stored.
    await page.evaluate("(run) => { for (let i = 30; i < 40; i++) window.up.track('small', { run, i }); }", run)
    await flush(page)
    assert await stored(service, run) == (10, 10)
    assert await leftovers(page) == 0


async def test_a_batch_over_the_servers_frame_limit_is_reported_once_and_does_not_block_the_rest(
    shop_with: ShopFactory, context: BrowserContext
) -> None:
    # The server reads at most 4 KiB a frame and closes with 1009 on a larger one; the
    # page seals below its own 512 KiB. One event of 6 KB among six small ones, each its
    # own batch, several in flight: the big one is found, dropped and reported once.
    shop, service = await shop_with(MAX_FRAME_BYTES="4096")
    page = await open_page(context, shop)
    closes: list[str] = []
    page.on("websocket", lambda ws: ws.on("close", lambda _ws: closes.append("closed")))
    await make(page, flushEvents=1)
    run = uuid.uuid4().hex
    await page.evaluate(
        """(run) => {
          for (let i = 0; i < 7; i++) window.up.track('frame', i === 2 ? { run, i, pad: 'x'.repeat(6000) } : { run, i });
        }""",
        run,
    )
    await asyncio.wait_for(flush(page), DEADLINE_S)
    errors = await page.evaluate("() => window.errors")
    assert [e["error"] for e in errors] == ["too_large"], errors
    assert "MAX_FRAME_BYTES" in errors[0]["message"] and isinstance(errors[0]["batch_id"], str)
    assert closes, "the server never closed a socket: the 1009 path was not taken"
    assert await stored(service, run) == (6, 6)
    assert await page.evaluate("() => window.up.pending") == 0
    assert await leftovers(page) == 0
    # The uploader carries on at full speed on the next socket.
    await page.evaluate("(run) => { for (let i = 7; i < 17; i++) window.up.track('frame', { run, i }); }", run)
    await asyncio.wait_for(flush(page), DEADLINE_S)
    assert await stored(service, run) == (16, 16)


_PARTS = r"""async () => {
  const m = await import(document.body.dataset.sdk);
  const out = {};
  const rule = (name, data) => { const r = m.checkEvent(name, data); return r && r.details[0].field; };
  // The data object is level 1, as the server counts (MAX_DATA_DEPTH, 64 by default).
  const nest = (levels) => { let v = {}; for (let i = 1; i < levels; i++) v = { a: v }; return v; };
  out.rules = [
    rule("a", { ok: 1 }), rule("", undefined), rule("x".repeat(255), undefined), rule("x".repeat(256), undefined),
    rule("\u{1F600}".repeat(255), undefined), rule("a\u0000", undefined), rule("\uD800", undefined),
    rule("a", []), rule("a", new Date()), rule("a", { s: "\u0000" }), rule("a", { ["k\uDC00"]: 1 }),
    rule("a", { n: NaN }), rule("a", { s: "x".repeat(16376) }), rule("a", { s: "x".repeat(16377) }),
    rule("a", nest(64)), rule("a", nest(65)),
  ];
  const store = m.openStorage("memory");
  const q = new m.BatchQueue("s1", store);
  const b1 = q.seal([{ type: "EVENT", timestamp: 1, name: "a" }]);
  const b2 = q.seal([{ type: "EVENT", timestamp: 2, name: "b" }, { type: "EVENT", timestamp: 3, name: "c" }]);
  const reloaded = new m.BatchQueue("s1", store);
  out.reloaded = [reloaded.batches.map((b) => b.id), reloaded.events, new m.BatchQueue("s2", store).events];
  out.ids = [b1.id, b2.id];
  out.frame = JSON.parse(b2.frame);
  reloaded.remove(b1.id);
  out.afterAck = [new m.BatchQueue("s1", store).batches.map((b) => b.id), reloaded.events];
  const delays = [];
  for (let attempt = 0; attempt < 40; attempt++) delays.push(m.backoffMs(attempt));
  out.delays = [Math.min(...delays), Math.max(...delays), delays[0], Math.max(...delays.slice(0, 3))];
  const errors = [];
  const up = m.createUploader({ endpoint: "http://127.0.0.1:9", storage: "memory", maxQueueEvents: 3,
                                onError: (e) => errors.push(e.error) });
  out.full = [up.track("a"), up.track("b"), up.track("c"), up.track("d"), up.pending, [...errors]];
  up.close();
  out.closed = [up.track("e"), errors.at(-1)];
  const stored = () => Object.keys(localStorage).filter((k) => k.startsWith("eventservice:b:")).length;
  out.storage = {};
  for (const storage of ["memory", "local"]) {
    const u = m.createUploader({ endpoint: "http://127.0.0.1:9", storage, flushEvents: 5 });
    for (let i = 0; i < 10; i++) u.track("s");
    out.storage[storage] = [stored(), u.pending];
    u.close();
  }
  return out;
}"""


async def test_the_pure_parts_alone(shop_service: tuple[Shop, Service], context: BrowserContext) -> None:
    """Event rules, the queue and its storage, the backoff, the queue bound: without a server."""
    shop, service = shop_service
    page = await open_page(context, shop)
    await page.evaluate("(url) => { document.body.dataset.sdk = url; }", service.url + "/sdk/eventservice.js")
    out = await page.evaluate(_PARTS)
    # {"s":"…"} is 8 bytes around the string: 16,376 x's make exactly 16 KiB, one more is over.
    names, data = [None, "name", None, "name", None, "name", "name"], ["data"] * 5 + [None, "data"]
    assert out["rules"] == names + data + [None, "data"]
    ids, events, other = out["reloaded"]
    assert ids == out["ids"] and events == 3 and other == 0  # in seal order, per session
    assert out["frame"]["batch_id"] == out["ids"][1] and len(out["frame"]["events"]) == 2
    assert out["afterAck"] == [[out["ids"][1]], 2]
    low, high, first, early = out["delays"]
    assert 250 <= low and high <= 30_000 and first == 250 and early <= 1_000
    assert out["full"] == [True, True, True, False, 3, ["queue_full"]]
    assert out["closed"] == [False, "closed"]
    assert out["storage"] == {"memory": [0, 10], "local": [2, 10]}  # two sealed batches of 5


async def test_leftovers_of_a_tab_closed_while_the_service_was_down_are_resent_by_the_next_page(
    shop_service: tuple[Shop, Service], context: BrowserContext
) -> None:
    # With the service down neither the socket nor the beacon can deliver: only the next page's claim can.
    shop, service = shop_service
    first = await open_page(context, shop)
    await make(first)
    service.stop()
    run = uuid.uuid4().hex
    await first.evaluate("(run) => { for (let i = 0; i < 120; i++) window.up.track('left', { run, i }); }", run)
    assert await leftovers(first) == 2  # two batches of 50 sealed and stored; 20 in the open batch
    async with first.expect_event("close"):  # with run_before_unload, close() does not wait for it
        await first.close(run_before_unload=True)  # pagehide seals the last 20 (its beacon fails)
    service.start()
    assert await stored(service, run) == (0, 0)

    second = await open_page(context, shop)
    await make(second)
    await assert_exactly_once(service, run, 120)
    await until(lambda: _no_leftovers(second), "the claimed leftovers to be deleted")


@pytest.fixture(scope="module")
async def bfcache_browser() -> AsyncIterator[Browser]:
    """Chromium with its back/forward cache on (Playwright turns it off by default)."""
    from test.integration.test_monitor_page import CHROMIUM, CHROMIUM_ARGS, _missing_tooling, _skip, async_playwright

    missing = _missing_tooling()
    if missing:
        _skip(missing)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            ignore_default_args=["--disable-back-forward-cache"],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_a_page_restored_from_the_back_forward_cache_carries_on(
    shop_service: tuple[Shop, Service], bfcache_browser: Browser
) -> None:
    shop, service = shop_service
    ctx = await bfcache_browser.new_context()
    ctx.set_default_timeout(30_000)
    try:
        page = await open_page(ctx, shop)
        await make(page)
        # Whether Chrome keeps a page in the cache is its own choice (under a full suite's
        # load it once loaded the page afresh instead). Every attempt must lose and
        # duplicate nothing either way; the restore itself must happen in one of them.
        for _ in range(5):
            run = uuid.uuid4().hex
            await page.evaluate("(run) => { for (let i = 0; i < 80; i++) window.up.track('bf', { run, i }); }", run)
            await page.goto(shop.origin + "/away")  # pagehide(persisted): the open batch sealed, the socket closed
            await page.go_back(wait_until="commit")  # a restore fires no load event
            # The same page out of the cache, or a fresh load of it (no uploader yet).
            await page.wait_for_function(
                "window.restored === 1 || (window.ready === true && window.up === undefined && !window.restored)"
            )
            if await page.evaluate("() => window.restored === 1"):
                await page.evaluate("(run) => { for (let i = 80; i < 120; i++) window.up.track('bf', { run, i }); }", run)
                await flush(page)
                await assert_exactly_once(service, run, 120)
                return
            await make(page)  # loaded afresh: the new uploader sends what the old page left
            await flush(page)
            await assert_exactly_once(service, run, 80)
        pytest.fail("Chromium never restored the page from its back/forward cache in 5 attempts")
    finally:
        await ctx.close()
