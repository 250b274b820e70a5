"""The events stream that other systems read campaign and target outcomes from.

Each entry of `cce-sync:events` has the fields `type`, `campaign_id` and `data` (a JSON object).
Payloads carry IDs, states and reasons only: never credentials or node passwords. The stream is
trimmed approximately (``MAXLEN ~``) to a configurable length, so readers that fall further behind
than that lose the oldest entries.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import redis

logger = logging.getLogger(__name__)

EVENTS_STREAM: Final = "cce-sync:events"

CAMPAIGN_ACCEPTED: Final = "campaign.accepted"
CAMPAIGN_REJECTED: Final = "campaign.rejected"
CAMPAIGN_PAUSED: Final = "campaign.paused"
CAMPAIGN_FINISHED: Final = "campaign.finished"
TARGET_ACCEPTED: Final = "target.accepted"
TARGET_FAILED: Final = "target.failed"
TARGET_SYNCED: Final = "target.synced"
TARGET_SYNC_FAILED: Final = "target.sync_failed"

EVENT_TYPES: Final = frozenset(
    {
        CAMPAIGN_ACCEPTED,
        CAMPAIGN_REJECTED,
        CAMPAIGN_PAUSED,
        CAMPAIGN_FINISHED,
        TARGET_ACCEPTED,
        TARGET_FAILED,
        TARGET_SYNCED,
        TARGET_SYNC_FAILED,
    }
)

DEFAULT_MAX_LENGTH: Final = 100_000


class Events:
    """Publisher of the events stream.

    Args:
        client: Redis client (any `decode_responses` setting).
        max_length: Approximate number of entries the stream keeps.
        stream: Stream key; tests may use their own.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        stream: str = EVENTS_STREAM,
    ) -> None:
        self.client = client
        self.max_length = max_length
        self.stream = stream

    def publish(
        self,
        event_type: str,
        campaign_id: str,
        data: Mapping[str, Any] | None = None,
        *,
        pipeline: redis.client.Pipeline | None = None,
    ) -> str | None:
        """Append one event and return its stream ID.

        With `pipeline`, the XADD is queued on it (so it commits with the caller's transaction)
        and None is returned.

        Raises:
            ValueError: `event_type` is not one of `EVENT_TYPES`.
            redis.RedisError: the write failed (never raised for a queued pipeline command).
        """
        if event_type not in EVENT_TYPES:
            raise ValueError(
                f"unknown event type {event_type!r}; expected one of {sorted(EVENT_TYPES)}"
            )

        fields: dict[str, str] = {
            "type": event_type,
            "campaign_id": campaign_id,
            "data": json.dumps(
                dict(data or {}), separators=(",", ":"), sort_keys=True, default=str
            ),
        }
        target = pipeline if pipeline is not None else self.client
        entry_id = target.xadd(self.stream, fields, maxlen=self.max_length, approximate=True)  # type: ignore[arg-type]
        if pipeline is not None:
            return None

        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


@dataclass(frozen=True)
class Event:
    """One entry of the events stream.

    Attributes:
        id: Stream entry ID (``<milliseconds>-<sequence>``), the `start_id` to resume from.
        type: One of `EVENT_TYPES` (a newer publisher may add types, so readers skip unknown ones).
        campaign_id: The campaign the event is about, or empty for an intake entry rejected before
            its document gave an ID.
        data: The decoded ``data`` field.
    """

    id: str
    type: str
    campaign_id: str
    data: dict[str, Any]


