"""The pure half of `/stats/…`: parameters, bucket alignment, percentiles, histogram, funnels.

No I/O here: app/routes/stats.py runs the SQL (app/store/queries.py) and hands the rows
to these functions, and test/unit/test_stats.py checks them against brute force.

Conventions shared by every endpoint:
- a range is `[from, to)` in integer milliseconds since the Unix epoch;
- buckets are UTC-aligned: Unix time has no leap seconds, so a bucket of size
  `s` starts at `ts - ts % s` for minutes, hours and days alike;
- the database keeps per-hour and per-minute rollups (schema/004_stats.sql), so a
  range is split into the whole hours inside it, the whole minutes outside those,
  and at most two partial minutes at its edges (read from the base tables through
  an index): a 30-day range reads ~720 hourly rows per name, not 10 million events.
"""

from __future__ import annotations

import bisect
import calendar
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from app.codes import ErrorCode

MAX_TIMESTAMP_MS = 253_402_300_800_000  # year 10000, as for ingested timestamps
DAY_MS = 86_400_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
BUCKETS: Mapping[str, int] = {"minute": MINUTE_MS, "hour": HOUR_MS, "day": DAY_MS}
DEFAULT_BUCKET = "hour"
MAX_BUCKETS = 10_000
DEFAULT_TOP_NAMES = 5
DEFAULT_NAMES_LIMIT = 50
MAX_NAMES_LIMIT = 1_000
MIN_STEPS, MAX_STEPS = 2, 10
MAX_NAME_CHARS = 255

# Upper bounds of the duration histogram's bins, in ms; a last bin (le_ms null) takes the rest.
HISTOGRAM_BOUNDS_MS: tuple[int, ...] = (
    1_000,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
    600_000,
    1_800_000,
    3_600_000,
)


