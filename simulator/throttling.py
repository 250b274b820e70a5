"""Per-project token buckets that make the simulator respond 429 `APIGW.0308` like the gateway."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from simulator.fleet import Clock


@dataclass(frozen=True, slots=True)
class ThrottleDecision:
    allowed: bool
    retry_after_seconds: float
    """Seconds until the next token; 0 when allowed."""


class TokenBucket:
    """A token bucket holding at most `rate_per_second` tokens, refilled at that rate.

    The capacity equals one second of the rate (at least one token), so a client that starts
    with a full bucket may send one second's worth of requests at once.
    """

    def __init__(self, rate_per_second: float, *, clock: Clock) -> None:
        if rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be > 0, got {rate_per_second}")
        self.rate_per_second = rate_per_second
        self.capacity = max(rate_per_second, 1.0)
        self._clock = clock
        self._tokens = self.capacity
        self._updated_at = clock()

    def take(self) -> ThrottleDecision:
        """Take one token if available. Not thread-safe: `ProjectThrottle` holds the lock."""
        now = self._clock()
        elapsed = max(now - self._updated_at, 0.0)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate_per_second)
        self._updated_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return ThrottleDecision(allowed=True, retry_after_seconds=0.0)
        return ThrottleDecision(
            allowed=False, retry_after_seconds=(1.0 - self._tokens) / self.rate_per_second
        )


class ProjectThrottle:
    """One token bucket per project ID; `rate_per_second=None` disables throttling."""

    def __init__(self, rate_per_second: float | None, *, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._rate_per_second: float | None = None
        self.set_rate(rate_per_second)

    @property
    def rate_per_second(self) -> float | None:
        return self._rate_per_second

    def set_rate(self, rate_per_second: float | None) -> None:
        """Change the rate for every project. Buckets restart full."""
        if rate_per_second is not None and rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be > 0 or None, got {rate_per_second}")
        with self._lock:
            self._rate_per_second = rate_per_second
            self._buckets.clear()

    def take(self, project_id: str) -> ThrottleDecision:
        with self._lock:
            if self._rate_per_second is None:
                return ThrottleDecision(allowed=True, retry_after_seconds=0.0)
            bucket = self._buckets.get(project_id)
            if bucket is None:
                bucket = TokenBucket(self._rate_per_second, clock=self._clock)
                self._buckets[project_id] = bucket
            return bucket.take()
