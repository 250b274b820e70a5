"""Error classification (every row of the CCE error table) and jittered backoff."""

from __future__ import annotations

import random

import pytest

from worker.cce.errors import (
    ApiError,
    CceError,
    ConfigurationError,
    ConnectError,
    CredentialsError,
    OutcomeUnknownError,
)
from worker.retry import Decision, backoff_seconds, classify, delay_seconds, stated_limit_per_second


def api_error(
    status: int,
    code: str | None = None,
    *,
    retry_after: float | None = None,
    operation: str = "sync_node_pool",
) -> ApiError:
    return ApiError(
        status_code=status,
        error_code=code,
        error_message="message",
        request_id="req-1",
        retry_after_seconds=retry_after,
        operation=operation,
    )


@pytest.mark.parametrize(
    ("status", "code", "action", "reason"),
    [
        # invalid request
        (400, "CCE.01400001", "fail", "invalid_request"),
        (400, "CCE_CM.0004", "fail", "invalid_request"),
        (400, "APIGW.0201", "fail", "invalid_request"),
        (400, None, "fail", "invalid_request"),
        # quota: CCE.01400007 to 13, 20 and 25
        *[(400, f"CCE.014000{n:02d}", "fail", "quota") for n in (7, 8, 9, 10, 11, 12, 13, 20, 25)],
        (400, "CCE.01400014", "fail", "invalid_request"),
        # operation conflict
        (400, "CCE.01400023", "retry", "conflict"),
        (400, "CCE.01400024", "retry", "conflict"),
        # authentication
        (401, "CCE.01401001", "pause", "auth"),
        (401, "APIGW.0301", "pause", "auth"),
        (401, None, "pause", "auth"),
        # permission denied / account restricted
        (403, "CCE.01403001", "fail", "forbidden"),
        (403, "CCE.01403002", "fail", "forbidden"),
        (403, None, "fail", "forbidden"),
        # pool or cluster state does not allow it now: CCE.01403003 to 09
        *[(403, f"CCE.014030{n:02d}", "retry", "not_ready") for n in range(3, 10)],
        # not found
        (404, "CCE.01404001", "fail", "not_found"),
        (404, "APIGW.0101", "fail", "not_found"),
        # conflict / version expired
        (409, None, "retry", "conflict"),
        # pool locked / concurrent-task limit
        (429, "CCE.01429002", "retry", "locked"),
        (429, "CCE.01429003", "retry", "locked"),
        # server errors
        (500, None, "retry", "server_error"),
        (502, "APIGW.0202", "retry", "server_error"),
        (503, None, "retry", "server_error"),
        (504, None, "retry", "server_error"),
        # other client errors
        (405, None, "fail", "invalid_request"),
        (413, None, "fail", "invalid_request"),
    ],
)
def test_classify_api_error(status: int, code: str | None, action: str, reason: str) -> None:
    decision = classify(api_error(status, code))

    assert decision.action == action
    assert decision.reason == reason
    assert decision.throttled is False


@pytest.mark.parametrize("code", ["APIGW.0308", "CCE.02429001", None, "SOMETHING.ELSE"])
def test_classify_throttled(code: str | None) -> None:
    decision = classify(api_error(429, code, retry_after=1.5))

    assert decision == Decision("retry", "throttled", 1.5, throttled=True)


@pytest.mark.parametrize(("status", "code"), [(500, None), (409, None), (429, "CCE.01429002")])
def test_classify_keeps_retry_after(status: int, code: str | None) -> None:
    assert classify(api_error(status, code, retry_after=7.0)).retry_after_seconds == 7.0


def test_classify_fail_ignores_retry_after() -> None:
    assert classify(api_error(404, "CCE.01404001", retry_after=3.0)).retry_after_seconds is None


def test_classify_connect_error() -> None:
    error = ConnectError("refused", operation="sync_node_pool", kind="connect_error")

    assert classify(error) == Decision("retry", "connect_error")


@pytest.mark.parametrize("kind", ["timeout", "reset"])
def test_classify_outcome_unknown_sync_reconciles(kind: str) -> None:
    error = OutcomeUnknownError("lost", operation="sync_node_pool", kind=kind)

    assert classify(error) == Decision("reconcile", "outcome_unknown")


