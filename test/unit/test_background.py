"""app/background.py: the one start/stop shape every long-lived component shares."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

import pytest

from app.background import Background, Loop, spawn


class Queue(Background):
    """A miniature writer: finishes every queued item on exit, unless told to hang."""

    def __init__(self, drain_seconds: float | None = None, *, hang: bool = False) -> None:
        super().__init__()
        self.drain_seconds = drain_seconds
        self.hang = hang
        self.items: list[int] = []
        self.done: list[int] = []
        self.events: list[str] = []

    def loops(self) -> dict[str, Loop]:
        return {"queue": self._run}

    def put(self, item: int) -> None:
        self.items.append(item)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self.items:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.hang:
                await asyncio.Event().wait()
            self.done.append(self.items.pop(0))

    async def _open(self) -> None:
        self.events.append("open")

    async def _close(self) -> None:
        self.events.append(f"close drained={self.drained}")


async def test_enter_starts_named_tasks_and_exit_finishes_the_work() -> None:
    queue = Queue()
    async with queue:
        assert queue.events == ["open"]
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert "queue" in names
        for i in range(100):
            queue.put(i)  # queued, none processed yet: the loop has not run
    assert queue.done == list(range(100))
    assert queue.events == ["open", "close drained=True"]
    assert "queue" not in {task.get_name() for task in asyncio.all_tasks()}


async def test_drain_is_bounded_then_the_loop_is_cancelled() -> None:
    queue = Queue(drain_seconds=0.05, hang=True)
    async with queue:
        queue.put(1)
    assert queue.done == []
    assert queue.events == ["open", "close drained=False"]


async def test_drain_seconds_zero_cancels_at_once() -> None:
    queue = Queue(drain_seconds=0)
    async with queue:
        queue.put(1)
    # Cancelled before it ever ran: nothing was processed.
    assert queue.done == []
    assert queue.events == ["open", "close drained=False"]


async def test_exit_order_is_the_reverse_of_entry() -> None:
    order: list[str] = []

    class Named(Background):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def loops(self) -> dict[str, Loop]:
            return {}

        async def _close(self) -> None:
            order.append(self.name)

    async with Named("pool"), Named("hub"), Named("writer"):
        pass
    assert order == ["writer", "hub", "pool"]


async def test_a_crashing_loop_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    restarted = asyncio.Event()
    recovered: list[str] = []

    class Flaky(Background):
        runs = 0

        def loops(self) -> dict[str, Loop]:
            return {"flaky": self._run}

        async def _run(self) -> None:
            self.runs += 1
            if self.runs == 1:
                raise RuntimeError("a bug")
            restarted.set()
            await self._wake.wait()

        async def _recover(self, name: str) -> None:
            recovered.append(name)

    with caplog.at_level(logging.ERROR, logger="eventservice.background"):
        async with Flaky():
            await asyncio.wait_for(restarted.wait(), 10)
    assert recovered == ["flaky"]
    assert any("flaky failed; restarting" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_failed_open_closes_and_starts_nothing() -> None:
    closed: list[bool] = []

    class Broken(Background):
        def loops(self) -> dict[str, Loop]:
            raise AssertionError("loops must not start after a failed _open")

        async def _open(self) -> None:
            raise ConnectionRefusedError("database down")

        async def _close(self) -> None:
            closed.append(True)

    async with AsyncExitStack() as stack:
        with pytest.raises(ConnectionRefusedError):
            await stack.enter_async_context(Broken())
    assert closed == [True]


async def test_a_lazily_started_loop_restarts_after_it_returned() -> None:
    class Sweeper(Background):
        rounds = 0

        def loops(self) -> dict[str, Loop]:
            return {"sweeper": self._run}

        async def _run(self) -> None:
            self.rounds += 1

    sweeper = Sweeper()
    sweeper.start()
    sweeper.start()  # still running: not started twice
    await asyncio.wait(sweeper._tasks)
    sweeper.start()  # returned: started again
    await asyncio.wait(sweeper._tasks)
    assert sweeper.rounds == 2


async def test_spawn_keeps_the_task_and_logs_its_crash(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("lost otherwise")

    with caplog.at_level(logging.ERROR, logger="eventservice.background"):
        task = spawn("one-off", fails())
        assert task.get_name() == "one-off"
        await asyncio.wait((task,))
    assert any(r.getMessage() == "one-off failed" and r.exc_info for r in caplog.records)
