"""Evaluators that run the documentation's examples against a real server.

One `DocRun` per Markdown file: a fresh database, a server on a free port, a temp
directory the examples share (a file one block writes, a later one reads) and the
shell variables a block exported. Examples of a file run in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sybil import Example

from test.docs import expected, shell
from test.support.service import Service

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the browser examples then skip, saying why
    PlaywrightTimeout = TimeoutError

DOCUMENTED_BASE = "http://127.0.0.1:8000"
COMMAND_TIMEOUT = 30.0
STREAM_SECONDS = 3  # a `curl -N` on the stream is read this long, then cut
_KEEP_ENV = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "XDG_RUNTIME_DIR", "VIRTUAL_ENV"}
_PRINTED = re.compile(r"^\s*print\(.*\)\s+#\s+(.+)$", re.MULTILINE)  # `print(x)  # what it prints`
_SAVE_AS = re.compile(r"save this as `([\w.-]+)`[^`]*$", re.IGNORECASE)


@dataclass
class DocRun:
    """What the examples of one documentation file share."""

    start_service: Callable[[], Service]  # on first use: a file whose examples all skip starts none
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="es-docs-")))
    last_output: str | None = None  # the last shell command's output when the docs showed none
    keys_only: str | None = None  # set by `<!-- output: keys-only "why" -->` for the next block

    _service: Service | None = None

    @property
    def service(self) -> Service:
        if self._service is None:
            self._service = self.start_service()
        return self._service

    @property
    def base(self) -> str:
        return self.service.url

    def env(self) -> dict[str, str]:
        # Like Service: the machine's upper-case variables (a developer's DATABASE_URL, tokens) stay out.
        env = {k: v for k, v in os.environ.items() if not k.isupper() or k in _KEEP_ENV}
        env.update(
            BASE=self.base,
            DATABASE_URL=self.service.database_url or "",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=os.pathsep.join(str(p) for p in _client_paths()),
            # The examples' tokens; this server runs without tokens, so any is accepted.
            INGEST_TOKEN="docs-ingest-token",
            READ_TOKEN="docs-read-token",
        )
        return env

    def close(self) -> None:
        if self._service is not None:
            self._service.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _client_paths() -> list[Path]:
    """The Python client's source, importable by the examples once clients/python exists."""
    root = Path(__file__).resolve().parents[2] / "clients" / "python"
    return [p for p in (root / "src", root) if p.is_dir()]


def rewrite(source: str, run: DocRun) -> str:
    """The documented URL becomes the test server's; the project's `.venv/bin/` the running venv's."""
    venv_bin = f"{Path(sys.executable).parent}/"
    return re.sub(r"(?<![\w/.])\.venv/bin/", venv_bin, source.replace(DOCUMENTED_BASE, run.base))


def run_of(example: Example) -> DocRun:
    run = example.namespace["run"]
    assert isinstance(run, DocRun)
    return run


def _streams(command: str) -> bool:
    return "database_events" in command and re.search(r"\s-\w*N", command) is not None


def _script(commands: list[shell.Command], run: DocRun) -> str:
    env_file = run.workdir / ".docs-env"
    lines = ["set -euo pipefail", f"[ -f {env_file} ] && source {env_file}", f"export BASE={run.base}"]
    for number, command in enumerate(commands):
        out = run.workdir / f".out-{number}"
        if _streams(command.text):
            lines.append(f'curl() {{ command curl --max-time {STREAM_SECONDS} "$@" || [ $? = 28 ]; }}')
        lines += ["{", rewrite(command.text, run), f"}} > {out}"]
        if _streams(command.text):
            lines.append("unset -f curl")
    lines.append(f"export -p > {env_file}")
    return "\n".join(lines) + "\n"


def evaluate_shell(example: Example) -> str | None:
    run = run_of(example)
    commands = shell.split(str(example.parsed))
    for old in run.workdir.glob(".out-*"):
        old.unlink()
    # Files, not pipes: a block may leave a job in the background (a trickle of writes for
    # the next block to watch), and a pipe would keep this call waiting until that job ends.
    with (run.workdir / ".stdout").open("w+") as stdout, (run.workdir / ".stderr").open("w+") as stderr:
        done = subprocess.run(
            ["bash", "-c", _script(commands, run)],
            cwd=run.workdir,
            env=run.env(),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            timeout=COMMAND_TIMEOUT * max(1, len(commands)),
            check=False,
        )
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    keys_only, run.keys_only = run.keys_only, None
    if done.returncode != 0:
        return f"exit status {done.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    run.last_output = None
    for number, command in enumerate(commands):
        real = (run.workdir / f".out-{number}").read_text()
        if not command.output:
            run.last_output = real
            continue
        compare = expected.mismatch if keys_only is None else expected.keys_mismatch
        if problem := compare("\n".join(command.output), real):
            return f"command at block line {command.line + 1}: {command.text.splitlines()[0]}\n{problem}"
    return None


def _preceding_text(example: Example) -> str:
    previous = [region.end for _, region in example.document.regions if region.end <= example.region.start]
    return example.document.text[(previous[-1] if previous else 0) : example.region.start]


