"""Campaigns under real faults: injected API errors, throttling, killed workers, a Redis restart,
a graceful shutdown and bad credentials.

Every test runs real `cce-sync worker` processes against the simulator and ends with the same
three checks. Every target is terminal. No pool was accepted twice, because the simulator's audit
counts one accepted sync per pool. No target was lost, because the state counts add up to the
number of pools.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import redis as redis_py
from conftest import TEST_SK, campaign_document, worker_environment
from processes import WorkerProcess, run_cli, wait_until

from simulator.faults import Faults
from simulator.server import SimulatorServer
from worker.campaigns.store import TERMINAL_STATES
from worker.embedded import EmbeddedRedis

pytestmark = pytest.mark.slow

SimulatorFactory = Callable[..., SimulatorServer]

#: Maximum time a campaign may take to finish once nothing disturbs it any more, in seconds.
FINISH_TIMEOUT_SECONDS = 150.0
#: How long Redis stays down in the restart test, in seconds.
OUTAGE_SECONDS = 4.0


def submit(environment: Mapping[str, str], document: dict[str, object]) -> None:
    result = run_cli(environment, "submit", "-", "--json", stdin=json.dumps(document))
    assert result.returncode == 0, result.stderr


def campaign_status(environment: Mapping[str, str], campaign_id: str) -> dict[str, Any]:
    result = run_cli(environment, "status", campaign_id, "--json")
    assert result.returncode == 0, result.stderr
    status: dict[str, Any] = json.loads(result.stdout)
    return status


class CampaignWatch:
    """Reads a campaign's state and counts straight from Redis, tolerating a Redis outage."""

    def __init__(self, redis_url: str, campaign_id: str) -> None:
        self.client = redis_py.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        self.campaign_id = campaign_id

    def state(self) -> str:
        try:
            return str(self.client.hget(f"cce-sync:campaign:{self.campaign_id}", "state") or "")
        except redis_py.RedisError:
            return ""

    def reason(self) -> str:
        return str(self.client.hget(f"cce-sync:campaign:{self.campaign_id}", "reason") or "")

    def counts(self) -> dict[str, int]:
        try:
            raw = cast(
                dict[str, str],
                self.client.hgetall(f"cce-sync:campaign:{self.campaign_id}:counts"),
            )
        except redis_py.RedisError:
            return {}
        return {state: int(value) for state, value in raw.items()}

    def progressed(self) -> int:
        """Return the number of targets accepted or past it."""
        counts = self.counts()
        return sum(counts.get(state, 0) for state in ("accepted", *TERMINAL_STATES))

    def close(self) -> None:
        self.client.close()


