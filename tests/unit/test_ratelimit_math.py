"""Rate limiter logic that runs in Python: policy checks, bucket names, script arguments.

The GCRA arithmetic itself runs in Redis (worker/ratelimit.lua) and is tested against a real
redis-server in tests/integration/test_ratelimit.py.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis

from worker.ratelimit import (
    KEY_PREFIX,
    AdaptivePolicy,
    Permit,
    RateLimiter,
    read_bucket,
    write_bucket,
)


class RecordingScript:
    """Stands in for a registered Lua script; records calls and returns a fixed reply."""

    def __init__(self, reply: list[Any]) -> None:
        self.reply = reply
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, keys: list[str], args: list[str]) -> list[Any]:
        self.calls.append((keys, args))
        return self.reply


class RecordingClient:
    """The part of `redis.Redis` that `RateLimiter` uses, with no connection at all."""

    def __init__(self, reply: list[Any]) -> None:
        self.script = RecordingScript(reply)
        self.source = ""

    def register_script(self, source: str) -> RecordingScript:
        self.source = source
        return self.script


def _limiter(
    reply: list[Any], *, clock: float | None = 12.5
) -> tuple[RateLimiter, RecordingClient]:
    client = RecordingClient(reply)
    limiter = RateLimiter(
        cast(redis.Redis, client), clock=None if clock is None else (lambda: clock)
    )
    return limiter, client


def test_write_bucket_name() -> None:
    assert write_bucket("cce.ap-southeast-1.myhuaweicloud.com", "p1") == (
        "cce.ap-southeast-1.myhuaweicloud.com|p1"
    )


def test_read_bucket_name() -> None:
    assert read_bucket("cce.example", "p1") == "cce.example|p1|read"


@pytest.mark.parametrize(("host", "project"), [("", "p1"), ("cce.example", "")])
def test_bucket_name_rejects_empty_parts(host: str, project: str) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        write_bucket(host, project)


def test_default_policy_values() -> None:
    policy = AdaptivePolicy()

    assert policy.burst == 1
    assert policy.decrease_factor == 0.5
    assert policy.min_rate_per_second == 0.05
    assert policy.recovery_per_second == 0.05


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("burst", 0, "burst"),
        ("decrease_factor", 1.0, "decrease_factor"),
        ("decrease_factor", 0.0, "decrease_factor"),
        ("min_rate_per_second", 0.0, "min_rate_per_second"),
        ("recovery_per_second", -0.1, "recovery_per_second"),
        ("base_hold_seconds", float("nan"), "base_hold_seconds"),
        ("max_hold_seconds", 0.5, "max_hold_seconds"),
        ("decrease_interval_seconds", -1.0, "decrease_interval_seconds"),
        ("idle_expiry_seconds", float("inf"), "idle_expiry_seconds"),
    ],
)
def test_policy_rejects_invalid_value(field: str, value: float, message: str) -> None:
    arguments: dict[str, Any] = {field: value}

    with pytest.raises(ValueError, match=message):
        AdaptivePolicy(**arguments)


def test_policy_script_arguments_order() -> None:
    policy = AdaptivePolicy(
        burst=2,
        decrease_factor=0.7,
        min_rate_per_second=0.1,
        recovery_per_second=0.2,
        base_hold_seconds=3.0,
        max_hold_seconds=30.0,
        decrease_interval_seconds=0.5,
        idle_expiry_seconds=600.0,
    )

    assert policy.script_arguments() == ["2", "0.7", "0.1", "0.2", "3.0", "30.0", "0.5", "600.0"]


def test_limiter_loads_packaged_script() -> None:
    _, client = _limiter([1, "0", "1", "0"])

    assert 'redis.call("TIME")' in client.source


def test_acquire_sends_key_and_arguments() -> None:
    limiter, client = _limiter([1, "0.125000", "8.000000", "12.500000"])

    permit = limiter.acquire("h|p", ceiling_per_second=8, max_wait_seconds=0.25)

    assert permit == Permit(granted=True, wait_seconds=0.125)
    keys, arguments = client.script.calls[0]
    assert keys == [KEY_PREFIX + "h|p"]
    assert arguments[:4] == ["acquire", "12.5", "8.0", "0.25"]
    assert arguments[4:] == AdaptivePolicy().script_arguments()


def test_acquire_refused_reply() -> None:
    limiter, _ = _limiter([0, "0.300000", "8.000000", "12.500000"])

    permit = limiter.acquire("h|p", ceiling_per_second=8)

    assert permit == Permit(granted=False, wait_seconds=0.3)


def test_acquire_parses_bytes_reply() -> None:
    limiter, _ = _limiter([1, b"0.050000", b"8.000000", b"12.500000"])

    assert limiter.acquire("h|p", ceiling_per_second=8).wait_seconds == 0.05


def test_server_clock_sends_empty_time() -> None:
    limiter, client = _limiter([1, "0", "8", "0"], clock=None)

    limiter.acquire("h|p", ceiling_per_second=8)

    assert client.script.calls[0][1][1] == ""


def test_throttled_without_retry_after_sends_empty() -> None:
    limiter, client = _limiter(["4.000000", "12.500000"])

    rate = limiter.on_throttled("h|p", retry_after_seconds=None, ceiling_per_second=8)

    assert rate == 4.0
    assert client.script.calls[0][1][:4] == ["throttled", "12.5", "8.0", ""]


def test_throttled_sends_fractional_retry_after() -> None:
    limiter, client = _limiter(["4.000000", "12.500000"])

    limiter.on_throttled("h|p", retry_after_seconds=0.75, ceiling_per_second=8)

    assert client.script.calls[0][1][3] == "0.75"


def test_success_sends_operation() -> None:
    limiter, client = _limiter(["6.500000", "12.500000"])

    assert limiter.on_success("h|p", ceiling_per_second=8) == 6.5
    assert client.script.calls[0][1][0] == "success"


@pytest.mark.parametrize("ceiling", [0.0, -1.0, float("nan"), float("inf")])
def test_acquire_rejects_invalid_ceiling(ceiling: float) -> None:
    limiter, client = _limiter([1, "0", "1", "0"])

    with pytest.raises(ValueError, match="ceiling_per_second"):
        limiter.acquire("h|p", ceiling_per_second=ceiling)
    assert client.script.calls == []


@pytest.mark.parametrize("max_wait", [-0.1, float("inf")])
def test_acquire_rejects_invalid_max_wait(max_wait: float) -> None:
    limiter, _ = _limiter([1, "0", "1", "0"])

    with pytest.raises(ValueError, match="max_wait_seconds"):
        limiter.acquire("h|p", ceiling_per_second=1, max_wait_seconds=max_wait)


def test_acquire_rejects_empty_bucket() -> None:
    limiter, _ = _limiter([1, "0", "1", "0"])

    with pytest.raises(ValueError, match="bucket"):
        limiter.acquire("", ceiling_per_second=1)


@pytest.mark.parametrize("retry_after", [-1.0, float("nan")])
def test_throttled_rejects_invalid_retry_after(retry_after: float) -> None:
    limiter, _ = _limiter(["1", "0"])

    with pytest.raises(ValueError, match="retry_after_seconds"):
        limiter.on_throttled("h|p", retry_after_seconds=retry_after, ceiling_per_second=1)


def test_wait_sleeps_reserved_delay() -> None:
    limiter, _ = _limiter([1, "0.200000", "5", "0"])
    sleeps: list[float] = []

    waited = limiter.wait("h|p", ceiling_per_second=5, timeout_seconds=1, sleep=sleeps.append)

    assert sleeps == [0.2]
    assert waited is not None


def test_wait_gives_up_past_timeout() -> None:
    limiter, client = _limiter([0, "5.000000", "5", "0"])
    sleeps: list[float] = []

    waited = limiter.wait("h|p", ceiling_per_second=5, timeout_seconds=1, sleep=sleeps.append)

    assert waited is None
    assert sleeps == []
    assert len(client.script.calls) == 1
