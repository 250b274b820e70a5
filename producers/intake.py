"""Consume campaign documents that other systems append to the `cce-sync:intake` Redis stream.

Producers append entries with one field, ``campaign``, holding the campaign document as JSON.
Every intake process reads the stream through the consumer group ``cce-sync``, so each entry
goes to one consumer, and hands the document to the submit function (`producers.submit.submit`),
which validates it and stores the campaign.

Guarantees:

- An entry is acknowledged (``XACK``) only after the campaign is stored, or after the entry is
  rejected. A consumer that dies in between leaves the entry pending, and another consumer claims
  it with ``XAUTOCLAIM`` once it has been idle for ``claim_idle_ms``.
- Delivery is at least once, storage is at most once per campaign ID. The submit function treats
  a repeated ``metadata.id`` with the same content as the existing campaign. A document without
  ``metadata.id`` gets ``intake-<entry ID>``, so a redelivered entry maps to the same campaign.
  Two separate entries without an ID create two campaigns.
- An entry that can never be stored (oversized, not UTF-8, not a JSON object, an invalid
  document, an ID reused with other content, or delivered more than ``max_deliveries`` times) is
  rejected: in one ``MULTI`` transaction it is acknowledged, copied to
  ``cce-sync:intake:rejected`` with the error, and announced as a ``campaign.rejected`` event.
  Values of ``password`` keys are redacted in the copy.
- Any other failure (Redis down, an unexpected exception) leaves the entry pending, to be retried
  after ``claim_idle_ms``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final, Protocol

import redis

from worker.events import CAMPAIGN_REJECTED, Events

logger = logging.getLogger(__name__)

INTAKE_STREAM: Final = "cce-sync:intake"
REJECTED_STREAM: Final = "cce-sync:intake:rejected"
DEFAULT_GROUP: Final = "cce-sync"
CAMPAIGN_FIELD: Final = "campaign"

#: Time, in milliseconds, an entry stays pending in one consumer before another one may claim it.
#: Longer than any normal submit call, which only validates and writes a few Redis keys.
DEFAULT_CLAIM_IDLE_MS: Final = 60_000
#: How long one XREADGROUP waits for new entries, in milliseconds. It bounds how late a stop
#: request is noticed, and must stay below the client's socket timeout.
DEFAULT_BLOCK_MS: Final = 2_000
#: Entries fetched per XREADGROUP or XAUTOCLAIM call.
DEFAULT_BATCH_SIZE: Final = 10
#: Largest accepted ``campaign`` field, in bytes (the submit function's own document limit).
DEFAULT_MAX_ENTRY_BYTES: Final = 1_000_000
#: Deliveries after which a still-pending entry is rejected instead of tried again.
DEFAULT_MAX_DELIVERIES: Final = 10
#: Approximate number of entries `cce-sync:intake:rejected` keeps (``MAXLEN ~``).
DEFAULT_REJECTED_MAX_LENGTH: Final = 10_000

#: Bytes of each field kept in the rejected copy; the rest is cut off and the copy marked.
REJECTED_COPY_MAX_BYTES: Final = 64 * 1024
#: Characters of an error message kept in the rejected copy, the event and the log.
ERROR_MAX_CHARS: Final = 4_000
#: XAUTOCLAIM pages per claim pass, so one pass over a long pending list stays short. The next
#: pass resumes at the saved cursor.
CLAIM_MAX_PAGES: Final = 10
#: Prefix of the campaign ID given to a document that has no ``metadata.id``.
GENERATED_ID_PREFIX: Final = "intake-"
#: Maximum wait, in seconds, between two attempts while Redis is unreachable.
MAX_BACKOFF_SECONDS: Final = 30.0

#: Values of the ``reason`` field of a rejection.
REASON_INVALID: Final = "invalid"
REASON_TOO_LARGE: Final = "too_large"
REASON_CONFLICT: Final = "conflict"
REASON_UNDELIVERABLE: Final = "undeliverable"

REDACTED: Final = "<redacted>"
_PASSWORD_KEY = re.compile(r"password", re.IGNORECASE)
_PASSWORD_TEXT = re.compile(r'("[^"]*password[^"]*"\s*:\s*)"(?:[^"\\]|\\.)*"?', re.IGNORECASE)


class SubmitOutcome(Protocol):
    """Result of the submit function: the stored campaign."""

    @property
    def campaign_id(self) -> str: ...

    @property
    def targets(self) -> int: ...

    @property
    def created(self) -> bool: ...


#: Validate and store one campaign document given as JSON text.
SubmitFn = Callable[[str], SubmitOutcome]


class InvalidEntryError(Exception):
    """An intake entry that can never be stored.

    Attributes:
        reason: One of the ``REASON_*`` values.
        errors: Field errors as ``{"path": ..., "message": ...}`` dicts, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = REASON_INVALID,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.errors = errors or []


