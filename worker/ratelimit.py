"""The shared, adaptive rate limiter: GCRA computed atomically in Redis.

Every worker process on every host that calls the same CCE endpoint for the same project shares
one bucket, stored in the Redis hash ``cce-sync:ratelimit:{bucket}``. Each operation that reads
and changes a bucket is one call of the Lua script ``ratelimit.lua``, so concurrent callers never
race. The clock is the Redis server's ``TIME``, so clock skew between worker hosts cannot let two
of them use the same slot.

The algorithm is GCRA (the Generic Cell Rate Algorithm, a token bucket kept as one timestamp)
with reservations: `RateLimiter.acquire` does not raise and retry, it returns how long to wait.
With the default burst of 1, grants are spaced exactly ``1 / rate`` apart, so no window of
``w`` seconds contains more than ``w * rate + 1`` grants.

The rate adapts to the API's responses, like TCP congestion control (AIMD):

* ``on_throttled`` (a 429) multiplies the rate by `AdaptivePolicy.decrease_factor`, never below
  `AdaptivePolicy.min_rate_per_second`, and holds it there for the ``Retry-After`` time or, when
  the response has none, for a backoff that doubles with each further 429. With a
  ``Retry-After``, no slot is granted before it has passed.
* ``on_success`` after the hold raises the rate additively, by
  `AdaptivePolicy.recovery_per_second` of the ceiling per second of success, up to the ceiling.

The state stores the rate as a fraction of the ceiling, so a changed ceiling setting takes
effect at once, with any reduction still applied.

Bucket names: `write_bucket` and `read_bucket` build them from the endpoint host and project ID.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Final

import redis

#: Prefix of the limiter's Redis keys; the bucket name follows it.
KEY_PREFIX: Final = "cce-sync:ratelimit:"

#: Maximum wait for a grant, in seconds, when the caller passes no other value.
DEFAULT_MAX_WAIT_SECONDS: Final = 0.5

#: Share of a limit stated by the gateway that the bucket aims at after a 429. Slot timing
#: jitters by a few milliseconds, so aiming exactly at the limit trips it now and then.
STATED_LIMIT_MARGIN: Final = 0.97

#: How long a stated limit caps the rate before recovery may probe above it again, in seconds.
STATED_LIMIT_CAP_SECONDS: Final = 600.0

#: Minimum pause of `RateLimiter.wait` between two rejected attempts, in seconds, so that callers
#: competing for the same slot do not spin on Redis.
MIN_RETRY_SECONDS: Final = 0.001


def _require_positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"invalid {name} {value!r}: must be a finite number > 0")


def _require_name(name: str, value: str) -> str:
    if not value:
        raise ValueError(f"invalid {name}: must not be empty")
    return value


@dataclass(frozen=True)
class Permit:
    """Outcome of `RateLimiter.acquire`.

    Attributes:
        granted: True when a slot is reserved for this caller ``wait_seconds`` from now: the
            caller sleeps that long, then sends. False when nothing is reserved: the caller
            should try again (for a dramatiq actor, re-enqueue itself) after ``wait_seconds``.
        wait_seconds: Seconds to sleep before sending (granted), or until the bucket's next
            free slot (not granted). Asking again after that delay is granted unless other
            callers reserve the slot first. Waiting the full delay, rather than the delay minus
            the maximum wait, keeps many rejected callers from polling Redis in a tight loop.
    """

    granted: bool
    wait_seconds: float


@dataclass(frozen=True)
class AdaptivePolicy:
    """Parameters of a bucket's reaction to throttling and success.

    Attributes:
        burst: Requests that may be granted at once after an idle period; 1 spaces every grant
            by one interval.
        decrease_factor: Multiplier applied to the rate on a 429, between 0 and 1.
        min_rate_per_second: Lowest rate a decrease can reach (or the ceiling, when that is
            lower).
        recovery_per_second: Fraction of the ceiling regained per second of success after the
            hold; 0.05 brings a halved rate back to the ceiling in 10 seconds.
        base_hold_seconds: Hold after a 429 that has no ``Retry-After``; it doubles with each
            further decrease until the rate is back at the ceiling.
        max_hold_seconds: Upper bound of that backoff.
        decrease_interval_seconds: After a decrease, further 429s within this time extend the
            hold but do not cut the rate again, because they come from requests that were sent
            before the cut.
        idle_expiry_seconds: Time after its last change that an unused bucket is deleted,
            which resets it to the ceiling.
    """

    burst: int = 1
    decrease_factor: float = 0.5
    min_rate_per_second: float = 0.05
    recovery_per_second: float = 0.05
    base_hold_seconds: float = 1.0
    max_hold_seconds: float = 60.0
    decrease_interval_seconds: float = 1.0
    idle_expiry_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.burst < 1:
            raise ValueError(f"invalid burst {self.burst}: must be at least 1")
        if not 0 < self.decrease_factor < 1:
            raise ValueError(
                f"invalid decrease_factor {self.decrease_factor}: must be between 0 and 1"
            )
        positive = {
            "min_rate_per_second": self.min_rate_per_second,
            "recovery_per_second": self.recovery_per_second,
            "base_hold_seconds": self.base_hold_seconds,
            "max_hold_seconds": self.max_hold_seconds,
            "idle_expiry_seconds": self.idle_expiry_seconds,
        }
        for name, value in positive.items():
            _require_positive(name, value)
        if self.decrease_interval_seconds < 0 or not math.isfinite(self.decrease_interval_seconds):
            raise ValueError(
                f"invalid decrease_interval_seconds {self.decrease_interval_seconds}: "
                "must be a finite number >= 0"
            )
        if self.max_hold_seconds < self.base_hold_seconds:
            raise ValueError(
                f"invalid max_hold_seconds {self.max_hold_seconds}: must be at least "
                f"base_hold_seconds ({self.base_hold_seconds})"
            )

    def script_arguments(self) -> list[str]:
        """Return the policy as the script's ARGV[5:] values, in the script's order."""
        values = (
            self.burst,
            self.decrease_factor,
            self.min_rate_per_second,
            self.recovery_per_second,
            self.base_hold_seconds,
            self.max_hold_seconds,
            self.decrease_interval_seconds,
            self.idle_expiry_seconds,
        )
        return [repr(value) for value in values]


DEFAULT_POLICY: Final = AdaptivePolicy()


def write_bucket(endpoint_host: str, project_id: str) -> str:
    """Return the bucket name for write calls (sync POSTs) to one endpoint and project."""
    return (
        f"{_require_name('endpoint_host', endpoint_host)}|{_require_name('project_id', project_id)}"
    )


def read_bucket(endpoint_host: str, project_id: str) -> str:
    """Return the bucket name for read calls (show pool, show job) to one endpoint and project."""
    return f"{write_bucket(endpoint_host, project_id)}|read"


class RateLimiter:
    """Adaptive GCRA buckets shared through Redis.

    Args:
        client: Redis client; with ``decode_responses`` on or off.
        clock: Source of the current time in seconds. None (the default) uses the Redis
            server's clock, which every host shares; pass a function only in tests.
        policy: Adaptive behaviour shared by every bucket of this limiter.

    Every method is one atomic script call, safe from any number of threads and processes.
    Methods raise `ValueError` for invalid arguments and let `redis.RedisError` propagate.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        clock: Callable[[], float] | None = None,
        policy: AdaptivePolicy = DEFAULT_POLICY,
    ) -> None:
        self._client = client
        self._clock = clock
        self._policy = policy
        source = resources.files("worker").joinpath("ratelimit.lua").read_text(encoding="utf-8")
        self._script = client.register_script(source)

    @property
    def policy(self) -> AdaptivePolicy:
        """The adaptive behaviour of this limiter's buckets."""
        return self._policy

    def acquire(
        self,
        bucket: str,
        *,
        ceiling_per_second: float,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    ) -> Permit:
        """Reserve the bucket's next free slot if it is at most ``max_wait_seconds`` away.

        Args:
            bucket: Bucket name, from `write_bucket` or `read_bucket`.
            ceiling_per_second: Configured rate; the bucket runs at this rate times its
                adaptive factor.
            max_wait_seconds: Maximum wait the caller accepts for a grant; 0 grants only a
                slot that is free now.

        Returns:
            A granted `Permit` with the wait until the reserved slot, or a rejected one with the
            wait until the next free slot.
        """
        _require_positive("ceiling_per_second", ceiling_per_second)
        if max_wait_seconds < 0 or not math.isfinite(max_wait_seconds):
            raise ValueError(
                f"invalid max_wait_seconds {max_wait_seconds}: must be a finite number >= 0"
            )

        reply = self._run("acquire", bucket, ceiling_per_second, repr(float(max_wait_seconds)))
        return Permit(granted=int(reply[0]) == 1, wait_seconds=float(reply[1]))

    def on_throttled(
        self,
        bucket: str,
        *,
        retry_after_seconds: float | None,
        ceiling_per_second: float,
        stated_limit_per_second: float | None = None,
    ) -> float:
        """Cut the bucket's rate after a 429 and hold it down.

        Args:
            bucket: Bucket name of the throttled call.
            retry_after_seconds: The response's ``Retry-After``, or None when absent. When
                given, no slot is granted and the rate does not recover until it has passed.
            ceiling_per_second: Configured rate of the bucket.
            stated_limit_per_second: The limit the gateway named in its error message, if any.
                The rate then drops to `STATED_LIMIT_MARGIN` of it at once and recovers no
                higher for `STATED_LIMIT_CAP_SECONDS`.

        Returns:
            The bucket's new rate, in requests per second.

        NOTE: slots already granted (at most ``max_wait_seconds`` ahead) are not withdrawn, so
        their requests are still sent during a ``Retry-After``.
        """
        _require_positive("ceiling_per_second", ceiling_per_second)
        retry_after = ""
        if retry_after_seconds is not None:
            if retry_after_seconds < 0 or not math.isfinite(retry_after_seconds):
                raise ValueError(
                    f"invalid retry_after_seconds {retry_after_seconds}: "
                    "must be a finite number >= 0 or None"
                )
            retry_after = repr(float(retry_after_seconds))

        stated = ""
        if stated_limit_per_second is not None and stated_limit_per_second > 0:
            stated = repr(float(stated_limit_per_second) * STATED_LIMIT_MARGIN)
        reply = self._run(
            "throttled",
            bucket,
            ceiling_per_second,
            retry_after,
            extra=(stated, repr(STATED_LIMIT_CAP_SECONDS)),
        )
        return float(reply[0])

    def on_success(self, bucket: str, *, ceiling_per_second: float) -> float:
        """Credit a successful call, raising a reduced rate towards the ceiling after its hold.

        Returns:
            The bucket's rate after the credit, in requests per second.
        """
        _require_positive("ceiling_per_second", ceiling_per_second)
        reply = self._run("success", bucket, ceiling_per_second, "")
        return float(reply[0])

    def current_rate(self, bucket: str, *, ceiling_per_second: float) -> float:
        """Return the bucket's rate in requests per second, without changing it."""
        _require_positive("ceiling_per_second", ceiling_per_second)
        factor = self._client.hget(KEY_PREFIX + _require_name("bucket", bucket), "factor")
        if factor is None:
            return float(ceiling_per_second)
        return float(ceiling_per_second) * float(factor)

    def wait(
        self,
        bucket: str,
        *,
        ceiling_per_second: float,
        timeout_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> float | None:
        """Block until a slot is reserved and reached, for callers that may hold a thread.

        Actors should use `acquire` and re-enqueue instead; this suits scripts and tests.

        Returns:
            Seconds spent waiting, or None when no slot could be reserved within
            ``timeout_seconds`` (nothing is reserved then).
        """
        _require_positive("timeout_seconds", timeout_seconds)
        started = time.monotonic()
        while True:
            remaining = timeout_seconds - (time.monotonic() - started)
            if remaining < 0:
                return None
            permit = self.acquire(
                bucket,
                ceiling_per_second=ceiling_per_second,
                max_wait_seconds=min(remaining, DEFAULT_MAX_WAIT_SECONDS),
            )
            if permit.granted:
                sleep(permit.wait_seconds)
                return time.monotonic() - started
            if permit.wait_seconds > remaining:
                return None
            sleep(max(permit.wait_seconds, MIN_RETRY_SECONDS))

    def _run(
        self,
        operation: str,
        bucket: str,
        ceiling_per_second: float,
        argument: str,
        *,
        extra: tuple[str, ...] = (),
    ) -> Sequence[str | bytes | int]:
        key = KEY_PREFIX + _require_name("bucket", bucket)
        now = "" if self._clock is None else repr(float(self._clock()))
        arguments = [
            operation,
            now,
            repr(float(ceiling_per_second)),
            argument,
            *self._policy.script_arguments(),
            *extra,
        ]
        reply = self._script(keys=[key], args=arguments)
        if not isinstance(reply, list):
            raise TypeError(f"unexpected reply from the rate limiter script: {reply!r}")
        return reply
