"""app.ingest.rate on its own: the token buckets /ws checks before parsing a frame. Pure."""

from __future__ import annotations

from app.ingest.rate import IngestRateLimiter, RateLimited, TokenBucket

SLOW = 0.001  # batches per second: nothing refills during a test


def test_a_bucket_gives_its_burst_then_says_when_the_next_batch_may_go() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    now = bucket.stamp
    for _ in range(3):
        assert bucket.wait_ms(now) == 0
        bucket.take()
    assert bucket.wait_ms(now) == 500  # one batch at 2/s
    assert bucket.wait_ms(now + 0.5) == 0


def test_no_limit_configured_means_no_buckets() -> None:
    assert IngestRateLimiter().for_connection("ingest#1") is None
    # A per-token rate needs a principal: unauthenticated connections draw from none.
    assert IngestRateLimiter(rate_per_token=1.0, burst_per_token=1).for_connection(None) is None


def test_connections_of_one_token_share_its_bucket_and_not_another_tokens() -> None:
    rates = IngestRateLimiter(rate_per_token=SLOW, burst_per_token=2)
    first, second, other = (rates.for_connection(p) for p in ("ingest#1", "ingest#1", "ingest#2"))
    assert first is not None and second is not None and other is not None
    assert first.admit_batch(1) is None
    assert second.admit_batch(1) is None
    refused = first.admit_batch(2)
    assert isinstance(refused, RateLimited)
    assert (refused.number, refused.error) == (2, "rate_limited") and refused.retry_after_ms > 0
    assert other.admit_batch(1) is None


def test_each_connection_has_its_own_bucket_and_a_refusal_takes_nothing() -> None:
    rates = IngestRateLimiter(rate_per_connection=SLOW, burst_per_connection=1, rate_per_token=SLOW, burst_per_token=2)
    first, second = rates.for_connection("ingest#1"), rates.for_connection("ingest#1")
    assert first is not None and second is not None
    assert first.admit_batch(1) is None
    assert isinstance(first.admit_batch(2), RateLimited)  # its own bucket is empty
    # The refused frame took nothing from the shared bucket: the other connection still gets one.
    assert second.admit_batch(1) is None
    assert isinstance(second.admit_batch(2), RateLimited)