@dataclass(frozen=True)
class Entry:
    """One stream entry as read from Redis, with `fields` None when the entry was deleted."""

    entry_id: str
    fields: dict[str, str | bytes] | None
    deliveries: int = 1


def default_rejected_errors() -> dict[type[Exception], str]:
    """Return the submit function's exceptions that mean "never storable", with their reasons."""
    from worker.campaigns.document import DocumentError
    from worker.campaigns.store import CampaignConflict

    return {DocumentError: REASON_INVALID, CampaignConflict: REASON_CONFLICT}


class IntakeConsumer:
    """A member of the intake consumer group.

    Args:
        client: Redis client. One with ``decode_responses=False`` is recommended, so an entry that
            is not valid UTF-8 is rejected alone instead of failing the whole read.
        submit_fn: Validates and stores one document given as JSON text, returning the stored
            campaign. In production it is `producers.submit.submit` bound to a client.
        consumer_name: Name of this consumer in the group, unique among running consumers.
        group: Consumer group, created (with the stream) when absent.
        stream: Intake stream key.
        rejected_stream: Stream that receives copies of rejected entries.
        claim_idle_ms: Idle time, in milliseconds, after which another consumer's pending entry
            is claimed.
        block_ms: Wait for new entries per read, in milliseconds.
        batch_size: Entries per read or claim call.
        max_entry_bytes: Largest ``campaign`` field accepted, in bytes.
        max_deliveries: Deliveries after which a pending entry is rejected as undeliverable.
        rejected_max_length: Approximate length the rejected stream is trimmed to.
        events: Publisher of ``campaign.rejected``, by default one on `client`.
        rejected_errors: Exceptions of `submit_fn` that reject the entry, mapped to the
            ``reason`` recorded for each. The default maps the document's `DocumentError` to
            ``invalid`` and the store's `CampaignConflict` to ``conflict``.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        submit_fn: SubmitFn,
        consumer_name: str,
        group: str = DEFAULT_GROUP,
        stream: str = INTAKE_STREAM,
        rejected_stream: str = REJECTED_STREAM,
        claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
        block_ms: int = DEFAULT_BLOCK_MS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        rejected_max_length: int = DEFAULT_REJECTED_MAX_LENGTH,
        events: Events | None = None,
        rejected_errors: Mapping[type[Exception], str] | None = None,
    ) -> None:
        if not consumer_name:
            raise ValueError("consumer_name must not be empty")
        if claim_idle_ms <= 0 or block_ms <= 0 or batch_size <= 0:
            raise ValueError(
                f"claim_idle_ms ({claim_idle_ms}), block_ms ({block_ms}) and batch_size "
                f"({batch_size}) must be positive"
            )

        self.client = client
        self.submit_fn = submit_fn
        self.consumer_name = consumer_name
        self.group = group
        self.stream = stream
        self.rejected_stream = rejected_stream
        self.claim_idle_ms = claim_idle_ms
        self.block_ms = block_ms
        self.batch_size = batch_size
        self.max_entry_bytes = max_entry_bytes
        self.max_deliveries = max_deliveries
        self.rejected_max_length = rejected_max_length
        self.events = events or Events(client)
        self.rejected_errors = dict(
            rejected_errors if rejected_errors is not None else default_rejected_errors()
        )
        self._claim_cursor = "0-0"
        self._next_claim_at = 0.0

    # -- setup ------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists.

        A new group starts at ID 0, so entries appended before any consumer ran are read too.
        """
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return

        logger.info("created consumer group %s on stream %s", self.group, self.stream)

    # -- main loop --------------------------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        """Consume entries until `stop_event` is set.

        The entry in progress is finished first, so stopping takes at most one submit call plus
        `block_ms`. Redis errors are logged and retried with a backoff of up to
        `MAX_BACKOFF_SECONDS`.
        """
        logger.info(
            "intake consumer %s started on stream %s, group %s",
            self.consumer_name,
            self.stream,
            self.group,
        )
        failures = 0
        recovered = False
        while not stop_event.is_set():
            try:
                if not recovered:
                    self.ensure_group()
                    self.process_own_pending()
                    recovered = True
                self.run_once(stop_event)
            except redis.RedisError as exc:
                failures += 1
                delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(failures, 6))
                logger.warning(
                    "intake consumer %s: Redis error (%s), retrying in %.1f s",
                    self.consumer_name,
                    exc,
                    delay,
                )
                stop_event.wait(delay)
            else:
                failures = 0

        if failures == 0:
            self._leave_group()
        logger.info("intake consumer %s stopped", self.consumer_name)

    def run_once(self, stop_event: threading.Event | None = None) -> int:
        """Claim idle entries when a claim pass is due, then read new entries once.

        Returns the number of entries handled.

        Raises:
            redis.RedisError: reading from Redis failed.
        """
        handled = 0
        if time.monotonic() >= self._next_claim_at:
            handled += self.claim_idle(stop_event)
            # A claim pass that stopped early resumes at once. Otherwise no entry can become
            # claimable much sooner than claim_idle_ms after the previous pass.
            if self._claim_cursor == "0-0":
                self._next_claim_at = time.monotonic() + self.claim_idle_ms / 2000

        if stop_event is not None and stop_event.is_set():
            return handled

        response = self.client.xreadgroup(
            self.group,
            self.consumer_name,
            {self.stream: ">"},
            count=self.batch_size,
            block=self.block_ms,
        )
        for entry in _entries_of(response):
            self.handle(entry)
            handled += 1
        return handled

    def process_own_pending(self) -> int:
        """Handle entries delivered to this consumer name before a restart and never acknowledged.

        Only consumers with a stable name (for example a StatefulSet pod name) find any. Returns
        the number of entries handled.
        """
        handled = 0
        last_id = "0-0"
        for _ in range(CLAIM_MAX_PAGES):
            response = self.client.xreadgroup(
                self.group, self.consumer_name, {self.stream: last_id}, count=self.batch_size
            )
            entries = _entries_of(response)
            if not entries:
                break

            self._handle_redelivered(entries)
            handled += len(entries)
            last_id = entries[-1].entry_id
        return handled

    def claim_idle(self, stop_event: threading.Event | None = None) -> int:
        """Claim and handle entries idle for `claim_idle_ms` in any consumer.

        Scans at most `CLAIM_MAX_PAGES` pages of the pending list, and the next call resumes where
        this one stopped. Returns the number of entries handled.
        """
        handled = 0
        for _ in range(CLAIM_MAX_PAGES):
            if stop_event is not None and stop_event.is_set():
                break

            reply = self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer_name,
                min_idle_time=self.claim_idle_ms,
                start_id=self._claim_cursor,
                count=self.batch_size,
            )
            cursor, entries = _text(reply[0]), _entries_of([[self.stream, reply[1]]])
            deleted = [_text(entry_id) for entry_id in reply[2]] if len(reply) > 2 else []
            if deleted:
                # Redis 7 drops pending entries that were deleted from the stream during XAUTOCLAIM.
                logger.warning(
                    "intake entries %s were deleted from the stream while pending, so they are lost",
                    ", ".join(deleted),
                )
            if entries:
                logger.info(
                    "intake consumer %s claimed %d idle entries: %s",
                    self.consumer_name,
                    len(entries),
                    ", ".join(entry.entry_id for entry in entries),
                )
                self._handle_redelivered(entries)
                handled += len(entries)

            self._claim_cursor = cursor
            if cursor == "0-0":
                break
        return handled

    # -- one entry --------------------------------------------------------------------------

    def handle(self, entry: Entry) -> str:
        """Store or reject one entry and acknowledge it.

        Returns ``"stored"``, ``"duplicate"`` (the campaign already existed), ``"rejected"``,
        ``"deleted"`` (the entry was trimmed or deleted before it was handled) or ``"pending"``
        (an unexpected error, so the entry stays pending and is tried again after
        `claim_idle_ms`).

        Raises:
            redis.RedisError: rejecting the entry failed, so it stays pending.
        """
        if entry.fields is None:
            self._ack(entry.entry_id)
            logger.warning("intake entry %s was deleted before it was handled", entry.entry_id)
            return "deleted"

        campaign_id = ""
        try:
            text, campaign_id = self._document_text(entry)
            if entry.deliveries > self.max_deliveries:
                raise InvalidEntryError(
                    f"entry was delivered {entry.deliveries} times without being stored "
                    f"(limit {self.max_deliveries}). The intake consumers' logs show why",
                    reason=REASON_UNDELIVERABLE,
                )
            outcome = self.submit_fn(text)
        except InvalidEntryError as exc:
            self.reject(
                entry, str(exc), reason=exc.reason, errors=exc.errors, campaign_id=campaign_id
            )
            return "rejected"
        except tuple(self.rejected_errors) as exc:
            self.reject(
                entry,
                str(exc),
                reason=self._rejection_reason(exc),
                errors=_field_errors(exc),
                campaign_id=campaign_id,
            )
            return "rejected"
        except Exception:
            logger.exception(
                "intake entry %s (campaign %s) failed, so it stays pending and is retried after %d ms",
                entry.entry_id,
                campaign_id or "-",
                self.claim_idle_ms,
            )
            return "pending"

        if not self._ack(entry.entry_id):
            return "pending"

        if outcome.created:
            logger.info(
                "intake entry %s stored as campaign %s with %d targets",
                entry.entry_id,
                outcome.campaign_id,
                outcome.targets,
            )
            return "stored"

        logger.info(
            "intake entry %s repeats campaign %s, which is already stored",
            entry.entry_id,
            outcome.campaign_id,
        )
        return "duplicate"

    def reject(
        self,
        entry: Entry,
        error: str,
        *,
        reason: str = REASON_INVALID,
        errors: list[dict[str, str]] | None = None,
        campaign_id: str = "",
    ) -> None:
        """Acknowledge an entry, copy it to the rejected stream and publish ``campaign.rejected``.

        The three writes run in one ``MULTI`` transaction, so either all happen or none (then the
        entry stays pending and is tried again).

        Raises:
            redis.RedisError: the transaction failed.
        """
        error = _truncate_text(error, ERROR_MAX_CHARS)
        copy = _rejected_copy(entry.fields or {})
        copy.update(
            {
                "entry_id": entry.entry_id,
                "error": error,
                "reason": reason,
                "campaign_id": campaign_id,
                "consumer": self.consumer_name,
            }
        )
        data: dict[str, Any] = {"entry_id": entry.entry_id, "reason": reason, "error": error}
        if errors:
            data["errors"] = errors

        with self.client.pipeline(transaction=True) as pipeline:
            pipeline.xack(self.stream, self.group, entry.entry_id)
            pipeline.xadd(
                self.rejected_stream,
                copy,  # type: ignore[arg-type]
                maxlen=self.rejected_max_length,
                approximate=True,
            )
            self.events.publish(CAMPAIGN_REJECTED, campaign_id, data, pipeline=pipeline)
            pipeline.execute()

        logger.warning(
            "intake entry %s rejected (campaign %s, reason %s): %s",
            entry.entry_id,
            campaign_id or "-",
            reason,
            error,
        )

    # -- helpers ----------------------------------------------------------------------------

    def _document_text(self, entry: Entry) -> tuple[str, str]:
        """Return the JSON text for the submit function and the document's own campaign ID."""
        fields = entry.fields or {}
        raw = fields.get(CAMPAIGN_FIELD)
        if raw is None:
            raise InvalidEntryError(
                f"entry has no {CAMPAIGN_FIELD!r} field. Add the campaign document as JSON "
                f"in a field named {CAMPAIGN_FIELD!r}"
            )

        size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
        if size > self.max_entry_bytes:
            raise InvalidEntryError(
                f"{CAMPAIGN_FIELD!r} field is {size} bytes, larger than the limit of "
                f"{self.max_entry_bytes} bytes. Split the campaign or use cluster selectors",
                reason=REASON_TOO_LARGE,
            )

        text = _decode_utf8(raw)
        document = _parse_object(text)
        metadata = document.get("metadata")
        given_id = metadata.get("id") if isinstance(metadata, dict) else None
        if isinstance(given_id, str) and given_id:
            return text, given_id

        # A generated ID that depends only on the entry makes a redelivered entry idempotent.
        if metadata is None:
            metadata = document["metadata"] = {}
        if isinstance(metadata, dict) and given_id is None:
            metadata["id"] = GENERATED_ID_PREFIX + entry.entry_id
            return json.dumps(document, ensure_ascii=False, separators=(",", ":")), ""
        return text, ""

    def _rejection_reason(self, exc: Exception) -> str:
        for error_type, reason in self.rejected_errors.items():
            if isinstance(exc, error_type):
                return reason
        return REASON_INVALID

    def _handle_redelivered(self, entries: list[Entry]) -> None:
        deliveries = self._delivery_counts([entry.entry_id for entry in entries])
        for entry in entries:
            counted = Entry(entry.entry_id, entry.fields, deliveries.get(entry.entry_id, 1))
            self.handle(counted)

    def _delivery_counts(self, entry_ids: Sequence[str]) -> dict[str, int]:
        with self.client.pipeline(transaction=False) as pipeline:
            for entry_id in entry_ids:
                pipeline.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
            replies = pipeline.execute()

        counts: dict[str, int] = {}
        for entry_id, reply in zip(entry_ids, replies, strict=True):
            if reply:
                counts[entry_id] = int(reply[0]["times_delivered"])
        return counts

    def _ack(self, entry_id: str) -> bool:
        try:
            self.client.xack(self.stream, self.group, entry_id)
        except redis.RedisError as exc:
            # The campaign is stored: a later delivery finds it and only acknowledges.
            logger.warning(
                "intake entry %s handled but not acknowledged (%s), so it will be delivered again",
                entry_id,
                exc,
            )
            return False
        return True

    def _leave_group(self) -> None:
        """Delete this consumer from the group when it owns no pending entry."""
        try:
            pending = self.client.xpending_range(
                self.stream, self.group, "-", "+", 1, consumername=self.consumer_name
            )
            if not pending:
                self.client.xgroup_delconsumer(self.stream, self.group, self.consumer_name)
        except redis.RedisError as exc:
            logger.warning(
                "intake consumer %s could not leave its group: %s", self.consumer_name, exc
            )


