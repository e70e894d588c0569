"""The browser uploader's throughput: one Chromium tab pushes N events to durable ACK.

The tab imports /sdk/eventservice.js from the service and tracks N events in chunks
(yielding to its event loop between chunks, as a busy page would, and waiting when
the library's queue nears maxQueueEvents), then awaits flush(): the clock stops when
the last ACK is in, so the figure is events stored durably per second, not events
handed to the library. WebSocket frames are counted by the browser (Playwright's
`framesent`), so "frames per 1,000 events" is what went over the wire, resends included.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import report
from .service import Database, Meter, service

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Runs in the page: track n events in chunks, then flush; returns [ms, refusals].
_PUSH = """async ([base, n, flushEvents, chunk]) => {
  const { createUploader } = await import(base + "/sdk/eventservice.js");
  const errors = [];
  const up = createUploader({ flushEvents, storage: "local", onError: (e) => errors.push(e) });
  const yieldToLoop = () => new Promise((r) => setTimeout(r, 0));
  const t0 = performance.now();
  for (let i = 0; i < n; ) {
    while (up.pending + chunk > 10000) await yieldToLoop();
    for (const end = Math.min(n, i + chunk); i < end; i++) up.track("bench", { i, page: "/cart" });
    await yieldToLoop();
  }
  await up.flush();
  const ms = performance.now() - t0;
  up.close();
  return [ms, errors.length];
}"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=100_000, help="events tracked by the tab (default 100,000)")
    p.add_argument("--flush-events", type=int, default=500, help="the uploader's flushEvents (default 500)")
    p.add_argument("--chunk", type=int, default=1_000, help="events tracked between two yields to the page's loop")


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        raise SystemExit(f"bench sdk needs {CHROMIUM} (apt-get install -y chromium)")


async def main(args: argparse.Namespace, db: Database) -> None:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        raise SystemExit("bench sdk needs Playwright for Python (pip install playwright; never `playwright install`)") from None
    _require_chromium()
    async with service(db, workers=args.workers, extra_args=args.server_arg) as svc, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            frames = [0]
            page.on("websocket", lambda ws: ws.on("framesent", lambda _payload: frames.__setitem__(0, frames[0] + 1)))
            await page.goto(svc.http + "/healthcheck")  # the service's origin: the module is same-origin here
            meter = Meter(svc.tree, db.tree)
            meter.start()
            ms, refused = await page.evaluate(_PUSH, [svc.http, args.events, args.flush_events, args.chunk])
            measured = meter.stop()
        finally:
            await browser.close()
    row: dict[str, Any] = {
        "events": args.events,
        "flushEvents": args.flush_events,
        "events/s (to ACK)": round(args.events / (ms / 1000)),
        "frames per 1,000 events": round(frames[0] * 1000 / args.events, 1),
        "seconds": round(ms / 1000, 2),
        "server CPU s": measured.get("server"),
        "PG CPU s": measured.get("db"),
        "browser+bench CPU s": measured.get("client"),
        "other CPU s": measured.get("other"),
        "disturbed": report.disturbed(measured),
    }
    notes = [f"{refused} events refused by the library (onError)." if refused else "No event refused."]
    report.emit("Browser uploader: one Chromium tab to durable ACK", [row], notes)
