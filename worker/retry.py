"""Classification of CCE errors into decisions, and the backoff between attempts.

`classify` maps one error to what the worker does next:

=========  =========================================================================
action     meaning
=========  =========================================================================
fail       final: the target fails with `reason` (one of the fixed failure reasons)
retry      send again after `delay_seconds(...)`; `reason` is the retry metric label
reconcile  a sync may have been accepted: check the pool before anything is resent
pause      stop the campaigns using this credential or configuration (authentication)
accept     not produced for errors; listed so a decision can record a success
=========  =========================================================================

Retries back off exponentially with full jitter, and a `Retry-After` from the server wins when
it asks for a longer wait.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from worker.cce.errors import (
    ApiError,
    CceError,
    ConfigurationError,
    ConnectError,
    CredentialsError,
    OutcomeUnknownError,
)

Action = Literal["accept", "fail", "retry", "reconcile", "pause"]

DEFAULT_BACKOFF_FLOOR_SECONDS: Final = 1.0
DEFAULT_BACKOFF_CEILING_SECONDS: Final = 300.0

#: The one operation whose effect makes a lost response ambiguous: it resets nodes.
SYNC_OPERATION: Final = "sync_node_pool"

INVALID_REQUEST_CODES: Final = frozenset({"CCE.01400001", "CCE_CM.0004", "APIGW.0201"})
QUOTA_CODES: Final = frozenset({f"CCE.014000{number:02d}" for number in (*range(7, 14), 20, 25)})
OPERATION_CONFLICT_CODES: Final = frozenset({"CCE.01400023", "CCE.01400024"})
FORBIDDEN_CODES: Final = frozenset({"CCE.01403001", "CCE.01403002"})
NOT_READY_CODES: Final = frozenset({f"CCE.014030{number:02d}" for number in range(3, 10)})
THROTTLED_CODES: Final = frozenset({"APIGW.0308", "CCE.02429001"})
LOCKED_CODES: Final = frozenset({"CCE.01429002", "CCE.01429003"})


@dataclass(frozen=True, slots=True)
class Decision:
    """Next step after an error.

    Attributes:
        action: fail, retry, reconcile, pause (or accept for a success).
        reason: failure reason for `fail`, metric label for `retry`, cause for the others.
        retry_after_seconds: the server's `Retry-After`, in seconds, when it sent one.
        throttled: whether the API throttled the request (the shared rate must slow down).
        stated_limit_per_second: the limit an API gateway named in its 429 message
            ("limit:8, time:1 second"), converted to requests per second.
    """

    action: Action
    reason: str
    retry_after_seconds: float | None = None
    throttled: bool = False
    stated_limit_per_second: float | None = None


_STATED_LIMIT = re.compile(
    r"limit:\s*(\d+(?:\.\d+)?)\s*,\s*time:\s*(\d+)?\s*(second|minute|hour)", re.I
)
_UNIT_SECONDS: Final = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


def stated_limit_per_second(message: str | None) -> float | None:
    """Return the rate limit named in an API gateway message, in requests per second.

    The gateway's 429 (`APIGW.0308`) reads "policy user over ratelimit, limit:N, time:1 second"
    (or minute); None when the message names no limit.
    """
    match = _STATED_LIMIT.search(message or "")
    if match is None:
        return None
    count = float(match.group(1))
    period = float(match.group(2) or 1) * _UNIT_SECONDS[match.group(3).lower()]
    if count <= 0 or period <= 0:
        return None
    return count / period


class UniformSource(Protocol):
    """A random source such as the `random` module or a seeded `random.Random`."""

    def uniform(self, a: float, b: float, /) -> float: ...


def classify(error: CceError) -> Decision:
    """Decide what to do after a failed CCE call.

    An outcome-unknown sync POST is reconciled; the same failure on a read call is simply
    retried, because reads have no effect.
    """
    if isinstance(error, ConnectError):
        return Decision("retry", "connect_error")
    if isinstance(error, OutcomeUnknownError):
        if error.operation == SYNC_OPERATION:
            return Decision("reconcile", "outcome_unknown")
        return Decision("retry", error.kind)
    if isinstance(error, ApiError):
        return _classify_api_error(error)
    if isinstance(error, CredentialsError):
        return Decision("pause", "auth")
    if isinstance(error, ConfigurationError):
        return Decision("pause", "configuration")
    return Decision("retry", "server_error")


def _classify_api_error(error: ApiError) -> Decision:
    status, code = error.status_code, error.error_code or ""
    retry_after = error.retry_after_seconds

    if 200 <= status < 300:
        # A read call returned a body that could not be parsed, and reading again is harmless.
        return Decision("retry", "invalid_response", retry_after)
    if status == 401:
        return Decision("pause", "auth")
    if status == 429:
        if code in LOCKED_CODES:
            return Decision("retry", "locked", retry_after)
        # Unknown 429 codes are treated as throttling too: slowing down is the safe side.
        return Decision(
            "retry",
            "throttled",
            retry_after,
            throttled=True,
            stated_limit_per_second=stated_limit_per_second(error.error_message),
        )
    if status >= 500:
        return Decision("retry", "server_error", retry_after)
    if status == 409:
        return Decision("retry", "conflict", retry_after)
    if status == 404:
        return Decision("fail", "not_found")
    if status == 403:
        if code in NOT_READY_CODES:
            return Decision("retry", "not_ready", retry_after)
        return Decision("fail", "forbidden")
    if status == 400:
        return _classify_bad_request(code, retry_after)
    return Decision("fail", "invalid_request")


def _classify_bad_request(code: str, retry_after: float | None) -> Decision:
    if code in OPERATION_CONFLICT_CODES:
        return Decision("retry", "conflict", retry_after)
    if code in QUOTA_CODES:
        return Decision("fail", "quota")
    return Decision("fail", "invalid_request")


def backoff_seconds(
    attempt: int,
    *,
    floor_seconds: float = DEFAULT_BACKOFF_FLOOR_SECONDS,
    ceiling_seconds: float = DEFAULT_BACKOFF_CEILING_SECONDS,
    rng: UniformSource = random,
) -> float:
    """Return a full-jitter backoff for the given attempt (0 for the first retry), in seconds.

    The delay is uniform in [0, min(ceiling, floor * 2**attempt)], raised to `floor_seconds`.

    Raises:
        ValueError: for a negative attempt, a non-positive floor or a ceiling below the floor.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more, got {attempt}")
    if floor_seconds <= 0 or ceiling_seconds < floor_seconds:
        raise ValueError(
            f"need 0 < floor_seconds <= ceiling_seconds, got {floor_seconds} and {ceiling_seconds}"
        )

    # Past 2**64 the cap is the ceiling for any sane floor; this also avoids huge integers.
    cap = ceiling_seconds if attempt >= 64 else min(ceiling_seconds, floor_seconds * 2**attempt)
    return max(floor_seconds, rng.uniform(0.0, cap))


def delay_seconds(
    decision: Decision,
    attempt: int,
    *,
    floor_seconds: float = DEFAULT_BACKOFF_FLOOR_SECONDS,
    ceiling_seconds: float = DEFAULT_BACKOFF_CEILING_SECONDS,
    rng: UniformSource = random,
) -> float:
    """Return the wait before the next attempt: the backoff, or the server's `Retry-After`
    when that is longer (it may exceed the ceiling)."""
    backoff = backoff_seconds(
        attempt, floor_seconds=floor_seconds, ceiling_seconds=ceiling_seconds, rng=rng
    )
    return max(backoff, decision.retry_after_seconds or 0.0)
