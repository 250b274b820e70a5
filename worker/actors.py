"""The dramatiq actors: decode a message, hand it to `Workflow`, and nothing else.

Importing this module sets dramatiq's global broker (dramatiq needs a broker when an actor is
declared). Building the broker opens no connection; the first message does.

Every actor runs with dramatiq retries off: `Workflow` reschedules with its own delays, so that
waiting for the rate limiter or the in-flight cap never uses up a retry attempt.
"""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import urlsplit

import dramatiq

from worker import metrics
from worker.broker import redis_client, setup_broker
from worker.campaigns.expansion import resolve_targets
from worker.campaigns.spec import spec_builder
from worker.campaigns.store import CampaignStore, StoreError
from worker.cce.client import CceClient
from worker.cce.endpoints import endpoint_for
from worker.cce.errors import ConfigurationError, CredentialsError
from worker.ratelimit import RateLimiter
from worker.settings import get_settings
from worker.workflow import Workflow, WorkflowConfig

logger = logging.getLogger(__name__)

QUEUE_NAME = "cce-sync"

setup_broker()


def _observe_request(operation: str, code: str, seconds: float) -> None:
    metrics.API_REQUESTS.labels(operation=operation, code=code).inc()
    metrics.API_REQUEST_DURATION.labels(operation=operation).observe(seconds)


@functools.cache
def _endpoint_host(region: str) -> str:
    return urlsplit(endpoint_for(region, get_settings().endpoint)).netloc


@functools.cache
def workflow() -> Workflow:
    """Build this process's workflow from the settings (once per process)."""
    settings = get_settings()
    client = redis_client(settings)
    api = CceClient.from_settings(settings, observer=_observe_request)
    return Workflow(
        store=CampaignStore(client, events_max_length=settings.events_max_length),
        api=api,
        limiter=RateLimiter(client),
        build_spec=spec_builder(settings),
        send_submit=lambda campaign_id, key, delay: send(submit_sync, delay, campaign_id, key),
        send_track=lambda campaign_id, key, delay: send(track_sync, delay, campaign_id, key),
        send_expand=lambda campaign_id, delay: send(expand_campaign, delay, campaign_id),
        endpoint_host=_endpoint_host,
        resolve_targets=resolve_targets,
        rate_for=settings.rate_for,
        read_rate_per_second=settings.read_rate_per_second,
        credential_id=api.credential_id,
        config=WorkflowConfig(
            lease_seconds=settings.http_deadline_seconds + 15.0,
            settle_seconds=settings.reconcile_settle_seconds,
            track_poll_seconds=settings.track_poll_seconds,
        ),
    )


def send(actor: dramatiq.Actor[Any, Any], delay_seconds: float, *args: str) -> None:
    """Enqueue a message for `actor`, after `delay_seconds` when positive."""
    delay_ms = int(delay_seconds * 1000)
    if delay_ms > 0:
        actor.send_with_options(args=args, delay=delay_ms)
    else:
        actor.send(*args)


def _pause_for_configuration(campaign_id: str, error: Exception) -> None:
    """Pause a campaign that this worker's configuration cannot serve, with the reason."""
    logger.error(
        "campaign %s paused: %s; fix the worker settings, then resume it", campaign_id, error
    )
    try:
        CampaignStore(redis_client()).pause(campaign_id, reason=f"configuration: {error}")
    except StoreError as store_error:
        logger.warning("campaign %s not paused: %s", campaign_id, store_error)


@dramatiq.actor(queue_name=QUEUE_NAME, max_retries=0)
def expand_campaign(campaign_id: str) -> None:
    """Resolve a campaign's targets and enqueue one `submit_sync` per unfinished target."""
    try:
        workflow().expand(campaign_id)
    except (ConfigurationError, CredentialsError) as error:
        _pause_for_configuration(campaign_id, error)


@dramatiq.actor(queue_name=QUEUE_NAME, max_retries=0)
def submit_sync(campaign_id: str, target_key: str) -> None:
    """Take one step for one target: submit, reconcile, or reschedule."""
    try:
        workflow().submit(campaign_id, target_key)
    except (ConfigurationError, CredentialsError) as error:
        _pause_for_configuration(campaign_id, error)


@dramatiq.actor(queue_name=QUEUE_NAME, max_retries=0)
def track_sync(campaign_id: str, target_key: str) -> None:
    """Check once whether an accepted sync finished; reschedules itself until it has."""
    try:
        workflow().track(campaign_id, target_key)
    except (ConfigurationError, CredentialsError) as error:
        _pause_for_configuration(campaign_id, error)
