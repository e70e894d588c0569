"""python -m eventservice_client import FILE|- --url BASE [--token T] [--spool PATH]

Exit codes: 0 every line stored (or already stored by an earlier run); 1 some lines
rejected (each named by its line number), every other line stored; 2 bad usage or an
unreadable file; 3 gave up (refused handshake, or nothing ACKed for --timeout seconds):
run the same command again to go on; 130 interrupted (Ctrl-C), likewise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import BinaryIO, TextIO

from eventservice_client.importer import FATAL_HANDSHAKE, ImportOptions, Report, run_import
from eventservice_client.link import UploadError
from eventservice_client.spool import SpoolBusy
from eventservice_client.uploader import Uploader

MAX_REJECTED_SHOWN = 20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eventservice_client", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    imp = commands.add_parser(
        "import",
        help="upload an NDJSON file (one event object a line, session_id in each), exactly once",
        description="Upload NDJSON events exactly once. Rerunning the same command after an interruption "
        "stores nothing twice and loses nothing.",
    )
    imp.add_argument("file", help="the NDJSON file, or - for stdin")
    imp.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    imp.add_argument("--token", help="an ingest token (sent as Authorization: Bearer)")
    imp.add_argument("--spool", help="SQLite file keeping unACKed batches across runs (needed to resume a pipe)")
    imp.add_argument("--batch-events", type=_positive, default=500, help="events per batch (default 500; keep it across reruns)")
    imp.add_argument("--max-in-flight", type=_positive, default=4, help="batches sent ahead of their ACK (default 4)")
    imp.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds without an ACK (default 120)")
    imp.add_argument("--progress", choices=("auto", "bar", "lines", "none"), default="auto",
                     help="auto: a bar when stderr is a terminal, else a line every second")  # fmt: skip
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


class Progress:
    """A one-line bar on a terminal (rewritten with \\r), or one plain line a second for logs."""

    def __init__(self, stream: TextIO, mode: str) -> None:
        self.stream = stream
        self.mode = ("bar" if stream.isatty() else "lines") if mode == "auto" else mode
        self.started = time.monotonic()

    def line(self, report: Report, up: Uploader) -> str:
        totals = up.totals
        done = totals.accepted + totals.duplicate_events
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return (
            f"read {report.lines} lines · stored {totals.accepted} · already stored {totals.duplicate_events}"
            f" · waiting {up.pending} · rejected {len(report.rejected)} · {done / elapsed:,.0f} events/s"
            + ("" if up.connected else " · reconnecting")
        )

    def show(self, report: Report, up: Uploader) -> None:
        if self.mode == "none":
            return
        text = self.line(report, up)
        if self.mode == "bar":
            total = report.events or 1
            done = min(total, up.totals.accepted + up.totals.duplicate_events + report.dropped_events)
            filled = int(24 * done / total)
            self.stream.write("\r[" + "#" * filled + "." * (24 - filled) + "] " + text + "\x1b[K")
        else:
            self.stream.write("progress: " + text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.mode == "bar":
            self.stream.write("\n")
            self.stream.flush()

    async def every(self, report: Report, up: Uploader) -> None:
        while True:
            await asyncio.sleep(0.2 if self.mode == "bar" else 1.0)
            self.show(report, up)


@contextlib.contextmanager
def _opened(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
    else:
        with open(name, "rb") as source:
            yield source


async def _import(args: argparse.Namespace, source: BinaryIO) -> int:
    report = Report()
    progress = Progress(sys.stderr, args.progress)

    def on_error(err: UploadError) -> None:
        if err.batch_id is None and err.error in FATAL_HANDSHAKE:
            report.fatal = f"the server refused the connection: {err.error}: {err.message}"
        elif err.batch_id is not None:
            report.add_server_error(err)
            print(f"\nbatch {err.batch_id} refused by the server: {err.error}: {err.message}", file=sys.stderr)

    def on_rejected(line: int, why: str) -> None:
        if len(report.rejected) <= MAX_REJECTED_SHOWN:
            sys.stderr.write(("\n" if progress.mode == "bar" else "") + f"line {line}: {why}\n")

    options = ImportOptions(batch_events=args.batch_events, max_in_flight=args.max_in_flight, timeout=args.timeout)
    up = Uploader(
        args.url, args.token, args.spool, flush_events=args.batch_events, max_in_flight=args.max_in_flight,
        on_error=on_error, close_timeout=0,
    )  # fmt: skip
    async with up:
        ticker = asyncio.create_task(progress.every(report, up))
        try:
            await run_import(source, up, options, report, on_rejected)
        finally:
            ticker.cancel()
        progress.show(report, up)
        progress.done()
        _summary(report, up, sys.stdout)
        if report.fatal or up.pending:
            print(f"gave up: {report.fatal}; {up.pending} events not ACKed. Run the same command again to go on.",
                  file=sys.stderr)  # fmt: skip
            return 3
    return 1 if report.rejected else 0


def _summary(report: Report, up: Uploader, out: TextIO) -> None:
    totals = up.totals
    print(f"lines read: {report.lines} ({report.blank} blank)", file=out)
    print(f"events accepted: {totals.accepted} (newly stored)", file=out)
    duplicates = f"{totals.duplicate_events} events in {totals.duplicate_batches} batches"
    print(f"duplicates: {duplicates} (already stored by an earlier run)", file=out)
    if totals.retried:
        print(f"retried: {totals.retried} answers said unavailable or rate_limited; those batches were sent again", file=out)
    if report.already_waiting:
        print(f"resent from the spool: {report.already_waiting} batches an earlier run left", file=out)
    print(f"rejected lines: {len(report.rejected)}", file=out)
    for line, why in sorted(report.rejected)[:MAX_REJECTED_SHOWN]:
        print(f"  line {line}: {why}", file=out)
    if len(report.rejected) > MAX_REJECTED_SHOWN:
        print(f"  … and {len(report.rejected) - MAX_REJECTED_SHOWN} more", file=out)


def _interrupted(signum: int, frame: object) -> None:
    """Ctrl-C ends the import wherever it is. Left to asyncio.run, SIGINT only cancels the
    main task, and Python 3.11's asyncio.wait_for can swallow that cancellation when its
    awaitable finishes at the same moment: the import then went on to the end of its
    input and exited 0 (seen once in test_python_client under a full suite's load)."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupted)  # asyncio.run then leaves it as it is
    # The command reports for itself; the library's warnings (e.g. "closed with events
    # not ACKed") would mislead here, where the input is what a rerun reads again.
    logging.getLogger("eventservice_client").setLevel(logging.ERROR)
    try:
        with _opened(args.file) as source:
            return asyncio.run(_import(args, source))
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a bad --url
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SpoolBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(f"error: the spool {args.spool} is not a usable SQLite file: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to go on (nothing is lost or stored twice)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
