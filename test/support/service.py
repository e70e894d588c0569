"""The service under test as a real subprocess: `python -m app` on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from test.support.postgres import free_port

REPO = Path(__file__).resolve().parents[2]


class Service:
    """Start, stop and restart one server process; its output goes to a log file."""

    def __init__(self, database_url: str | None, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.database_url = database_url
        self.args = list(args)
        self.env = env or {}
        self.port = port or free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="es-service-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.isupper() or k in _KEEP_ENV}
        env.update({"PYTHONUNBUFFERED": "1"}, **self.env)
        if self.database_url:  # None: the service starts its embedded PostgreSQL
            env["DATABASE_URL"] = self.database_url
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(self.port), *self.args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # A process group of its own, as a terminal's foreground job: interrupt()
            # sends Ctrl-C to it without reaching pytest.
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}:\n{self.logs()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"service not ready in {timeout}s:\n{self.logs()[-3000:]}")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def interrupt(self) -> None:
        """What Ctrl-C in a terminal does: SIGINT to every process of the foreground group."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


# Variables of the machine the service may need; everything else upper-case is
# dropped so a developer's own DATABASE_URL or tokens never leak into a test.
_KEEP_ENV = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "XDG_RUNTIME_DIR", "USER"}
