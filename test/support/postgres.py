"""A real PostgreSQL for the test run (pgserver's binaries), one fresh database per use."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg

PGSERVER_USER = "pgserver"  # pgserver runs PostgreSQL as this user when we are root


class TestPostgres:
    """One cluster for the whole run; databases are cheap, clusters are not."""

    def __init__(self) -> None:
        import pgserver

        self.root = Path(tempfile.mkdtemp(prefix="es-test-pg-"))
        self.root.chmod(0o755)
        self._server = pgserver.get_server(self.root / "data", cleanup_mode="stop")
        self.uri = str(self._server.get_uri())

    def url_for(self, database: str) -> str:
        # pgserver URIs look like postgresql://postgres:@/postgres?host=/socket/dir
        head, _, query = self.uri.partition("?")
        base = head.rsplit("/", 1)[0]
        return f"{base}/{database}?{query}"

    async def create_database(self, label: str) -> str:
        name = f"t_{label[:40]}_{secrets.token_hex(3)}".lower()
        conn = await asyncpg.connect(self.uri)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url_for(name)

    def close(self) -> None:
        self._server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


class StandalonePostgres:
    """A cluster of its own on a TCP port, for tests that stop and start PostgreSQL."""

    def __init__(self) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.root = Path(tempfile.mkdtemp(prefix="es-test-pg-solo-"))
        self.root.chmod(0o777)
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()

    def _run(self, exe: str, *args: str) -> None:
        cmd = [str(self.bin / exe), *args]
        if os.geteuid() == 0:
            cmd = ["su", PGSERVER_USER, "-s", "/bin/sh", "-c", " ".join(_quote(c) for c in cmd)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.root}"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.root / "log"), "-o", opts, "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def crash(self) -> None:
        """Stop without a checkpoint, as a power cut would: the next start runs crash recovery."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


free_port = _free_port
