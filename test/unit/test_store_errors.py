"""The store's one translation of driver failures (app/store/db.py wrap_exceptions)."""

from __future__ import annotations

import asyncpg
import pytest

from app.store.db import DatabaseUnavailable, DataRefused, translate, wrap_exceptions


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (asyncpg.UniqueViolationError("duplicate key"), DataRefused),  # 23505
        (asyncpg.UntranslatableCharacterError("\\u0000"), DataRefused),  # 22P05
        (asyncpg.QueryCanceledError("canceling statement"), DatabaseUnavailable),  # 57014
        (asyncpg.AdminShutdownError("terminating connection"), DatabaseUnavailable),  # 57P01
        (asyncpg.DeadlockDetectedError("deadlock"), DatabaseUnavailable),  # 40P01
        (asyncpg.TooManyConnectionsError("too many"), DatabaseUnavailable),  # 53300
        (asyncpg.ConnectionDoesNotExistError("closed"), DatabaseUnavailable),
        (TimeoutError(), DatabaseUnavailable),
        (ConnectionRefusedError(111, "refused"), DatabaseUnavailable),
    ],
)
def test_driver_failures_become_store_errors_with_their_cause(failure: Exception, kind: type[Exception]) -> None:
    with pytest.raises(kind) as caught, wrap_exceptions():
        raise failure
    assert caught.value.__cause__ is failure
    assert str(caught.value) == str(failure)  # messages (e.g. /readyz's reason) read as before


@pytest.mark.parametrize(
    "failure",
    [
        asyncpg.LockNotAvailableError("lock timeout"),  # 55P03: neither the data's fault nor an outage
        asyncpg.UndefinedTableError("no such table"),  # 42P01: a bug, not an outage
        ValueError("a bug"),
    ],
)
def test_other_failures_pass_unchanged(failure: Exception) -> None:
    assert translate(failure) is None
    with pytest.raises(type(failure)) as caught, wrap_exceptions():
        raise failure
    assert caught.value is failure


def test_a_store_error_is_not_wrapped_twice() -> None:
    inner = DatabaseUnavailable("down")
    with pytest.raises(DatabaseUnavailable) as caught, wrap_exceptions(), wrap_exceptions():
        raise inner
    assert caught.value is inner
