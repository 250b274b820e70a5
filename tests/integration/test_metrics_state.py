"""Gauges computed from Redis at scrape time (FleetStateCollector) against a real Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import prometheus_client
import pytest
import redis as redis_py
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker import metrics
from worker.embedded import free_port

NAMESPACE = "cce-sync-dramatiq"


def _scrape(client: redis_py.Redis) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(metrics.FleetStateCollector(client, broker_namespace=NAMESPACE))
    text = prometheus_client.generate_latest(registry).decode()
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def _add_campaign(
    client: redis_py.Redis, campaign_id: str, state: str, counts: dict[str, int], reason: str = ""
) -> None:
    client.zadd("cce-sync:campaigns", {campaign_id: time.time()})
    client.hset(f"cce-sync:campaign:{campaign_id}", mapping={"state": state, "reason": reason})
    for state_name, count in counts.items():
        client.hset(f"cce-sync:campaign:{campaign_id}:counts", state_name, count)


def test_targets_summed_over_active_campaigns(redis: redis_py.Redis) -> None:
    _add_campaign(redis, "c-running", "running", {"pending": 5, "accepted": 2, "synced": 3})
    _add_campaign(redis, "c-paused", "paused", {"pending": 4, "failed": 1}, reason="operator")
    _add_campaign(redis, "c-finished", "finished", {"synced": 100})

    values = _scrape(redis)

    assert values[("cce_sync_targets", (("state", "pending"),))] == 9
    assert values[("cce_sync_targets", (("state", "synced"),))] == 3
    assert values[("cce_sync_targets", (("state", "failed"),))] == 1
    assert values[("cce_sync_targets", (("state", "skipped"),))] == 0


def test_campaigns_counted_by_state(redis: redis_py.Redis) -> None:
    _add_campaign(redis, "c1", "running", {})
    _add_campaign(redis, "c2", "running", {})
    _add_campaign(redis, "c3", "finished", {})
    _add_campaign(redis, "c4", "no-such-state", {})

    values = _scrape(redis)

    assert values[("cce_sync_campaigns", (("state", "running"),))] == 2
    assert values[("cce_sync_campaigns", (("state", "finished"),))] == 1
    assert values[("cce_sync_campaigns", (("state", "cancelled"),))] == 0
    assert ("cce_sync_campaigns", (("state", "no-such-state"),)) not in values


def test_paused_reason_label_is_bounded(redis: redis_py.Redis) -> None:
    _add_campaign(redis, "c1", "paused", {}, reason="auth: authentication failed (APIGW.0301)")
    _add_campaign(redis, "c2", "paused", {}, reason="error_budget: 6 failures > 5")
    _add_campaign(redis, "c3", "paused", {}, reason="operator")
    _add_campaign(redis, "c4", "paused", {}, reason="waiting for the change board")

    values = _scrape(redis)

    assert values[("cce_sync_campaigns_paused", (("reason", "auth"),))] == 1
    assert values[("cce_sync_campaigns_paused", (("reason", "error_budget"),))] == 1
    assert values[("cce_sync_campaigns_paused", (("reason", "operator"),))] == 1
    assert values[("cce_sync_campaigns_paused", (("reason", "other"),))] == 1


def test_many_campaigns_read_in_batches(redis: redis_py.Redis) -> None:
    total = metrics.CAMPAIGN_BATCH_SIZE * 2 + 7
    for index in range(total):
        _add_campaign(redis, f"c{index}", "running", {"pending": 1})

    values = _scrape(redis)

    assert values[("cce_sync_campaigns", (("state", "running"),))] == total
    assert values[("cce_sync_targets", (("state", "pending"),))] == total


def test_queue_depth_and_dead_letters(redis: redis_py.Redis) -> None:
    redis.hset(f"{NAMESPACE}:default.msgs", mapping={"m1": "x", "m2": "x", "m3": "x"})
    redis.hset(f"{NAMESPACE}:default.DQ.msgs", mapping={"m4": "x", "m5": "x"})
    redis.zadd(f"{NAMESPACE}:default.XQ", {"m6": 1.0})
    redis.hset(f"{NAMESPACE}:default.XQ.msgs", mapping={"m6": "x"})

    values = _scrape(redis)

    assert values[("cce_sync_queue_messages", (("queue_name", "default"),))] == 3
    assert values[("cce_sync_queue_messages", (("queue_name", "default.DQ"),))] == 2
    assert ("cce_sync_queue_messages", (("queue_name", "default.XQ"),)) not in values
    assert values[("cce_sync_dead_letter_messages", (("queue_name", "default"),))] == 1
    assert ("cce_sync_dead_letter_messages", (("queue_name", "default.DQ"),)) not in values


def test_workers_counted_by_recent_heartbeat(redis: redis_py.Redis) -> None:
    now_ms = time.time() * 1000
    redis.zadd(
        f"{NAMESPACE}:__heartbeats__",
        {"w-fresh-1": now_ms - 1000, "w-fresh-2": now_ms, "w-stale": now_ms - 60_000},
    )

    values = _scrape(redis)

    assert values[("cce_sync_dramatiq_workers", ())] == 2
    assert values[("cce_sync_state_up", ())] == 1


@pytest.fixture()
def silent_server() -> Iterator[int]:
    """A loopback socket that accepts connections and never sends a byte."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield int(server.getsockname()[1])


def test_redis_timeout_reports_state_down(silent_server: int) -> None:
    client = redis_py.Redis(
        host="127.0.0.1",
        port=silent_server,
        socket_timeout=0.3,
        socket_connect_timeout=0.3,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )

    values = _scrape(client)

    assert values[("cce_sync_state_up", ())] == 0
    assert not any(name == "cce_sync_targets" for name, _ in values)


def _run_exposition_server(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from worker.metrics import run_exposition_server as run; exit(run())",
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _get_metrics(url: str, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"exposition server exited with {process.returncode}: {output}")
        try:
            return httpx.get(url, timeout=2).text
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"exposition server did not answer on {url}")


def test_fork_function_serves_files_and_state(
    redis: redis_py.Redis, redis_url: str, tmp_path: Path
) -> None:
    _add_campaign(redis, "c1", "running", {"pending": 2})
    directory = tmp_path / "metrics"
    directory.mkdir()
    port = free_port()
    env = {
        "REDIS_URL": redis_url,
        "CCE_SYNC_METRICS_HOST": "127.0.0.1",
        "CCE_SYNC_METRICS_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
    }
    process = _run_exposition_server(env)
    try:
        text = _get_metrics(f"http://127.0.0.1:{port}/metrics", process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)

    assert 'cce_sync_targets{state="pending"} 2.0' in text
    assert "cce_sync_state_up 1.0" in text


def test_fork_function_port_in_use_exits_1(redis_url: str, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        env = {
            "REDIS_URL": redis_url,
            "CCE_SYNC_METRICS_HOST": "127.0.0.1",
            "CCE_SYNC_METRICS_PORT": str(holder.getsockname()[1]),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        }
        process = _run_exposition_server(env)
        output, _ = process.communicate(timeout=30)

    assert process.returncode == 1
    assert "CCE_SYNC_METRICS_PORT" in output
