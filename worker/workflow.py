"""The life of one campaign target: claim, rate limit, submit, reconcile and track.

`Workflow` contains the logic that the dramatiq actors in `worker.actors` call. It keeps no state of
its own: every decision reads and writes Redis through `CampaignStore`, so any number of worker
processes share a campaign. Waiting (rate limit, retry delay, in-flight cap, pool lock, completion
polling) never sleeps a worker thread for long: the message is sent again with a delay.

At-most-once submission rests on three rules:

1. A target is POSTed only by the holder of its claim token, and only after the store recorded
   `postedAt` and the pool's job ID as seen just before (the baseline).
2. A target left `submitting` (worker killed, read timeout, connection dropped after sending) is
   reconciled before any resend: a pool job ID other than the baseline means CCE accepted it.
3. Only when the pool shows no new job for `settle_seconds` after the POST is the target resent.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from worker import events, metrics
from worker.campaigns.store import (
    Campaign,
    CampaignStore,
    ClaimLimits,
    ClaimResult,
    StoreError,
    TargetRecord,
    TransitionResult,
)
from worker.cce.errors import ApiError, CceError, OutcomeUnknownError
from worker.cce.models import JobStatus, NodePoolStatus, SyncResult, UpgradeNodePoolSpec
from worker.ratelimit import RateLimiter, read_bucket, write_bucket
from worker.retry import backoff_seconds, classify

logger = logging.getLogger(__name__)

#: Default `policy.retry.maxAttempts`.
DEFAULT_MAX_ATTEMPTS = 8
#: How long a target waits before checking again whether another campaign released its pool
#: lock, in seconds.
GATE_RECHECK_SECONDS = 30.0
#: Maximum sleep inside an actor for a reserved rate-limit slot, in seconds.
MAX_RATE_SLEEP_SECONDS = 0.5
#: Delay between two reconciliation checks of an unknown outcome, in seconds.
RECONCILE_RECHECK_SECONDS = 2.0
#: A pool lock outlives a lost worker by at most this long, in seconds.
POOL_LOCK_TTL_SECONDS = 6 * 3600
#: Failed baseline reads allowed per sync attempt before a target fails.
READ_FAILURES_PER_ATTEMPT = 3
#: How long a job may report no end before completion tracking gives up, in seconds.
TRACK_MAX_SECONDS = 24 * 3600


class CceApi(Protocol):
    """The CCE calls the workflow needs (implemented by `worker.cce.client.CceClient`)."""

    def sync_node_pool(
        self,
        *,
        region: str,
        project_id: str,
        cluster_id: str,
        nodepool_id: str,
        spec: UpgradeNodePoolSpec,
    ) -> SyncResult: ...

    def show_node_pool(
        self, *, region: str, project_id: str, cluster_id: str, nodepool_id: str
    ) -> NodePoolStatus: ...

    def show_job(self, *, region: str, project_id: str, job_id: str) -> JobStatus: ...


SpecBuilder = Callable[[TargetRecord], UpgradeNodePoolSpec]
"""Builds the request body of one target, resolving node password references."""


class TargetResolver(Protocol):
    """Lists the targets behind a campaign's selectors (dicts as `CampaignStore.create` takes)."""

    def __call__(self, campaign: Campaign, api: Any) -> list[dict[str, Any]]: ...


Enqueue = Callable[[str, str, float], None]
"""Send a message for (campaign ID, target key) after a delay in seconds."""


class TargetSpecError(Exception):
    """A target's request body cannot be built (password unavailable, invalid template).

    Attributes:
        reason: Failure reason recorded on the target.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class WorkflowConfig:
    """Timings of the workflow, all in seconds."""

    lease_seconds: float = 45.0
    settle_seconds: float = 15.0
    track_poll_seconds: float = 30.0
    retry_floor_seconds: float = 1.0
    retry_ceiling_seconds: float = 300.0
    throttle_retry_seconds: float = 1.0


def _parse_time(value: object) -> float:
    if value in (None, ""):
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """Return seconds from a number of seconds or a string such as ``90s``, ``30m``, ``2h``."""
    if value in (None, ""):
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text[-1:] in _DURATION_UNITS:
        return float(text[:-1]) * _DURATION_UNITS[text[-1]]
    return float(text)


def claim_limits(campaign: Campaign) -> ClaimLimits:
    """Translate a campaign's `spec.policy` into the limits that `claim()` enforces."""
    policy = campaign.policy
    retry = policy.get("retry") or {}
    budget = policy.get("errorBudget") or {}
    window = policy.get("window") or {}
    max_failures = budget.get("maxFailures")
    max_ratio = budget.get("maxFailureRatio")
    return ClaimLimits(
        max_in_flight=int(policy.get("maxInFlight") or 0),
        max_attempts=int(retry.get("maxAttempts") or DEFAULT_MAX_ATTEMPTS),
        max_age_seconds=parse_duration(retry.get("maxAge")),
        not_after=_parse_time(window.get("notAfter")),
        max_failures=-1 if max_failures is None else int(max_failures),
        max_failure_ratio=-1.0 if max_ratio is None else float(max_ratio),
        track_completion=bool(policy.get("trackCompletion", True)),
    )


