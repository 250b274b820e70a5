"""Housekeeping re-sends lost messages, and only those, against a real private Redis."""

from __future__ import annotations

import redis as redis_py
from test_store import FakeClock, claim, create, key

from worker.campaigns.store import CampaignStore
from worker.housekeeping import Housekeeper


class Sent:
    def __init__(self) -> None:
        self.expand: list[str] = []
        self.submit: list[tuple[str, str]] = []
        self.track: list[tuple[str, str]] = []


def housekeeper(store: CampaignStore, clock: FakeClock, sent: Sent) -> Housekeeper:
    return Housekeeper(
        store,
        send_expand=sent.expand.append,
        send_submit=lambda campaign_id, target: sent.submit.append((campaign_id, target)),
        send_track=lambda campaign_id, target: sent.track.append((campaign_id, target)),
        stale_seconds=120,
        outbox_grace_seconds=30,
        clock=clock,
    )


def test_fresh_campaign_left_alone(redis: redis_py.Redis) -> None:
    clock = FakeClock()
    store = CampaignStore(redis, clock=clock)
    create(store, "c", 3)
    store.remove_from_outbox("c")
    sent = Sent()

    assert housekeeper(store, clock, sent).run_once() == 0
    assert sent.submit == []


def test_outbox_entry_expanded_again(redis: redis_py.Redis) -> None:
    clock = FakeClock()
    store = CampaignStore(redis, clock=clock)
    create(store, "c", 1)
    clock.now += 31
    sent = Sent()

    housekeeper(store, clock, sent).run_once()
    assert sent.expand == ["c"]


def test_stale_targets_sent_again(redis: redis_py.Redis) -> None:
    clock = FakeClock()
    store = CampaignStore(redis, clock=clock)
    create(store, "c", 2)
    store.remove_from_outbox("c")
    clock.now += 121
    sent = Sent()

    housekeeper(store, clock, sent).run_once()
    assert sorted(sent.submit) == [("c", key(0)), ("c", key(1))]


def test_recently_claimed_target_not_sent(redis: redis_py.Redis) -> None:
    clock = FakeClock()
    store = CampaignStore(redis, clock=clock)
    create(store, "c", 2)
    store.remove_from_outbox("c")
    clock.now += 100
    # A message that finds the pool locked still marks the target as seen.
    claim(store, "c", 0)
    clock.now += 60
    sent = Sent()

    housekeeper(store, clock, sent).run_once()
    assert sent.submit == [("c", key(1))]


def test_target_waiting_for_cap_not_sent(redis: redis_py.Redis) -> None:
    clock = FakeClock()
    store = CampaignStore(redis, clock=clock)
    create(store, "c", 2)
    store.remove_from_outbox("c")
    holder = claim(store, "c", 0, max_in_flight=1)
    waiting = claim(store, "c", 1, max_in_flight=1)
    assert holder.verdict == "claimed"
    assert waiting.detail == "inflight"
    clock.now += 500
    sent = Sent()

    housekeeper(store, clock, sent).run_once()
    assert sent.submit == [("c", key(0))]


def test_paused_campaign_not_touched(redis: redis_py.Redis) -> None:
    clock = FakeClock()
    store = CampaignStore(redis, clock=clock)
    create(store, "c", 1)
    store.remove_from_outbox("c")
    store.pause("c")
    clock.now += 500
    sent = Sent()

    housekeeper(store, clock, sent).run_once()
    assert sent.submit == []
