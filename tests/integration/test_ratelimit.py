"""The shared rate limiter against a real, private redis-server.

Deterministic tests pass an explicit clock to the Lua script. The load tests use the Redis
server's clock as in production: many threads, and two separate processes started from this
file (run as a script), compete for one bucket, and every grant's wake-up time is checked.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from worker.ratelimit import (
    KEY_PREFIX,
    STATED_LIMIT_CAP_SECONDS,
    STATED_LIMIT_MARGIN,
    AdaptivePolicy,
    Permit,
    RateLimiter,
)

BUCKET = "cce.test.local|project-a"
KEY = KEY_PREFIX + BUCKET


class FakeClock:
    """A settable clock for the deterministic tests, in seconds."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def limiter_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a private redis-server on a free loopback port for this module."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH")
    directory = tmp_path_factory.mktemp("ratelimit-redis")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.05)
    client.close()
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def client(limiter_redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(limiter_redis_url, socket_timeout=5, decode_responses=True)
    connection.flushdb()
    yield connection
    connection.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(client: redis.Redis, clock: FakeClock) -> RateLimiter:
    return RateLimiter(client, clock=clock)


def _field(client: redis.Redis, name: str) -> float:
    """Return one numeric field of the test bucket's hash."""
    value = cast("str | None", client.hget(KEY, name))
    assert value is not None, f"field {name!r} missing from {KEY}"
    return float(value)


def _max_in_window(times: list[float], window_seconds: float = 1.0) -> int:
    """Return the largest number of times within any half-open window of the given length."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window_seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


# Deterministic behaviour (explicit clock).


def test_acquire_spaces_grants_by_interval(limiter: RateLimiter) -> None:
    waits = [limiter.acquire(BUCKET, ceiling_per_second=4, max_wait_seconds=1.0) for _ in range(5)]

    assert [permit.granted for permit in waits] == [True, True, True, True, True]
    assert [permit.wait_seconds for permit in waits] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_acquire_rejection_reserves_nothing(limiter: RateLimiter) -> None:
    for _ in range(3):
        limiter.acquire(BUCKET, ceiling_per_second=4, max_wait_seconds=0.5)

    first = limiter.acquire(BUCKET, ceiling_per_second=4, max_wait_seconds=0.5)
    second = limiter.acquire(BUCKET, ceiling_per_second=4, max_wait_seconds=0.5)

    assert first == second
    assert first.granted is False
    # Three slots at 0, 0.25 and 0.5 s are taken, so the next free one is 0.75 s away.
    assert first.wait_seconds == pytest.approx(0.75)


def test_acquire_after_rejection_delay_granted(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(3):
        limiter.acquire(BUCKET, ceiling_per_second=4, max_wait_seconds=0.5)
    rejected = limiter.acquire(BUCKET, ceiling_per_second=4, max_wait_seconds=0.5)

    clock.advance(rejected.wait_seconds)
    retried = limiter.acquire(BUCKET, ceiling_per_second=4, max_wait_seconds=0.5)

    assert retried == Permit(True, 0.0)


def test_acquire_zero_max_wait_grants_free_slot_only(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    assert limiter.acquire(BUCKET, ceiling_per_second=2, max_wait_seconds=0) == Permit(True, 0.0)
    assert limiter.acquire(BUCKET, ceiling_per_second=2, max_wait_seconds=0).granted is False

    clock.advance(0.5)

    assert limiter.acquire(BUCKET, ceiling_per_second=2, max_wait_seconds=0).granted is True


def test_idle_bucket_does_not_bank_slots(limiter: RateLimiter, clock: FakeClock) -> None:
    limiter.acquire(BUCKET, ceiling_per_second=4)
    clock.advance(60)

    waits = [limiter.acquire(BUCKET, ceiling_per_second=4).wait_seconds for _ in range(3)]

    assert waits == pytest.approx([0, 0.25, 0.5])


def test_burst_grants_at_once_after_idle(client: redis.Redis, clock: FakeClock) -> None:
    limiter = RateLimiter(client, clock=clock, policy=AdaptivePolicy(burst=3))

    waits = [limiter.acquire(BUCKET, ceiling_per_second=4).wait_seconds for _ in range(5)]

    assert waits == pytest.approx([0, 0, 0, 0.25, 0.5])


def test_buckets_are_independent(limiter: RateLimiter) -> None:
    limiter.acquire(BUCKET, ceiling_per_second=1)

    other = limiter.acquire(BUCKET + "|read", ceiling_per_second=1)

    assert other == Permit(True, 0.0)


def test_throttled_halves_rate(limiter: RateLimiter) -> None:
    new_rate = limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=8)

    assert new_rate == pytest.approx(4)
    assert limiter.current_rate(BUCKET, ceiling_per_second=8) == pytest.approx(4)


def test_throttled_burst_of_429s_cuts_once(limiter: RateLimiter, clock: FakeClock) -> None:
    rates = []
    for _ in range(5):
        rates.append(limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=8))
        clock.advance(0.1)

    assert rates == pytest.approx([4, 4, 4, 4, 4])


def test_throttled_again_after_interval_cuts_again(limiter: RateLimiter, clock: FakeClock) -> None:
    limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=8)
    clock.advance(limiter.policy.decrease_interval_seconds)

    rate = limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=8)

    assert rate == pytest.approx(2)


def test_throttled_rate_has_floor(limiter: RateLimiter, clock: FakeClock) -> None:
    rate = 0.0
    for _ in range(20):
        rate = limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=8)
        clock.advance(2)

    assert rate == pytest.approx(limiter.policy.min_rate_per_second)


def test_throttled_stated_limit_sets_rate(limiter: RateLimiter) -> None:
    rate = limiter.on_throttled(
        BUCKET, retry_after_seconds=None, ceiling_per_second=32, stated_limit_per_second=8
    )

    assert rate == pytest.approx(8 * STATED_LIMIT_MARGIN)


def test_stated_limit_caps_recovery(limiter: RateLimiter, clock: FakeClock) -> None:
    limiter.on_throttled(
        BUCKET, retry_after_seconds=None, ceiling_per_second=32, stated_limit_per_second=8
    )
    rate = 0.0
    for _ in range(120):
        clock.advance(1)
        rate = limiter.on_success(BUCKET, ceiling_per_second=32)

    assert rate == pytest.approx(8 * STATED_LIMIT_MARGIN)


def test_stated_limit_cap_expires(limiter: RateLimiter, clock: FakeClock) -> None:
    limiter.on_throttled(
        BUCKET, retry_after_seconds=None, ceiling_per_second=32, stated_limit_per_second=8
    )
    clock.advance(STATED_LIMIT_CAP_SECONDS + 1)
    rate = 0.0
    for _ in range(40):
        clock.advance(1)
        rate = limiter.on_success(BUCKET, ceiling_per_second=32)

    assert rate == pytest.approx(32)


def test_throttled_floor_below_minimum_ceiling(limiter: RateLimiter) -> None:
    rate = limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=0.01)

    assert rate == pytest.approx(0.01)


def test_throttled_retry_after_blocks_grants(limiter: RateLimiter, clock: FakeClock) -> None:
    limiter.on_throttled(BUCKET, retry_after_seconds=2.5, ceiling_per_second=8)

    rejected = limiter.acquire(BUCKET, ceiling_per_second=8, max_wait_seconds=0.5)
    clock.advance(2.0)
    granted = limiter.acquire(BUCKET, ceiling_per_second=8, max_wait_seconds=0.5)

    assert rejected.granted is False
    assert rejected.wait_seconds == pytest.approx(2.5)
    assert granted.granted is True
    assert granted.wait_seconds == pytest.approx(0.5)


def test_throttled_without_retry_after_spaces_next_grant(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=8)

    permit = limiter.acquire(BUCKET, ceiling_per_second=8, max_wait_seconds=1)

    # One interval at the halved rate (4/s).
    assert permit.wait_seconds == pytest.approx(0.25)


def test_throttled_rejects_negative_retry_after(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="retry_after_seconds"):
        limiter.on_throttled(BUCKET, retry_after_seconds=-1, ceiling_per_second=8)


def test_success_during_hold_keeps_rate(limiter: RateLimiter, clock: FakeClock) -> None:
    limiter.on_throttled(BUCKET, retry_after_seconds=3, ceiling_per_second=8)
    clock.advance(2.9)

    assert limiter.on_success(BUCKET, ceiling_per_second=8) == pytest.approx(4)


def test_success_after_hold_recovers_additively(limiter: RateLimiter, clock: FakeClock) -> None:
    limiter.on_throttled(BUCKET, retry_after_seconds=3, ceiling_per_second=8)
    clock.advance(3)
    rates = []
    for _ in range(4):
        clock.advance(0.25)
        rates.append(limiter.on_success(BUCKET, ceiling_per_second=8))

    # 5% of the 8/s ceiling per second of success: +0.1/s per quarter second.
    assert rates == pytest.approx([4.1, 4.2, 4.3, 4.4])


def test_success_after_idle_credits_one_second(limiter: RateLimiter, clock: FakeClock) -> None:
    limiter.on_throttled(BUCKET, retry_after_seconds=1, ceiling_per_second=8)
    clock.advance(1000)

    rate = limiter.on_success(BUCKET, ceiling_per_second=8)

    # At most one second of credit per success: 5% of the 8/s ceiling.
    assert rate == pytest.approx(4.4)


def test_success_recovery_stops_at_ceiling(
    limiter: RateLimiter, clock: FakeClock, client: redis.Redis
) -> None:
    limiter.on_throttled(BUCKET, retry_after_seconds=0, ceiling_per_second=8)
    rate = 0.0
    for _ in range(200):
        clock.advance(0.25)
        rate = limiter.on_success(BUCKET, ceiling_per_second=8)

    assert rate == pytest.approx(8)
    assert _field(client, "factor") == 1.0


def test_backoff_hold_doubles_per_strike(limiter: RateLimiter, clock: FakeClock) -> None:
    limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=8)
    clock.advance(1.0)
    limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=8)

    # Second strike: a hold of twice base_hold_seconds (1 s), from the second 429.
    clock.advance(1.9)
    during_hold = limiter.on_success(BUCKET, ceiling_per_second=8)
    clock.advance(0.2)
    after_hold = limiter.on_success(BUCKET, ceiling_per_second=8)

    assert during_hold == pytest.approx(2)
    assert after_hold == pytest.approx(2 + 8 * 0.05 * 0.1)


def test_strikes_reset_after_full_recovery(
    limiter: RateLimiter, clock: FakeClock, client: redis.Redis
) -> None:
    limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=8)
    for _ in range(100):
        clock.advance(0.25)
        limiter.on_success(BUCKET, ceiling_per_second=8)
    clock.advance(5)

    limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=8)

    assert _field(client, "strikes") == 1
    hold_until = _field(client, "hold_until")
    assert hold_until == pytest.approx(clock.now + limiter.policy.base_hold_seconds)


def test_changed_ceiling_keeps_reduction(limiter: RateLimiter) -> None:
    limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=8)

    assert limiter.current_rate(BUCKET, ceiling_per_second=2) == pytest.approx(1)


def test_current_rate_of_unknown_bucket_is_ceiling(limiter: RateLimiter) -> None:
    assert limiter.current_rate("never-used", ceiling_per_second=3) == 3


def test_bucket_key_expires_when_idle(limiter: RateLimiter, client: redis.Redis) -> None:
    limiter.acquire(BUCKET, ceiling_per_second=1)

    ttl_ms = client.pttl(KEY)

    assert isinstance(ttl_ms, int)
    assert 0 < ttl_ms <= (limiter.policy.idle_expiry_seconds + 2) * 1000


def test_works_with_bytes_client(limiter_redis_url: str, clock: FakeClock) -> None:
    raw = redis.Redis.from_url(limiter_redis_url, socket_timeout=5)
    raw.flushdb()
    limiter = RateLimiter(raw, clock=clock)

    limiter.acquire(BUCKET, ceiling_per_second=2)
    limiter.on_throttled(BUCKET, retry_after_seconds=None, ceiling_per_second=2)

    assert limiter.acquire(BUCKET, ceiling_per_second=2, max_wait_seconds=1).granted is True
    assert limiter.current_rate(BUCKET, ceiling_per_second=2) == pytest.approx(1)
    raw.close()


# Redis server clock.


def test_uses_redis_clock_not_local_clock(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = RateLimiter(client)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)

    limiter.acquire(BUCKET, ceiling_per_second=1)
    seconds, microseconds = client.time()
    server_now = seconds + microseconds / 1_000_000

    # The stored arrival time is one interval after the server's clock, not the shifted one.
    assert _field(client, "tat") == pytest.approx(server_now + 1, abs=0.5)


def test_redis_clock_spacing(client: redis.Redis) -> None:
    limiter = RateLimiter(client)

    waits = [limiter.acquire(BUCKET, ceiling_per_second=10).wait_seconds for _ in range(4)]

    # Calls take well under a millisecond each on loopback, so the waits are close to 0.1 s steps.
    assert waits == pytest.approx([0, 0.1, 0.2, 0.3], abs=0.02)


# Load: threads and processes on one bucket (Redis clock).


def _hammer(
    url: str,
    bucket: str,
    rate: float,
    threads: int,
    seconds: float,
    throttle_at: float | None = None,
    retry_after: float | None = None,
) -> list[float]:
    """Run threads that take every slot they can for `seconds`; return grant wake-up times.

    When `throttle_at` is set, the first grant past that many seconds reports a 429 with the
    given Retry-After, and every other grant reports success.
    """
    client = redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)
    limiter = RateLimiter(client)
    granted: list[float] = []
    lock = threading.Lock()
    started = time.monotonic()
    throttled = threading.Event()

    def run() -> None:
        while time.monotonic() - started < seconds:
            permit = limiter.acquire(bucket, ceiling_per_second=rate, max_wait_seconds=0.5)
            if not permit.granted:
                time.sleep(permit.wait_seconds)
                continue
            time.sleep(permit.wait_seconds)
            with lock:
                granted.append(time.time())
            if throttle_at is None:
                continue
            if time.monotonic() - started >= throttle_at and not throttled.is_set():
                throttled.set()
                limiter.on_throttled(
                    bucket, retry_after_seconds=retry_after, ceiling_per_second=rate
                )
            else:
                limiter.on_success(bucket, ceiling_per_second=rate)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=seconds + 10)
    client.close()
    return granted


def _steady_span(times: list[float], seconds: float) -> list[float]:
    """Drop the first and last half second, where demand ramps up and down."""
    ordered = sorted(times)
    return [moment for moment in ordered if ordered[0] + 0.5 <= moment <= ordered[0] + seconds - 1]


def test_threads_never_exceed_rate(limiter_redis_url: str, client: redis.Redis) -> None:
    rate = 20.0
    times = _hammer(limiter_redis_url, BUCKET, rate, threads=16, seconds=4)

    assert _max_in_window(times) <= rate + 1
    steady = _steady_span(times, 4)
    measured = (len(steady) - 1) / (steady[-1] - steady[0])
    assert measured == pytest.approx(rate, rel=0.02)


def test_two_processes_share_bucket(limiter_redis_url: str, client: redis.Redis) -> None:
    rate = 10.0
    seconds = 6.0
    command = [sys.executable, str(Path(__file__).resolve()), limiter_redis_url, BUCKET]
    command += [str(rate), "8", str(seconds)]
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=seconds + 30)[0] for child in children]

    assert [child.returncode for child in children] == [0, 0]
    per_process = [json.loads(output) for output in outputs]
    # Both processes were granted slots from the one bucket. The share is not checked tightly:
    # on a loaded machine one interpreter can start a second or two after the other.
    assert all(len(times) > rate * seconds / 10 for times in per_process)
    times = per_process[0] + per_process[1]
    assert _max_in_window(times) <= rate + 1
    steady = _steady_span(times, seconds)
    measured = (len(steady) - 1) / (steady[-1] - steady[0])
    assert measured == pytest.approx(rate, rel=0.02)


def test_throttle_pauses_then_halves_rate(limiter_redis_url: str, client: redis.Redis) -> None:
    rate = 20.0
    times = sorted(
        _hammer(
            limiter_redis_url, BUCKET, rate, threads=8, seconds=5, throttle_at=1.5, retry_after=1.5
        )
    )
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    pause_index = max(range(len(gaps)), key=gaps.__getitem__)
    after_pause = times[pause_index + 1 :]
    next_second = [moment for moment in after_pause if moment < after_pause[0] + 1.0]

    # Slots reserved before the 429 (at most max_wait_seconds = 0.5 s ahead) are still used, so
    # the visible pause is between Retry-After minus that horizon and Retry-After.
    assert 0.95 <= gaps[pause_index] <= 1.6
    # Then the rate is about half the ceiling and recovers by 5% of the ceiling per second.
    assert 9 <= len(next_second) <= 12
    assert 10 < _field(client, "factor") * rate < rate


if __name__ == "__main__":
    # Child process of test_two_processes_share_bucket: URL, bucket, rate, threads, seconds.
    url_argument, bucket_argument, rate_argument, threads_argument, seconds_argument = sys.argv[1:6]
    print(
        json.dumps(
            _hammer(
                url_argument,
                bucket_argument,
                float(rate_argument),
                int(threads_argument),
                float(seconds_argument),
            )
        )
    )
