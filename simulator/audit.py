"""The audit of accepted syncs and the per-outcome request counters.

The audit is the evidence that a campaign never synchronized a pool twice: every sync the
simulator accepted is recorded here, including the ones whose response was dropped on purpose.
Records hold IDs and the non-secret shape of the request, never a password.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Final

#: Outcome names counted by `Stats`; `/_sim/stats` returns every one, zeros included.
OUTCOMES: Final = (
    "requests",
    "accepted",
    "dropped_after_accept",
    "throttled",
    "conflicts",
    "unauthorized",
    "invalid",
    "not_found",
    "forbidden",
    "server_errors",
    "resets",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    pool_key: str
    job_id: str
    request_id: str
    accepted_at: float
    """Wall-clock UNIX time in seconds."""
    caller: str
    """Access key ID or `token` (never a secret)."""
    max_unavailable: int
    node_ids: list[str] | None
    login: str | None
    """`sshKey`, `userPassword` or None: which login the template used, not its value."""
    dropped: bool
    """True when the response was dropped on purpose (fault drop_after_accept)."""


class Audit:
    """Thread-safe list of accepted syncs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[AuditRecord] = []

    def record(self, record: AuditRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[AuditRecord]:
        with self._lock:
            return list(self._records)

    def counts(self) -> dict[str, int]:
        """Return pool key -> number of accepted syncs."""
        with self._lock:
            return dict(Counter(record.pool_key for record in self._records))

    def duplicates(self) -> dict[str, int]:
        """Return the pools synchronized more than once, with their counts."""
        return {key: count for key, count in self.counts().items() if count > 1}

    def to_dict(self) -> dict[str, object]:
        records = self.records()
        counts = Counter(record.pool_key for record in records)
        return {
            "syncs": dict(counts),
            "duplicates": {key: count for key, count in counts.items() if count > 1},
            "total": len(records),
            "records": [asdict(record) for record in records],
        }


class Stats:
    """Thread-safe counters of request outcomes (see `OUTCOMES`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._started_at = time.time()

    def increment(self, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        with self._lock:
            self._counts[outcome] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {outcome: self._counts[outcome] for outcome in OUTCOMES}

    def to_dict(self) -> dict[str, object]:
        return {
            "counts": self.snapshot(),
            "uptime_seconds": round(time.time() - self._started_at, 3),
        }
