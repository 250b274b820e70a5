"""A real Prometheus scrapes a worker during a simulator campaign, through a worker crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_py
from conftest import campaign_document, worker_environment
from processes import CCE_SYNC, WorkerProcess, metric_value, run_cli, wait_until
from prometheus_fixtures import query, start_prometheus

pytestmark = pytest.mark.slow

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "cce-sync.json"
CORE_METRICS = (
    "cce_sync_submissions_total",
    "cce_sync_api_request_duration_seconds",
    "cce_sync_throttled_total",
)


def dashboard_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found: list[tuple[str, str]] = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets") or []:
            found.append((panel["title"], target["expr"].replace("$__rate_interval", "2m")))
    return found


def worker_process_pid(metrics_dir: Path, main_pid: int) -> int:
    """Return the PID of a dramatiq worker process (not the main one), from its metric files."""
    for path in sorted(metrics_dir.glob("gauge_live*_*.db")):
        pid = int(path.stem.rsplit("_", 1)[-1])
        if pid != main_pid and Path(f"/proc/{pid}").exists():
            return pid
    raise AssertionError(f"no live worker process files in {metrics_dir}")


def accepted_count(client: redis_py.Redis, campaign_id: str) -> int:
    counts: dict[str, Any] = client.hgetall(f"cce-sync:campaign:{campaign_id}:counts")
    return sum(int(counts.get(state, 0)) for state in ("accepted", "synced", "sync_failed"))


def test_prometheus_through_worker_crash(redis_url: str, simulator_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    simulator = simulator_factory(
        projects=2, clusters_per_project=10, pools_per_cluster=2, job_seconds=2.0
    )
    environment = worker_environment(redis_url, simulator.url, CCE_SYNC_RATE_PER_SECOND="6")
    client = redis_py.Redis.from_url(redis_url, decode_responses=True)
    first = WorkerProcess(
        environment, log_path=tmp_path / "worker-1.log", processes=2, threads=4
    ).start()
    prometheus = start_prometheus(tmp_path, [f"127.0.0.1:{first.metrics_port}"])
    second: WorkerProcess | None = None
    try:
        first.wait_metrics()
        document = json.dumps(campaign_document(simulator.fleet, campaign_id="monitored", pools=40))
        submitted = subprocess.run(
            [CCE_SYNC, "submit", "-"],
            input=document,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert submitted.returncode == 0, submitted.stderr

        wait_until(
            lambda: accepted_count(client, "monitored") >= 10, timeout=60, message=first.log_tail()
        )
        assert first.process is not None
        os.kill(worker_process_pid(first.metrics_dir, first.process.pid), signal.SIGKILL)
        # dramatiq stops the whole worker when one process dies; an orchestrator restarts it.
        first.process.wait(timeout=60)

        second = WorkerProcess(
            environment,
            log_path=tmp_path / "worker-2.log",
            processes=2,
            threads=4,
            metrics_port=first.metrics_port,
        ).start()
        second.wait_metrics()
        wait_until(
            lambda: client.hget("cce-sync:campaign:monitored", "state") == "finished",
            timeout=150,
            message=f"campaign did not finish; worker log:\n{second.log_tail()}",
        )
        wait_until(
            lambda: (
                metric_value(second.metrics_text(), "cce_sync_dramatiq_messages_inprogress") == 0
            ),
            timeout=30,
            message="in-progress gauge stayed above 0",
        )
        # Let Prometheus scrape the final values a few times.
        wait_until(
            lambda: bool(query(prometheus.url, 'cce_sync_campaigns{state="finished"} == 1')),
            timeout=30,
        )

        in_progress = query(prometheus.url, "sum(cce_sync_dramatiq_messages_inprogress)")
        endpoint_text = second.metrics_text()
        results = {
            title + ": " + expr: query(prometheus.url, expr)
            for title, expr in dashboard_expressions()
        }
    finally:
        prometheus.stop()
        first.kill()
        if second is not None:
            second.stop()

    audit = simulator.audit()
    assert len(audit) == 40
    assert set(audit.values()) == {1}
    assert any(
        line.startswith("cce_sync_dramatiq_messages_inprogress{")
        for line in endpoint_text.splitlines()
    )
    assert in_progress
    assert float(in_progress[0]["value"][1]) == 0
    for name in CORE_METRICS:
        panels = [key for key in results if name in key]
        assert panels, f"no dashboard panel queries {name}"
        assert any(results[key] for key in panels), f"no panel on {name} returned data"


#: A second worker started next to a running one; it must refuse to start.
SMALL_WORKER = ("worker", "--processes", "1", "--threads", "1")


def test_metrics_port_clash_is_reported(redis_url: str, simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    environment = worker_environment(redis_url, simulator.url)
    first = WorkerProcess(
        environment, log_path=tmp_path / "first.log", processes=1, threads=1
    ).start()
    try:
        first.wait_metrics()
        clash = run_cli(
            {**os.environ, **environment}, *SMALL_WORKER, "--metrics-port", str(first.metrics_port)
        )
        assert httpx.get(first.metrics_url, timeout=5).status_code == 200
    finally:
        first.stop()

    assert clash.returncode != 0
    assert str(first.metrics_port) in clash.stderr
    assert "--metrics-port" in clash.stderr


def child_pids(parent: int) -> set[int]:
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.add(int(stat.parent.name))
    return children


def is_running(pid: int) -> bool:
    """Return whether `pid` exists and is not a zombie waiting to be reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def test_children_exit_when_main_killed(redis_url: str, simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker = WorkerProcess(
        worker_environment(redis_url, simulator.url),
        log_path=tmp_path / "worker.log",
        processes=2,
        threads=2,
    ).start()
    try:
        worker.wait_metrics()
        assert worker.process is not None
        children = child_pids(worker.process.pid)
        assert len(children) >= 4  # two worker processes, metrics and housekeeping

        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)
        wait_until(
            lambda: not any(is_running(pid) for pid in children),
            timeout=40,
            message=f"orphaned worker processes still run; log:\n{worker.log_tail()}",
        )
    finally:
        worker.kill()


def test_shared_metrics_dir_is_refused(redis_url: str, simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    environment = worker_environment(redis_url, simulator.url)
    first = WorkerProcess(
        environment, log_path=tmp_path / "first.log", processes=1, threads=1
    ).start()
    try:
        first.wait_metrics()
        (first.metrics_dir / "counter_999999.db").write_bytes(b"")
        clash = run_cli(
            {**os.environ, **environment},
            *SMALL_WORKER,
            "--metrics-port",
            "0",
            "--metrics-dir",
            str(first.metrics_dir),
        )
        kept = (first.metrics_dir / "counter_999999.db").exists()
    finally:
        first.stop()

    assert clash.returncode == 1
    assert "--metrics-dir" in clash.stderr
    assert kept is True
