"""GET /sessions filters and GET /stats/breakdown against brute force, on generated data.

Rows are written with plain SQL (as an operator or another writer would), with data
that holds strings, numbers, booleans, JSON null, missing keys, no data at all,
data that is not an object, unicode, and names and keys that need escaping in a
query string or in SQL (quotes, colons, `%`, `_`, backslashes). Folds run at random
points, so some events are behind the fold's watermark and some past it. The
brute-force side reads SPEC's definitions straight off the rows (no shared code
with app/reads/find.py); only the order of `seen` (first-seen order, which
PostgreSQL assigns within a statement) is read from the database.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import hypothesis
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from test.support.clients import event, new_session, upload
from test.support.postgres import TestPostgres as Cluster
from test.support.service import Service

HOUR, DAY = 3_600_000, 86_400_000
T0 = 1_780_000_000_000 + 4_321
NAMES = ["view", "buy", "it's", "a:b", "100%", "_x_", "back\\slash", "ünï"]
KEYS = ["plan", "n", "ok", 'we"ird', "a:b", "100%", "_", "back\\slash", "ключ", '"q']
VALUES: list[Any] = ["pro", "free", "3", "true", "null", "x:y", "é", 'say "hi"', "\\", "%_", 3, 0, -2, 3.5, True, False, None]
_MISSING = object()

Row = tuple[str, str, int, str | None, str | None]  # session, type, ts, name, data as JSON text


@dataclass
class Model:
    rows: list[Row] = field(default_factory=list)

    def sessions(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for sid, kind, ts, _, _ in self.rows:
            s = out.setdefault(sid, {"start": None, "end": None, "events": 0})
            if kind == "SESSION_START":
                s["start"] = ts if s["start"] is None else min(s["start"], ts)
            elif kind == "SESSION_END":
                s["end"] = ts if s["end"] is None else max(s["end"], ts)
            else:
                s["events"] += 1
        return out


MODEL = Model()


async def insert(conn: asyncpg.Connection, rows: list[Row]) -> None:
    names = sorted({r[3] for r in rows if r[3] is not None})
    ids = {n: await conn.fetchval("SELECT event_name_id($1)", n) for n in names}
    await conn.execute(
        """
        INSERT INTO events (session_id, type, ts, name_id, data)
        SELECT s, t, ts, n, d::json
          FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::int[], $5::text[]) WITH ORDINALITY AS x (s, t, ts, n, d, o)
         ORDER BY o
        """,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [ids[r[3]] if r[3] is not None else None for r in rows],
        [r[4] for r in rows],
    )
    MODEL.rows.extend(rows)


# --- brute force ------------------------------------------------------------------------


def _data(row: Row) -> Any:
    return None if row[4] is None else json.loads(row[4], parse_float=Decimal)


def _value(row: Row, key: str) -> Any:
    data = _data(row)
    if not isinstance(data, dict) or key not in data:
        return _MISSING
    return data[key]


def matches(value: Any, text: str) -> bool:
    """SPEC's `data=key:value`, as docs/reads.md defines it."""
    if text.startswith('"'):
        return isinstance(value, str) and value == json.loads(text)
    if isinstance(value, str):
        return value == text
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, int | Decimal):
        try:
            return text.strip() == text and Decimal(text) == Decimal(value) and text[0] in "-0123456789" and text[-1].isdigit()
        except ArithmeticError:
            return False
    return False


def brute_sessions(model: Model, seen: dict[str, int], f: dict[str, Any]) -> list[str]:
    out = []
    for sid, s in model.sessions().items():
        if f.get("from") is not None and not (s["start"] is not None and s["start"] >= f["from"]):
            continue
        if f.get("to") is not None and not (s["start"] is not None and s["start"] < f["to"]):
            continue
        if f.get("ended") is not None and (s["end"] is not None) != f["ended"]:
            continue
        duration = s["end"] - s["start"] if s["end"] is not None and s["start"] is not None else None
        if f.get("min") is not None and not (duration is not None and duration >= f["min"]):
            continue
        if f.get("max") is not None and not (duration is not None and duration <= f["max"]):
            continue
        events = [r for r in model.rows if r[0] == sid and r[1] == "EVENT"]
        if any(not any(r[3] == n for r in events) for n in f["names"]):
            continue
        named = [r for r in events if not f["names"] or r[3] in f["names"]]
        if any(not any(matches(_value(r, k), v) for r in named if _value(r, k) is not _MISSING) for k, v in f["data"]):
            continue
        out.append(sid)
    return sorted(out, key=lambda sid: -seen[sid])