class BadParameter(ValueError):
    """A query parameter the endpoint refuses: becomes a 400 `{"error": code, "message"}`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- times ----------------------------------------------------------------------

_MS = re.compile(r"[0-9]{1,16}")
# RFC 3339 date-time with a zone. A space instead of the zone's "+" is accepted
# because an unencoded "+" in a query string arrives as a space.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+\- ])(\d{2}):(\d{2}))"
)


def parse_time(raw: str) -> int | None:
    """Milliseconds since the epoch from `1700000000000` or an RFC 3339 date-time; None if neither."""
    if _MS.fullmatch(raw):
        ms = int(raw)
        return ms if ms < MAX_TIMESTAMP_MS else None
    match = _RFC3339.fullmatch(raw)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    fraction = (match.group(7) or "").ljust(3, "0")[:3]  # digits past milliseconds are truncated
    offset = 0
    if match.group(8) is None:
        off_h, off_m = int(match.group(10)), int(match.group(11))
        if off_h > 23 or off_m > 59:
            return None
        offset = (off_h * 60 + off_m) * MINUTE_MS * (-1 if match.group(9) == "-" else 1)
    days = _days_from_civil(year, month, day)
    ms = ((days * 24 + hour) * 60 + minute) * MINUTE_MS + second * 1000 + int(fraction) - offset
    return ms if 0 <= ms < MAX_TIMESTAMP_MS else None


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


@dataclass(frozen=True, slots=True)
class Range:
    start: int  # `from`, inclusive
    end: int  # `to`, exclusive


def _single(params: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = params.get(key) or []
    if len(values) > 1:
        raise BadParameter(ErrorCode(f"invalid_{key}"), f"{key} may be given once.")
    return values[0] if values else None


def parse_range(params: Mapping[str, Sequence[str]], now_ms: int) -> Range:
    """`from`/`to` (ms or RFC 3339); default the 24 hours up to now, or 24 hours around the one given."""
    parsed: dict[str, int | None] = {}
    for key in ("from", "to"):
        raw = _single(params, key)
        if raw is None:
            parsed[key] = None
            continue
        value = parse_time(raw)
        if value is None:
            raise BadParameter(
                ErrorCode(f"invalid_{key}"),
                f"{key} must be milliseconds since the Unix epoch or an RFC 3339 date-time with a zone "
                f"(e.g. 2026-01-31T12:00:00Z), from 1970 to before year 10000.",
            )
        parsed[key] = value
    start, end = parsed["from"], parsed["to"]
    if start is None and end is None:
        end = now_ms
        start = max(0, end - DAY_MS)
    elif start is None:
        assert end is not None
        start = max(0, end - DAY_MS)
    elif end is None:
        end = now_ms if now_ms > start else start + DAY_MS
    if start >= end:
        raise BadParameter(ErrorCode.INVALID_RANGE, "from must be before to (from is inclusive, to exclusive).")
    return Range(start, end)


def parse_bucket(params: Mapping[str, Sequence[str]]) -> tuple[str, int]:
    raw = _single(params, "bucket")
    name = DEFAULT_BUCKET if raw is None else raw
    if name not in BUCKETS:
        raise BadParameter(ErrorCode.INVALID_BUCKET, f"bucket must be one of {', '.join(BUCKETS)}.")
    return name, BUCKETS[name]


def parse_limit(params: Mapping[str, Sequence[str]], default: int, high: int) -> int:
    raw = _single(params, "limit")
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= high:
        raise BadParameter(ErrorCode.INVALID_LIMIT, f"limit must be an integer from 1 to {high}.")
    return int(raw)


def parse_names(values: Sequence[str], key: str) -> list[str]:
    """Repeated names, validated like ingested ones; duplicates dropped, order kept."""
    seen: dict[str, None] = {}
    for value in values:
        if not 1 <= len(value) <= MAX_NAME_CHARS or "\x00" in value:
            message = f"each {key} must be an event name of 1 to {MAX_NAME_CHARS} characters."
            raise BadParameter(ErrorCode(f"invalid_{key}"), message)
        seen.setdefault(value, None)
    return list(seen)


def parse_steps(values: Sequence[str]) -> list[str]:
    """Funnel steps, in order; repeats are allowed (a→b→a is a valid flow)."""
    if not MIN_STEPS <= len(values) <= MAX_STEPS:
        raise BadParameter(ErrorCode.INVALID_STEP, f"give {MIN_STEPS} to {MAX_STEPS} step parameters, in order.")
    for value in values:
        if not 1 <= len(value) <= MAX_NAME_CHARS or "\x00" in value:
            raise BadParameter(ErrorCode.INVALID_STEP, f"each step must be an event name of 1 to {MAX_NAME_CHARS} characters.")
    return list(values)


def parse_within(params: Mapping[str, Sequence[str]]) -> int | None:
    raw = _single(params, "within")
    if raw is None:
        return None
    if not _MS.fullmatch(raw) or int(raw) >= MAX_TIMESTAMP_MS:
        raise BadParameter(ErrorCode.INVALID_WITHIN, "within must be a whole number of milliseconds, 0 or more.")
    return int(raw)


# --- buckets ----------------------------------------------------------------------


def floor_to(ts: int, size: int) -> int:
    return ts - ts % size


def bucket_starts(rng: Range, size: int) -> list[int]:
    """The start of every UTC-aligned bucket that overlaps the range, oldest first."""
    first = floor_to(rng.start, size)
    last = floor_to(rng.end - 1, size)
    return list(range(first, last + 1, size))


def bucket_count(rng: Range, size: int) -> int:
    return (floor_to(rng.end - 1, size) - floor_to(rng.start, size)) // size + 1


def check_bucket_count(rng: Range, bucket: str, size: int) -> None:
    count = bucket_count(rng, size)
    if count > MAX_BUCKETS:
        raise BadParameter(
            ErrorCode.TOO_MANY_BUCKETS,
            f"this range spans {count} {bucket} buckets; at most {MAX_BUCKETS} are allowed: "
            "choose a larger bucket or a shorter range.",
        )


EMPTY = (0, 0)


@dataclass(frozen=True, slots=True)
class Split:
    """A range as whole hours, whole minutes and partial minutes, each read from its own source.

    Whole hours come from the hourly rollup, whole minutes outside them from the
    per-minute rollup, and the partial minutes at the edges from the base tables.
    Every part is half-open; empty parts are `(0, 0)`, so the SQL always gets plain
    bigint bounds. The parts are disjoint and together cover the range exactly.
    """

    hours: tuple[int, int]
    minutes: tuple[tuple[int, int], tuple[int, int]]
    raw: tuple[tuple[int, int], tuple[int, int]]

    def event_bounds(self) -> tuple[int, int, int, int, int, int, int, int, int, int]:
        """$1–$10 of the event queries: hours, minute head and tail, raw head and tail."""
        return (*self.hours, *self.minutes[0], *self.minutes[1], *self.raw[0], *self.raw[1])

    def session_bounds(self) -> tuple[int, int, int, int, int, int]:
        """$1–$6 of the session queries (no hourly rollup): minutes, raw head and tail."""
        if self.hours != EMPTY or self.minutes[1] != EMPTY:
            raise ValueError("session bounds need a split made with hours=False")
        return (*self.minutes[0], *self.raw[0], *self.raw[1])


def _outer_inner(lo: int, hi: int, size: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    """[lo, hi) as (head, whole units of `size`, tail); None when no whole unit fits."""
    inner_lo = -(-lo // size) * size
    inner_hi = floor_to(hi, size)
    if inner_lo >= inner_hi:
        return None
    head = (lo, inner_lo) if lo < inner_lo else EMPTY
    tail = (inner_hi, hi) if inner_hi < hi else EMPTY
    return head, (inner_lo, inner_hi), tail


def split_range(rng: Range, *, hours: bool = True) -> Split:
    """`hours=False` for minute buckets (an hourly row cannot be told apart by minute)."""
    by_minute = _outer_inner(rng.start, rng.end, MINUTE_MS)
    if by_minute is None:
        return Split(EMPTY, (EMPTY, EMPTY), ((rng.start, rng.end), EMPTY))
    raw_head, (m_lo, m_hi), raw_tail = by_minute
    by_hour = _outer_inner(m_lo, m_hi, HOUR_MS) if hours else None
    if by_hour is None:
        return Split(EMPTY, ((m_lo, m_hi), EMPTY), (raw_head, raw_tail))
    minute_head, whole_hours, minute_tail = by_hour
    return Split(whole_hours, (minute_head, minute_tail), (raw_head, raw_tail))


def hour_split(rng: Range) -> tuple[int, int, int, int, int, int]:
    """$1, $2, $4–$7 of queries.STATS_NAME_SESSIONS: the whole hours of the range, then
    the partial hours before and after them (the whole range when no whole hour fits)."""
    by_hour = _outer_inner(rng.start, rng.end, HOUR_MS)
    if by_hour is None:
        return (*EMPTY, rng.start, rng.end, *EMPTY)
    head, whole, tail = by_hour
    return (*whole, *head, *tail)


def points(starts: Sequence[int], counts: Mapping[int, int]) -> list[list[int]]:
    """`[[t, n], …]` for every bucket, zeros included."""
    return [[t, counts.get(t, 0)] for t in starts]


# --- percentiles, histogram -------------------------------------------------------------


def nearest_rank(n: int, percent: int) -> int:
    """1-based rank of the nearest-rank percentile: the smallest k with k/n ≥ percent/100."""
    return max(1, -(-percent * n // 100))


def percentile(sorted_values: Sequence[int], percent: int) -> int | None:
    if not sorted_values:
        return None
    return sorted_values[nearest_rank(len(sorted_values), percent) - 1]


def _duration_bounds() -> tuple[int, ...]:
    """Integer thresholds for width_bucket: every ms up to 100, then 2 % apart, to year 10000,
    and each histogram bound + 1 (a bucket then never straddles a histogram bin's edge)."""
    bounds = list(range(0, 101))
    while bounds[-1] < MAX_TIMESTAMP_MS:
        bounds.append(max(bounds[-1] + 1, -(-bounds[-1] * 102 // 100)))
    return tuple(sorted({*bounds, *(b + 1 for b in HISTOGRAM_BOUNDS_MS)}))


# Fine buckets for exact duration percentiles (see queries.STATS_SESSION_GROUPS):
# bucket b holds DURATION_BOUNDS[b-1] <= d < DURATION_BOUNDS[b]; bucket 0 the negatives.
DURATION_BOUNDS = _duration_bounds()


def duration_bucket(duration_ms: int) -> int:
    """PostgreSQL's width_bucket(duration, DURATION_BOUNDS): how many bounds are <= it."""
    return bisect.bisect_right(DURATION_BOUNDS, duration_ms)


def duration_bucket_range(bucket: int) -> tuple[int, int]:
    """The half-open value range [lo, hi) of a duration bucket."""
    lo = DURATION_BOUNDS[bucket - 1] if bucket > 0 else -(2**63)
    hi = DURATION_BOUNDS[bucket] if bucket < len(DURATION_BOUNDS) else 2**63 - 1
    return lo, hi


def locate_ranks(bucket_counts: Mapping[int, int], ranks: Iterable[int]) -> dict[int, tuple[int, int]]:
    """For each 1-based rank over all values: (its bucket, its 1-based rank inside that bucket)."""
    wanted = sorted(set(ranks))
    found: dict[int, tuple[int, int]] = {}
    below = 0
    at = 0
    for bucket in sorted(bucket_counts):
        count = bucket_counts[bucket]
        while at < len(wanted) and wanted[at] <= below + count:
            found[wanted[at]] = (bucket, wanted[at] - below)
            at += 1
        below += count
    return found


def percentiles_from_counts(counts: Mapping[int, int], percents: Sequence[int]) -> dict[int, int | None]:
    """Nearest-rank percentiles of a multiset given as {value: how many}."""
    total = sum(counts.values())
    if not total:
        return {p: None for p in percents}
    located = locate_ranks(counts, [nearest_rank(total, p) for p in percents])
    return {p: located[nearest_rank(total, p)][0] for p in percents}


def mean(total: int, count: int) -> float | None:
    """Exact quotient rounded once (int / int in Python is correctly rounded)."""
    return total / count if count else None


def histogram_bin(duration_ms: int) -> int:
    """Index of the first bin whose upper bound is ≥ the duration; len(bounds) for the rest."""
    for index, bound in enumerate(HISTOGRAM_BOUNDS_MS):
        if duration_ms <= bound:
            return index
    return len(HISTOGRAM_BOUNDS_MS)


def histogram(counts: Sequence[int]) -> list[dict[str, int | None]]:
    """`[{"le_ms": 1000, "sessions": n}, …, {"le_ms": null, "sessions": n}]`, not cumulative."""
    bounds: list[int | None] = [*HISTOGRAM_BOUNDS_MS, None]
    return [{"le_ms": bound, "sessions": int(count)} for bound, count in zip(bounds, counts, strict=True)]


def histogram_from_buckets(bucket_counts: Mapping[int, int]) -> list[dict[str, int | None]]:
    """The histogram of durations given as {fine duration bucket: how many}: each bucket
    lies inside one bin (DURATION_BOUNDS holds every bin edge), so its lowest value says which."""
    counts = [0] * (len(HISTOGRAM_BOUNDS_MS) + 1)
    for bucket, count in bucket_counts.items():
        counts[histogram_bin(duration_bucket_range(bucket)[0])] += count
    return histogram(counts)


# --- funnels ------------------------------------------------------------------------------


def funnel_depth(names: Sequence[object], timestamps: Sequence[int], steps: Sequence[object], within: int | None) -> int:
    """How many steps one session completes, its events given in timestamp-then-arrival order.

    Steps must happen in order at strictly later positions of that order; with `within`,
    all of them at most `within` ms after the step-1 event that starts the chain. Any
    step-1 event may start it. From a fixed start, taking the earliest match for each
    next step is optimal (a later match never makes a following step easier), so the
    depth is the best greedy chain over the candidate starts; without `within` the first
    start is already best.
    """
    best = 0
    for begin, name in enumerate(names):
        if name != steps[0]:
            continue
        limit = None if within is None else timestamps[begin] + within
        depth, at = 1, begin + 1
        while depth < len(steps) and at < len(names):
            if limit is not None and timestamps[at] > limit:
                break
            if names[at] == steps[depth]:
                depth += 1
            at += 1
        best = max(best, depth)
        if best == len(steps) or within is None:
            break
    return best


def funnel_steps(depths: Iterable[int], steps: Sequence[str]) -> list[dict[str, object]]:
    """Sessions reaching each step, and the unrounded conversion from step 1."""
    reached = [0] * (len(steps) + 1)
    for depth in depths:
        reached[depth] += 1
    at_least = [0] * (len(steps) + 1)
    running = 0
    for k in range(len(steps), 0, -1):
        running += reached[k]
        at_least[k] = running
    first = at_least[1]
    return [
        {"name": step, "sessions": at_least[k], "conversion": (at_least[k] / first) if first else None}
        for k, step in enumerate(steps, start=1)
    ]
