"""bounded_int: ASCII digits in range, everything else None (a 400, never a 500)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.params import bounded_int


@given(low=st.integers(0, 10_000), span=st.integers(0, 10_000), data=st.data())
def test_values_in_range_come_back_as_ints(low: int, span: int, data: st.DataObject) -> None:
    value = data.draw(st.integers(low, low + span))
    assert bounded_int(str(value), low, low + span) == value


@given(low=st.integers(1, 10_000), span=st.integers(0, 10_000), data=st.data())
def test_values_out_of_range_are_refused(low: int, span: int, data: st.DataObject) -> None:
    value = data.draw(st.integers(0, low - 1) | st.integers(low + span + 1, 10**18))
    assert bounded_int(str(value), low, low + span) is None


def test_leading_zeros_are_the_same_number() -> None:
    assert bounded_int("007", 1, 10) == 7


@pytest.mark.parametrize(
    "raw",
    ["", " 5", "5 ", "+5", "-5", "5.0", "1e3", "0x10", "5_0", "²", "١٢", "５", "12345678901234567890", "nan"],
)
def test_anything_but_ascii_digits_is_refused(raw: str) -> None:
    assert bounded_int(raw, 0, 10**19) is None


@given(st.text())
def test_never_raises(raw: str) -> None:
    result = bounded_int(raw, 0, 1000)
    assert result is None or (0 <= result <= 1000 and raw.isascii() and raw.isdigit())
