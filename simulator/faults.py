"""Fault injection: which requests fail, how, and the seeded random draws behind it."""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

#: Upper bound for any injected delay, so a misconfigured fault cannot hold a handler thread for
#: longer than a client would plausibly wait.
MAX_DELAY_MS: Final = 120_000.0

_PROBABILITY_FIELDS: Final = ("error_5xx", "reset", "drop_after_accept", "slow", "job_failure")
_DELAY_FIELDS: Final = ("latency_ms", "slow_ms", "drop_delay_ms")


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Probabilities (0..1, drawn per request) and delays (milliseconds) of injected faults.

    Attributes:
        error_5xx: respond 500 with a CCE error body, accepting nothing.
        reset: read the request, then reset the TCP connection (RST) before processing it.
        drop_after_accept: sync POSTs only. Accept the sync (audit entry and job started), then
            wait `drop_delay_ms` and reset the connection without sending a response.
        latency_ms: delay added to every API request before it is processed.
        slow: probability of an extra delay of `slow_ms` (to provoke client read timeouts).
        job_failure: probability that an accepted sync job ends in phase Failed.
    """

    error_5xx: float = 0.0
    reset: float = 0.0
    drop_after_accept: float = 0.0
    latency_ms: float = 0.0
    slow: float = 0.0
    slow_ms: float = 0.0
    drop_delay_ms: float = 0.0
    job_failure: float = 0.0

    def __post_init__(self) -> None:
        for name in _PROBABILITY_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault probability {name} must be between 0 and 1, got {value}")
        for name in _DELAY_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= MAX_DELAY_MS:
                raise ValueError(f"fault delay {name} must be between 0 and {MAX_DELAY_MS} ms")

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """Return a copy with `changes` applied. Unknown names or bad values raise ValueError."""
        known = {item.name for item in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault names {unknown}; known names are {sorted(known)}")
        for name, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"fault {name} must be a number, got {value!r}")
        return dataclasses.replace(self, **{name: float(v) for name, v in changes.items()})

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Faults chosen for one request before it is processed."""

    delay_seconds: float = 0.0
    reset: bool = False
    error_5xx: bool = False
    drop_after_accept: bool = False
    drop_delay_seconds: float = 0.0


class FaultInjector:
    """Fault decisions drawn from one seeded RNG, safe to share between handler threads.

    The draws are reproducible for a given seed and request order. With concurrent clients the
    arrival order, and so the exact requests hit, varies between runs.
    """

    def __init__(self, faults: Faults | None = None, *, seed: int = 0) -> None:
        self._faults = faults or Faults()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def faults(self) -> Faults:
        return self._faults

    def update(self, changes: Mapping[str, Any]) -> Faults:
        with self._lock:
            self._faults = self._faults.updated(changes)
            return self._faults

    def replace(self, faults: Faults) -> None:
        with self._lock:
            self._faults = faults

    def plan(self, *, is_sync: bool) -> FaultPlan:
        with self._lock:
            faults = self._faults
            draws = [self._rng.random() for _ in range(4)]

        delay_ms = faults.latency_ms + (faults.slow_ms if draws[0] < faults.slow else 0.0)
        return FaultPlan(
            delay_seconds=min(delay_ms, MAX_DELAY_MS) / 1000.0,
            reset=draws[1] < faults.reset,
            error_5xx=draws[2] < faults.error_5xx,
            drop_after_accept=is_sync and draws[3] < faults.drop_after_accept,
            drop_delay_seconds=faults.drop_delay_ms / 1000.0,
        )

    def job_fails(self) -> bool:
        with self._lock:
            return self._rng.random() < self._faults.job_failure
