"""Query-string parsing shared by the read endpoints; None means "reject with 400"."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]{1,19}")


def bounded_int(raw: str, low: int, high: int) -> int | None:
    """ASCII digits only (str.isdigit() admits '²', which int() then refuses)."""
    if _DIGITS.fullmatch(raw) is None:
        return None
    value = int(raw)
    return value if low <= value <= high else None
