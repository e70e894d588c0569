"""``python -m bench ingest|fanout|lookup|sdk|soak|stats|validate [options]`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from . import analytics, fanout, ingest, lookup, report, retention, sdk, soak, validate
from .service import Database, database, run_loop

Scenario = Callable[[argparse.Namespace, Database], Awaitable[None]]
SCENARIOS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Scenario, str, float]] = {
    "ingest": (ingest.add_arguments, ingest.main, "WebSocket ingest: events/s, ACK p50/p99, raw COPY ceilings", 10.0),
    "fanout": (fanout.add_arguments, fanout.main, "SSE fan-out: deliveries/s, latency, RSS per idle client", 10.0),
    "lookup": (lookup.add_arguments, lookup.main, "GET /session/<id> of a 1,000-event session: requests/s", 10.0),
    "soak": (soak.add_arguments, soak.main, "M minutes at half load: server RSS at start and end", 0.0),
    "sdk": (sdk.add_arguments, sdk.main, "The browser uploader: one Chromium tab, events/s to durable ACK", 0.0),
    "retention": (retention.add_arguments, retention.main, "steady ingest over retention windows: size, stalls, removals", 0.0),
    "stats": (analytics.add_arguments, analytics.main, "GET /stats/… p50/p99 on a generated 10 M-event database", 0.0),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load generators for eventservice. Each starts the app (and, without a database URL, a "
        "throwaway PostgreSQL), targets 127.0.0.1 only, and prints a markdown table.",
    )
    sub = top.add_subparsers(dest="scenario", required=True)
    for name, (add, _, help_, duration) in SCENARIOS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--database-url", default=None, help="PostgreSQL to use (else $DATABASE_URL, else a throwaway pgserver)")
        p.add_argument("--workers", type=int, default=1, help="passed to the app as --workers (default 1)")
        if duration:
            p.add_argument("--duration", type=float, default=duration, help=f"seconds measured (default {duration:g})")
        p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (default 2)")
        p.add_argument("--server-arg", action="append", default=[], help="extra argument for `python -m app` (repeatable)")
        p.add_argument(
            "--disturbed-above",
            type=float,
            default=report.DISTURBED_CORES,
            metavar="CORES",
            help="mark a row disturbed when other processes used more than this many cores on average "
            f"during its window (default {report.DISTURBED_CORES:g})",
        )
        p.add_argument(
            "--fresh-wal",
            action="store_true",
            help="measure a new throwaway cluster as it is, creating a WAL file every 16 MB of WAL "
            "(default: write and recycle max_wal_size of WAL first, as a cluster that has run a while)",
        )
        add(p)
    v = sub.add_parser("validate", help=validate.__doc__.splitlines()[0], description=validate.__doc__)
    validate.add_arguments(v)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.scenario == "validate":  # pure CPU: no service, no database
        return validate.run(args)
    if getattr(args, "duration", 1.0) <= 0 or args.warmup < 0 or args.workers < 1:
        print("--duration must be > 0, --warmup >= 0, --workers >= 1", file=sys.stderr)
        return 2
    report.DISTURBED_CORES = args.disturbed_above
    run = SCENARIOS[args.scenario][1]
    with database(args.database_url, warm=not args.fresh_wal) as db:
        run_loop(run(args, db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
