"""No DATABASE_URL: the service runs its own PostgreSQL in --data-dir, and data survives restarts."""

from __future__ import annotations

import tempfile
from pathlib import Path

import aiohttp

from test.support.clients import event, new_session, upload
from test.support.service import Service


async def test_embedded_database_keeps_data_across_restarts() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="es-embedded-")) / "postgres-data"
    svc = Service(None, "--data-dir", str(data_dir))
    session = new_session()
    svc.start(timeout=60)
    try:
        assert (await upload(svc.ws_url, session, [event("kept", 1)]))[0]["type"] == "ACK"
        assert svc.stop() == 0
        # The embedded PostgreSQL was stopped cleanly with the service.
        assert not (data_dir / "postmaster.pid").exists()
        svc.start(timeout=60)
        async with aiohttp.ClientSession() as http, http.get(f"{svc.url}/session/{session}") as response:
            assert response.status == 200
            assert [c["name"] for c in (await response.json())["children"]] == ["kept"]
    finally:
        svc.stop()
    assert "embedded PostgreSQL running in" in svc.logs()
    # pgserver's import makes platformdirs warn when XDG_RUNTIME_DIR is unset (as in
    # containers and CI); the service silences that one warning (app/store/db.py).
    assert "Warning" not in svc.logs() and "XDG_RUNTIME_DIR" not in svc.logs()
