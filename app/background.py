"""One shape for background work: a component that owns named tasks, as an async context manager.

After pgqueuer's `TimedOverflowBuffer` (started on enter, drained on exit) and
procrastinate's worker (named side tasks, one `_shutdown`). A subclass says what
its loops are and, if it needs to, what to open before them and close after them;
this class does the rest the same way for all of them:

- `async with component:` runs `_open()` (the hub's LISTEN connection: a
  failure there fails the lifespan, nothing is left half-open), then starts
  each loop of `loops()` as a task named after it (what a stack dump or
  `asyncio.all_tasks()` shows);
- leaving the block is `_shutdown()`: `_stopping` is set and `_wake` is set, so
  a loop waiting for work looks at `_stopping` and finishes what it holds (the
  writer commits and answers every batch it accepted); after `drain_seconds`
  (None: as long as that takes, 0: not at all) whatever still runs is cancelled,
  `drained` says which of the two it was, and `_close()` releases the rest;
- a loop that raises is a bug, not an outage (each loop handles the database
  failures it expects): it is logged with its name and the traceback, and
  restarted after a backoff, so one bad iteration does not silently stop
  ingest or every stream. A loop that returns is done and is not restarted.

Exit order is the reverse of entry order: the lifespan (app/web.py) enters the
components in the order their shutdown must not run, and nested `async with`
does the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self

log = logging.getLogger("eventservice.background")

Loop = Callable[[], Coroutine[Any, Any, None]]

_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 5.0

# Tasks started with spawn(): the event loop keeps only weak references to tasks.
_spawned: set[asyncio.Task[Any]] = set()


def spawn(name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A named one-off task, kept referenced until it ends; a crash is logged, never lost."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _spawned.add(task)
    task.add_done_callback(_spawn_done)
    return task


def _spawn_done(task: asyncio.Task[Any]) -> None:
    _spawned.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("%s failed", task.get_name(), exc_info=error)


class Background:
    """Base of every long-lived component with loops of its own (see the module docstring)."""

    # How long _shutdown waits for the loops to finish on their own before cancelling them.
    drain_seconds: float | None = 0

    def __init__(self) -> None:
        self._stopping = False
        self.drained = True
        # Set to wake the loops: by the component when work arrives, by _shutdown to stop.
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def loops(self) -> dict[str, Loop]:
        """Task name -> the loop it runs. Each should return once `_stopping` is set and `_wake` fires."""
        raise NotImplementedError

    async def _open(self) -> None:
        """What must succeed before the loops start."""

    async def _close(self) -> None:
        """Runs once the loops ended (drained or cancelled), and after a failed _open."""

    async def _until(self, has_work: Callable[[], bool]) -> bool:
        """Wait for work: True when there is some, False once stopping with none left.

        Work queued before the stop is still taken, so a loop written as
        `while await self._until(...)` drains what it was given and then ends.
        """
        while not has_work():
            if self._stopping:
                return False
            self._wake.clear()
            await self._wake.wait()
        return True

    async def __aenter__(self) -> Self:
        try:
            await self._open()
        except BaseException:
            await self._close()
            raise
        self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._shutdown()

    def start(self) -> None:
        """Start the loops that are not running (a component may also start itself lazily)."""
        if any(not task.done() for task in self._tasks):
            return
        self._stopping = False
        self._tasks = [
            asyncio.get_running_loop().create_task(self._supervise(name, loop), name=name) for name, loop in self.loops().items()
        ]

    async def _shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        tasks = self._tasks
        pending: set[asyncio.Task[None]] = {task for task in tasks if not task.done()}
        if pending and self.drain_seconds != 0:
            _, pending = await asyncio.wait(pending, timeout=self.drain_seconds)
        self.drained = not pending
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        await self._close()

    async def _supervise(self, name: str, loop: Loop) -> None:
        backoff = _BACKOFF_MIN
        while True:
            started = time.monotonic()
            try:
                await loop()
                return
            except Exception:
                if self._stopping:
                    log.exception("%s failed while stopping", name)
                    return
                if time.monotonic() - started > _BACKOFF_MAX:
                    backoff = _BACKOFF_MIN  # a rare crash restarts at once, a crash loop backs off
                log.exception("%s failed; restarting in %.2fs", name, backoff)
            await self._recover(name)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _recover(self, name: str) -> None:
        """Before a crashed loop restarts: put back what it may have left half-done."""


__all__ = ["Background", "Loop", "spawn"]
