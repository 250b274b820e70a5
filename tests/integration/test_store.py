"""The campaign store's atomic transitions, against a real private Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis as redis_py

from worker.campaigns.store import CampaignConflict, CampaignStore, ClaimLimits


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def targets(count: int, cluster: str = "c1") -> list[dict[str, Any]]:
    return [
        {
            "region": "ap-southeast-1",
            "projectId": "p1",
            "clusterId": cluster,
            "nodePoolId": f"pool-{index}",
            "nodeIDs": None,
            "sync": {"maxUnavailable": 1},
        }
        for index in range(count)
    ]


def key(index: int, cluster: str = "c1") -> str:
    return f"ap-southeast-1/p1/{cluster}/pool-{index}"


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def store(redis: redis_py.Redis, clock: FakeClock) -> CampaignStore:
    return CampaignStore(redis, clock=clock)


def create(
    store: CampaignStore, campaign_id: str, count: int, cluster: str = "c1", digest: str = "d1"
) -> None:
    store.create(
        campaign_id,
        name=campaign_id,
        digest=digest,
        document={"spec": {}},
        targets=targets(count, cluster),
        rules_pending=False,
    )


def claim(store: CampaignStore, campaign_id: str, index: int, **limits: Any) -> Any:
    return store.claim(
        campaign_id,
        key(index),
        lease_seconds=30,
        limits=ClaimLimits(**limits),
        lock_ttl_seconds=600,
    )


def test_create_same_digest_is_idempotent(store: CampaignStore) -> None:
    create(store, "c", 3)
    again = store.create(
        "c", name="c", digest="d1", document={}, targets=targets(3), rules_pending=False
    )
    assert again.created is False
    assert again.targets == 3
    assert store.counts("c")["pending"] == 3


def test_create_other_digest_conflicts(store: CampaignStore, redis: redis_py.Redis) -> None:
    create(store, "c", 3)
    with pytest.raises(CampaignConflict):
        store.create(
            "c", name="c", digest="d2", document={}, targets=targets(4), rules_pending=False
        )
    assert redis.hget("cce-sync:campaign:c", "target_total") == "3"


def test_claim_then_done(store: CampaignStore) -> None:
    create(store, "c", 1)
    first = claim(store, "c", 0)
    second = claim(store, "c", 0)
    assert first.verdict == "claimed"
    assert first.attempts == 1
    assert second.verdict == "wait"
    assert store.counts("c")["submitting"] == 1


def test_lease_expiry_allows_reconcile(store: CampaignStore, clock: FakeClock) -> None:
    create(store, "c", 1)
    claim(store, "c", 0)
    clock.now += 31
    taken = claim(store, "c", 0)
    assert taken.verdict == "reconcile"
    assert store.target("c", key(0)).token == taken.token  # type: ignore[union-attr]


def test_token_fences_transitions(store: CampaignStore) -> None:
    create(store, "c", 1)
    first = claim(store, "c", 0)
    stale = store.transition(
        "c", key(0), expected=["submitting"], new_state="accepted", token="not-the-owner"
    )
    owned = store.transition(
        "c", key(0), expected=["submitting"], new_state="accepted", token=first.token
    )
    assert stale.applied is False
    assert owned.applied is True
    assert store.counts("c")["accepted"] == 1
    assert store.counts("c")["submitting"] == 0


def test_last_terminal_finishes_campaign(store: CampaignStore, redis: redis_py.Redis) -> None:
    create(store, "c", 2)
    results = []
    for index in range(2):
        token = claim(store, "c", index).token
        results.append(
            store.transition(
                "c",
                key(index),
                expected=["submitting"],
                new_state="failed",
                token=token,
                lock="release",
            )
        )
    assert [result.campaign_finished for result in results] == [False, True]
    assert store.require("c").state == "finished"
    finished = [
        fields
        for _, fields in redis.xrange("cce-sync:events")
        if fields["type"] == "campaign.finished"
    ]
    assert len(finished) == 1


def test_in_flight_cap_queues_and_wakes(store: CampaignStore, redis: redis_py.Redis) -> None:
    create(store, "c", 3)
    first = claim(store, "c", 0, max_in_flight=1)
    blocked = claim(store, "c", 1, max_in_flight=1)
    assert first.verdict == "claimed"
    assert blocked.verdict == "wait"
    assert blocked.detail == "inflight"
    assert redis.zrange("cce-sync:campaign:c:waiting", 0, -1) == [key(1)]

    tracked = store.transition(
        "c", key(0), expected=["submitting"], new_state="accepted", token=first.token
    )
    assert tracked.woken == ""
    freed = store.transition("c", key(0), expected=["accepted"], new_state="synced", lock="release")
    assert freed.woken == key(1)
    assert redis.zcard("cce-sync:campaign:c:waiting") == 0

    woken = claim(store, "c", 1, max_in_flight=1)
    assert woken.verdict == "claimed"


def test_pool_lock_spans_campaigns(store: CampaignStore) -> None:
    create(store, "a", 1)
    create(store, "b", 1)
    holder = claim(store, "a", 0)
    other = claim(store, "b", 0)
    assert holder.verdict == "claimed"
    assert other.verdict == "wait"
    assert other.detail == "pool_locked"

    store.transition(
        "a", key(0), expected=["submitting"], new_state="failed", token=holder.token, lock="release"
    )
    assert claim(store, "b", 0).verdict == "claimed"


def test_attempts_exhausted_fails(store: CampaignStore) -> None:
    create(store, "c", 1)
    for _ in range(2):
        token = claim(store, "c", 0, max_attempts=2).token
        store.transition(
            "c", key(0), expected=["submitting"], new_state="pending", token=token, lock="release"
        )
    last = claim(store, "c", 0, max_attempts=2)
    assert last.verdict == "failed"
    assert last.detail == "retries_exhausted"
    assert store.target("c", key(0)).state == "failed"  # type: ignore[union-attr]


def test_window_end_skips(store: CampaignStore, clock: FakeClock) -> None:
    create(store, "c", 1)
    result = claim(store, "c", 0, not_after=clock.now - 1)
    assert result.verdict == "skipped"
    assert result.detail == "window_closed"
    assert store.require("c").state == "finished"


def test_error_budget_skips_rest(store: CampaignStore) -> None:
    create(store, "c", 3)
    token = claim(store, "c", 0, max_failures=0).token
    store.transition(
        "c", key(0), expected=["submitting"], new_state="failed", token=token, lock="release"
    )
    result = claim(store, "c", 1, max_failures=0)
    assert result.verdict == "skipped"
    assert result.detail == "error_budget"


def test_paused_campaign_keeps_targets_pending(store: CampaignStore) -> None:
    create(store, "c", 1)
    store.pause("c")
    assert claim(store, "c", 0).verdict == "paused"
    assert store.target("c", key(0)).state == "pending"  # type: ignore[union-attr]
    store.resume("c")
    assert claim(store, "c", 0).verdict == "claimed"


def test_cancel_skips_pending(store: CampaignStore) -> None:
    create(store, "c", 1)
    store.cancel("c")
    result = claim(store, "c", 0)
    assert result.verdict == "skipped"
    assert result.detail == "cancelled"
    assert store.require("c").state == "cancelled"
