"""Drain: every registered ingest connection is asked to stop reading, and run() waits for them (within a bound)."""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest

from app.lifecycle import Drain


async def test_run_with_no_connections_returns_at_once_and_marks_draining() -> None:
    drain = Drain()
    await asyncio.wait_for(drain.run(timeout=30), 5)
    assert drain.draining


async def test_run_asks_every_connection_and_waits_until_the_last_unregisters() -> None:
    drain = Drain()
    stopped: list[str] = []
    unregister = {name: drain.register(functools.partial(stopped.append, name)) for name in ("a", "b", "c")}
    run = asyncio.ensure_future(drain.run(timeout=30))
    await asyncio.sleep(0)
    assert sorted(stopped) == ["a", "b", "c"]
    unregister["a"]()
    unregister["c"]()
    await asyncio.sleep(0)
    assert not run.done(), "b is still finishing its ACKs"
    unregister["b"]()
    await asyncio.wait_for(run, 5)


async def test_a_connection_accepted_during_the_drain_is_stopped_at_once() -> None:
    drain = Drain()
    first = drain.register(lambda: None)
    run = asyncio.ensure_future(drain.run(timeout=30))
    await asyncio.sleep(0)
    late: list[bool] = []
    late_unregister = drain.register(lambda: late.append(True))
    assert late == [True]
    first()
    await asyncio.sleep(0)
    assert not run.done(), "the late connection counts too"
    late_unregister()
    await asyncio.wait_for(run, 5)


async def test_unregistering_twice_does_not_undo_another_registration() -> None:
    drain = Drain()
    one = drain.register(lambda: None)
    drain.register(lambda: None)
    one()
    one()
    run = asyncio.ensure_future(drain.run(timeout=30))
    await asyncio.sleep(0.01)
    assert not run.done()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


async def test_run_gives_up_after_the_timeout_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    drain = Drain()
    drain.register(lambda: None)  # never unregisters: a client that never reads its ACKs
    with caplog.at_level(logging.WARNING, logger="eventservice.lifecycle"):
        await asyncio.wait_for(drain.run(timeout=0.05), 5)
    assert "1 ingest connections still open" in caplog.text


async def test_idle_again_after_everything_unregisters() -> None:
    drain = Drain()
    drain.register(lambda: None)()
    await asyncio.wait_for(drain.run(timeout=30), 5)
