"""Periodic repair of lost messages, run in one process per worker host.

dramatiq brings back the messages of a killed worker, but a Redis that restarts from its
append-only file may lose the last second of writes, and a producer may die between storing a
campaign and enqueueing it. Every `interval_seconds`, one host (elected through a short Redis
lock) therefore:

- enqueues `expand_campaign` for campaigns still in the outbox after `outbox_grace_seconds`;
- enqueues a message again for unfinished targets that no message has claimed or checked for
  `stale_seconds`, except those waiting for the in-flight cap (a second message is harmless:
  the claim lets only one of them act).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import redis

from worker.broker import redis_client
from worker.campaigns.store import ACTIVE_CAMPAIGN_STATES, CampaignStore
from worker.settings import get_settings

logger = logging.getLogger(__name__)

LEADER_KEY = "cce-sync:housekeeping:leader"


class Housekeeper:
    """Finds campaigns and targets whose messages were lost and enqueues them again.

    Args:
        store: The campaign store.
        send_expand: Enqueues `expand_campaign(campaign_id)`.
        send_submit: Enqueues `submit_sync(campaign_id, key)`.
        send_track: Enqueues `track_sync(campaign_id, key)`.
        stale_seconds: Age of an unchanged, unfinished target record before it is enqueued again.
        outbox_grace_seconds: Age of a stored campaign before its expansion is enqueued again.
    """

    def __init__(
        self,
        store: CampaignStore,
        *,
        send_expand: Callable[[str], None],
        send_submit: Callable[[str, str], None],
        send_track: Callable[[str, str], None],
        stale_seconds: float,
        outbox_grace_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.send_expand = send_expand
        self.send_submit = send_submit
        self.send_track = send_track
        self.stale_seconds = stale_seconds
        self.outbox_grace_seconds = outbox_grace_seconds
        self.clock = clock

    def run_once(self) -> int:
        """Enqueue what looks lost; return the number of messages sent."""
        sent = 0
        for campaign_id in self.store.outbox_older_than(self.outbox_grace_seconds):
            logger.warning(
                "campaign %s was stored but not expanded; enqueueing it again", campaign_id
            )
            self.send_expand(campaign_id)
            sent += 1

        now = self.clock()
        for campaign in self.store.list_campaigns():
            if campaign.state not in ACTIVE_CAMPAIGN_STATES or campaign.state == "paused":
                continue
            # Targets waiting for the in-flight cap have no message on purpose: the transition
            # that frees a place enqueues them.
            waiting = self.store.waiting_keys(campaign.id)
            seen = self.store.seen_times(campaign.id)
            for target in self.store.targets(campaign.id):
                if target.key in waiting:
                    continue
                last_activity = max(target.updated_at, target.due_at, seen.get(target.key, 0.0))
                if now - last_activity < self.stale_seconds:
                    continue
                if target.state in ("pending", "submitting"):
                    self.send_submit(campaign.id, target.key)
                elif target.state == "accepted":
                    self.send_track(campaign.id, target.key)
                else:
                    continue
                sent += 1
        if sent:
            logger.info("housekeeping enqueued %d messages again", sent)
        return sent


def _is_leader(client: redis.Redis, holder: str, ttl_seconds: int) -> bool:
    current = client.get(LEADER_KEY)
    if current == holder:
        client.expire(LEADER_KEY, ttl_seconds)
        return True
    return bool(client.set(LEADER_KEY, holder, nx=True, ex=ttl_seconds))


def run() -> None:
    """Run housekeeping until SIGTERM or SIGINT (a dramatiq fork function)."""
    import os

    from worker import actors
    from worker.broker import exit_with_parent

    exit_with_parent()
    settings = get_settings()
    client = redis_client(settings)
    store = CampaignStore(client, events_max_length=settings.events_max_length)
    keeper = Housekeeper(
        store,
        send_expand=lambda campaign_id: actors.send(actors.expand_campaign, 0, campaign_id),
        send_submit=lambda campaign_id, key: actors.send(actors.submit_sync, 0, campaign_id, key),
        send_track=lambda campaign_id, key: actors.send(actors.track_sync, 0, campaign_id, key),
        # Tracking touches a target once per poll, so a shorter limit would duplicate its messages.
        stale_seconds=max(settings.housekeeping_stale_seconds, 2 * settings.track_poll_seconds),
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    holder = f"{os.uname().nodename}:{os.getpid()}"
    interval = settings.housekeeping_interval_seconds
    logger.info("housekeeping started (every %.0f s)", interval)
    while not stop.wait(interval):
        try:
            if _is_leader(client, holder, int(interval * 2) + 1):
                keeper.run_once()
        except redis.RedisError as error:
            logger.warning("housekeeping skipped a round: %s", error)
    logger.info("housekeeping stopped")