# -- entry parsing ----------------------------------------------------------------------------


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _entries_of(response: Any) -> list[Entry]:
    """Flatten an XREADGROUP reply (RESP2 list or RESP3 dict) into entries."""
    if not response:
        return []

    streams = response.items() if isinstance(response, dict) else response
    entries: list[Entry] = []
    for _stream, messages in streams:
        for entry_id, fields in messages:
            decoded = None if fields is None else {_text(k): v for k, v in fields.items()}
            entries.append(Entry(_text(entry_id), decoded))
    return entries


def _decode_utf8(raw: str | bytes) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEntryError(
            f"{CAMPAIGN_FIELD!r} field is not valid UTF-8 (byte {exc.start}). "
            "Send the document as UTF-8 JSON"
        ) from None


def _parse_object(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidEntryError(
            f"{CAMPAIGN_FIELD!r} field is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidEntryError(f"{CAMPAIGN_FIELD!r} field is nested too deeply") from None

    if not isinstance(document, dict):
        raise InvalidEntryError(
            f"{CAMPAIGN_FIELD!r} field must be a JSON object (a campaign document), "
            f"not {type(document).__name__}"
        )
    return document


def _field_errors(exc: Exception) -> list[dict[str, str]]:
    """Return ``DocumentError.errors`` as plain dicts (empty for other exceptions)."""
    errors: list[dict[str, str]] = []
    for error in getattr(exc, "errors", None) or []:
        path, message = getattr(error, "path", None), getattr(error, "message", None)
        if path is not None and message is not None:
            errors.append({"path": str(path), "message": _truncate_text(str(message), 500)})
    return errors[:100]


# -- rejected copies --------------------------------------------------------------------------


def _rejected_copy(fields: Mapping[str, str | bytes]) -> dict[str, str]:
    """Copy entry fields as text, with passwords redacted and each value cut to a bounded size."""
    copy: dict[str, str] = {}
    for name, raw in fields.items():
        text = _text(raw)
        size = len(text.encode())
        cut = _truncate_bytes(text, REJECTED_COPY_MAX_BYTES)
        if name == CAMPAIGN_FIELD:
            # A cut document no longer parses, so only the pattern redacts it.
            cut = _truncate_bytes(redact_passwords(cut), REJECTED_COPY_MAX_BYTES)

        copy[name] = cut
        if size > REJECTED_COPY_MAX_BYTES:
            copy[f"{name}_truncated_from_bytes"] = str(size)
    return copy


def redact_passwords(text: str) -> str:
    """Replace the value of every key containing "password" in JSON text with ``<redacted>``.

    Valid JSON is rewritten key by key. Text that does not parse (including a truncated document)
    is redacted by pattern, which covers string values of such keys.
    """
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return _PASSWORD_TEXT.sub(lambda match: f'{match.group(1)}"{REDACTED}"', text)

    return json.dumps(_redact(document), ensure_ascii=False, separators=(",", ":"))


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        redacted: dict[str, Any] = {}
        for key, item in value.items():
            secret = _PASSWORD_KEY.search(str(key)) and not isinstance(item, dict | list)
            redacted[key] = REDACTED if secret else _redact(item)
        return redacted
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


def _truncate_text(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _truncate_bytes(text: str, max_bytes: int) -> str:
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


# -- command line -----------------------------------------------------------------------------


def default_consumer_name() -> str:
    """Return ``<hostname>-<pid>``, unique among the processes that run at the same time."""
    return f"{socket.gethostname()}-{os.getpid()}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``cce-sync intake`` to `parser`."""
    parser.add_argument(
        "--consumer-name",
        default=None,
        help="name of this consumer in the group (default: <hostname>-<pid>)",
    )
    parser.add_argument(
        "--claim-idle-ms",
        type=int,
        default=DEFAULT_CLAIM_IDLE_MS,
        help="milliseconds an entry stays pending in another consumer before it is claimed "
        f"(default: {DEFAULT_CLAIM_IDLE_MS})",
    )
    parser.add_argument(
        "--block-ms",
        type=int,
        default=DEFAULT_BLOCK_MS,
        help=f"milliseconds one read waits for new entries (default: {DEFAULT_BLOCK_MS})",
    )


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run ``cce-sync intake`` until SIGTERM or SIGINT, and return the exit status.

    `args` is the namespace parsed by the ``cce-sync`` command, or a list of arguments. Options
    missing from a namespace take their defaults.
    """
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(
            prog="cce-sync intake",
            description="Consume campaign documents from the cce-sync:intake Redis stream.",
        )
        add_arguments(parser)
        args = parser.parse_args(args)

    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )

    from producers.submit import submit
    from worker.broker import redis_client
    from worker.settings import get_settings

    settings = get_settings()
    block_ms = getattr(args, "block_ms", DEFAULT_BLOCK_MS)
    if not 0 < block_ms < settings.redis_socket_timeout_seconds * 1000:
        logger.error(
            "invalid --block-ms %d: it must be positive and below the Redis socket timeout of "
            "%d ms (CCE_SYNC_REDIS_SOCKET_TIMEOUT_SECONDS)",
            block_ms,
            settings.redis_socket_timeout_seconds * 1000,
        )
        return 2

    try:
        consumer = IntakeConsumer(
            redis_client(settings, decode_responses=False),
            submit_fn=functools.partial(submit, client=redis_client(settings), settings=settings),
            consumer_name=getattr(args, "consumer_name", None) or default_consumer_name(),
            claim_idle_ms=getattr(args, "claim_idle_ms", DEFAULT_CLAIM_IDLE_MS),
            block_ms=block_ms,
            events=Events(redis_client(settings), max_length=settings.events_max_length),
        )
    except ValueError as exc:
        logger.error("invalid intake option: %s", exc)
        return 2

    stop_event = threading.Event()
    previous = _install_stop_handlers(stop_event)
    try:
        consumer.run(stop_event)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _install_stop_handlers(stop_event: threading.Event) -> dict[int, Any]:
    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s, stopping after the current entry", signal.Signals(signum).name)
        stop_event.set()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, request_stop)
    return previous


def run_forked() -> None:
    """Run the intake inside `cce-sync worker --intake` (a dramatiq fork function)."""
    from worker.broker import exit_with_parent

    exit_with_parent()
    main([])