def evaluate_python(example: Example) -> str | None:
    """A script in a subprocess; one the docs ask to save as a file is saved and compiled."""
    run = run_of(example)
    source = rewrite(str(example.parsed), run)
    run.last_output = None
    if saved := _SAVE_AS.search(_preceding_text(example).strip()):
        path = run.workdir / saved.group(1)
        path.write_text(source)
        py_compile.compile(str(path), doraise=True)
        return None
    done = subprocess.run(
        [sys.executable, "-c", source],
        cwd=run.workdir,
        env=run.env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        return f"exit status {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    shown = _PRINTED.findall(str(example.parsed))
    return expected.lines_mismatch("\n".join(shown), done.stdout) if shown else None


def evaluate_json(example: Example) -> str | None:
    """Shown data must parse; right under a command that showed no output, it is that output."""
    run = run_of(example)
    text = str(example.parsed)
    try:
        expected.parse_documented_json(text)
    except ValueError as exc:
        return f"not JSON (with … allowed): {exc}"
    follows_command = run.last_output is not None and not _preceding_text(example).strip()
    real, run.last_output = run.last_output, None
    if follows_command and real is not None:
        return expected.mismatch(text, real)
    return None


def evaluate_sql(example: Example) -> str | None:
    run = run_of(example)
    run.last_output = None

    database_url = run.service.database_url  # starts the file's server first, outside this loop

    async def execute() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(str(example.parsed))
        finally:
            await conn.close()

    try:
        asyncio.run(execute())
    except asyncpg.PostgresError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def evaluate_output_directive(example: Example) -> str | None:
    """`<!-- output: keys-only "why" -->`: the next block's shown JSON is compared by its keys only."""
    reason = json.loads(str(example.parsed) or '""')
    if not reason:
        return "output: keys-only needs a reason"
    run_of(example).keys_only = reason
    return None


def browser_page(source: str, language: str) -> str:
    """A page for a `js` or `html` example; `render` and `refetchEverything` are the page's own.

    The example's last script ends by setting `window.__ran`: a script that threw, or whose
    import failed, never gets there.
    """
    stubs = (
        "<script>window.__errors = []; window.__rendered = []; window.__ran = false;"
        "window.addEventListener('error', (e) => window.__errors.push(String(e.message)));"
        "function render(entry) { window.__rendered.push(entry); }"
        "function refetchEverything() {}</script>"
    )
    if language == "js":
        body = f'<script type="module">\n{source}\n;window.__ran = true;\n</script>'
    else:
        head, _, tail = source.rpartition("</script>")
        body = f"{head}\n;window.__ran = true;\n</script>{tail}" if head else source + "<script>window.__ran = true;</script>"
    return f"<!doctype html><html><head>{stubs}</head><body>{body}</body></html>"


def _stored_entries(run: DocRun) -> int:
    database_url = run.service.database_url

    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events"))
        finally:
            await conn.close()

    # In a thread of its own: sync Playwright keeps an event loop running in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, count()).result()


CHROMIUM = Path("/usr/bin/chromium")
# The page is fulfilled by Playwright (page.route), so Chromium knows no address for it and treats it
# as public: its connections to 127.0.0.1 would then fall under Local Network Access checks, which a
# page really served from the service (or from another local origin, test_sdk_browser.py) never meets.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-features=LocalNetworkAccessChecks",
]
_UPLOAD = {
    "batch_id": "docs-browser",
    "events": [{"type": "SESSION_START", "timestamp": 1624422533298, "session_id": "0d856b46-48cd-4fba-946b-53d15b7b43e0"}],
}


def evaluate_browser(example: Example) -> str | None:
    """Run a page example in Chromium on the server's origin: no exception, and it saw a stored entry."""
    if PlaywrightTimeout is TimeoutError or not CHROMIUM.exists():
        pytest.skip(f"the page examples need Playwright for Python and {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    run = run_of(example)
    run.last_output = None
    language = str(example.region.lexemes["arguments"])
    page_url = f"{run.base}/docs-example.html"
    html = browser_page(rewrite(str(example.parsed), run), language)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.route(page_url, lambda route: route.fulfill(status=200, content_type="text/html", body=html))
            stored_before = _stored_entries(run)
            page.goto(page_url)
            if not _poll(lambda: bool(errors) or bool(page.evaluate("window.__ran"))):
                errors.append("the example's script did not run to its end within 10 s")
            if "database_events" in html and not _rendered_after_uploads(page, run):
                errors.append("the page rendered no stream entry within 10 s of uploads")
            if "track(" in html and not errors and not _poll(lambda: _stored_entries(run) > stored_before):
                errors.append("the page tracked events, but none was stored within 10 s")
            errors += page.evaluate("window.__errors")
        finally:
            browser.close()
    return f"the page failed: {errors}" if errors else None


def _poll(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _rendered_after_uploads(page: Any, run: DocRun) -> bool:
    """Upload until the page's stream shows an entry: it may connect after the first upload."""
    deadline = time.monotonic() + 10
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        _post_batch(run, attempt)
        try:
            page.wait_for_function("() => window.__rendered.length > 0", timeout=1000)
            return True
        except PlaywrightTimeout:
            continue
    return False


def _post_batch(run: DocRun, attempt: int) -> None:
    body = dict(_UPLOAD, batch_id=f"docs-browser-{attempt}")
    request = urllib.request.Request(
        f"{run.base}/batch", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, response.status
