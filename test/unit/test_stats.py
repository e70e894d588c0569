"""app/reads/stats.py against brute force: percentiles, bucket edges, range splits, funnels, times."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from app.reads import stats as st

TIMES = hs.integers(0, st.MAX_TIMESTAMP_MS - 1)


@given(values=hs.lists(hs.integers(-(10**12), 10**12), min_size=1, max_size=300), p=hs.integers(1, 100))
def test_nearest_rank_is_the_smallest_value_with_p_percent_at_or_below(values: list[int], p: int) -> None:
    ordered = sorted(values)
    expected = min(v for v in values if sum(1 for x in values if x <= v) * 100 >= p * len(values))
    assert st.percentile(ordered, p) == expected


@given(
    values=hs.lists(hs.integers(-(10**6), 10**13), min_size=1, max_size=300),
    percents=hs.lists(hs.integers(1, 100), min_size=1, max_size=4),
)
def test_percentiles_through_fine_buckets_equal_sorting(values: list[int], percents: list[int]) -> None:
    """What the summary does for durations: count per bucket, then sort only the buckets holding a rank."""
    counts: dict[int, int] = {}
    for v in values:
        counts[st.duration_bucket(v)] = counts.get(st.duration_bucket(v), 0) + 1
    ranks = {p: st.nearest_rank(len(values), p) for p in percents}
    located = st.locate_ranks(counts, ranks.values())
    for v in values:
        lo, hi = st.duration_bucket_range(st.duration_bucket(v))
        assert lo <= v < hi  # the SQL reads a bucket's values back by this range
    for p, k in ranks.items():
        bucket, inside = located[k]
        members = sorted(v for v in values if st.duration_bucket(v) == bucket)
        assert members[inside - 1] == st.percentile(sorted(values), p)
    grouped: dict[int, int] = {}
    for v in values:
        grouped[v] = grouped.get(v, 0) + 1
    assert st.percentiles_from_counts(grouped, percents) == {p: st.percentile(sorted(values), p) for p in percents}


def test_duration_buckets_are_width_bucket_and_ordered() -> None:
    bounds = st.DURATION_BOUNDS
    assert list(bounds) == sorted(set(bounds)) and bounds[0] == 0 and bounds[-1] >= st.MAX_TIMESTAMP_MS
    assert all(b / a <= 1.03 for a, b in itertools.pairwise(bounds) if a >= 100)  # fine: ~2 % wide
    assert [st.duration_bucket(d) for d in (-1, 0, 1, 100, 101)] == [0, 1, 2, 101, 101]


def test_percentile_of_nothing_is_null() -> None:
    assert st.percentile([], 50) is None
    assert st.mean(0, 0) is None


@given(start=TIMES, length=hs.integers(1, 40 * st.DAY_MS), bucket=hs.sampled_from(list(st.BUCKETS)))
def test_buckets_cover_the_range_exactly_once(start: int, length: int, bucket: str) -> None:
    rng = st.Range(start, min(start + length, st.MAX_TIMESTAMP_MS))
    size = st.BUCKETS[bucket]
    starts = st.bucket_starts(rng, size)
    assert len(starts) == st.bucket_count(rng, size)
    assert all(t % size == 0 for t in starts)  # UTC-aligned
    assert starts[0] <= rng.start < starts[0] + size
    assert starts[-1] <= rng.end - 1 < starts[-1] + size
    assert all(b - a == size for a, b in itertools.pairwise(starts))


def test_bucket_alignment_is_utc_calendar_alignment() -> None:
    moment = dt.datetime(2026, 3, 29, 1, 30, 15, tzinfo=dt.UTC)  # a DST night in Europe: irrelevant in UTC
    ms = int(moment.timestamp() * 1000)
    assert st.floor_to(ms, st.BUCKETS["day"]) == int(dt.datetime(2026, 3, 29, tzinfo=dt.UTC).timestamp() * 1000)
    assert st.floor_to(ms, st.BUCKETS["hour"]) == int(moment.replace(minute=0, second=0).timestamp() * 1000)


def test_too_many_buckets() -> None:
    st.check_bucket_count(st.Range(0, 10_000 * st.MINUTE_MS), "minute", st.MINUTE_MS)
    with pytest.raises(st.BadParameter) as caught:
        st.check_bucket_count(st.Range(0, 10_000 * st.MINUTE_MS + 1), "minute", st.MINUTE_MS)
    assert caught.value.code == "too_many_buckets"


@given(start=TIMES, length=hs.integers(1, 5 * st.DAY_MS), hours=hs.booleans())
def test_split_covers_the_range_exactly_with_hours_minutes_and_edges(start: int, length: int, hours: bool) -> None:
    rng = st.Range(start, start + length)
    split = st.split_range(rng, hours=hours)
    hour_parts = [split.hours] if split.hours != st.EMPTY else []
    minute_parts = [p for p in split.minutes if p != st.EMPTY]
    raw_parts = [p for p in split.raw if p != st.EMPTY]
    parts = sorted(hour_parts + minute_parts + raw_parts)
    assert all(lo < hi for lo, hi in parts)
    assert parts[0][0] == rng.start and parts[-1][1] == rng.end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))  # contiguous, no overlap
    assert all(lo % st.HOUR_MS == 0 and hi % st.HOUR_MS == 0 for lo, hi in hour_parts)
    assert all(lo % st.MINUTE_MS == 0 and hi % st.MINUTE_MS == 0 for lo, hi in minute_parts)
    # Raw edges are partial minutes: a whole minute inside them would belong to a rollup.
    for lo, hi in raw_parts:
        assert -(-lo // st.MINUTE_MS) * st.MINUTE_MS + st.MINUTE_MS > hi
    if not hours:
        assert split.hours == st.EMPTY and split.minutes[1] == st.EMPTY
        assert len(split.session_bounds()) == 6
    elif length > 3 * st.HOUR_MS:
        assert split.hours != st.EMPTY  # a long range reads hours, not thousands of minutes


@given(duration=hs.integers(-(10**7), 10**8))
def test_histogram_bin_is_the_first_bound_at_or_above(duration: int) -> None:
    bounds = [*st.HISTOGRAM_BOUNDS_MS, None]
    index = st.histogram_bin(duration)
    assert bounds[index] is None or duration <= bounds[index]  # type: ignore[operator]
    assert index == 0 or duration > bounds[index - 1]  # type: ignore[operator]


def test_histogram_edges() -> None:
    assert [st.histogram_bin(d) for d in (0, 1_000, 1_001, 5_000, 3_600_000, 3_600_001)] == [0, 0, 1, 1, 8, 9]


def _brute_depth(names: list[str], stamps: list[int], steps: list[str], within: int | None) -> int:
    best = 0
    for k in range(1, len(steps) + 1):
        for chain in itertools.combinations(range(len(names)), k):
            if [names[i] for i in chain] == steps[:k] and (within is None or stamps[chain[-1]] - stamps[chain[0]] <= within):
                best = max(best, k)
    return best


@given(
    events=hs.lists(hs.tuples(hs.integers(0, 8), hs.sampled_from("abcx")), max_size=9),
    steps=hs.lists(hs.sampled_from("abc"), min_size=2, max_size=4),
    within=hs.one_of(hs.none(), hs.integers(0, 5)),
)
def test_funnel_depth_matches_exhaustive_search(events: list[tuple[int, str]], steps: list[str], within: int | None) -> None:
    ordered = sorted(events, key=lambda e: e[0])  # stable: ties keep arrival order
    names, stamps = [n for _, n in ordered], [t for t, _ in ordered]
    assert st.funnel_depth(names, stamps, steps, within) == _brute_depth(names, stamps, steps, within)


def test_funnel_ties_follow_arrival_and_a_later_start_can_win() -> None:
    # Same timestamp: b arrived before a, so a→b needs a later b.
    assert st.funnel_depth(["b", "a"], [5, 5], ["a", "b"], None) == 1
    assert st.funnel_depth(["a", "b"], [5, 5], ["a", "b"], 0) == 2
    # The first a is too early for within=10; the second a starts a chain that fits.
    assert st.funnel_depth(["a", "a", "b"], [0, 95, 100], ["a", "b"], 10) == 2


def test_funnel_steps_conversion() -> None:
    assert st.funnel_steps([1, 2, 2, 0, 3], ["a", "b", "c"]) == [
        {"name": "a", "sessions": 4, "conversion": 1.0},
        {"name": "b", "sessions": 3, "conversion": 0.75},
        {"name": "c", "sessions": 1, "conversion": 0.25},
    ]
    assert [s["conversion"] for s in st.funnel_steps([0, 0], ["a", "b"])] == [None, None]


@given(ms=TIMES)
def test_rfc3339_round_trips_through_datetime(ms: int) -> None:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert st.parse_time(text.rjust(24, "0")) == ms
    assert st.parse_time(str(ms)) == ms
    if ms < st.MAX_TIMESTAMP_MS - 6 * 3_600_000:  # the local time still has a four-digit year
        shifted = (moment + dt.timedelta(hours=5, minutes=30)).replace(tzinfo=None)
        assert st.parse_time(shifted.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+05:30") == ms


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "-1",
        "1.5",
        "253402300800000",
        "2026-02-29T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00+0200",
        "20260101T000000Z",
        "2026-01-01T00:00:60Z",
        "1969-12-31T23:59:59Z",
        "١٢٣",
    ],
)
def test_bad_times(raw: str) -> None:
    assert st.parse_time(raw) is None


def test_times_truncate_past_milliseconds_and_accept_a_decoded_plus() -> None:
    assert st.parse_time("1970-01-01T00:00:01.123999Z") == 1_123
    assert st.parse_time("1970-01-01T02:00:00 02:00") == 0  # "+" decoded as a space in a query string
    assert st.parse_time("1970-01-01t00:00:00z") == 0


def test_range_defaults() -> None:
    now = 10 * st.DAY_MS
    assert st.parse_range({}, now) == st.Range(now - st.DAY_MS, now)
    assert st.parse_range({"to": ["1000"]}, now) == st.Range(0, 1000)
    assert st.parse_range({"from": ["5"]}, now) == st.Range(5, now)
    assert st.parse_range({"from": [str(now + 1)]}, now) == st.Range(now + 1, now + 1 + st.DAY_MS)
    with pytest.raises(st.BadParameter):
        st.parse_range({"from": ["5"], "to": ["5"]}, now)
