"""NDJSON import: one event object a line, uploaded exactly once, resumable.

Batches of an import are sealed by content only (every `batch_events` valid lines, or
sooner at `max_batch_bytes`), never by time, and each gets a batch_id derived from its
line range and the hash of its events: `i<first>-<last>-<24 hex>`. Reading the same
input again therefore yields the same batches with the same ids, so a rerun after
Ctrl-C or `kill -9` is answered `duplicate` for what was already stored, with or
without a spool, within the server's batch_id memory (BATCH_ID_RETENTION_HOURS, 168
by default). The spool adds what a rerun cannot re-read: batches of a pipe (stdin)
that was consumed once are kept until ACKed and sent first on the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from eventservice_client.events import EventError, Limits, check_object
from eventservice_client.link import UploadError
from eventservice_client.outbox import MAX_BATCH_BYTES, Batch
from eventservice_client.uploader import Uploader

FATAL_HANDSHAKE = frozenset({"unauthorized", "forbidden_origin", "unknown_parameter", "http_404"})


@dataclass(slots=True)
class Report:
    """What the import did, for the summary and the exit code."""

    lines: int = 0
    blank: int = 0
    events: int = 0  # valid lines handed to the uploader
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, why), local checks and server ERRORs
    dropped_events: int = 0  # valid by our checks, refused by the server with their batch
    already_waiting: int = 0  # batches an earlier run left in the spool (sent from there)
    fatal: str | None = None  # why the import gave up

    def add_server_error(self, err: UploadError) -> None:
        self.dropped_events += err.events
        lines = err.lines or []
        named: set[int] = set()
        for detail in err.details:
            index = detail.get("index")
            if isinstance(index, int) and 0 <= index < len(lines):
                named.add(lines[index])
                field_name = detail.get("field") or ""
                self.rejected.append((lines[index], f"{field_name}: {detail.get('message')} (server: {err.error})"))
        for line in lines:
            if line not in named:
                self.rejected.append((line, f"refused with its batch {err.batch_id} (server: {err.error}: {err.message})"))
        if not lines:
            self.rejected.append((0, f"batch {err.batch_id} of {err.events} events refused (server: {err.error}: {err.message})"))


@dataclass(frozen=True, slots=True)
class ImportOptions:
    batch_events: int = 500
    max_batch_bytes: int = MAX_BATCH_BYTES
    max_in_flight: int = 4
    timeout: float = 120.0  # give up when nothing was ACKed for this long while something waits
    limits: Limits = field(default_factory=Limits)


def batch_id_for(lines: list[int], events: list[bytes]) -> str:
    """Deterministic: the same lines with the same content always get the same id (at most 64 characters)."""
    digest = hashlib.sha256()
    for line, event in zip(lines, events, strict=True):
        digest.update(f"{line}:".encode())
        digest.update(event)
        digest.update(b"\n")
    return f"i{lines[0]}-{lines[-1]}-{digest.hexdigest()[:24]}"


class _Batcher:
    """Valid lines into deterministic batches."""

    def __init__(self, options: ImportOptions) -> None:
        self.options = options
        self.lines: list[int] = []
        self.events: list[bytes] = []
        self.size = 0

    def add(self, line: int, event: bytes) -> Batch | None:
        sealed = None
        if self.events and self.size + len(event) + 100 > self.options.max_batch_bytes:
            sealed = self.seal()
        self.lines.append(line)
        self.events.append(event)
        self.size += len(event) + 1
        if sealed is None and len(self.events) >= self.options.batch_events:
            sealed = self.seal()
        return sealed

    def seal(self) -> Batch | None:
        if not self.events:
            return None
        batch = Batch(batch_id_for(self.lines, self.events), self.events, lines=self.lines)
        self.lines, self.events, self.size = [], [], 0
        return batch


def check_line(raw: bytes, limits: Limits) -> bytes:
    """One NDJSON line → the event's compact JSON, or EventError saying why not."""
    try:
        event = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError included
        raise EventError("", f"is not JSON ({exc})") from None
    return check_object(event, limits)


