"""Campaigns that other systems XADD to the intake stream run through `cce-sync worker --intake`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import redis as redis_py
from conftest import campaign_document, worker_environment
from processes import CCE_SYNC, WorkerProcess, wait_until

pytestmark = pytest.mark.slow


def test_duplicate_intake_entries_run_once(
    redis_url: str, simulator_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    simulator = simulator_factory(
        projects=1, clusters_per_project=4, pools_per_cluster=2, job_seconds=0.5
    )
    environment = worker_environment(redis_url, simulator.url)
    document = json.dumps(campaign_document(simulator.fleet, campaign_id="from-intake", pools=8))
    client = redis_py.Redis.from_url(redis_url, decode_responses=True)
    client.xadd("cce-sync:intake", {"campaign": document})
    client.xadd("cce-sync:intake", {"campaign": document})
    client.xadd("cce-sync:intake", {"campaign": "{not json"})

    worker = WorkerProcess(
        environment,
        log_path=tmp_path / "worker.log",
        processes=1,
        threads=4,
        extra_args=("--intake",),
    ).start()
    try:
        wait_until(
            lambda: client.hget("cce-sync:campaign:from-intake", "state") == "finished",
            timeout=90,
            message=f"campaign did not finish; worker log:\n{worker.log_tail()}",
        )
        status = subprocess.run(
            [CCE_SYNC, "status", "from-intake", "--json"],
            env={**environment},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        worker.stop()

    assert json.loads(status.stdout)["counts"]["synced"] == 8
    assert set(simulator.audit().values()) == {1}
    assert len(simulator.audit()) == 8
    assert client.zcard("cce-sync:campaigns") == 1
    assert client.xlen("cce-sync:intake:rejected") == 1
    types = [fields["type"] for _, fields in client.xrange("cce-sync:events")]
    assert types.count("campaign.accepted") == 1
    assert types.count("campaign.rejected") == 1
    assert types.count("target.accepted") == 8
    assert types.count("campaign.finished") == 1
    pending = client.xpending("cce-sync:intake", "cce-sync")
    assert pending["pending"] == 0
