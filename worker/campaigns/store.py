"""The Redis store of campaigns and targets, with atomic state transitions.

Layout (every key prefixed ``cce-sync:``):

    campaigns                     ZSET  campaign ID -> creation time (s)
    outbox                        ZSET  campaign ID -> creation time, until its targets are enqueued
    campaign:{id}                 HASH  id, name, state, reason, digest, document, created_at,
                                        expanded, dry_run, target_total, finished_at
    campaign:{id}:specs           HASH  target key -> JSON location and sync template (immutable)
    campaign:{id}:targets         HASH  target key -> JSON state record (changed only by Lua)
    campaign:{id}:counts          HASH  target state -> number of targets
    campaign:{id}:waiting         ZSET  target key -> time it found the in-flight cap reached
    campaign:{id}:seen            HASH  target key -> time a message last claimed or checked it
    poollock:{target key}         STRING "{campaign id}|{target key}" with a TTL

A target's state changes only inside the Lua scripts `claim.lua` and `transition.lua`. They also
keep the counts, the pool lock, the waiting set and the events stream in step with the state, so
no crash between two Redis calls can leave a count or an event behind. Stored documents carry no secret in clear: the
producer encrypts inline node passwords before calling `create()`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final, cast

import redis

from worker import events as event_types

PREFIX: Final = "cce-sync:"
CAMPAIGNS_KEY: Final = PREFIX + "campaigns"
OUTBOX_KEY: Final = PREFIX + "outbox"

TARGET_STATES: Final = (
    "pending",
    "submitting",
    "accepted",
    "synced",
    "sync_failed",
    "failed",
    "skipped",
)
TERMINAL_STATES: Final = frozenset({"synced", "sync_failed", "failed", "skipped"})
CAMPAIGN_STATES: Final = ("pending", "running", "paused", "finished", "cancelled")
ACTIVE_CAMPAIGN_STATES: Final = frozenset({"pending", "running", "paused"})


class StoreError(Exception):
    """Root of the store's errors."""


class CampaignConflict(StoreError):
    """A campaign with this ID exists with other content.

    Attributes:
        campaign_id: The ID that is already taken.
    """

    def __init__(self, campaign_id: str) -> None:
        super().__init__(
            f"campaign {campaign_id!r} already exists with different content; "
            "give the new document another metadata.id"
        )
        self.campaign_id = campaign_id


class CampaignNotFound(StoreError):
    """No campaign has this ID."""

    def __init__(self, campaign_id: str) -> None:
        super().__init__(f"campaign {campaign_id!r} not found; `cce-sync status` lists campaigns")
        self.campaign_id = campaign_id


class InvalidStateChange(StoreError):
    """An operator control does not apply to the campaign's current state."""


def campaign_key(campaign_id: str) -> str:
    return f"{PREFIX}campaign:{campaign_id}"


def pool_lock_key(target_key: str) -> str:
    return f"{PREFIX}poollock:{target_key}"


def target_key(region: str, project_id: str, cluster_id: str, nodepool_id: str) -> str:
    """Return the key that names one node pool in one campaign."""
    return f"{region}/{project_id}/{cluster_id}/{nodepool_id}"


@dataclass(frozen=True)
class CreateResult:
    campaign_id: str
    targets: int
    created: bool


@dataclass(frozen=True)
class Campaign:
    id: str
    name: str
    state: str
    reason: str
    created_at: float
    finished_at: float | None
    dry_run: bool
    expanded: bool
    target_total: int
    counts: dict[str, int]
    document: dict[str, Any]

    @property
    def policy(self) -> dict[str, Any]:
        """The document's `spec.policy` (empty when absent)."""
        spec = self.document.get("spec") or {}
        policy = spec.get("policy") or {}
        return dict(policy)


@dataclass(frozen=True)
class TargetRecord:
    key: str
    region: str
    project_id: str
    cluster_id: str
    nodepool_id: str
    node_ids: list[str] | None
    sync: dict[str, Any]
    state: str
    reason: str
    attempts: int
    job_id: str
    baseline_job_id: str
    token: str
    lease_until: float
    due_at: float
    first_attempt_at: float
    accepted_at: float
    unknown_since: float
    posted_at: float
    read_failures: int
    updated_at: float

    def public(self) -> dict[str, Any]:
        """Return the row that `status --json` and `export` show (no sync template)."""
        return {
            "region": self.region,
            "projectId": self.project_id,
            "clusterId": self.cluster_id,
            "nodePoolId": self.nodepool_id,
            "state": self.state,
            "reason": self.reason or None,
            "attempts": self.attempts,
            "jobId": self.job_id or None,
        }