@pytest.fixture()
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker process groups; every one still running is killed after the test."""
    started: list[WorkerProcess] = []

    def start(environment: Mapping[str, str], **options: Any) -> WorkerProcess:
        name = f"worker-{len(started)}.log"
        worker = WorkerProcess(environment, log_path=tmp_path / name, **options).start()
        started.append(worker)
        worker.wait_metrics()
        return worker

    yield start
    for worker in started:
        worker.kill()


def logs_of(tmp_path: Path, chars: int = 3000) -> str:
    parts = []
    for path in sorted(tmp_path.glob("worker-*.log")):
        parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
    return "\n".join(parts)


def wait_finished(
    watch: CampaignWatch, tmp_path: Path, *, timeout: float = FINISH_TIMEOUT_SECONDS
) -> None:
    """Wait until the campaign is finished; fail with the counts and worker logs after `timeout`."""
    wait_until(
        lambda: watch.state() == "finished",
        timeout=timeout,
        interval=0.5,
        message=f"campaign not finished; counts {watch.counts()}; logs:\n{logs_of(tmp_path)}",
    )


def wait_progress(watch: CampaignWatch, tmp_path: Path, targets: int) -> None:
    """Wait until at least `targets` targets were accepted or finished."""
    wait_until(
        lambda: watch.progressed() >= targets,
        timeout=90,
        interval=0.2,
        message=f"no progress to {targets}; counts {watch.counts()}; logs:\n{logs_of(tmp_path)}",
    )


def assert_each_pool_once(
    simulator: SimulatorServer, status: dict[str, Any], pools: int, *, synced: bool = True
) -> None:
    """Check the three promises: all terminal, none accepted twice, none lost."""
    audit = simulator.audit()
    states = [target["state"] for target in status["targets"]]
    duplicates = {pool: count for pool, count in audit.items() if count != 1}

    assert status["state"] == "finished"
    assert len(status["targets"]) == pools
    assert sum(status["counts"].values()) == pools
    assert [state for state in states if state not in TERMINAL_STATES] == []
    assert duplicates == {}
    assert len(audit) == pools
    if synced:
        assert status["counts"]["synced"] == pools


def test_api_faults_accept_each_pool_once(
    redis_url: str, simulator_factory: SimulatorFactory, start_worker: Any, tmp_path: Path
) -> None:
    simulator = simulator_factory(
        projects=2,
        clusters_per_project=15,
        pools_per_cluster=2,
        job_seconds=1.0,
        seed=7,
        faults=Faults(error_5xx=0.15, reset=0.10, drop_after_accept=0.10),
    )
    environment = worker_environment(redis_url, simulator.url)
    document = campaign_document(simulator.fleet, campaign_id="faults-60", pools=60)
    watch = CampaignWatch(redis_url, "faults-60")
    start_worker(environment, processes=1, threads=4)
    start_worker(environment, processes=1, threads=4)

    submit(environment, document)
    wait_finished(watch, tmp_path)
    status = campaign_status(environment, "faults-60")
    stats = simulator.stats()
    watch.close()

    assert_each_pool_once(simulator, status, 60)
    assert stats["server_errors"] > 0
    assert stats["resets"] > 0
    assert stats["dropped_after_accept"] > 0


def test_throttled_api_slows_workers_down(
    redis_url: str, simulator_factory: SimulatorFactory, start_worker: Any, tmp_path: Path
) -> None:
    simulator = simulator_factory(
        projects=2, clusters_per_project=20, pools_per_cluster=2, job_seconds=1.0, rate_per_second=8
    )
    environment = worker_environment(redis_url, simulator.url, CCE_SYNC_RATE_PER_SECOND="32")
    # Without a high in-flight cap (default 10), the campaign never reaches the API's rate.
    document = campaign_document(
        simulator.fleet, campaign_id="throttled-80", pools=80, policy={"maxInFlight": 1000}
    )
    watch = CampaignWatch(redis_url, "throttled-80")
    start_worker(environment, processes=2, threads=4)

    submit(environment, document)
    wait_finished(watch, tmp_path)
    status = campaign_status(environment, "throttled-80")
    throttled = simulator.stats()["throttled"]
    watch.close()

    assert_each_pool_once(simulator, status, 80)
    assert throttled > 0
    assert throttled < 80 / 2, simulator.stats()


def test_workers_killed_three_times(
    redis_url: str, simulator_factory: SimulatorFactory, start_worker: Any, tmp_path: Path
) -> None:
    # Slow responses keep a sync request in flight most of the time, so that kills often land
    # between sending it and recording the response.
    simulator = simulator_factory(
        projects=2,
        clusters_per_project=25,
        pools_per_cluster=3,
        job_seconds=2.0,
        faults=Faults(latency_ms=400),
    )
    # A slow write rate keeps the campaign running long enough for three kills.
    environment = worker_environment(redis_url, simulator.url, CCE_SYNC_RATE_PER_SECOND="2")
    document = campaign_document(simulator.fleet, campaign_id="killed-150", pools=150)
    watch = CampaignWatch(redis_url, "killed-150")
    worker = start_worker(environment, processes=2, threads=4)

    submit(environment, document)
    for progress in (20, 50, 80):
        wait_progress(watch, tmp_path, progress)
        worker.kill()
        worker = start_worker(environment, processes=2, threads=4)
    assert watch.state() == "running"

    wait_finished(watch, tmp_path, timeout=180)
    status = campaign_status(environment, "killed-150")
    watch.close()

    assert_each_pool_once(simulator, status, 150)


def test_redis_restart_with_aof(
    simulator_factory: SimulatorFactory, start_worker: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = EmbeddedRedis(appendonly=True, directory=directory).start()
    try:
        simulator = simulator_factory(
            projects=2, clusters_per_project=15, pools_per_cluster=2, job_seconds=1.0
        )
        environment = worker_environment(server.url, simulator.url, CCE_SYNC_RATE_PER_SECOND="4")
        document = campaign_document(simulator.fleet, campaign_id="aof-60", pools=60)
        watch = CampaignWatch(server.url, "aof-60")
        start_worker(environment, processes=2, threads=4)

        submit(environment, document)
        wait_progress(watch, tmp_path, 15)
        server.restart()
        # A second restart with the server gone for a few seconds, longer than the Redis
        # client's own reconnection attempts cover.
        wait_progress(watch, tmp_path, 30)
        server.kill()
        time.sleep(OUTAGE_SECONDS)
        server.start()
        assert watch.state() == "running"

        wait_finished(watch, tmp_path)
        status = campaign_status(environment, "aof-60")
        watch.close()
    finally:
        server.stop()

    assert_each_pool_once(simulator, status, 60)


def test_sigterm_then_new_worker_finishes(
    redis_url: str, simulator_factory: SimulatorFactory, start_worker: Any, tmp_path: Path
) -> None:
    simulator = simulator_factory(
        projects=2, clusters_per_project=15, pools_per_cluster=2, job_seconds=1.0
    )
    environment = worker_environment(redis_url, simulator.url, CCE_SYNC_RATE_PER_SECOND="3")
    document = campaign_document(simulator.fleet, campaign_id="sigterm-60", pools=60)
    watch = CampaignWatch(redis_url, "sigterm-60")
    first = start_worker(environment, processes=2, threads=4)

    submit(environment, document)
    wait_progress(watch, tmp_path, 15)
    exit_code = first.stop()
    stopped_at = watch.counts()
    start_worker(environment, processes=2, threads=4)

    wait_finished(watch, tmp_path)
    status = campaign_status(environment, "sigterm-60")
    watch.close()

    assert exit_code == 0
    assert stopped_at.get("synced", 0) < 60
    assert_each_pool_once(simulator, status, 60)


def test_auth_failure_pauses_until_resumed(
    redis_url: str, simulator_factory: SimulatorFactory, start_worker: Any, tmp_path: Path
) -> None:
    simulator = simulator_factory(
        projects=1, clusters_per_project=10, pools_per_cluster=2, job_seconds=1.0
    )
    # Housekeeping enqueues forgotten targets again after its stale time. A long stale time
    # leaves `resume` as the only way to restart the campaign.
    good = worker_environment(redis_url, simulator.url, CCE_SYNC_HOUSEKEEPING_STALE_SECONDS="600")
    bad = {**good, "HUAWEICLOUD_SDK_SK": "wrong-" + TEST_SK}
    document = campaign_document(simulator.fleet, campaign_id="auth-20", pools=20)
    watch = CampaignWatch(redis_url, "auth-20")
    bad_worker = start_worker(bad, processes=2, threads=8)

    submit(good, document)
    wait_until(
        lambda: watch.state() == "paused",
        timeout=60,
        message=f"campaign not paused; logs:\n{logs_of(tmp_path)}",
    )
    # Messages already taken by other threads end in the next moment; count after them.
    time.sleep(2.0)
    paused_counts = watch.counts()
    paused_reason = watch.reason()
    bad_worker.stop()

    assert paused_reason.startswith("auth")
    assert paused_counts.get("failed", 0) == 0
    assert paused_counts.get("accepted", 0) == 0
    assert paused_counts.get("pending", 0) == 20
    assert simulator.audit() == {}
    assert simulator.stats()["unauthorized"] > 0

    # Fixed credentials alone do not restart a paused campaign.
    start_worker(good, processes=1, threads=4)
    time.sleep(3.0)
    assert watch.state() == "paused"
    assert simulator.audit() == {}

    resumed = run_cli(good, "resume", "auth-20")
    assert resumed.returncode == 0, resumed.stderr

    wait_finished(watch, tmp_path, timeout=90)
    status = campaign_status(good, "auth-20")
    watch.close()

    assert_each_pool_once(simulator, status, 20)
