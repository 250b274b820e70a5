"""Fixtures shared by every test: a private Redis, the CCE simulator and worker processes.

Nothing here touches the machine's own Redis: each session starts a `redis-server` of its own on
a free loopback port, and only that server's data is ever flushed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from worker.embedded import EmbeddedRedis  # noqa: E402
from worker.settings import get_settings  # noqa: E402

#: Credentials the simulator accepts in tests; never valid anywhere else.
TEST_AK = "TESTACCESSKEY0000000"
TEST_SK = "test-secret-key-0000000000000000000000000"

_ENV_PREFIXES = (
    "CCE_SYNC_",
    "HUAWEICLOUD_SDK_",
    "CLOUD_SDK_",
    "REDIS_URL",
    "PROMETHEUS_MULTIPROC_DIR",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give every test an environment without cce-sync settings or cloud credentials."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A private redis-server for the whole test session."""
    server = EmbeddedRedis().start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the private server, emptied before the test."""
    client = redis_py.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture()
def redis(redis_url: str) -> Iterator[redis_py.Redis]:
    """A client (str responses) on the emptied private server."""
    client = redis_py.Redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
    yield client
    client.close()


@pytest.fixture()
def simulator_factory() -> Iterator[object]:
    """Start simulators with any options; every one is stopped after the test.

    Each accepts the test credentials (`TEST_AK` / `TEST_SK`) and nothing else.
    """
    from simulator.server import SimulatorServer

    started: list[SimulatorServer] = []

    def start(**options: object) -> SimulatorServer:
        options.setdefault("credentials", {TEST_AK: TEST_SK})
        server = SimulatorServer(**options).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture()
def simulator(simulator_factory):  # type: ignore[no-untyped-def]
    """A simulator with the default fleet (2 projects x 20 clusters x 2 pools), jobs of 1 s."""
    return simulator_factory(job_seconds=1.0)


def worker_environment(redis_url: str, simulator_url: str, **extra: str) -> dict[str, str]:
    """Environment for a worker or CLI process that talks to the private Redis and simulator."""
    environment = {
        "REDIS_URL": redis_url,
        "CCE_SYNC_ENDPOINT": simulator_url,
        "HUAWEICLOUD_SDK_AK": TEST_AK,
        "HUAWEICLOUD_SDK_SK": TEST_SK,
        "CCE_SYNC_RATE_PER_SECOND": "50",
        "CCE_SYNC_READ_RATE_PER_SECOND": "200",
        "CCE_SYNC_TRACK_POLL_SECONDS": "0.5",
        "CCE_SYNC_HEARTBEAT_TIMEOUT_SECONDS": "5",
        "CCE_SYNC_RECONCILE_SETTLE_SECONDS": "3",
        "CCE_SYNC_HTTP_READ_TIMEOUT_SECONDS": "3",
        "CCE_SYNC_HTTP_DEADLINE_SECONDS": "5",
        "CCE_SYNC_HOUSEKEEPING_INTERVAL_SECONDS": "5",
        "CCE_SYNC_HOUSEKEEPING_STALE_SECONDS": "30",
    }
    environment.update(extra)
    return environment


def campaign_document(
    fleet: object,
    *,
    campaign_id: str,
    pools: int | None = None,
    include_default: bool = False,
    policy: dict[str, object] | None = None,
) -> dict[str, object]:
    """A campaign naming the first `pools` node pools of a simulator fleet, one target per cluster."""
    by_cluster: dict[tuple[str, str], list[str]] = {}
    for pool in fleet.pools(include_default=include_default):  # type: ignore[attr-defined]
        if pools is not None and sum(len(ids) for ids in by_cluster.values()) >= pools:
            break
        by_cluster.setdefault((pool.project_id, pool.cluster_id), []).append(pool.id)

    targets = [
        {"projectId": project_id, "clusterId": cluster_id, "nodePools": pool_ids}
        for (project_id, cluster_id), pool_ids in by_cluster.items()
    ]
    return {
        "apiVersion": "cce-sync/v1",
        "kind": "Campaign",
        "metadata": {"id": campaign_id, "name": f"test {campaign_id}"},
        "spec": {
            "region": fleet.region,  # type: ignore[attr-defined]
            "sync": {"maxUnavailable": 1},
            "targets": targets,
            "policy": policy or {},
        },
    }
