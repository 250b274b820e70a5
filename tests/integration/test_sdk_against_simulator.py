"""The official Huawei Cloud Python SDK, unchanged, talks to the simulator over loopback HTTP.

This checks two things at once: the simulator's responses deserialize into the SDK's models, and
the SDK's AK/SK signatures pass the simulator's verification (the worker's signer code).
BasicCredentials get the project ID explicitly, so the SDK never requests it from IAM, and AK/SK are
set, so it never reaches for its metadata credential provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from simulator import SimulatorServer

cce = pytest.importorskip("huaweicloudsdkcce.v3")
core_credentials = pytest.importorskip("huaweicloudsdkcore.auth.credentials")
core_exceptions = pytest.importorskip("huaweicloudsdkcore.exceptions.exceptions")
core_http_config = pytest.importorskip("huaweicloudsdkcore.http.http_config")
core_region = pytest.importorskip("huaweicloudsdkcore.region.region")

AK = "SDKTESTACCESSKEY"
SK = "sdk-test-secret-key"
PASSWORD = "Sdk-Sync-2024x"


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatorServer]:
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", AK)
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", SK)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with SimulatorServer(
        projects=1, clusters_per_project=2, credentials={AK: SK}, job_seconds=0.5
    ) as server:
        yield server


def sdk_client(sim: SimulatorServer, *, secret_key: str = SK) -> Any:
    config = core_http_config.HttpConfig.get_default_config()
    config.timeout = (5, 10)
    project_id = sim.fleet.projects[0].id
    credentials = core_credentials.BasicCredentials(AK, secret_key, project_id)
    region = core_region.Region("simulated-region", sim.url)
    return (
        cce.CceClient.new_builder()
        .with_http_config(config)
        .with_credentials(credentials)
        .with_region(region)
        .build()
    )


def upgrade_request(cluster_id: str, pool_id: str, max_unavailable: int = 1) -> Any:
    login = cce.Login(user_password=cce.UserPassword(username="root", password=PASSWORD))
    spec = cce.NodePoolUpgradeSpec(
        max_unavailable=max_unavailable,
        node_pool_id=pool_id,
        node_template=cce.UpgradeNodePoolSpecNodeTemplate(login=login),
    )
    return cce.UpgradeNodePoolRequest(
        cluster_id=cluster_id, nodepool_id=pool_id, body=cce.UpgradeNodePool(spec=spec)
    )


def test_sdk_lists_clusters(sim: SimulatorServer) -> None:
    project = sim.fleet.projects[0]
    response = sdk_client(sim).list_clusters(cce.ListClustersRequest())
    assert [item.metadata.uid for item in response.items] == [c.id for c in project.clusters]
    assert response.items[0].status.phase == "Available"


def test_sdk_lists_pools_with_default(sim: SimulatorServer) -> None:
    cluster = sim.fleet.projects[0].clusters[0]
    request = cce.ListNodePoolsRequest(cluster_id=cluster.id, show_default_node_pool="true")
    response = sdk_client(sim).list_node_pools(request)
    assert [item.metadata.uid for item in response.items] == [pool.id for pool in cluster.pools]


def test_sdk_syncs_pool_and_follows_job(sim: SimulatorServer) -> None:
    client = sdk_client(sim)
    cluster = sim.fleet.projects[0].clusters[0]
    pool = cluster.pools[1]

    accepted = client.upgrade_node_pool(upgrade_request(cluster.id, pool.id))
    assert accepted.jobid
    assert sim.audit() == {pool.key(sim.fleet.region): 1}
    assert sim.audit_records()[0].caller == AK

    shown = client.show_node_pool(
        cce.ShowNodePoolRequest(cluster_id=cluster.id, nodepool_id=pool.id)
    )
    assert shown.status.job_id == accepted.jobid
    assert shown.status.conditions[0].type == "ConfigurationSynchronizing"
    assert shown.status.current_node == len(pool.nodes)

    job = client.show_job(cce.ShowJobRequest(job_id=accepted.jobid))
    assert job.status.phase in ("Initializing", "Running", "Success")
    assert job.spec.resource_id == pool.id


def test_sdk_sees_validation_error(sim: SimulatorServer) -> None:
    cluster = sim.fleet.projects[0].clusters[0]
    pool = cluster.pools[1]
    with pytest.raises(core_exceptions.ClientRequestException) as raised:
        sdk_client(sim).upgrade_node_pool(upgrade_request(cluster.id, pool.id, max_unavailable=21))
    assert raised.value.status_code == 400
    assert raised.value.error_code == "CCE.01400001"
    assert "maxUnavailable" in raised.value.error_msg
    assert sim.audit() == {}


def test_sdk_wrong_secret_is_rejected(sim: SimulatorServer) -> None:
    with pytest.raises(core_exceptions.ClientRequestException) as raised:
        sdk_client(sim, secret_key="not-the-secret").list_clusters(cce.ListClustersRequest())
    assert raised.value.status_code == 401
    assert raised.value.error_code == "APIGW.0301"
    assert sim.stats()["unauthorized"] == 1
