"""Submission of campaign documents: validate, store atomically, enqueue the expansion.

`submit()` is the one entry point for the command line (`cce-sync submit`), the intake stream
and Python callers. Nothing reaches Redis unless the whole document is valid. The campaign, its
explicit targets and the `campaign.accepted` event are written in one transaction by
`CampaignStore.create()`, which also puts the campaign in the store's outbox. The
`expand_campaign` message is sent right after. If that send fails, the worker's housekeeping
enqueues the expansion of every campaign left in the outbox, so a stored campaign still runs.
"""

from __future__ import annotations

import logging
import secrets as random_tokens
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from worker.broker import redis_client
from worker.campaigns.document import (
    CampaignDocument,
    Target,
    explicit_targets,
    load_document,
    target_rules,
)
from worker.campaigns.secrets import (
    SecretCipher,
    cipher_from_settings,
    document_digest,
    stored_form,
    stored_sync,
)
from worker.campaigns.store import CampaignStore, CreateResult
from worker.settings import Settings, get_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitResult:
    """Outcome of `submit()`.

    Attributes:
        campaign_id: `metadata.id`, or the generated ID.
        targets: Node pools stored for the campaign; pools that selectors and ``"*"`` stand
            for are added later by the expansion and not counted here.
        created: False when the same campaign (same ID and content) already existed, and for
            a dry run.
        dry_run: Nothing was stored or enqueued.
        rules_pending: Entries of `spec.targets` that the expansion resolves by listing.
        plan: The node pools named explicitly, in document order.
    """

    campaign_id: str
    targets: int
    created: bool
    dry_run: bool = False
    rules_pending: int = 0
    plan: tuple[Target, ...] = field(default=(), repr=False)


def generate_campaign_id(now: datetime | None = None) -> str:
    """Return a new campaign ID such as ``cmp-20261204-193001-9f3a1c2e``."""
    moment = now or datetime.now(UTC)
    return f"cmp-{moment:%Y%m%d-%H%M%S}-{random_tokens.token_hex(4)}"


def _target_records(targets: list[Target], cipher: SecretCipher | None) -> list[dict[str, Any]]:
    records = []
    for target in targets:
        records.append(
            {
                "region": target.region,
                "projectId": target.project_id,
                "clusterId": target.cluster_id,
                "nodePoolId": target.nodepool_id,
                "nodeIDs": list(target.node_ids) if target.node_ids else None,
                "sync": stored_sync(
                    target.sync, cipher, path=f"spec.targets[{target.rule_index}].sync"
                ),
            }
        )
    return records


def _send_expand(campaign_id: str) -> None:
    # Imported here: importing the actors sets dramatiq's global broker from the settings.
    from worker.actors import expand_campaign

    expand_campaign.send(campaign_id)


def submit(
    document: str | bytes | Mapping[str, Any],
    *,
    dry_run: bool = False,
    client: redis.Redis | None = None,
    settings: Settings | None = None,
    enqueue: Callable[[str], None] | None = None,
) -> SubmitResult:
    """Validate a campaign document, store it and enqueue its expansion.

    Args:
        document: YAML or JSON text, or the parsed mapping.
        dry_run: Validate and return the plan only; Redis is not contacted.
        client: Redis client; one built from `settings` when omitted.
        settings: Source of the Redis URL and ``CCE_SYNC_SECRET_KEY``; the process settings
            when omitted.
        enqueue: Sends the `expand_campaign` message for a campaign ID; the dramatiq actor when
            omitted.

    Returns:
        The campaign ID and target count. Submitting the same `metadata.id` with the same
        content again returns the stored campaign with `created=False`.

    Raises:
        DocumentError: the document is invalid, or has an inline password and no
            ``CCE_SYNC_SECRET_KEY`` is configured. Nothing was written.
        CampaignConflict: `metadata.id` is taken by a campaign with other content.
        SecretKeyError: ``CCE_SYNC_SECRET_KEY`` is not a valid key.
        redis.RedisError: Redis failed; the campaign is stored completely or not at all.
    """
    settings = settings or get_settings()
    campaign = load_document(document)
    cipher = cipher_from_settings(settings)
    plan = explicit_targets(campaign)
    rules_pending = sum(not rule.explicit for rule in target_rules(campaign))
    campaign_id = campaign.metadata.id or generate_campaign_id()

    # Both raise DocumentError for an inline password without a key, dry run or not.
    digest = document_digest(campaign, cipher)
    stored = stored_form(campaign, cipher, campaign_id=campaign_id)

    if dry_run:
        return SubmitResult(
            campaign_id,
            len(plan),
            False,
            dry_run=True,
            rules_pending=rules_pending,
            plan=tuple(plan),
        )

    result = _store(
        campaign, campaign_id, digest, stored, plan, cipher, rules_pending, client, settings
    )
    if not result.created:
        logger.info("campaign %s already exists with the same content", campaign_id)
        return SubmitResult(
            campaign_id, result.targets, False, rules_pending=rules_pending, plan=tuple(plan)
        )

    _enqueue_expansion(campaign_id, enqueue or _send_expand)
    return SubmitResult(
        campaign_id, result.targets, True, rules_pending=rules_pending, plan=tuple(plan)
    )


def _store(
    campaign: CampaignDocument,
    campaign_id: str,
    digest: str,
    stored: dict[str, Any],
    plan: list[Target],
    cipher: SecretCipher | None,
    rules_pending: int,
    client: redis.Redis | None,
    settings: Settings,
) -> CreateResult:
    store = CampaignStore(
        client or redis_client(settings), events_max_length=settings.events_max_length
    )
    result = store.create(
        campaign_id,
        name=campaign.metadata.name or campaign_id,
        digest=digest,
        document=stored,
        targets=_target_records(plan, cipher),
        rules_pending=rules_pending > 0,
        dry_run=campaign.spec.dry_run,
    )
    if result.created:
        logger.info(
            "campaign %s stored with %d explicit targets and %d entries to expand",
            campaign_id,
            result.targets,
            rules_pending,
        )
    return result


def _enqueue_expansion(campaign_id: str, enqueue: Callable[[str], None]) -> None:
    try:
        enqueue(campaign_id)
    except redis.RedisError as error:
        # The campaign is in the store's outbox; housekeeping enqueues its expansion later.
        logger.warning(
            "campaign %s is stored, but enqueueing its expansion failed (%s); a worker's "
            "housekeeping will enqueue it",
            campaign_id,
            type(error).__name__,
        )