class _Lines:
    """The input read by a daemon thread: a slow pipe never stalls the uploads, and Ctrl-C
    while a terminal's stdin blocks exits at once (an executor thread would be joined).

    The thread reads the file descriptor with os.read, never through a Python file
    object: a daemon thread blocked inside sys.stdin.buffer holds its lock, and the
    interpreter aborts at exit when it cannot take that lock to close stdin.
    """

    BLOCK = 1 << 16

    def __init__(self, source: BinaryIO) -> None:
        self.loop = asyncio.get_running_loop()
        self.chunks: asyncio.Queue[list[bytes] | Exception | None] = asyncio.Queue(maxsize=8)
        self.ended = False
        threading.Thread(target=self._read, args=(source.fileno(),), daemon=True, name="eventservice-import-reader").start()

    def _put(self, item: list[bytes] | Exception | None) -> None:
        asyncio.run_coroutine_threadsafe(self.chunks.put(item), self.loop).result()

    def _read(self, fd: int) -> None:
        # Ctrl-C goes to the main thread, whose wait it interrupts at once; delivered to
        # this one, it would wait for the event loop's next timer.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            tail = b""
            while block := os.read(fd, self.BLOCK):
                lines = (tail + block).split(b"\n")
                tail = lines.pop()
                if lines:
                    self._put(lines)
            self._put([tail] if tail else [])
            self._put(None)
        except RuntimeError:  # the loop is gone (interrupted)
            return
        except OSError as exc:  # an unreadable input: raised in the importer
            with contextlib.suppress(RuntimeError):
                self._put(exc)

    async def next(self) -> list[bytes] | None:
        """The next lines (without their newline), or None at the end of the input."""
        if self.ended:
            return None
        chunk = await self.chunks.get()
        if isinstance(chunk, Exception):
            raise chunk
        self.ended = chunk is None
        return chunk


async def run_import(
    source: BinaryIO,
    uploader: Uploader,
    options: ImportOptions,
    report: Report,
    on_rejected: Callable[[int, str], None],
) -> None:
    """Read, check and hand over every line, then wait for every ACK (or give up: report.fatal)."""
    batcher = _Batcher(options)
    window = options.batch_events * options.max_in_flight * 4
    lines = _Lines(source)
    while (chunk := await lines.next()) is not None:
        for raw in chunk:
            report.lines += 1
            if not raw.strip():
                report.blank += 1
                continue
            try:
                event = check_line(raw, options.limits)
            except EventError as exc:
                report.rejected.append((report.lines, str(exc)))
                on_rejected(report.lines, str(exc))
                continue
            report.events += 1
            batch = batcher.add(report.lines, event)
            if batch is not None:
                await _hand_over(uploader, batch, report, window, options.timeout)
                if report.fatal:
                    return
    last = batcher.seal()
    if last is not None:
        await _hand_over(uploader, last, report, window, options.timeout)
    await _settle(uploader, report, 0, options.timeout)


async def _hand_over(uploader: Uploader, batch: Batch, report: Report, window: int, timeout: float) -> None:
    await _settle(uploader, report, window, timeout)
    if not report.fatal and not uploader.put_batch(batch):
        report.already_waiting += 1


async def _settle(uploader: Uploader, report: Report, below: int, timeout: float) -> None:
    """Wait until at most `below` events are pending, or give up after `timeout` seconds without an ACK."""
    while uploader.pending > below and not report.fatal:
        try:
            await asyncio.wait_for(uploader.wait_below(below + 1), 0.25)
        except TimeoutError:
            stalled = time.monotonic() - uploader.totals.last_ack
            if timeout and stalled > timeout:
                report.fatal = f"nothing was ACKed for {timeout:g} s (server unreachable or refusing)"
