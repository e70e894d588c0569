"""Start-up checks that need no database: refusing an open bind, and binding with a readable failure."""

from __future__ import annotations

import socket

import pytest

from app.__main__ import bind, check_exposure
from app.config import Settings


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_loopback_binds_need_no_tokens(host: str) -> None:
    assert check_exposure(Settings(host=host)) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "2001:db8::1", "eventservice.example", "localhost.evil"])
def test_any_other_bind_without_tokens_is_refused_with_the_ways_out(host: str) -> None:
    reason = check_exposure(Settings(host=host))
    assert reason is not None
    assert host in reason
    for way_out in ("tokens", "127.0.0.1", "--insecure"):
        assert way_out in reason


@pytest.mark.parametrize(
    "settings",
    [
        Settings(host="0.0.0.0", ingest_tokens=("ingest-token-1",)),
        Settings(host="0.0.0.0", read_tokens=("read-token-1",)),
        Settings(host="0.0.0.0", insecure=True),
    ],
    ids=["ingest tokens", "read tokens", "insecure"],
)
def test_tokens_or_an_explicit_insecure_allow_an_open_bind(settings: Settings) -> None:
    assert check_exposure(settings) is None


def test_bind_listens_at_once_and_can_be_inherited_by_workers() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert sock.get_inheritable()
        # Listening already: a connection made before anything accepts waits in the backlog.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        sock.close()


def test_an_address_in_use_names_the_place_and_the_fix() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port}: address already in use .*--port or PORT"):
            bind("127.0.0.1", port)
    finally:
        holder.close()


def test_an_address_no_interface_has_says_so() -> None:
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never configured on a machine.
    with pytest.raises(OSError, match=r"cannot listen on 192\.0\.2\.1:\d+: .*check --host or HOST"):
        bind("192.0.2.1", 0)


def _ipv6() -> bool:
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6(), reason="this machine has no IPv6 sockets")
def test_an_ipv6_address_is_bracketed_in_the_message() -> None:
    with pytest.raises(OSError, match=r"cannot listen on \[2001:db8::1\]:"):
        bind("2001:db8::1", 0)