def label(value: Any) -> str:
    """The value's JSON text as jsonb prints it (for the values generated here)."""
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def brute_breakdown(model: Model, name: str, key: str, lo: int, hi: int, limit: int, size: int | None) -> dict[str, Any]:
    events = [r for r in model.rows if r[1] == "EVENT" and r[3] == name and lo <= r[2] < hi]
    groups: dict[str, list[Row]] = {}
    missing: list[Row] = []
    for r in events:
        v = _value(r, key)
        if v is _MISSING:
            missing.append(r)
        else:
            groups.setdefault(label(v), []).append(r)
    ordered = sorted(groups, key=lambda g: (-len(groups[g]), g))
    top, rest = ordered[:limit], ordered[limit:]
    other = [r for g in rest for r in groups[g]]

    def counts(rows: list[Row]) -> dict[str, int]:
        return {"events": len(rows), "sessions": len({r[0] for r in rows})}

    body: dict[str, Any] = {
        "from": lo,
        "to": hi,
        "name": name,
        "key": key,
        "values": [{"value": json.loads(g), **counts(groups[g])} for g in top],
        "other": counts(other),
        "missing": counts(missing),
    }
    if size is not None:
        starts = list(range(lo - lo % size, hi, size))
        body["series"] = [
            {"value": json.loads(g), "points": [[t, sum(1 for r in groups[g] if t <= r[2] < t + size)] for t in starts]}
            for g in top
        ]
    return body


# --- the breakdown rollups (schema/010_breakdown_rollups.sql), recounted -------------------

# Fewer pairs get a rollup than the examples ask for (6 names x 10 keys): answers from
# a rollup and from events alone are both compared.
ROLLUPS = 10


@pytest.fixture(scope="module")
async def service(postgres: Cluster) -> AsyncIterator[Service]:
    svc = Service(await postgres.create_database("find"), "--breakdown-rollups", str(ROLLUPS))
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


