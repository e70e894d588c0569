"""app/reads/find.py: how `data=<key>:<value>` and the other /sessions filters are read."""

from __future__ import annotations

import pytest

from app.reads import find
from app.reads import stats as st


@pytest.mark.parametrize(
    ("raw", "key", "match", "also"),
    [
        ("plan:pro", "plan", '"pro"', None),
        ("path:/cart", "path", '"/cart"', None),
        ("url:http://x/y", "url", '"http://x/y"', None),  # the key ends at the first colon
        ("n:3", "n", '"3"', "3"),
        ("n:-2.5e3", "n", '"-2.5e3"', "-2.5e3"),
        ("n:03", "n", '"03"', None),  # not a JSON number: the string only
        ("ok:true", "ok", '"true"', "true"),
        ("ok:null", "ok", '"null"', None),  # JSON null is never matched
        ('n:"3"', "n", '"3"', None),  # quoted: that string only
        ("k:", "k", '""', None),
        ('"a:b":1', "a:b", '"1"', "1"),
        ('"say \\"hi\\"":x', 'say "hi"', '"x"', None),
        ('we"ird:v', 'we"ird', '"v"', None),
        ("100%:_", "100%", '"_"', None),
        ("ключ:é", "ключ", '"é"', None),
    ],
)
def test_data_filters(raw: str, key: str, match: str, also: str | None) -> None:
    assert find.parse_data([raw]) == (find.DataFilter(key, match, also),)


@pytest.mark.parametrize("raw", ["plan", ":pro", '"open:1', '"a"b:1', 'k:"unclosed', "n:1e1001", "k:" + "v" * 1001, "a\x00:1"])
def test_bad_data_filters_name_data(raw: str) -> None:
    with pytest.raises(st.BadParameter) as caught:
        find.parse_data([raw])
    assert caught.value.code == "invalid_filter" and caught.value.message.startswith("data:")


def test_filters_together_and_duplicates_dropped() -> None:
    got = find.parse_session_filter(
        {
            "name": ["a", "b", "a"],
            "from": ["2026-01-01T00:00:00Z"],
            "to": ["1767225600001"],
            "ended": ["true"],
            "min_duration_ms": ["0"],
            "max_duration_ms": ["0"],
            "data": ["k:v", "k:v"],
        }
    )
    assert got == find.SessionFilter(("a", "b"), 1767225600000, 1767225600001, True, 0, 0, (find.DataFilter("k", '"v"'),))
    assert find.parse_session_filter({}) == find.SessionFilter()


def test_unknown_parameters_are_named_with_a_hint() -> None:
    message = find.unknown_parameters({"Ended": ["true"]}, find.SESSIONS_PARAMETERS)
    assert message is not None and "'Ended'" in message and "Did you mean ended?" in message
    assert find.unknown_parameters({"token": ["t"], "name": ["a"]}, find.SESSIONS_PARAMETERS) is None
