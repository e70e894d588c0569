"""The monitor page's session search and breakdown chart, in a real Chromium, at 1440 and 390 px.

Reuses test_monitor_page's browser fixture and helpers (the same page, the same checks
for page errors). Each test has a service and database of its own, so what it finds is
exactly what it uploaded.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from test.integration import test_monitor_page as monitor_page
from test.integration.test_monitor_page import DESKTOP, PHONE, _now_ms, page_on, send

browser = monitor_page.browser  # the module-scoped Chromium fixture, shared

try:
    from playwright.async_api import Browser, expect
except ImportError:  # the browser fixture reports it as a visible skip
    Browser = Any  # type: ignore[misc,assignment]

VIEWPORTS = [pytest.param(DESKTOP, id="1440px"), pytest.param(PHONE["viewport"], id="390px")]


async def _upload(svc: Any) -> dict[str, str]:
    """Three sessions a few minutes ago: pro buyer (ended after 10 min), free buyer (open), a viewer."""
    base = _now_ms() - 15 * 60_000
    pro, free, viewer = (str(uuid.uuid4()) for _ in range(3))
    await send(
        svc,
        pro,
        [
            {"type": "SESSION_START", "timestamp": base},
            {"type": "EVENT", "timestamp": base + 1_000, "name": "view", "data": {"path": "/"}},
            {"type": "EVENT", "timestamp": base + 2_000, "name": "checkout", "data": {"plan": "pro", "n": 3}},
            {"type": "SESSION_END", "timestamp": base + 600_000},
        ],
    )
    await send(
        svc,
        free,
        [
            {"type": "SESSION_START", "timestamp": base + 10},
            {"type": "EVENT", "timestamp": base + 1_010, "name": "checkout", "data": {"plan": "free"}},
            {"type": "EVENT", "timestamp": base + 1_020, "name": "checkout", "data": {"plan": "free"}},
            {"type": "EVENT", "timestamp": base + 1_030, "name": "checkout"},
        ],
    )
    await send(
        svc,
        viewer,
        [
            {"type": "SESSION_START", "timestamp": base + 20},
            {"type": "EVENT", "timestamp": base + 1_000, "name": "view", "data": {"path": "/cart"}},
        ],
    )
    return {"pro": pro, "free": free, "viewer": viewer}


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_session_search_finds_sessions_whose_trees_open(
    browser: Browser, start_service: Any, viewport: dict[str, int]
) -> None:
    svc = await start_service()
    ids = await _upload(svc)
    phone = viewport["width"] < 600
    extra = {"is_mobile": True, "has_touch": True} if phone else {}
    async with page_on(browser, svc, viewport=viewport, **extra) as monitor:
        page = monitor.page
        await monitor.open()
        items = page.locator('[data-testid="session-item"]')
        await expect(items).to_have_count(3)
        await page.locator("#search-box summary").click()
        await page.get_by_test_id("search-name").fill("checkout")
        await page.get_by_test_id("search-apply").click()
        await expect(page.locator("#sessions-title")).to_have_text("Found sessions")
        await expect(items).to_have_count(2)
        assert set(await items.evaluate_all("bs => bs.map(b => b.dataset.sessionId)")) == {ids["pro"], ids["free"]}

        await page.get_by_test_id("search-data").fill("plan:pro\nn:3")
        await page.get_by_test_id("search-apply").click()
        await expect(items).to_have_count(1)
        await expect(monitor.session_item(ids["pro"])).to_be_visible()
        assert "data=plan%3Apro" in [u for u in monitor.requests if "/sessions?" in u][-1]

        # Nothing matches: said so.
        await page.get_by_test_id("search-ended").select_option("false")
        await page.get_by_test_id("search-apply").click()
        await expect(items).to_have_count(0)
        await expect(page.get_by_test_id("sessions-status")).to_have_text("No session matches the search.")

        await page.get_by_test_id("search-ended").select_option("true")
        await page.get_by_test_id("search-min").fill("540")
        await page.get_by_test_id("search-apply").click()
        await expect(items).to_have_count(1)
        box = await monitor.session_item(ids["pro"]).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"] + 1, box

        # A result opens its tree.
        await monitor.session_item(ids["pro"]).click()
        detail = page.get_by_test_id("session-detail")
        await expect(detail).to_have_attribute("data-loaded", "true")
        await expect(page.get_by_test_id("detail-id")).to_have_text(ids["pro"])
        await expect(page.locator('[data-testid="tree-event"]')).to_have_count(2)
        await page.get_by_test_id("detail-close").click()

        # A bad filter is said, not sent; Clear lists the recent sessions again.
        await page.get_by_test_id("search-data").fill("no-colon")
        await page.get_by_test_id("search-apply").click()
        await expect(page.get_by_test_id("search-error")).to_be_visible()
        await page.get_by_test_id("search-clear").click()
        await expect(items).to_have_count(3)
        await expect(page.locator("#sessions-title")).to_have_text("Recent sessions")
        await monitor.screenshot(f"monitor-search-{viewport['width']}.png", full_page=True)


async def test_the_key_list_fills_when_the_feed_brings_a_chosen_names_keys_later(browser: Browser, start_service: Any) -> None:
    # The names come from /stats/names, the keys from the live feed: hold the feed until a
    # name is chosen, then the list must fill by itself, with no click on it.
    svc = await start_service()
    await _upload(svc)
    async with page_on(browser, svc) as monitor:
        page = monitor.page
        release = asyncio.Event()

        async def hold(route: Any) -> None:
            await release.wait()
            await route.continue_()

        await page.route("**/database_events*", hold)
        await monitor.open("#analytics", wait_live=False)
        await expect(page.get_by_test_id("view-analytics")).to_have_attribute("data-loaded", "true")
        names = page.get_by_test_id("an-bd-name")
        await expect(names.locator("option")).to_have_count(3)
        await names.select_option("checkout")
        keys = page.get_by_test_id("an-bd-key")
        await expect(keys.locator("option")).to_have_text(["no data keys seen for this name"])
        release.set()
        await monitor.expect_state("live")
        await expect(keys.locator("option")).to_have_text(["choose a key…", "n", "plan"])


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_breakdown_chart_of_a_chosen_name_and_key(browser: Browser, start_service: Any, viewport: dict[str, int]) -> None:
    svc = await start_service()
    await _upload(svc)
    phone = viewport["width"] < 600
    extra = {"is_mobile": True, "has_touch": True} if phone else {}
    async with page_on(browser, svc, viewport=viewport, **extra) as monitor:
        page = monitor.page
        await monitor.open("#analytics")
        await expect(page.get_by_test_id("view-analytics")).to_have_attribute("data-loaded", "true")
        names = page.get_by_test_id("an-bd-name")
        await expect(names.locator("option")).to_have_count(3)  # the prompt, checkout, view
        await names.select_option("checkout")
        keys = page.get_by_test_id("an-bd-key")
        try:
            await expect(keys.locator("option")).to_have_text(["choose a key…", "n", "plan"])
        except AssertionError as exc:  # seen once under a CPU hog: say what the page held
            state = await page.evaluate(
                "() => ({analytics: window.eventAnalytics.breakdown, chosen: document.getElementById('an-bd-name').value})"
            )
            raise AssertionError(f"{exc}\npage state: {state}") from exc
        await keys.select_option("plan")
        bars = page.locator('#an-breakdown [data-testid="an-bd-bar"]')
        await expect(bars).to_have_count(3)  # "free", "pro", and the event without data
        assert await bars.evaluate_all("bs => bs.map(b => [b.dataset.value, +b.dataset.events])") == [
            ['"free"', 2],
            ['"pro"', 1],
            ["(no plan)", 1],
        ]
        widths = await bars.evaluate_all("bs => bs.map(b => +b.getAttribute('width'))")
        assert widths[0] > widths[1] > 0
        fig = await page.get_by_test_id("an-breakdown").bounding_box()
        assert fig is not None and fig["x"] + fig["width"] <= viewport["width"] + 1, fig
        request = [u for u in monitor.requests if "/stats/breakdown?" in u][-1]
        assert "name=checkout" in request and "key=plan" in request
        await monitor.screenshot(f"monitor-breakdown-{viewport['width']}.png", full_page=True)
