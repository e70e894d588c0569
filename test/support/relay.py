"""A backend relay as a process of its own, for tests that `kill -9` it: `python -m test.support.relay`.

Tracks `count` EVENTs (data {"run": RUN, "uid": i}) over a few sessions through an
Uploader with a spool, printing `tracked <i>` after every tenth track() has returned,
then flushes and prints `done`. With count 0 it only resends what the spool kept.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from eventservice_client import Uploader


async def relay(url: str, spool: str, run: str, count: int, pause_every: int) -> None:
    sessions = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run}/{n}")) for n in range(5)]
    async with Uploader(url, spool=spool, flush_events=20, flush_ms=20, reconnect_max_ms=1000) as up:
        for i in range(count):
            up.track(sessions[i % len(sessions)], "relayed", {"run": run, "uid": i})
            if i % 10 == 9:
                print(f"tracked {i}", flush=True)
            if i % pause_every == pause_every - 1:
                await asyncio.sleep(0.005)  # a relay's events arrive over time
        await up.flush()
        print("done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("spool")
    parser.add_argument("run")
    parser.add_argument("count", type=int)
    parser.add_argument("--pause-every", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(relay(args.url, args.spool, args.run, args.count, args.pause_every))
    sys.exit(0)


if __name__ == "__main__":
    main()