@dataclass(frozen=True)
class ClaimResult:
    """Outcome of `CampaignStore.claim()`; see claim.lua for the verdicts."""

    verdict: str
    detail: str
    attempts: int
    token: str

    @property
    def wait_seconds(self) -> float | None:
        try:
            return float(self.detail)
        except ValueError:
            return None


@dataclass(frozen=True)
class TransitionResult:
    """Outcome of `CampaignStore.transition()`.

    `woken` is the key of a target that waited for the in-flight cap and should be enqueued now,
    because this change freed a place (empty when none waits).
    """

    applied: bool
    state: str
    campaign_finished: bool
    woken: str = ""


@dataclass(frozen=True)
class ClaimLimits:
    """Per-campaign limits that `claim()` enforces, from the campaign's policy."""

    max_in_flight: int = 0
    max_attempts: int = 8
    max_age_seconds: float = 0.0
    not_after: float = 0.0
    max_failures: int = -1
    max_failure_ratio: float = -1.0
    track_completion: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _new_state_record(key: str, now: float) -> str:
    record = {
        "key": key,
        "state": "pending",
        "reason": "",
        "attempts": 0,
        "jobId": "",
        "baselineJobId": "",
        "token": "",
        "leaseUntil": 0,
        "dueAt": 0,
        "firstAttemptAt": 0,
        "acceptedAt": 0,
        "unknownSince": 0,
        "postedAt": 0,
        "updatedAt": now,
    }
    return json.dumps(record, separators=(",", ":"))


def _spec_entry(target: Mapping[str, Any]) -> tuple[str, str]:
    key = target_key(
        target["region"], target["projectId"], target["clusterId"], target["nodePoolId"]
    )
    entry = {
        "region": target["region"],
        "projectId": target["projectId"],
        "clusterId": target["clusterId"],
        "nodePoolId": target["nodePoolId"],
        "nodeIDs": target.get("nodeIDs"),
        "sync": target.get("sync") or {},
    }
    return key, json.dumps(entry, separators=(",", ":"), sort_keys=True)


_ADD_TARGETS_LUA = """
local added = 0
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2])
    added = added + 1
  end
end
redis.call('HINCRBY', KEYS[1], 'target_total', added)
redis.call('HINCRBY', KEYS[4], 'pending', added)
return added
"""


