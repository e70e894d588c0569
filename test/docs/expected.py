"""Compare what a documentation example printed with the output the docs show for it.

The docs abbreviate (`…`) and show values that differ on every run (ids, positions,
times), so the comparison is structural: `…` matches anything, JSON is compared by the
keys and values it shows (extra keys are allowed), and text lines must appear in order.
"""

from __future__ import annotations

import json
import re
from typing import Any

ELLIPSIS = "…"
_ANY = "\x00any"
_STREAM_ID = re.compile(r"id: \d+")  # a JSON value (or any run of list items) the docs left out


def _jsonish(text: str) -> str:
    """Documented JSON with `…` outside strings turned into parseable JSON."""
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\":
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif ch == ELLIPSIS:
            rest = text[i + 1 :].lstrip()
            previous = "".join(out).rstrip()[-1:]
            if rest.startswith("}") and previous in ",{":  # `,…}`: more members of an object, allowed anyway
                while out and out[-1] in " \n,":
                    out.pop()
            else:
                out.append(json.dumps(_ANY))
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def parse_documented_json(text: str) -> Any:
    """The JSON a doc shows, `…` allowed; raises ValueError when it is not JSON."""
    return json.loads(_jsonish(text))


def _glob(pattern: str, value: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split(ELLIPSIS))
    return re.fullmatch(regex, value, re.DOTALL) is not None


def json_matches(expected: Any, actual: Any) -> bool:
    if expected == _ANY:
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and json_matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and _list_matches(expected, actual)
    if isinstance(expected, str):
        return isinstance(actual, str) and _glob(expected, actual)
    if isinstance(expected, float) and isinstance(actual, int | float) and not isinstance(actual, bool):
        return abs(expected - actual) <= 1e-9 * max(1.0, abs(expected))
    return type(expected) is type(actual) and bool(expected == actual)


def _list_matches(expected: list[Any], actual: list[Any]) -> bool:
    """Items in order; an `…` item stands for any number of items, otherwise lengths agree."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head == _ANY:
        return any(_list_matches(rest, actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and json_matches(head, actual[0]) and _list_matches(rest, actual[1:])


def _line_matches(expected: str, actual: str) -> bool:
    if _STREAM_ID.fullmatch(expected.strip()):  # positions start at a random number per database
        return _STREAM_ID.fullmatch(actual.strip()) is not None
    if _glob(expected.strip(), actual.strip()):
        return True
    prefix, _, body = expected.partition("{")
    if body and actual.startswith(prefix) and actual[len(prefix) :].startswith("{"):
        try:
            return json_matches(parse_documented_json("{" + body), json.loads(actual[len(prefix) :]))
        except ValueError:
            return False
    return False


def _shape_matches(expected: Any, actual: Any) -> bool:
    """The documented keys are there, at every depth; the values may differ."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _shape_matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        items = [item for item in expected if item != _ANY]
        return isinstance(actual, list) and (not items or not actual or all(_shape_matches(items[0], a) for a in actual))
    return True


def keys_mismatch(expected: str, actual: str) -> str | None:
    """None when the real JSON has every key the documented JSON shows (values are illustrative)."""
    try:
        documented = parse_documented_json(expected)
        real = json.loads(actual)
    except ValueError as exc:
        return f"not JSON ({exc}); documented:\n{expected}\nreal:\n{actual}"
    if _shape_matches(documented, real):
        return None
    return f"a documented key is missing; documented:\n{expected}\nreal:\n{actual}"


def mismatch(expected: str, actual: str) -> str | None:
    """None when `actual` shows what `expected` documents, else why not."""
    try:
        documented = parse_documented_json(expected)
    except ValueError:
        documented = None
    if documented is not None:
        try:
            real = json.loads(actual)
        except ValueError:
            return f"expected JSON like:\n{expected}\ngot:\n{actual}"
        if json_matches(documented, real):
            return None
        return f"JSON differs; documented:\n{expected}\nreal:\n{actual}"
    return lines_mismatch(expected, actual)


def lines_mismatch(expected: str, actual: str) -> str | None:
    """None when every documented line matches a real line, in order (a JSON line structurally)."""
    lines = actual.splitlines()
    position = 0
    for want in (line for line in expected.splitlines() if line.strip()):
        while position < len(lines) and not _line_matches(want, lines[position]):
            position += 1
        if position == len(lines):
            return f"documented line not found in order: {want!r}\nreal output:\n{actual}"
        position += 1
    return None
