"""What app/stream/response.py relies on in sse-starlette: its public API only, and that API's behaviour.

The stream used to override sse-starlette's private `_send_with_timeout`, which
an upgrade could rename or stop calling without any error. These tests fail
instead: one if app/ touches anything private of the library, the others if the
public behaviour we build on changes (headers, ping framing, HEAD, shutdown flag).
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import sse_starlette
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.event import ensure_bytes
from sse_starlette.sse import AppStatus
from starlette.types import Message

from app.stream.response import StreamResponse

APP = Path(__file__).resolve().parents[2] / "app"


def _library_private_names() -> set[str]:
    """Private attributes of EventSourceResponse (and its Starlette bases), methods and instance state."""

    async def body() -> AsyncIterator[bytes]:
        yield b""

    instance = EventSourceResponse(body(), ping=1, send_timeout=1)
    names = {n for cls in EventSourceResponse.__mro__ for n in vars(cls) if n.startswith("_") and not n.startswith("__")}
    names |= {n for n in vars(instance) if n.startswith("_") and not n.startswith("__")}
    return names


def test_app_uses_no_private_name_of_sse_starlette() -> None:
    private = _library_private_names()
    assert "_send_with_timeout" in private  # the scan would find the old override
    problems: list[str] = []
    for path in sorted(APP.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(APP.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sse_starlette"):
                if any(part.startswith("_") for part in (node.module or "").split(".")):
                    problems.append(f"{where} imports from private module {node.module}")
                problems += [f"{where} imports private {a.name}" for a in node.names if a.name.startswith("_")]
            elif isinstance(node, ast.Import):
                private_modules = [a.name for a in node.names if a.name.startswith("sse_starlette") and "._" in a.name]
                problems += [f"{where} imports {name}" for name in private_modules]
            elif isinstance(node, (ast.Attribute, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = node.attr if isinstance(node, ast.Attribute) else node.name
                if name in private:
                    problems.append(f"{where} uses or overrides sse-starlette's private {name}")
    assert not problems, "\n".join(problems)


def test_constructor_gives_the_headers_and_settings_we_rely_on() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b""

    response = EventSourceResponse(body(), ping=7.5, send_timeout=3, headers={"Cache-Control": "no-store"}, sep="\n")
    headers = dict(response.raw_headers)
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"x-accel-buffering"] == b"no"
    assert response.ping_interval == 7.5
    assert response.send_timeout == 3
    assert response.sep == "\n"
    assert response.ping_message_factory is None
    assert response.body_iterator is not None


def test_ping_framing_is_an_sse_comment() -> None:
    assert ensure_bytes(ServerSentEvent(comment="ping - now", sep="\r\n"), "\r\n") == b": ping - now\r\n\r\n"
    assert ensure_bytes(b"raw", "\n") == b"raw"


def test_shutdown_flag_is_public() -> None:
    # app/lifecycle.py sets it and the sweeper in app/stream/response.py reads it.
    assert isinstance(AppStatus.should_exit, bool)
    assert "EventSourceResponse" in sse_starlette.__all__ and "ServerSentEvent" in sse_starlette.__all__


async def test_head_answers_headers_and_never_starts_the_body() -> None:
    started = False
    closed: list[bool] = []

    async def body() -> AsyncIterator[bytes]:
        nonlocal started
        started = True
        yield b"data: x\n\n"

    class Flag:
        def set(self) -> None:
            pass

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    response = StreamResponse(body(), wake=Flag(), on_close=lambda: closed.append(True), ping=1, send_timeout=1)
    scope = {"type": "http", "method": "HEAD", "path": "/database_events", "headers": []}
    await asyncio.wait_for(response(scope, receive, send), timeout=10)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200 and sent[1].get("body", b"") == b"" and not sent[1].get("more_body", False)
    assert not started
    assert closed == [True]