class CampaignStore:
    """Campaigns and their targets in Redis.

    Args:
        client: Redis client with ``decode_responses=True`` (see `worker.broker.redis_client`).
        events_max_length: Approximate length the events stream is trimmed to.
        clock: Wall clock in seconds; state records store its values.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        events_max_length: int = event_types.DEFAULT_MAX_LENGTH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.events_max_length = events_max_length
        self.clock = clock
        package = resources.files("worker.campaigns")
        self._claim = client.register_script((package / "claim.lua").read_text())
        self._transition = client.register_script((package / "transition.lua").read_text())
        self._add_targets = client.register_script(_ADD_TARGETS_LUA)

    # -- typed reads (the client decodes responses to str) ---------------------------------

    def _hgetall(self, key: str) -> dict[str, str]:
        return cast(dict[str, str], self.client.hgetall(key))

    # -- keys -------------------------------------------------------------------------------

    def _keys(self, campaign_id: str, key: str = "") -> list[str]:
        base = campaign_key(campaign_id)
        return [
            base,
            base + ":targets",
            base + ":counts",
            pool_lock_key(key),
            event_types.EVENTS_STREAM,
            base + ":waiting",
            base + ":seen",
        ]

    # -- creation ---------------------------------------------------------------------------

    def create(
        self,
        campaign_id: str,
        *,
        name: str,
        digest: str,
        document: Mapping[str, Any],
        targets: Iterable[Mapping[str, Any]],
        rules_pending: bool,
        dry_run: bool = False,
    ) -> CreateResult:
        """Store a campaign, its explicit targets and a `campaign.accepted` event atomically.

        Args:
            campaign_id: `metadata.id`, or a generated ID.
            digest: Content hash of the document; decides whether a repeated ID is the same
                campaign.
            document: Stored form of the document (no secret in clear).
            targets: Dicts with region, projectId, clusterId, nodePoolId, nodeIDs, sync.
            rules_pending: True when selectors or ``"*"`` pools still need resolving by listing.

        Returns:
            `created=False` when a campaign with this ID and digest already exists.

        Raises:
            CampaignConflict: the ID exists with another digest.
        """
        key = campaign_key(campaign_id)
        entries = dict(_spec_entry(target) for target in targets)
        now = self.clock()

        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    existing = pipe.hget(key, "digest")
                    if existing is not None:
                        total = int(cast(str, pipe.hget(key, "target_total")) or 0)
                        pipe.unwatch()
                        if existing != digest:
                            raise CampaignConflict(campaign_id)
                        return CreateResult(campaign_id, total, created=False)

                    pipe.multi()
                    self._queue_create(
                        pipe,
                        campaign_id,
                        name,
                        digest,
                        document,
                        entries,
                        rules_pending,
                        dry_run,
                        now,
                    )
                    pipe.execute()
                    return CreateResult(campaign_id, len(entries), created=True)
                except redis.WatchError:
                    continue

    def _queue_create(
        self,
        pipe: redis.client.Pipeline,
        campaign_id: str,
        name: str,
        digest: str,
        document: Mapping[str, Any],
        entries: Mapping[str, str],
        rules_pending: bool,
        dry_run: bool,
        now: float,
    ) -> None:
        key = campaign_key(campaign_id)
        pipe.hset(
            key,
            mapping={
                "id": campaign_id,
                "name": name,
                "state": "running",
                "reason": "",
                "digest": digest,
                "document": json.dumps(document, separators=(",", ":"), sort_keys=True),
                "created_at": repr(now),
                "expanded": "0" if rules_pending else "1",
                "dry_run": "1" if dry_run else "0",
                "target_total": len(entries),
            },
        )
        if entries:
            pipe.hset(key + ":specs", mapping=dict(entries))  # type: ignore[arg-type]
            pipe.hset(
                key + ":targets",
                mapping={target: _new_state_record(target, now) for target in entries},
            )
            pipe.hset(key + ":counts", "pending", len(entries))
        pipe.zadd(CAMPAIGNS_KEY, {campaign_id: now})
        pipe.zadd(OUTBOX_KEY, {campaign_id: now})
        event_data = {"name": name, "targets": len(entries), "dryRun": dry_run}
        pipe.xadd(
            event_types.EVENTS_STREAM,
            {
                "type": event_types.CAMPAIGN_ACCEPTED,
                "campaign_id": campaign_id,
                "data": json.dumps(event_data, separators=(",", ":"), sort_keys=True),
            },
            maxlen=self.events_max_length,
            approximate=True,
        )

    def add_targets(self, campaign_id: str, targets: Iterable[Mapping[str, Any]]) -> int:
        """Add targets found by expansion; return how many were new (existing keys are kept)."""
        now = self.clock()
        args: list[str] = []
        for target in targets:
            key, spec = _spec_entry(target)
            args.extend([key, spec, _new_state_record(key, now)])
        if not args:
            return 0

        base = campaign_key(campaign_id)
        keys = [base, base + ":specs", base + ":targets", base + ":counts"]
        return int(self._add_targets(keys=keys, args=args))

    def mark_expanded(self, campaign_id: str) -> bool:
        """Mark the campaign's target list complete; return True if that finished it."""
        key = campaign_key(campaign_id)
        self.client.hset(key, "expanded", "1")
        return self._finish_if_done(campaign_id)

    def remove_from_outbox(self, campaign_id: str) -> None:
        self.client.zrem(OUTBOX_KEY, campaign_id)

    def outbox_older_than(self, age_seconds: float) -> list[str]:
        """Return campaigns stored at least `age_seconds` ago whose targets may not be enqueued."""
        cutoff = self.clock() - age_seconds
        return cast(list[str], self.client.zrangebyscore(OUTBOX_KEY, "-inf", cutoff))

    # -- reading ----------------------------------------------------------------------------

    def get(self, campaign_id: str) -> Campaign | None:
        """Return the campaign, or None when there is none with that ID."""
        fields = self._hgetall(campaign_key(campaign_id))
        if not fields:
            return None

        return Campaign(
            id=fields["id"],
            name=fields.get("name", ""),
            state=fields.get("state", ""),
            reason=fields.get("reason", ""),
            created_at=float(fields.get("created_at", 0)),
            finished_at=float(fields["finished_at"]) if fields.get("finished_at") else None,
            dry_run=fields.get("dry_run") == "1",
            expanded=fields.get("expanded") == "1",
            target_total=int(fields.get("target_total", 0)),
            counts=self.counts(campaign_id),
            document=json.loads(fields.get("document") or "{}"),
        )

    def require(self, campaign_id: str) -> Campaign:
        """Return the campaign or raise `CampaignNotFound`."""
        campaign = self.get(campaign_id)
        if campaign is None:
            raise CampaignNotFound(campaign_id)
        return campaign

    def list_campaigns(self) -> list[Campaign]:
        """Return every stored campaign, oldest first."""
        campaigns = []
        for campaign_id in cast(list[str], self.client.zrange(CAMPAIGNS_KEY, 0, -1)):
            campaign = self.get(campaign_id)
            if campaign is not None:
                campaigns.append(campaign)
        return campaigns

    def counts(self, campaign_id: str) -> dict[str, int]:
        """Return the number of targets in each state (every state present, zeros included)."""
        raw = self._hgetall(campaign_key(campaign_id) + ":counts")
        return {state: int(raw.get(state, 0)) for state in TARGET_STATES}

    def target(self, campaign_id: str, key: str) -> TargetRecord | None:
        base = campaign_key(campaign_id)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(base + ":specs", key)
            pipe.hget(base + ":targets", key)
            spec, state = pipe.execute()
        if spec is None or state is None:
            return None
        return _record(str(spec), str(state))

    def targets(self, campaign_id: str) -> list[TargetRecord]:
        """Return every target of the campaign, sorted by key."""
        base = campaign_key(campaign_id)
        specs = self._hgetall(base + ":specs")
        states = self._hgetall(base + ":targets")
        return [_record(specs[key], states[key]) for key in sorted(specs) if key in states]

    def waiting_keys(self, campaign_id: str) -> set[str]:
        """Return the targets waiting for a place under the campaign's in-flight cap."""
        return set(
            cast(list[str], self.client.zrange(campaign_key(campaign_id) + ":waiting", 0, -1))
        )

    def seen_times(self, campaign_id: str) -> dict[str, float]:
        """Return when a message last claimed or checked each target, in seconds."""
        raw = self._hgetall(campaign_key(campaign_id) + ":seen")
        return {key: float(value) for key, value in raw.items()}

    def target_keys(self, campaign_id: str, states: Iterable[str] | None = None) -> list[str]:
        """Return the keys of the campaign's targets, optionally only those in `states`."""
        wanted = set(states) if states is not None else None
        keys = []
        for key, raw in self._hgetall(campaign_key(campaign_id) + ":targets").items():
            if wanted is None or json.loads(raw)["state"] in wanted:
                keys.append(key)
        return sorted(keys)

    # -- transitions ------------------------------------------------------------------------

    def claim(
        self,
        campaign_id: str,
        key: str,
        *,
        lease_seconds: float,
        limits: ClaimLimits,
        lock_ttl_seconds: int,
    ) -> ClaimResult:
        """Claim a pending target for one attempt (or take over a `submitting` one whose lease ran out).

        Enforces, in one atomic step: campaign state, window end, error budget, retry delay,
        `maxAttempts`, `maxAge`, `maxInFlight` and the pool lock shared by all campaigns.
        """
        token = uuid.uuid4().hex
        args: list[str | int | float] = [
            key,
            repr(self.clock()),
            token,
            repr(lease_seconds),
            limits.max_in_flight,
            limits.max_attempts,
            repr(limits.max_age_seconds),
            lock_ttl_seconds,
            repr(limits.not_after),
            limits.max_failures,
            repr(limits.max_failure_ratio),
            self.events_max_length,
            "1" if limits.track_completion else "0",
        ]
        verdict, detail, attempts = self._claim(keys=self._keys(campaign_id, key), args=args)
        return ClaimResult(str(verdict), str(detail), int(attempts), token)

    def transition(
        self,
        campaign_id: str,
        key: str,
        *,
        expected: Iterable[str],
        new_state: str,
        token: str = "",
        fields: Mapping[str, Any] | None = None,
        event: str = "",
        event_data: Mapping[str, Any] | None = None,
        track_completion: bool = True,
        lock: str = "keep",
        lock_ttl_seconds: int = 3600,
    ) -> TransitionResult:
        """Change a target's state if it is in `expected` (and owned by `token` when given).

        Also updates the counts, the pool lock (``lock``: "release", "refresh" or "keep"), emits
        `event` and finishes the campaign when its last target ends, all atomically.
        """
        args: list[str | int | float] = [
            key,
            repr(self.clock()),
            token,
            ",".join(expected),
            new_state,
            json.dumps(dict(fields or {})),
            event,
            json.dumps({"target": key, **dict(event_data or {})}, sort_keys=True),
            self.events_max_length,
            "1" if track_completion else "0",
            lock,
            lock_ttl_seconds,
        ]
        applied, state, finished, woken = self._transition(
            keys=self._keys(campaign_id, key), args=args
        )
        return TransitionResult(bool(int(applied)), str(state), bool(int(finished)), str(woken))

    def _finish_if_done(self, campaign_id: str) -> bool:
        campaign = self.get(campaign_id)
        if campaign is None or campaign.state in ("finished", "cancelled") or not campaign.expanded:
            return False
        track = bool(campaign.policy.get("trackCompletion", True))
        ended = sum(campaign.counts[state] for state in TERMINAL_STATES)
        if not track:
            ended += campaign.counts["accepted"]
        if ended < campaign.target_total:
            return False

        key = campaign_key(campaign_id)
        with self.client.pipeline() as pipe:
            pipe.hset(key, mapping={"state": "finished", "finished_at": repr(self.clock())})
            pipe.xadd(
                event_types.EVENTS_STREAM,
                {
                    "type": event_types.CAMPAIGN_FINISHED,
                    "campaign_id": campaign_id,
                    "data": '{"state":"finished"}',
                },
                maxlen=self.events_max_length,
                approximate=True,
            )
            pipe.execute()
        return True

    # -- operator controls ------------------------------------------------------------------

    def pause(self, campaign_id: str, reason: str = "operator") -> bool:
        """Pause a running or pending campaign; return False if it was already paused.

        Raises:
            CampaignNotFound, InvalidStateChange: unknown ID, or a finished/cancelled campaign.
        """
        return self._set_state(
            campaign_id, "paused", reason, allowed=("running", "pending", "paused")
        )

    def resume(self, campaign_id: str) -> bool:
        """Resume a paused campaign; return False if it was not paused."""
        return self._set_state(campaign_id, "running", "", allowed=("paused", "running"))

    def hold_for_window(self, campaign_id: str) -> bool:
        """Mark a running campaign `pending` until its window opens."""
        return self._set_state(campaign_id, "pending", "window", allowed=("running", "pending"))

    def open_window(self, campaign_id: str) -> bool:
        """Mark a campaign held for its window `running`."""
        return self._set_state(campaign_id, "running", "", allowed=("pending", "running"))

    def cancel(self, campaign_id: str) -> bool:
        """Cancel a campaign: targets not yet submitted end `skipped` with reason `cancelled`."""
        changed = self._set_state(
            campaign_id,
            "cancelled",
            "operator",
            allowed=("running", "pending", "paused", "cancelled"),
        )
        return changed

    def _set_state(
        self, campaign_id: str, state: str, reason: str, *, allowed: tuple[str, ...]
    ) -> bool:
        key = campaign_key(campaign_id)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    current = cast(str | None, pipe.hget(key, "state"))
                    if current is None:
                        raise CampaignNotFound(campaign_id)
                    if current not in allowed:
                        raise InvalidStateChange(
                            f"campaign {campaign_id!r} is {current}; cannot change it to {state}"
                        )
                    if current == state:
                        pipe.unwatch()
                        return False

                    pipe.multi()
                    pipe.hset(key, mapping={"state": state, "reason": reason})
                    if state == "paused":
                        pipe.xadd(
                            event_types.EVENTS_STREAM,
                            {
                                "type": event_types.CAMPAIGN_PAUSED,
                                "campaign_id": campaign_id,
                                "data": json.dumps({"reason": reason}),
                            },
                            maxlen=self.events_max_length,
                            approximate=True,
                        )
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue


def _record(spec_raw: str, state_raw: str) -> TargetRecord:
    spec = json.loads(spec_raw)
    state = json.loads(state_raw)
    node_ids = spec.get("nodeIDs")
    return TargetRecord(
        key=state["key"],
        region=spec["region"],
        project_id=spec["projectId"],
        cluster_id=spec["clusterId"],
        nodepool_id=spec["nodePoolId"],
        node_ids=list(node_ids) if isinstance(node_ids, list) and node_ids else None,
        sync=spec.get("sync") or {},
        state=state["state"],
        reason=state.get("reason") or "",
        attempts=int(state.get("attempts") or 0),
        job_id=str(state.get("jobId") or ""),
        baseline_job_id=str(state.get("baselineJobId") or ""),
        token=str(state.get("token") or ""),
        lease_until=float(state.get("leaseUntil") or 0),
        due_at=float(state.get("dueAt") or 0),
        first_attempt_at=float(state.get("firstAttemptAt") or 0),
        accepted_at=float(state.get("acceptedAt") or 0),
        unknown_since=float(state.get("unknownSince") or 0),
        posted_at=float(state.get("postedAt") or 0),
        read_failures=int(state.get("readFailures") or 0),
        updated_at=float(state.get("updatedAt") or 0),
    )
