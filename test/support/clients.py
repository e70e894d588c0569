"""Real aiohttp clients: an ingest WebSocket and a Server-Sent Events reader."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

DEFAULT_TIMEOUT = 15.0


def new_session() -> str:
    return str(uuid.uuid4())


def event(name: str, ts: int = 1_700_000_000_000, **extra: Any) -> dict[str, Any]:
    return {"type": "EVENT", "timestamp": ts, "name": name, **extra}


class Uploader:
    """One ingest connection; send() returns the server's answer to that frame."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws

    @classmethod
    async def open(cls, base_ws_url: str, query: str = "", headers: dict[str, str] | None = None) -> Uploader:
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(f"{base_ws_url}/ws{query}", headers=headers, max_msg_size=0)
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    async def send_raw(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def receive(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        message = await self.ws.receive(timeout=timeout)
        if message.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {message.type} {message.data!r} {message.extra!r}")
        return json.loads(message.data)

    async def send(self, batch: Any, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        await self.send_raw(batch if isinstance(batch, (str, bytes)) else json.dumps(batch))
        return await self.receive(timeout)

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()

    async def __aenter__(self) -> Uploader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def upload(base_ws_url: str, session_id: str | None, *batches: Any, query: str = "") -> list[dict[str, Any]]:
    q = f"?sessionId={session_id}" if session_id else ""
    if query:
        q = f"{q}&{query}" if q else f"?{query}"
    async with await Uploader.open(base_ws_url, q) as up:
        return [await up.send(b) for b in batches]


@dataclass
class Message:
    id: str | None
    event: str | None
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def position(self) -> int:
        assert self.id is not None
        return int(self.id)


class SSEReader:
    """Parses an event stream incrementally (fields per the WHATWG spec)."""

    def __init__(self, http: aiohttp.ClientSession, response: aiohttp.ClientResponse) -> None:
        self.http = http
        self.response = response
        self.retry: int | None = None
        self.comments: list[str] = []
        self._buffer = b""
        self._pending: list[Message] = []

    @classmethod
    async def open(cls, base_url: str, query: str = "", headers: dict[str, str] | None = None) -> SSEReader:
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        try:
            response = await http.get(f"{base_url}/database_events{query}", headers=headers)
        except BaseException:
            await http.close()
            raise
        if response.status != 200:
            body = await response.text()
            await http.close()
            raise AssertionError(f"stream answered {response.status}: {body}")
        return cls(http, response)

    async def next(self, timeout: float = DEFAULT_TIMEOUT) -> Message:
        async with asyncio.timeout(timeout):
            while not self._pending:
                chunk = await self.response.content.readany()
                if not chunk:
                    raise EOFError("stream ended")
                self._feed(chunk)
        return self._pending.pop(0)

    async def take(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[Message]:
        async with asyncio.timeout(timeout):
            return [await self.next(timeout) for _ in range(count)]

    async def ended(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True once the server closes the stream (after any pending messages)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    chunk = await self.response.content.readany()
                    if not chunk:
                        return True
                    self._feed(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionResetError):
            return True

    def _feed(self, chunk: bytes) -> None:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            fields: dict[str, list[str]] = {}
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key, []).append(value[1:] if value.startswith(" ") else value)
            if "retry" in fields:
                self.retry = int(fields["retry"][-1])
            if "data" in fields:
                self._pending.append(
                    Message(
                        id=fields["id"][-1] if "id" in fields else None,
                        event=fields["event"][-1] if "event" in fields else None,
                        data="\n".join(fields["data"]),
                    )
                )

    async def close(self) -> None:
        self.response.close()
        await self.http.close()

    async def __aenter__(self) -> SSEReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def metric(base_url: str, name: str) -> float:
    """The sum of every /metrics sample whose line starts with name (all label sets)."""
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/metrics") as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def readyz(base_url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/readyz") as response:
        return response.status, await response.json()
