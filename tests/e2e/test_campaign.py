"""A whole campaign through real processes: CLI, dramatiq workers, Redis and the simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import campaign_document, worker_environment
from processes import WorkerProcess, metric_value, run_cli, wait_until

pytestmark = pytest.mark.slow


def campaign_status(environment: dict[str, str], campaign_id: str) -> dict[str, Any]:
    result = run_cli(environment, "status", campaign_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_forty_pools_two_processes(redis_url: str, simulator_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    simulator = simulator_factory(
        projects=2, clusters_per_project=10, pools_per_cluster=2, job_seconds=1.0
    )
    environment = worker_environment(redis_url, simulator.url)
    document = campaign_document(simulator.fleet, campaign_id="e2e-forty", pools=40)
    worker = WorkerProcess(
        environment, log_path=tmp_path / "worker.log", processes=2, threads=4
    ).start()
    try:
        worker.wait_metrics()
        submitted = run_cli(
            {**environment, "PATH": ""}, "submit", "-", "--json", stdin=json.dumps(document)
        )
        assert submitted.returncode == 0, submitted.stderr
        output = json.loads(submitted.stdout)
        assert output["campaign_id"] == "e2e-forty"
        assert output["targets"] == 40

        wait_until(
            lambda: campaign_status(environment, "e2e-forty")["state"] == "finished",
            timeout=120,
            interval=1.0,
            message=f"campaign did not finish; worker log:\n{worker.log_tail()}",
        )
        status = campaign_status(environment, "e2e-forty")
        metrics_text = worker.metrics_text()
    finally:
        worker.stop()

    audit = simulator.audit()
    assert len(audit) == 40
    assert set(audit.values()) == {1}
    assert simulator.stats().get("unauthorized", 0) == 0
    assert status["counts"]["synced"] == 40
    assert len(status["targets"]) == 40
    assert all(target["state"] == "synced" for target in status["targets"])
    assert all(target["jobId"] for target in status["targets"])
    assert metric_value(metrics_text, "cce_sync_submissions_total", {"outcome": "accepted"}) == 40
    assert metric_value(metrics_text, "cce_sync_submissions_total", {"outcome": "failed"}) == 0
    assert metric_value(metrics_text, "cce_sync_syncs_completed_total", {"result": "synced"}) == 40