@pytest.mark.parametrize(
    "operation", ["show_node_pool", "list_node_pools", "list_clusters", "show_job"]
)
def test_classify_outcome_unknown_read_retries(operation: str) -> None:
    error = OutcomeUnknownError("lost", operation=operation, kind="timeout")

    assert classify(error) == Decision("retry", "timeout")


def test_classify_unreadable_success_body_retries() -> None:
    decision = classify(api_error(200, None, operation="show_node_pool"))

    assert decision.action == "retry"
    assert decision.reason == "invalid_response"


def test_classify_other_errors() -> None:
    assert classify(CredentialsError("none")) == Decision("pause", "auth")
    assert classify(ConfigurationError("bad")) == Decision("pause", "configuration")
    assert classify(CceError("other")) == Decision("retry", "server_error")


# Backoff -------------------------------------------------------------------------------------


class FixedUniform:
    """Returns a fixed fraction of the interval and records the bounds asked for."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float, /) -> float:
        self.bounds.append((a, b))
        return a + (b - a) * self.fraction


@pytest.mark.parametrize(
    ("attempt", "cap"), [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0), (8, 256.0), (9, 300.0)]
)
def test_backoff_interval_doubles_to_ceiling(attempt: int, cap: float) -> None:
    rng = FixedUniform(1.0)

    assert backoff_seconds(attempt, rng=rng) == cap
    assert rng.bounds == [(0.0, cap)]


def test_backoff_never_below_floor() -> None:
    assert backoff_seconds(6, rng=FixedUniform(0.0)) == 1.0
    assert backoff_seconds(6, floor_seconds=2.5, rng=FixedUniform(0.0)) == 2.5


def test_backoff_huge_attempt_uses_ceiling() -> None:
    rng = FixedUniform(1.0)

    assert backoff_seconds(10_000, ceiling_seconds=120.0, rng=rng) == 120.0


def test_backoff_spreads_over_interval() -> None:
    rng = random.Random(3)
    delays = [backoff_seconds(6, rng=rng) for _ in range(2000)]

    assert min(delays) >= 1.0
    assert max(delays) <= 64.0
    assert 28.0 < sum(delays) / len(delays) < 36.0


@pytest.mark.parametrize(
    ("attempt", "floor", "ceiling"), [(-1, 1.0, 10.0), (0, 0.0, 10.0), (0, 5.0, 1.0)]
)
def test_backoff_rejects_invalid_arguments(attempt: int, floor: float, ceiling: float) -> None:
    with pytest.raises(ValueError):
        backoff_seconds(attempt, floor_seconds=floor, ceiling_seconds=ceiling)


def test_delay_honours_longer_retry_after() -> None:
    decision = Decision("retry", "throttled", 900.0, throttled=True)

    assert delay_seconds(decision, 0, rng=FixedUniform(1.0)) == 900.0


def test_delay_keeps_longer_backoff() -> None:
    decision = Decision("retry", "throttled", 0.2, throttled=True)

    assert delay_seconds(decision, 3, rng=FixedUniform(1.0)) == 8.0


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "The throttling threshold has been reached: policy user over ratelimit, limit:8, time:1 second",
            8.0,
        ),
        ("policy user over ratelimit, limit:10, time:1 minute", 10 / 60),
        ("policy user over ratelimit, limit:8.0, time:1 second", 8.0),
        ("policy user over ratelimit", None),
        ("", None),
        (None, None),
    ],
)
def test_stated_limit_parsed(message: str | None, expected: float | None) -> None:
    assert stated_limit_per_second(message) == (pytest.approx(expected) if expected else None)


def test_throttled_decision_carries_limit() -> None:
    error = ApiError(
        status_code=429,
        error_code="APIGW.0308",
        error_message="policy user over ratelimit, limit:8, time:1 second",
        request_id=None,
        retry_after_seconds=None,
        operation="sync_node_pool",
    )
    decision = classify(error)
    assert decision.throttled is True
    assert decision.stated_limit_per_second == pytest.approx(8.0)
