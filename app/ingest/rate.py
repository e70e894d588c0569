"""Ingest rate limits: token buckets on batches, checked per /ws frame and per POST /batch.

Two buckets per connection, both optional (0 turns one off, the default):

- one of its own (rate_per_connection batches/s, burst_per_connection at once;
  a WebSocket only: a POST /batch is one batch and has none);
- one per ingest token, shared by all the connections that authenticated with it
  in this process (rate_per_token / burst_per_token; only when tokens are
  configured, since the principal names the token).

A frame over either limit is not parsed or stored: it gets an ERROR
`rate_limited` with `retry_after_ms`, in order like every other answer, and the
connection stays open. All of it is per process: N workers or hosts allow N
times the rates.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from app.ingest.validation import Rejection


class TokenBucket:
    """`burst` batches at once, refilled at `rate` per second."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()

    def wait_ms(self, now: float) -> int:
        """0 when a batch may go now, else milliseconds until it may."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            return 0
        return max(1, math.ceil((1 - self.tokens) / self.rate * 1000))

    def take(self) -> None:
        self.tokens -= 1


@dataclass(slots=True)
class RateLimited(Rejection):
    """A frame refused by a rate limit; its ERROR carries retry_after_ms."""

    retry_after_ms: int = 0


class ConnectionRate:
    """The buckets one WebSocket draws from: its own and its token's."""

    __slots__ = ("buckets",)

    def __init__(self, buckets: list[TokenBucket]) -> None:
        self.buckets = buckets

    def admit(self) -> int:
        """0: go (one batch taken from every bucket); else the retry hint in ms."""
        now = time.monotonic()
        wait = max(bucket.wait_ms(now) for bucket in self.buckets)
        if wait == 0:
            for bucket in self.buckets:
                bucket.take()
        return wait

    def admit_batch(self, number: int) -> RateLimited | None:
        """Before parsing frame `number`: None to go on, or the rejection to answer."""
        wait = self.admit()
        if wait == 0:
            return None
        message = f"Too many batches: this connection or its token is over its rate limit; send again in {wait} ms."
        return RateLimited(number, None, "rate_limited", message, retry_after_ms=wait)


class IngestRateLimiter:
    """Creates each connection's buckets; holds the per-token ones (one per configured token)."""

    def __init__(
        self,
        *,
        rate_per_connection: float = 0.0,
        burst_per_connection: int = 1,
        rate_per_token: float = 0.0,
        burst_per_token: int = 1,
    ) -> None:
        self._per_connection = (rate_per_connection, burst_per_connection)
        self._per_token_limit = (rate_per_token, burst_per_token)
        self._per_token: dict[str, TokenBucket] = {}

    def for_connection(self, principal: str | None) -> ConnectionRate | None:
        """The buckets of a new connection, or None when no limit applies to it."""
        buckets: list[TokenBucket] = []
        rate, burst = self._per_connection
        if rate > 0:
            buckets.append(TokenBucket(rate, burst))
        buckets += self._token_bucket(principal)
        return ConnectionRate(buckets) if buckets else None

    def for_request(self, principal: str | None) -> ConnectionRate | None:
        """The buckets of one POST /batch: its token's only (a request is one batch, it has no bucket of its own)."""
        buckets = self._token_bucket(principal)
        return ConnectionRate(buckets) if buckets else None

    def _token_bucket(self, principal: str | None) -> list[TokenBucket]:
        rate, burst = self._per_token_limit
        if rate <= 0 or principal is None:
            return []
        bucket = self._per_token.get(principal)
        if bucket is None:
            # Keys are "ingest#<index>": bounded by the number of configured tokens.
            bucket = self._per_token[principal] = TokenBucket(rate, burst)
        return [bucket]


__all__ = ["ConnectionRate", "IngestRateLimiter", "RateLimited", "TokenBucket"]