# Each pair's (session, value id, hour) with an EVENT up to the pair's own watermark,
# the value's id looked up by plain equality (0: missing); then what the rollups
# must hold, recounted from those. The value is read with 010's breakdown_value (as
# `data -> key`, but missing for data jsonb cannot hold): this recounts the fold's
# bookkeeping, the brute force above checks the values themselves.
_PAIR_EVENTS = """
SELECT k.id AS key_id, e.session_id, e.ts - e.ts % 3600000 AS h,
       coalesce((SELECT b.id FROM breakdown_values b WHERE b.key_id = k.id AND b.value = breakdown_value(e.data, k.key)), 0)
           AS value_id
  FROM breakdown_keys k JOIN events e ON e.name_id = k.name_id AND e.type = 'EVENT' AND e.position <= k.through
 WHERE k.given_up_at IS NULL
"""
ROLLUP_PAIR_EVENTS = "SELECT key_id, hour_ms, value_id, events FROM breakdown_event_hours ORDER BY 1, 2, 3"
RECOUNT_PAIR_EVENTS = f"SELECT key_id, h, value_id, count(*) FROM ({_PAIR_EVENTS}) AS e GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
PAIR_PRESENCES = "SELECT key_id, value_id, session_id, hour_ms FROM breakdown_presences ORDER BY 1, 2, 3, 4"
RECOUNT_PAIR_PRESENCES = f"SELECT DISTINCT key_id, value_id, session_id, h FROM ({_PAIR_EVENTS}) AS e ORDER BY 1, 2, 3, 4"
ROLLUP_PAIR_SESSIONS = """
SELECT key_id, hour_ms, value_id, prev_hour_ms, sessions FROM breakdown_session_hours WHERE sessions <> 0 ORDER BY 1, 2, 3, 4
"""
RECOUNT_PAIR_SESSIONS = f"""
SELECT key_id, h, value_id, prev, count(*) FROM (
    SELECT key_id, h, value_id, coalesce(lag(h) OVER (PARTITION BY key_id, value_id, session_id ORDER BY h), -1) AS prev
      FROM ({RECOUNT_PAIR_PRESENCES}) AS p) AS x
 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
# Every value once per pair (the fold looks values up by jsonb equality and hash).
DUPLICATE_VALUES = "SELECT key_id, value FROM breakdown_values GROUP BY 1, 2 HAVING count(*) > 1"


async def assert_breakdown_rollups_exact(sql: asyncpg.Connection) -> None:
    """In one snapshot: the service folds beside us."""
    async with sql.transaction(isolation="repeatable_read", readonly=True):
        assert await sql.fetch(DUPLICATE_VALUES) == []
        assert await sql.fetch(ROLLUP_PAIR_EVENTS) == await sql.fetch(RECOUNT_PAIR_EVENTS)
        assert await sql.fetch(PAIR_PRESENCES) == await sql.fetch(RECOUNT_PAIR_PRESENCES)
        assert await sql.fetch(ROLLUP_PAIR_SESSIONS) == await sql.fetch(RECOUNT_PAIR_SESSIONS)


async def fold_some(sql: asyncpg.Connection, rng: random.Random) -> None:
    """The stats fold, then the pairs' in slices of a few events: some pairs are left
    part of the way, as on a large database that one fold does not cover."""
    await sql.execute("SELECT stats_fold_up_to(1000000)")
    for _ in range(rng.randrange(4)):
        await sql.execute("SELECT breakdown_fold_up_to($1)", rng.choice([1, 2, 5]))


# --- the HTTP side --------------------------------------------------------------------------


async def get(service: Service, path: str, params: list[tuple[str, Any]]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}{path}?{urlencode(params)}") as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


def data_param(key: str, value: str) -> str:
    if ":" in key or key.startswith('"'):
        return json.dumps(key) + ":" + value
    return f"{key}:{value}"


def session_params(f: dict[str, Any]) -> list[tuple[str, Any]]:
    params: list[tuple[str, Any]] = [("name", n) for n in f["names"]]
    for mine, theirs in (("from", "from"), ("to", "to"), ("min", "min_duration_ms"), ("max", "max_duration_ms")):
        if f.get(mine) is not None:
            params.append((theirs, f[mine]))
    if f.get("ended") is not None:
        params.append(("ended", "true" if f["ended"] else "false"))
    params += [("data", data_param(k, v)) for k, v in f["data"]]
    return params


async def found(service: Service, f: dict[str, Any], limit: int) -> list[str]:
    """Every page of /sessions with these filters, following `next`."""
    ids: list[str] = []
    params = [*session_params(f), ("limit", limit)]
    for _ in range(1_000):
        status, body = await get(service, "/sessions", params)
        assert status == 200, body
        ids += [s["session_id"] for s in body["sessions"]]
        if body["next"] is None:
            return ids
        assert len(body["sessions"]) == limit
        params = [*session_params(f), ("limit", limit), ("before", body["next"])]
    raise AssertionError("paging did not end")


async def seen_order(sql: asyncpg.Connection) -> dict[str, int]:
    return {str(r[0]): r[1] for r in await sql.fetch("SELECT id, seen FROM sessions")}


# --- generated data ---------------------------------------------------------------------------

# Biased towards a few keys and values, so that filters often match something.
_key = hs.one_of(hs.sampled_from(KEYS[:3]), hs.sampled_from(KEYS))
_json_value = hs.one_of(hs.sampled_from(["pro", "3", 3, True, 3.5]), hs.sampled_from(VALUES))
_data_doc = hs.one_of(
    hs.none(),
    hs.just("[1, 2]"),
    hs.just('"plan"'),
    hs.dictionaries(_key, _json_value, max_size=3).map(lambda d: orjson.dumps(d).decode()),
)
_event = hs.tuples(hs.integers(0, 3 * HOUR), hs.sampled_from(NAMES[:5]), _data_doc)
_session = hs.tuples(
    hs.one_of(hs.none(), hs.integers(0, 2 * HOUR)),  # start offset, or never started
    hs.one_of(hs.none(), hs.integers(0, 20 * 60_000)),  # duration, or never ended
    hs.lists(_event, max_size=8),
)
_filter_value = hs.one_of(
    hs.sampled_from(["pro", "3", "true", "3.5"]),
    hs.sampled_from(
        ["pro", "3", "3.0", "3e0", "true", "false", "null", '"3"', '"true"', "x:y", "é", 'say "hi"', "\\", "%_", "-2", "3.5", ""]
    ),
)


def _sometimes(strategy: hs.SearchStrategy[Any]) -> hs.SearchStrategy[Any]:
    """None three times in four: a filter combination should still find something."""
    return hs.one_of(hs.none(), hs.none(), hs.none(), strategy)


_filters = hs.fixed_dictionaries(
    {
        "names": hs.lists(hs.sampled_from([*NAMES[:5], "never-seen"]), max_size=2, unique=True),
        "from": _sometimes(hs.integers(0, 2 * HOUR)),
        "to": _sometimes(hs.integers(1, 3 * HOUR)),
        "ended": _sometimes(hs.booleans()),
        "min": _sometimes(hs.integers(0, 10 * 60_000)),
        "max": _sometimes(hs.integers(0, 20 * 60_000)),
        "data": hs.lists(hs.tuples(hs.one_of(hs.sampled_from(KEYS[:2]), _key), _filter_value), max_size=2, unique=True),
    }
)
_case = iter(range(10**6))


async def load(
    sql: asyncpg.Connection,
    sessions: list[tuple[int | None, int | None, list[tuple[int, str, str | None]]]],
    base: int,
    rng: random.Random,
) -> None:
    rows: list[Row] = []
    for start, duration, events in sessions:
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        if start is not None:
            rows.append((sid, "SESSION_START", base + start, None, None))
            if duration is not None:
                rows.append((sid, "SESSION_END", base + start + duration, None, None))
        rows += [(sid, "EVENT", base + offset, name, data) for offset, name, data in events]
        if not events and start is None:
            rows.append((sid, "EVENT", base, "view", None))
    rng.shuffle(rows)
    cut = rng.randrange(len(rows) + 1)
    if cut:
        await insert(sql, rows[:cut])
    if rng.random() < 0.5:  # the service folds too, at its own pace
        await (sql.execute("SELECT stats_fold()") if rng.random() < 0.5 else fold_some(sql, rng))
    if cut < len(rows):
        await insert(sql, rows[cut:])


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    sessions=hs.lists(_session, min_size=1, max_size=10),
    filters=hs.lists(_filters, min_size=1, max_size=4),
    seed=hs.integers(0, 2**32),
)
async def test_every_filter_combination_matches_brute_force(
    service: Service, sql: asyncpg.Connection, sessions: list[Any], filters: list[dict[str, Any]], seed: int
) -> None:
    rng = random.Random(seed)
    base = T0 + next(_case) * 4 * HOUR  # each example in a window of its own
    await load(sql, sessions, base, rng)
    seen = await seen_order(sql)
    for f in filters:
        f = {**f, **{k: base + f[k] for k in ("from", "to") if f[k] is not None}}
        if f["from"] is not None and f["to"] is not None and f["from"] >= f["to"]:
            f["to"] = None
        if f["min"] is not None and f["max"] is not None and f["min"] > f["max"]:
            f["min"], f["max"] = f["max"], f["min"]
        expected = brute_sessions(MODEL, seen, f)

        hypothesis.event(f"data={len(f['data'])} names={len(f['names'])} found={min(len(expected), 3)}")
        assert await found(service, f, rng.choice([1, 2, 3, 50])) == expected, f


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    sessions=hs.lists(_session, min_size=1, max_size=10),
    name=hs.sampled_from([*NAMES[:5], "never-seen"]),
    key=_key,
    cut=hs.tuples(hs.integers(0, 3 * HOUR), hs.integers(1, 3 * HOUR)),
    limit=hs.integers(1, 4),
    bucket=hs.sampled_from([None, "minute", "hour", "day"]),
    seed=hs.integers(0, 2**32),
)
async def test_every_breakdown_matches_brute_force(
    service: Service,
    sql: asyncpg.Connection,
    sessions: list[Any],
    name: str,
    key: str,
    cut: tuple[int, int],
    limit: int,
    bucket: str | None,
    seed: int,
) -> None:
    rng = random.Random(seed)
    base = T0 + next(_case) * 4 * HOUR
    await load(sql, sessions, base, rng)
    lo, hi = sorted(cut)
    lo, hi = base + lo, base + hi + (1 if lo == hi else 0)
    # Also the whole history: events of other examples count too. Asked again after a
    # fold: the first answer gave the pair a rollup (while there are fewer than
    # ROLLUPS), which the second one reads in part or in whole.
    for again in (False, True):
        if again:
            await (sql.execute("SELECT stats_fold()") if rng.random() < 0.5 else fold_some(sql, rng))
        for a, b in ((lo, hi), (T0 - DAY, base + 4 * HOUR)):
            params: list[tuple[str, Any]] = [("name", name), ("key", key), ("from", a), ("to", b), ("limit", limit)]
            size = None
            if bucket is not None and (bucket != "minute" or b - a < 9_000 * 60_000):
                params.append(("bucket", bucket))
                size = {"minute": 60_000, "hour": HOUR, "day": DAY}[bucket]
            status, body = await get(service, "/stats/breakdown", params)
            assert status == 200, body
            assert body == brute_breakdown(MODEL, name, key, a, b, limit, size), (a, b, again)
    pairs = await sql.fetchval("SELECT count(*) FROM breakdown_keys")
    assert pairs <= ROLLUPS
    hypothesis.event(f"every rollup taken: {pairs == ROLLUPS}")
    await assert_breakdown_rollups_exact(sql)


# --- the examples of the docs, over the WebSocket ---------------------------------------------


async def test_documented_examples(service: Service) -> None:
    sid, other = new_session(), new_session()
    ts = T0 - 2 * DAY
    await upload(
        service.ws_url,
        sid,
        [
            {"type": "SESSION_START", "timestamp": ts},
            event("checkout", ts + 1_000, data={"plan": "pro", "n": 3, "ok": True, "path": "/cart"}),
            {"type": "SESSION_END", "timestamp": ts + 700_000},
        ],
    )
    await upload(
        service.ws_url, other, [{"type": "SESSION_START", "timestamp": ts}, event("checkout", ts + 5, data={"plan": "free"})]
    )
    MODEL.rows.extend(
        [
            (sid, "SESSION_START", ts, None, None),
            (sid, "EVENT", ts + 1_000, "checkout", '{"plan":"pro","n":3,"ok":true,"path":"/cart"}'),
            (sid, "SESSION_END", ts + 700_000, None, None),
            (other, "SESSION_START", ts, None, None),
            (other, "EVENT", ts + 5, "checkout", '{"plan":"free"}'),
        ]
    )
    span = [("from", ts), ("to", ts + 1)]
    for extra, want in [
        ([("data", "plan:pro")], [sid]),
        ([("data", "n:3")], [sid]),
        ([("data", "n:3.0")], [sid]),
        ([("data", 'n:"3"')], []),
        ([("data", "ok:true")], [sid]),
        ([("data", "path:/cart")], [sid]),
        ([("name", "checkout"), ("data", "plan:free")], [other]),
        ([("name", "checkout"), ("min_duration_ms", 600_000)], [sid]),
        ([("ended", "false")], [other]),
        ([("name", "checkout"), ("name", "nothing")], []),
    ]:
        status, body = await get(service, "/sessions", [*span, *extra])
        assert status == 200, body
        assert [s["session_id"] for s in body["sessions"]] == want, extra
    status, body = await get(service, "/stats/breakdown", [("name", "checkout"), ("key", "plan"), ("from", ts), ("to", ts + DAY)])
    assert status == 200
    assert body["values"] == [{"value": "free", "events": 1, "sessions": 1}, {"value": "pro", "events": 1, "sessions": 1}]


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code", "names"),
    [
        ([("from", "yesterday")], "invalid_filter", "from"),
        ([("to", "2026-02-30T00:00:00Z")], "invalid_filter", "to"),
        ([("from", 5), ("to", 5)], "invalid_filter", "from"),
        ([("from", 1), ("from", 2)], "invalid_filter", "from"),
        ([("ended", "yes")], "invalid_filter", "ended"),
        ([("ended", "")], "invalid_filter", "ended"),
        ([("min_duration_ms", "-1")], "invalid_filter", "min_duration_ms"),
        ([("max_duration_ms", "1.5")], "invalid_filter", "max_duration_ms"),
        ([("min_duration_ms", 5), ("max_duration_ms", 4)], "invalid_filter", "min_duration_ms"),
        ([("name", "")], "invalid_filter", "name"),
        ([("name", "x" * 256)], "invalid_filter", "name"),
        ([("name", "a\x00b")], "invalid_filter", "name"),
        ([("name", str(i)) for i in range(11)], "invalid_filter", "name"),
        ([("data", "plan")], "invalid_filter", "data"),
        ([("data", ":pro")], "invalid_filter", "data"),
        ([("data", '"unclosed:1')], "invalid_filter", "data"),
        ([("data", '"a":"b')], "invalid_filter", "data"),
        ([("data", "n:1e99999")], "invalid_filter", "data"),
        ([("data", "k:" + "v" * 1_001)], "invalid_filter", "data"),
        ([("data", f"k{i}:v") for i in range(11)], "invalid_filter", "data"),
        ([("limit", "0")], "invalid_limit", "limit"),
        ([("before", "x")], "invalid_cursor", "before"),
        ([("nmae", "view")], "unknown_parameter", "nmae"),
        ([("session_id", "x")], "unknown_parameter", "session_id"),
    ],
)
async def test_bad_session_filters_are_400_json_naming_the_parameter(
    service: Service, params: list[tuple[str, Any]], code: str, names: str
) -> None:
    status, body = await get(service, "/sessions", params)
    assert status == 400 and set(body) == {"error", "message"} and body["error"] == code, body
    assert names in body["message"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ([("key", "plan")], "invalid_name"),
        ([("name", ""), ("key", "plan")], "invalid_name"),
        ([("name", "a"), ("name", "b"), ("key", "plan")], "invalid_name"),
        ([("name", "a"), ("key", "b"), ("key", "c")], "invalid_key"),
        ([("name", "view")], "invalid_key"),
        ([("name", "view"), ("key", "")], "invalid_key"),
        ([("name", "view"), ("key", "k" * 256)], "invalid_key"),
        ([("name", "view"), ("key", "plan"), ("limit", "0")], "invalid_limit"),
        ([("name", "view"), ("key", "plan"), ("limit", "1001")], "invalid_limit"),
        ([("name", "view"), ("key", "plan"), ("bucket", "week")], "invalid_bucket"),
        ([("name", "view"), ("key", "plan"), ("bucket", "minute"), ("from", 0), ("to", 10_001 * 60_000)], "too_many_buckets"),
        ([("name", "view"), ("key", "plan"), ("from", "x")], "invalid_from"),
        ([("name", "view"), ("key", "plan"), ("from", 9), ("to", 5)], "invalid_range"),
        ([("name", "view"), ("key", "plan"), ("keys", "x")], "unknown_parameter"),
    ],
)
async def test_bad_breakdown_parameters_are_400_json(service: Service, params: list[tuple[str, Any]], code: str) -> None:
    status, body = await get(service, "/stats/breakdown", params)
    assert status == 400 and set(body) == {"error", "message"} and body["error"] == code, body


async def test_unfiltered_list_is_unchanged_and_limit_1000_holds(service: Service) -> None:
    status, body = await get(service, "/sessions", [("limit", 1000)])
    assert status == 200 and set(body) == {"sessions", "next"}


async def test_read_tokens_apply(start_service: Any) -> None:
    svc = await start_service(env={"READ_TOKENS": "find-read-token-0123456789"})
    for path in (
        "/stats/breakdown?name=a&key=b",
        "/sessions?name=a&data=k:v",
        "/sessions?data=k:v&token=find-read-token-0123456789",
    ):
        async with aiohttp.ClientSession() as http:
            if "token=" not in path:
                async with http.get(svc.url + path) as response:
                    assert response.status == 401 and (await response.json())["error"] == "unauthorized"
            headers = {"Authorization": "Bearer find-read-token-0123456789"}
            async with http.get(svc.url + path, headers=headers) as response:
                assert response.status == 200, await response.text()
