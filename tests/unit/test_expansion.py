"""Resolution of cluster selectors and "*" pools into targets."""

from __future__ import annotations

from typing import Any

import pytest

from worker.campaigns.expansion import SelectorTimeoutError, resolve_targets
from worker.campaigns.store import Campaign
from worker.cce.models import ClusterSummary, NodePoolSummary


class Listing:
    """A fixed fleet that returns the two list calls' results in the CCE client's types."""

    def __init__(self, clusters: list[ClusterSummary], pools: dict[str, list[str]]) -> None:
        self.clusters = clusters
        self.pools = pools

    def list_clusters(self, *, region: str, project_id: str) -> list[ClusterSummary]:
        return self.clusters

    def list_node_pools(
        self, *, region: str, project_id: str, cluster_id: str, show_default: bool = True
    ) -> list[NodePoolSummary]:
        return [NodePoolSummary(id=pool, name=pool) for pool in self.pools[cluster_id]]


def campaign(targets: list[dict[str, Any]]) -> Campaign:
    document = {
        "spec": {
            "region": "ap-southeast-1",
            "projectId": "p1",
            "sync": {"maxUnavailable": 1},
            "targets": targets,
        }
    }
    return Campaign(
        id="c",
        name="c",
        state="running",
        reason="",
        created_at=0.0,
        finished_at=None,
        dry_run=False,
        expanded=False,
        target_total=0,
        counts={},
        document=document,
    )


def test_selector_matches_name_and_status() -> None:
    listing = Listing(
        [
            ClusterSummary(id="c1", name="prod-a", phase="Available"),
            ClusterSummary(id="c2", name="prod-b", phase="Unavailable"),
            ClusterSummary(id="c3", name="dev-a", phase="Available"),
        ],
        {"c1": ["DefaultPool", "p1"], "c2": ["p2"], "c3": ["p3"]},
    )
    found = resolve_targets(
        campaign(
            [{"clusterSelector": {"nameRegex": "^prod-", "status": "Available"}, "nodePools": "*"}]
        ),
        listing,
    )

    assert [(target["clusterId"], target["nodePoolId"]) for target in found] == [
        ("c1", "DefaultPool"),
        ("c1", "p1"),
    ]
    assert found[0]["sync"] == {"maxUnavailable": 1}


def test_explicit_entries_skipped() -> None:
    listing = Listing([], {})
    found = resolve_targets(campaign([{"clusterId": "c1", "nodePools": ["p1"]}]), listing)

    assert found == []


def test_backtracking_regex_times_out() -> None:
    listing = Listing(
        [ClusterSummary(id="c1", name="a" * 40 + "-x", phase="Available")], {"c1": ["p1"]}
    )

    with pytest.raises(SelectorTimeoutError, match="nameRegex"):
        resolve_targets(
            campaign([{"clusterSelector": {"nameRegex": "^(a|a)*$"}, "nodePools": "*"}]), listing
        )
