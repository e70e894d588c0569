"""Raw TCP and WebSocket clients, for what a well-behaved library will not send.

aiohttp refuses to send invalid UTF-8 in a text frame or to stop half-way
through a handshake; an attacker's client does both. These helpers speak just
enough of HTTP/1.1 and RFC 6455 to do it on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct


def stalled_sse(port: int) -> socket.socket:
    """An SSE client with a tiny receive buffer that never reads a byte."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /database_events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    return sock


async def open_tcp(port: int, host: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


async def read_response(reader: asyncio.StreamReader, timeout: float) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: (status line, headers, body).

    Head and body may arrive in separate segments: one read() is not a response."""
    async with asyncio.timeout(timeout):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = head.rstrip("\r\n").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status_line, headers, body


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the server closes the connection (EOF or reset) within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


class RawWebSocket:
    """A client WebSocket that sends whatever frames it is told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, path: str, headers: dict[str, str] | None = None) -> RawWebSocket:
        reader, writer = await open_tcp(port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            writer.close()
            raise ConnectionError(f"handshake refused: {status!r}")
        return cls(reader, writer)

    async def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        """Client frames must be masked (RFC 6455 5.3)."""
        first = (0x80 if fin else 0) | opcode
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", first, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def read_frame(self, timeout: float = 15.0) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame; server frames are not masked."""
        async with asyncio.timeout(timeout):
            first, second = await self.reader.readexactly(2)
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return first & 0x0F, await self.reader.readexactly(n)

    async def close_code(self, timeout: float = 15.0) -> int | None:
        """Read until the server's close frame; its status code (None if it just hung up)."""
        try:
            while True:
                opcode, payload = await self.read_frame(timeout)
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None

    def close(self) -> None:
        self.writer.close()


OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
