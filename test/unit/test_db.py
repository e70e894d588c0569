"""The store's pure helpers: which failures mean "database not there" vs "this data is refused", and the start-up error line."""

from __future__ import annotations

import socket

import asyncpg
import asyncpg.exceptions
import pytest

from app.store.db import connect_failure_cause, describe_location, is_data_error, is_unavailable

POSTGRES_ERRORS = sorted(
    (
        cls
        for cls in vars(asyncpg.exceptions).values()
        if isinstance(cls, type) and issubclass(cls, asyncpg.PostgresError) and getattr(cls, "sqlstate", None)
    ),
    key=lambda cls: cls.sqlstate,
)
# The SQLSTATE classes, from PostgreSQL's errcodes appendix.
UNAVAILABLE = {"08": "connection exception", "40": "transaction rollback", "53": "insufficient resources",
               "57": "operator intervention", "58": "system error"}  # fmt: skip
DATA = {"22": "data exception", "23": "integrity constraint violation"}


def test_asyncpg_still_names_the_classes_we_rely_on() -> None:
    classes = {cls.sqlstate[:2] for cls in POSTGRES_ERRORS}
    assert set(UNAVAILABLE) | set(DATA) <= classes


@pytest.mark.parametrize("cls", POSTGRES_ERRORS, ids=lambda cls: f"{cls.sqlstate}-{cls.__name__}")
def test_every_sqlstate_is_classified_by_its_class(cls: type[asyncpg.PostgresError]) -> None:
    exc = cls("message")
    klass = cls.sqlstate[:2]
    assert is_unavailable(exc) is (klass in UNAVAILABLE)
    assert is_data_error(exc) is (klass in DATA)
    assert not (is_unavailable(exc) and is_data_error(exc))


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        asyncpg.exceptions.SerializationError("could not serialize"),
        asyncpg.exceptions.TooManyConnectionsError("too many"),
        asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
    ],
    ids=type,
)
def test_the_failures_a_retry_fixes_are_unavailable(exc: asyncpg.PostgresError) -> None:
    assert is_unavailable(exc) and not is_data_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(),
        OSError(113, "No route to host"),
        socket.gaierror(-2, "Name or service not known"),
        TimeoutError(),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_client_side_connection_failures_are_unavailable_never_data(exc: BaseException) -> None:
    assert is_unavailable(exc)
    assert not is_data_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.LockNotAvailableError("lock timeout"),  # 55P03: says nothing about the batch
        asyncpg.exceptions.QueryCanceledError("statement timeout"),  # 57014: operator intervention class
        asyncpg.exceptions.UndefinedTableError("no table"),  # 42P01: our bug, not the data's, not transient
        ValueError("a bug"),
        RuntimeError("event names could not be resolved"),
        asyncpg.PostgresError("no sqlstate"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_other_failures_are_never_blamed_on_the_data(exc: BaseException) -> None:
    assert not is_data_error(exc)


def test_a_lock_timeout_and_a_bug_are_not_unavailable_but_a_cancel_is() -> None:
    # 57014 query_canceled is in the operator-intervention class: a retry is the right answer.
    assert is_unavailable(asyncpg.exceptions.QueryCanceledError("x"))
    assert not is_unavailable(asyncpg.exceptions.LockNotAvailableError("x"))
    assert not is_unavailable(ValueError("x"))


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("postgresql://u:secret@db.example:6543/events", "db.example:6543"),
        ("postgresql://u:secret@db/events", "db:5432"),
        ("postgres://localhost/events", "localhost:5432"),
        ("postgresql:///events", "localhost:5432"),
        ("postgresql://u@[2001:db8::1]:5433/events", "[2001:db8::1]:5433"),
        ("postgresql://u@[::1]/events", "[::1]:5432"),
        ("postgresql:///events?host=/run/postgresql", "/run/postgresql:5432"),
        ("postgresql://u@ignored:7000/events?host=/tmp/pg", "/tmp/pg:7000"),
        ("postgresql://u@db:notaport/events", "db:5432"),
    ],
)
def test_describe_location_is_host_and_port(url: str, where: str) -> None:
    assert describe_location(url) == where


def test_describe_location_never_shows_the_password() -> None:
    assert "hunter2" not in describe_location("postgresql://admin:hunter2@db:5432/events")


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (socket.gaierror(-2, "Name or service not known"), "host name not found"),
        (TimeoutError(), "no answer within 2.5s"),
        (asyncpg.exceptions.InvalidPasswordError("authentication failed\nDETAIL: x"), "authentication failed"),
        (asyncpg.exceptions.InvalidCatalogNameError(""), "InvalidCatalogNameError"),
        (OSError(113, "No route to host"), "no route to host"),
        (asyncpg.InterfaceError("  unexpected\n  reply  "), "unexpected reply"),
        (RuntimeError(), "RuntimeError"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else "",
)
def test_connect_failure_cause_is_one_short_line(exc: BaseException, cause: str) -> None:
    text = connect_failure_cause(exc, 2.5)
    assert text == cause
    assert "\n" not in text