def not_before(campaign: Campaign) -> float:
    """Return when the campaign's window opens (0 when it has no start)."""
    window = campaign.policy.get("window") or {}
    return _parse_time(window.get("notBefore"))


class Workflow:
    """Moves targets through their states.

    Args:
        store: Campaign store on the shared Redis.
        api: CCE client.
        limiter: Shared rate limiter.
        build_spec: Request body builder for a target.
        send_submit: Enqueues `submit_sync` after a delay.
        send_track: Enqueues `track_sync` after a delay.
        send_expand: Enqueues `expand_campaign` after a delay.
        endpoint_host: Host name of the CCE endpoint of a region (rate-limit buckets are per host).
        resolve_targets: Lists the targets that selectors and ``"*"`` pools stand for.
        rate_for: Configured ceiling of a project's sync rate, in requests per second.
        read_rate_per_second: Ceiling of read calls per project.
        credential_id: Non-secret fingerprint of the credentials, for the auth circuit breaker.
    """

    def __init__(
        self,
        *,
        store: CampaignStore,
        api: CceApi,
        limiter: RateLimiter,
        build_spec: SpecBuilder,
        send_submit: Enqueue,
        send_track: Enqueue,
        send_expand: Callable[[str, float], None],
        endpoint_host: Callable[[str], str],
        resolve_targets: TargetResolver,
        rate_for: Callable[[str], float],
        read_rate_per_second: float,
        credential_id: str = "default",
        config: WorkflowConfig | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.api = api
        self.limiter = limiter
        self.build_spec = build_spec
        self.send_submit = send_submit
        self.send_track = send_track
        self.send_expand = send_expand
        self.endpoint_host = endpoint_host
        self.resolve_targets = resolve_targets
        self.rate_for = rate_for
        self.read_rate_per_second = read_rate_per_second
        self.credential_id = credential_id
        self.config = config or WorkflowConfig()
        self.clock = clock
        self.sleep = sleep

    # -- expansion --------------------------------------------------------------------------

    def expand(self, campaign_id: str) -> None:
        """Resolve a campaign's selectors, then enqueue a message for every unfinished target.

        Safe to run more than once: known targets are kept, and a second message for a target
        finds it claimed or done.
        """
        campaign = self.store.get(campaign_id)
        if campaign is None:
            logger.warning("campaign %s not found; nothing to expand", campaign_id)
            return

        opens_at = not_before(campaign)
        now = self.clock()
        if campaign.state in ("running", "pending") and opens_at > now:
            self.store.hold_for_window(campaign_id)
            self.store.remove_from_outbox(campaign_id)
            logger.info("campaign %s waits %.0f s for its window", campaign_id, opens_at - now)
            self.send_expand(campaign_id, opens_at - now)
            return
        if campaign.state == "pending":
            self.store.open_window(campaign_id)

        if not campaign.expanded:
            found = self.resolve_targets(campaign, self.api)
            added = self.store.add_targets(campaign_id, found)
            self.store.mark_expanded(campaign_id)
            logger.info(
                "campaign %s expanded: %d targets found, %d new", campaign_id, len(found), added
            )

        self._enqueue_unfinished(campaign_id)
        self.store.remove_from_outbox(campaign_id)

    def _enqueue_unfinished(self, campaign_id: str) -> None:
        keys = self.store.target_keys(campaign_id, states=("pending", "submitting"))
        for index, key in enumerate(keys):
            # Spread the first wave over a moment so the workers do not all wake at once.
            self.send_submit(campaign_id, key, min(index * 0.01, 5.0))
        for key in self.store.target_keys(campaign_id, states=("accepted",)):
            self.send_track(campaign_id, key, 0.0)
        logger.info("campaign %s: %d targets enqueued", campaign_id, len(keys))

    # -- submission -------------------------------------------------------------------------

    def submit(self, campaign_id: str, key: str) -> None:
        """Run one step for a target: claim it, then POST, reconcile or reschedule."""
        campaign = self.store.get(campaign_id)
        if campaign is None:
            logger.warning("campaign %s not found; dropping message for %s", campaign_id, key)
            return

        limits = claim_limits(campaign)
        claim = self.store.claim(
            campaign_id,
            key,
            lease_seconds=self.config.lease_seconds,
            limits=limits,
            lock_ttl_seconds=POOL_LOCK_TTL_SECONDS,
        )
        self._act_on_claim(campaign, key, claim, limits)

    def _act_on_claim(
        self, campaign: Campaign, key: str, claim: ClaimResult, limits: ClaimLimits
    ) -> None:
        verdict = claim.verdict
        if verdict == "claimed":
            self._attempt(campaign, key, claim, limits)
        elif verdict == "reconcile":
            self._reconcile(campaign, key, claim.token, limits)
        elif verdict == "wait":
            delay = claim.wait_seconds
            if claim.detail == "inflight":
                # The target joined the campaign's waiting set; the transition that frees a
                # place enqueues it, so this message ends here.
                metrics.THROTTLED.labels(source="local").inc()
                return
            if delay is None:
                # Another campaign syncs this pool, which can take as long as a node reset.
                delay = GATE_RECHECK_SECONDS
                metrics.THROTTLED.labels(source="local").inc()
            self.send_submit(campaign.id, key, delay + random.uniform(0, 0.25))
        elif verdict == "failed":
            metrics.SUBMISSIONS.labels(outcome="failed", reason=claim.detail).inc()
            logger.warning("target %s of campaign %s failed: %s", key, campaign.id, claim.detail)
        elif verdict == "skipped":
            metrics.TARGETS_SKIPPED.labels(reason=claim.detail).inc()
            logger.info("target %s of campaign %s skipped: %s", key, campaign.id, claim.detail)
        else:
            logger.debug("target %s of campaign %s: nothing to do (%s)", key, campaign.id, verdict)

    def _attempt(
        self, campaign: Campaign, key: str, claim: ClaimResult, limits: ClaimLimits
    ) -> None:
        target = self.store.target(campaign.id, key)
        if target is None:
            return

        if self._auth_locked():
            self._unclaim(campaign.id, target, claim, delay=0.0, reason="auth_locked")
            self._pause_for_auth(
                campaign.id, "credentials locked after repeated authentication failures"
            )
            return

        if campaign.dry_run:
            if self._end(campaign.id, target, claim.token, "skipped", "dry_run", limits):
                metrics.TARGETS_SKIPPED.labels(reason="dry_run").inc()
            return

        try:
            spec = self.build_spec(target)
        except TargetSpecError as error:
            self._fail(campaign.id, target, claim.token, error.reason, str(error), limits)
            return

        baseline = self._baseline(campaign, target, claim, limits)
        if baseline is None:
            return

        if not self._wait_for_rate(campaign, target, claim):
            return

        recorded = self._transition(
            campaign.id,
            key,
            expected=["submitting"],
            new_state="submitting",
            token=claim.token,
            fields={"baselineJobId": baseline.job_id or "", "postedAt": self.clock()},
        )
        if not recorded.applied:
            logger.warning("lost the claim on %s of campaign %s before sending", key, campaign.id)
            return

        self._post(campaign, target, claim, spec, baseline, limits)

    def _baseline(
        self, campaign: Campaign, target: TargetRecord, claim: ClaimResult, limits: ClaimLimits
    ) -> NodePoolStatus | None:
        """Read the pool before sending; return None when the attempt was rescheduled or ended."""
        try:
            self._wait_for_read(target)
            pool = self.api.show_node_pool(
                region=target.region,
                project_id=target.project_id,
                cluster_id=target.cluster_id,
                nodepool_id=target.nodepool_id,
            )
        except ApiError as error:
            decision = classify(error)
            if decision.action == "fail":
                self._fail(campaign.id, target, claim.token, decision.reason, str(error), limits)
            elif decision.action == "pause":
                self._unclaim(campaign.id, target, claim, delay=0.0, reason="auth")
                self._on_auth_failure(campaign.id, error)
            elif decision.throttled:
                # A throttled read was not processed, so it does not use up the attempt.
                self._unclaim(
                    campaign.id, target, claim, delay=self._backoff(1), reason="throttled"
                )
            else:
                self._read_failed(campaign.id, target, claim, limits, decision.reason, str(error))
            return None
        except CceError as error:
            self._read_failed(campaign.id, target, claim, limits, "read_error", str(error))
            return None

        if pool.synchronizing:
            logger.info(
                "pool %s already runs a sync (job %s); campaign %s waits",
                target.key,
                pool.job_id,
                campaign.id,
            )
            self._unclaim(
                campaign.id, target, claim, delay=self.config.track_poll_seconds, reason="pool_busy"
            )
            return None
        return pool

    def _read_failed(
        self,
        campaign_id: str,
        target: TargetRecord,
        claim: ClaimResult,
        limits: ClaimLimits,
        reason: str,
        detail: str,
    ) -> None:
        """Back off after a failed baseline read, without using up a sync attempt.

        Read failures are counted apart because nothing was sent. An unreachable endpoint must
        still end, so after `READ_FAILURES_PER_ATTEMPT` times `maxAttempts` failed reads in a
        row the target fails with `retries_exhausted`.
        """
        failures = target.read_failures + 1
        metrics.RETRIES.labels(reason=reason).inc()
        if failures >= READ_FAILURES_PER_ATTEMPT * limits.max_attempts:
            self._fail(campaign_id, target, claim.token, "retries_exhausted", detail, limits)
            return

        delay = self._backoff(failures)
        logger.info(
            "reading pool %s failed (%s, %d in a row); retrying in %.1f s",
            target.key,
            detail,
            failures,
            delay,
        )
        self._unclaim(
            campaign_id,
            target,
            claim,
            delay=delay,
            reason=reason,
            fields={"readFailures": failures},
        )

    def _wait_for_rate(self, campaign: Campaign, target: TargetRecord, claim: ClaimResult) -> bool:
        bucket = write_bucket(self._host(target.region), target.project_id)
        permit = self.limiter.acquire(
            bucket,
            ceiling_per_second=self.rate_for(target.project_id),
            max_wait_seconds=MAX_RATE_SLEEP_SECONDS,
        )
        metrics.RATE_LIMIT_WAIT.observe(permit.wait_seconds)
        if not permit.granted:
            metrics.THROTTLED.labels(source="local").inc()
            self._unclaim(campaign.id, target, claim, delay=permit.wait_seconds, reason="")
            return False

        if permit.wait_seconds > 0:
            self.sleep(permit.wait_seconds)
        return True

    def _wait_for_read(self, target: TargetRecord) -> None:
        """Pace a read call through the project's read bucket (waits 40 s at the most)."""
        bucket = read_bucket(self._host(target.region), target.project_id)
        for _ in range(20):
            permit = self.limiter.acquire(
                bucket, ceiling_per_second=self.read_rate_per_second, max_wait_seconds=2.0
            )
            if permit.granted:
                if permit.wait_seconds > 0:
                    self.sleep(permit.wait_seconds)
                return
            self.sleep(min(permit.wait_seconds, 2.0))

    def _post(
        self,
        campaign: Campaign,
        target: TargetRecord,
        claim: ClaimResult,
        spec: UpgradeNodePoolSpec,
        baseline: NodePoolStatus,
        limits: ClaimLimits,
    ) -> None:
        bucket = write_bucket(self._host(target.region), target.project_id)
        ceiling = self.rate_for(target.project_id)
        try:
            result = self.api.sync_node_pool(
                region=target.region,
                project_id=target.project_id,
                cluster_id=target.cluster_id,
                nodepool_id=target.nodepool_id,
                spec=spec,
            )
        except OutcomeUnknownError as error:
            logger.warning(
                "sync of %s (campaign %s, attempt %d) has an unknown outcome: %s; reconciling",
                target.key,
                campaign.id,
                claim.attempts,
                error,
            )
            metrics.RETRIES.labels(reason="outcome_unknown").inc()
            self._transition(
                campaign.id,
                target.key,
                expected=["submitting"],
                new_state="submitting",
                token=claim.token,
                fields={"leaseUntil": 0, "unknownSince": self.clock()},
            )
            self.send_submit(campaign.id, target.key, RECONCILE_RECHECK_SECONDS)
            return
        except ApiError as error:
            self._on_api_error(campaign, target, claim, error, bucket, ceiling, limits)
            return
        except CceError as error:
            # A connect error: the request never reached CCE, so sending again is safe.
            metrics.RETRIES.labels(reason="connect_error").inc()
            logger.info("sync of %s not sent (%s); retrying", target.key, error)
            self._retry(campaign.id, target, claim, self._backoff(claim.attempts), "connect_error")
            return

        self.limiter.on_success(bucket, ceiling_per_second=ceiling)
        self.reset_auth_failures()
        self._accept(
            campaign.id, target, claim.token, result.job_id, limits, request_id=result.request_id
        )

    def _on_api_error(
        self,
        campaign: Campaign,
        target: TargetRecord,
        claim: ClaimResult,
        error: ApiError,
        bucket: str,
        ceiling: float,
        limits: ClaimLimits,
    ) -> None:
        decision = classify(error)
        if decision.action == "fail":
            self._fail(campaign.id, target, claim.token, decision.reason, str(error), limits)
            return

        if decision.action == "pause":
            self._unclaim(campaign.id, target, claim, delay=0.0, reason="auth")
            self._on_auth_failure(campaign.id, error)
            return

        if decision.throttled:
            metrics.THROTTLED.labels(source="api").inc()
            self.limiter.on_throttled(
                bucket,
                retry_after_seconds=decision.retry_after_seconds,
                ceiling_per_second=ceiling,
                stated_limit_per_second=decision.stated_limit_per_second,
            )
            # A throttled request was never processed, so it does not use up an attempt.
            delay = decision.retry_after_seconds or self.config.throttle_retry_seconds
            self._unclaim(campaign.id, target, claim, delay=delay, reason="throttled")
            metrics.RETRIES.labels(reason="throttled").inc()
            return

        delay = max(self._backoff(claim.attempts), decision.retry_after_seconds or 0.0)
        metrics.RETRIES.labels(reason=decision.reason).inc()
        logger.info(
            "sync of %s (campaign %s, attempt %d) failed with %s; retrying in %.1f s",
            target.key,
            campaign.id,
            claim.attempts,
            error,
            delay,
        )
        self._retry(campaign.id, target, claim, delay, decision.reason)

    # -- reconciliation ---------------------------------------------------------------------

    def _reconcile(self, campaign: Campaign, key: str, token: str, limits: ClaimLimits) -> None:
        """Decide what happened to a `submitting` target whose owner is gone or unsure."""
        target = self.store.target(campaign.id, key)
        if target is None:
            return

        posted_at = target.posted_at
        if posted_at == 0:
            # The owner died before sending: nothing reached CCE.
            logger.info("target %s of campaign %s was never sent; releasing it", key, campaign.id)
            self._transition(
                campaign.id,
                key,
                expected=["submitting"],
                new_state="pending",
                token=token,
                fields={"leaseUntil": 0, "dueAt": 0, "attempts": max(target.attempts - 1, 0)},
                lock="release",
            )
            self.send_submit(campaign.id, key, 0.0)
            return

        try:
            self._wait_for_read(target)
            pool = self.api.show_node_pool(
                region=target.region,
                project_id=target.project_id,
                cluster_id=target.cluster_id,
                nodepool_id=target.nodepool_id,
            )
        except CceError as error:
            logger.info("reconciling %s: pool read failed (%s); trying again", key, error)
            self._hold_for_reconcile(campaign.id, key, token)
            return

        if pool.job_id and pool.job_id != target.baseline_job_id:
            logger.info(
                "reconciled %s of campaign %s: CCE accepted it as job %s",
                key,
                campaign.id,
                pool.job_id,
            )
            self._accept(campaign.id, target, token, pool.job_id, limits, request_id=None)
            return

        if self.clock() - posted_at < self.config.settle_seconds:
            self._hold_for_reconcile(campaign.id, key, token)
            return

        logger.info(
            "reconciled %s of campaign %s: no sync reached CCE; sending again", key, campaign.id
        )
        self._retry(
            campaign.id,
            target,
            ClaimResult("reconcile", "", target.attempts, token),
            0.0,
            "outcome_unknown",
        )

    def _hold_for_reconcile(self, campaign_id: str, key: str, token: str) -> None:
        self._transition(
            campaign_id,
            key,
            expected=["submitting"],
            new_state="submitting",
            token=token,
            fields={"leaseUntil": 0},
        )
        self.send_submit(campaign_id, key, RECONCILE_RECHECK_SECONDS)

    # -- completion tracking ----------------------------------------------------------------

    def track(self, campaign_id: str, key: str) -> None:
        """Check once whether an accepted sync has finished; reschedule itself until it has."""
        target = self.store.target(campaign_id, key)
        if target is None or target.state != "accepted":
            return

        try:
            finished, result, reason = self._completion(target)
        except CceError as error:
            logger.info(
                "tracking %s of campaign %s failed (%s); trying again", key, campaign_id, error
            )
            self._keep_tracking(campaign_id, target)
            return

        if not finished:
            if self.clock() - target.accepted_at > TRACK_MAX_SECONDS:
                self._finish_sync(campaign_id, target, "sync_failed", "tracking_timeout")
                return
            self._keep_tracking(campaign_id, target)
            return

        self._finish_sync(campaign_id, target, result, reason)

    def _completion(self, target: TargetRecord) -> tuple[bool, str, str]:
        self._wait_for_read(target)
        if target.job_id:
            job = self.api.show_job(
                region=target.region, project_id=target.project_id, job_id=target.job_id
            )
            phase = (job.phase or "").lower()
            if phase == "success":
                return True, "synced", ""
            if phase == "failed":
                return True, "sync_failed", job.reason or "job failed"
            return False, "", ""

        pool = self.api.show_node_pool(
            region=target.region,
            project_id=target.project_id,
            cluster_id=target.cluster_id,
            nodepool_id=target.nodepool_id,
        )
        in_line = (
            pool.synced_node_count is not None
            and pool.current_node is not None
            and pool.synced_node_count >= pool.current_node
        )
        if pool.synchronizing is False and in_line:
            return True, "synced", ""
        return False, "", ""

    def _keep_tracking(self, campaign_id: str, target: TargetRecord) -> None:
        self._transition(
            campaign_id,
            target.key,
            expected=["accepted"],
            new_state="accepted",
            lock="refresh",
            lock_ttl_seconds=POOL_LOCK_TTL_SECONDS,
        )
        self.send_track(campaign_id, target.key, self.config.track_poll_seconds)

    def _finish_sync(
        self, campaign_id: str, target: TargetRecord, result: str, reason: str
    ) -> None:
        event = events.TARGET_SYNCED if result == "synced" else events.TARGET_SYNC_FAILED
        outcome = self._transition(
            campaign_id,
            target.key,
            expected=["accepted"],
            new_state=result,
            fields={"reason": reason},
            event=event,
            event_data={"jobId": target.job_id or None, "reason": reason or None},
            lock="release",
        )
        if outcome.applied:
            metrics.SYNCS_COMPLETED.labels(result=result).inc()
            logger.info("target %s of campaign %s: %s %s", target.key, campaign_id, result, reason)

    # -- shared steps -------------------------------------------------------------------------

    def _transition(self, campaign_id: str, key: str, **changes: Any) -> TransitionResult:
        """Apply a store transition and enqueue the waiting target it frees a place for, if any."""
        result = self.store.transition(campaign_id, key, **changes)
        if result.woken:
            self.send_submit(campaign_id, result.woken, 0.0)
        return result

    # -- shared steps (outcomes) -----------------------------------------------------------------------

    def _accept(
        self,
        campaign_id: str,
        target: TargetRecord,
        token: str,
        job_id: str | None,
        limits: ClaimLimits,
        *,
        request_id: str | None,
    ) -> None:
        outcome = self._transition(
            campaign_id,
            target.key,
            expected=["submitting"],
            new_state="accepted",
            token=token,
            fields={
                "jobId": job_id or "",
                "acceptedAt": self.clock(),
                "leaseUntil": 0,
                "reason": "",
            },
            event=events.TARGET_ACCEPTED,
            event_data={"jobId": job_id, "attempts": target.attempts or None},
            track_completion=limits.track_completion,
            lock="refresh" if limits.track_completion else "release",
            lock_ttl_seconds=POOL_LOCK_TTL_SECONDS,
        )
        if not outcome.applied:
            logger.error(
                "sync of %s (campaign %s) was accepted as job %s but the claim was lost (state %s)",
                target.key,
                campaign_id,
                job_id,
                outcome.state,
            )
            return

        metrics.SUBMISSIONS.labels(outcome="accepted", reason="").inc()
        logger.info(
            "sync of %s accepted (campaign %s, job %s, request %s)",
            target.key,
            campaign_id,
            job_id,
            request_id,
        )
        if limits.track_completion:
            self.send_track(campaign_id, target.key, self.config.track_poll_seconds)

    def _fail(
        self,
        campaign_id: str,
        target: TargetRecord,
        token: str,
        reason: str,
        detail: str,
        limits: ClaimLimits,
    ) -> None:
        outcome = self._end(campaign_id, target, token, "failed", reason, limits, detail=detail)
        if outcome:
            metrics.SUBMISSIONS.labels(outcome="failed", reason=reason).inc()
            logger.warning(
                "target %s of campaign %s failed: %s (%s)", target.key, campaign_id, reason, detail
            )

    def _end(
        self,
        campaign_id: str,
        target: TargetRecord,
        token: str,
        state: str,
        reason: str,
        limits: ClaimLimits,
        *,
        detail: str = "",
    ) -> bool:
        event = events.TARGET_FAILED if state == "failed" else ""
        outcome = self._transition(
            campaign_id,
            target.key,
            expected=["submitting"],
            new_state=state,
            token=token,
            fields={"reason": reason, "leaseUntil": 0},
            event=event,
            event_data={
                "reason": reason,
                "detail": detail[:200] or None,
                "attempts": target.attempts,
            },
            track_completion=limits.track_completion,
            lock="release",
        )
        return outcome.applied

    def _retry(
        self, campaign_id: str, target: TargetRecord, claim: ClaimResult, delay: float, reason: str
    ) -> None:
        self._transition(
            campaign_id,
            target.key,
            expected=["submitting"],
            new_state="pending",
            token=claim.token,
            fields={
                "dueAt": self.clock() + delay,
                "leaseUntil": 0,
                "postedAt": 0,
                "unknownSince": 0,
                "reason": reason,
            },
            lock="release",
        )
        self.send_submit(campaign_id, target.key, delay)

    def _unclaim(
        self,
        campaign_id: str,
        target: TargetRecord,
        claim: ClaimResult,
        *,
        delay: float,
        reason: str,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        """Return a claimed target to `pending` without using up its attempt."""
        changes: dict[str, Any] = {
            "dueAt": self.clock() + delay,
            "leaseUntil": 0,
            "postedAt": 0,
            "attempts": max(claim.attempts - 1, 0),
            "reason": reason,
            **(fields or {}),
        }
        self._transition(
            campaign_id,
            target.key,
            expected=["submitting"],
            new_state="pending",
            token=claim.token,
            fields=changes,
            lock="release",
        )
        if reason != "auth":
            self.send_submit(campaign_id, target.key, delay)

    def _backoff(self, attempt: int) -> float:
        return backoff_seconds(
            attempt,
            floor_seconds=self.config.retry_floor_seconds,
            ceiling_seconds=self.config.retry_ceiling_seconds,
        )

    def _host(self, region: str) -> str:
        return self.endpoint_host(region)

    # -- authentication circuit breaker -----------------------------------------------------

    def _auth_key(self) -> str:
        return f"cce-sync:auth:{self.credential_id}"

    def _auth_locked(self) -> bool:
        return bool(self.store.client.exists(self._auth_key() + ":locked"))

    def _on_auth_failure(self, campaign_id: str, error: ApiError) -> None:
        key = self._auth_key()
        failures = int(self.store.client.incr(key + ":failures"))
        self.store.client.expire(key + ":failures", 600)
        if failures >= 5:
            # CCE locks an AK/SK for five minutes after five failed authentications in a row.
            self.store.client.set(key + ":locked", "1", ex=300)
        self._pause_for_auth(
            campaign_id, f"authentication failed ({error.error_code or error.status_code})"
        )

    def _pause_for_auth(self, campaign_id: str, detail: str) -> None:
        try:
            paused = self.store.pause(campaign_id, reason=f"auth: {detail}")
        except StoreError:
            return
        if paused:
            logger.error(
                "campaign %s paused: %s; fix the credentials, then run `cce-sync resume %s`",
                campaign_id,
                detail,
                campaign_id,
            )

    def reset_auth_failures(self) -> None:
        """Forget consecutive authentication failures after a successful call."""
        self.store.client.delete(self._auth_key() + ":failures")
