"""Resolution of `clusterSelector` entries and ``"*"`` node pools into targets, by listing.

Runs inside `expand_campaign` on a worker, once per campaign, with the stored document (which
the producer already validated). Explicit targets were stored at submission and are skipped here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import regex

from worker.cce.errors import ConfigurationError
from worker.cce.models import ClusterSummary, NodePoolSummary

if TYPE_CHECKING:
    from worker.campaigns.store import Campaign

logger = logging.getLogger(__name__)

ALL_NODE_POOLS = "*"

#: Time one `nameRegex` may take on one cluster name, in seconds. Validation rejects patterns
#: with nested quantifiers, but not every pattern that backtracks exponentially; Python's `re`
#: cannot be interrupted, so the selector runs on the `regex` package, which can.
NAME_REGEX_TIMEOUT_SECONDS = 0.2


class SelectorTimeoutError(ConfigurationError):
    """A `clusterSelector.nameRegex` took too long on a cluster name."""


class ListingApi(Protocol):
    """The list calls expansion needs (implemented by `worker.cce.client.CceClient`)."""

    def list_clusters(self, *, region: str, project_id: str) -> list[ClusterSummary]: ...

    def list_node_pools(
        self, *, region: str, project_id: str, cluster_id: str, show_default: bool = True
    ) -> list[NodePoolSummary]: ...


def _merged_sync(
    default: Mapping[str, Any] | None, override: Mapping[str, Any] | None
) -> dict[str, Any]:
    # The target's value wins field by field; nodeTemplate is replaced as a whole.
    return {**(default or {}), **(override or {})}


def _selected_clusters(
    api: ListingApi, region: str, project_id: str, selector: Mapping[str, Any]
) -> list[str]:
    pattern = selector.get("nameRegex")
    phase = selector.get("status")
    chosen = []
    for cluster in api.list_clusters(region=region, project_id=project_id):
        if phase is not None and cluster.phase != phase:
            continue
        if pattern is not None and not _name_matches(pattern, cluster.name):
            continue
        chosen.append(cluster.id)
    return chosen


def _name_matches(pattern: str, name: str) -> bool:
    try:
        return regex.search(pattern, name, timeout=NAME_REGEX_TIMEOUT_SECONDS) is not None
    except TimeoutError:
        raise SelectorTimeoutError(
            f"clusterSelector.nameRegex {pattern!r} took over {NAME_REGEX_TIMEOUT_SECONDS} s on "
            f"cluster name {name!r}; cancel the campaign and submit a simpler pattern"
        ) from None


def resolve_targets(campaign: Campaign, api: ListingApi) -> list[dict[str, Any]]:
    """Return the targets that the campaign's selectors and ``"*"`` entries stand for.

    Each target is a dict as `CampaignStore.create()` takes. Entries with a cluster ID and a
    list of pools are left out because they were stored at submission.

    Raises:
        worker.cce.errors.CceError: a list call failed; the expansion is retried as a whole.
    """
    spec = campaign.document.get("spec") or {}
    targets: list[dict[str, Any]] = []
    for entry in spec.get("targets") or []:
        pools = entry.get("nodePools")
        cluster_id = entry.get("clusterId")
        if cluster_id is not None and pools != ALL_NODE_POOLS:
            continue

        # The producer's validation guarantees both resolve for every entry.
        region = str(entry.get("region") or spec.get("region"))
        project_id = str(entry.get("projectId") or spec.get("projectId"))
        if cluster_id is not None:
            clusters = [cluster_id]
        else:
            clusters = _selected_clusters(
                api, region, project_id, entry.get("clusterSelector") or {}
            )

        sync = _merged_sync(spec.get("sync"), entry.get("sync"))
        for cluster in clusters:
            if pools == ALL_NODE_POOLS:
                listed = api.list_node_pools(
                    region=region, project_id=project_id, cluster_id=cluster
                )
                pool_ids = [pool.id for pool in listed]
            else:
                pool_ids = list(pools)
            for pool_id in pool_ids:
                targets.append(
                    {
                        "region": region,
                        "projectId": project_id,
                        "clusterId": cluster,
                        "nodePoolId": pool_id,
                        "nodeIDs": entry.get("nodeIDs"),
                        "sync": sync,
                    }
                )
    logger.info("campaign %s: selectors matched %d node pools", campaign.id, len(targets))
    return targets