class EventReader:
    """Reader of the events stream for Python callers, resumable from any entry ID.

    The reader remembers the last ID it returned, so successive `read()` calls never skip or
    repeat an entry. Filters run in the reader: Redis streams have no server-side filter, so every
    entry after the position is transferred.

    Args:
        client: Redis client (any `decode_responses` setting).
        start_id: Read entries after this ID. ``"0"`` (the default) starts at the oldest entry
            still in the stream. ``"$"`` starts after the newest entry at construction time.
        campaign_id: Return only events about this campaign.
        event_types: Return only events of these types.
        batch_size: Maximum entries fetched per XREAD call.
        stream: Stream key; tests may use their own.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        start_id: str = "0",
        campaign_id: str | None = None,
        event_types: Iterable[str] | None = None,
        batch_size: int = 100,
        stream: str = EVENTS_STREAM,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")

        self.client = client
        self.stream = stream
        self.campaign_id = campaign_id
        self.event_types = frozenset(event_types) if event_types is not None else None
        self.batch_size = batch_size
        self.last_id = self._newest_id() if start_id == "$" else start_id

    def read(self, *, block_seconds: float | None = None) -> list[Event]:
        """Return the matching events after `last_id` from one XREAD call, oldest first.

        Args:
            block_seconds: Wait up to this long for new entries when none are there. None (the
                default) returns at once. It must stay below the client's socket timeout.

        The position advances past every entry fetched, including those the filters dropped,
        so the result may be empty while the stream still contains newer entries.

        Raises:
            redis.RedisError: the read failed, and `last_id` is unchanged.
        """
        block_ms = None if block_seconds is None else max(1, int(block_seconds * 1000))
        response = self.client.xread(
            {self.stream: self.last_id}, count=self.batch_size, block=block_ms
        )
        events: list[Event] = []
        for entry_id, fields in _stream_messages(response):
            self.last_id = entry_id
            event = _decode_event(entry_id, fields)
            if event is not None and self._matches(event):
                events.append(event)
        return events

    def follow(
        self,
        *,
        block_seconds: float = 1.0,
        timeout_seconds: float | None = None,
        stop: threading.Event | None = None,
        until: Callable[[Event], bool] | None = None,
    ) -> Iterator[Event]:
        """Yield matching events as they arrive.

        Args:
            block_seconds: Wait per XREAD call, which bounds how late `stop` is noticed.
            timeout_seconds: Stop after this long in total (None: no limit).
            stop: Stop once this is set.
            until: Stop after yielding the first event for which this returns True, such as
                ``lambda event: event.type == CAMPAIGN_FINISHED``.

        `last_id` is the last event yielded while the caller handles it, and the end of the
        fetched batch between batches.

        Raises:
            redis.RedisError: a read failed.
        """
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while stop is None or not stop.is_set():
            wait = block_seconds
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return

            events = self.read(block_seconds=wait)
            batch_end = self.last_id
            for event in events:
                # A caller that stops iterating resumes right after the last event it received.
                self.last_id = event.id
                yield event
                if until is not None and until(event):
                    return
            self.last_id = batch_end

    def _matches(self, event: Event) -> bool:
        if self.campaign_id is not None and event.campaign_id != self.campaign_id:
            return False
        return self.event_types is None or event.type in self.event_types

    def _newest_id(self) -> str:
        newest = self.client.xrevrange(self.stream, count=1)
        if not newest:
            return "0"
        entry_id = newest[0][0]
        return _as_text(entry_id) if entry_id is not None else "0"


def _as_text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _stream_messages(response: Any) -> list[tuple[str, dict[str, str]]]:
    """Flatten an XREAD reply (RESP2 list or RESP3 dict) of one stream into text entries."""
    if not response:
        return []

    streams = response.values() if isinstance(response, dict) else [item[1] for item in response]
    messages: list[tuple[str, dict[str, str]]] = []
    for entries in streams:
        for entry_id, fields in entries:
            text_fields = {_as_text(k): _as_text(v) for k, v in (fields or {}).items()}
            messages.append((_as_text(entry_id), text_fields))
    return messages


def _decode_event(entry_id: str, fields: Mapping[str, str]) -> Event | None:
    """Build an `Event`, or log and return None for an entry without a type."""
    event_type = fields.get("type")
    if not event_type:
        logger.warning("events stream entry %s has no type field, so it is skipped", entry_id)
        return None

    try:
        data = json.loads(fields.get("data") or "{}")
    except json.JSONDecodeError:
        logger.warning("events stream entry %s has a data field that is not JSON", entry_id)
        data = {}
    if not isinstance(data, dict):
        data = {"value": data}
    return Event(entry_id, event_type, fields.get("campaign_id", ""), data)
