"""The Grafana dashboard: generated JSON is current, and its queries work on a real Prometheus.

A child process records metrics into a multiprocess directory the way a worker does. An
exposition server in this process serves them together with state read from a private Redis,
and a real Prometheus on loopback scrapes that server every second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
from prometheus_fixtures import PrometheusHandle, query, start_prometheus, wait_for_result

from worker import metrics
from worker.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "deploy" / "grafana" / "generate.py"
DASHBOARD = ROOT / "deploy" / "grafana" / "cce-sync.json"

#: Metrics every dashboard must show.
REQUIRED_METRICS = (
    "cce_sync_submissions_total",
    "cce_sync_api_request_duration_seconds",
    "cce_sync_throttled_total",
)

#: Records every worker metric about five times a second until stdin closes, for at most
#: two minutes.
WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from worker import metrics

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    metrics.initialize_series()
    metrics.WORKER_PROCESSES.set(1)
    metrics.MESSAGES_IN_PROGRESS.labels("default", "submit_sync").set(2)
    metrics.DELAYED_MESSAGES_IN_PROGRESS.labels("default.DQ", "track_sync").set(1)
    print("ready", flush=True)
    deadline = time.monotonic() + 120
    step = 0
    while not stop.is_set() and time.monotonic() < deadline:
        step += 1
        metrics.SUBMISSIONS.labels(outcome="accepted", reason="").inc(3)
        metrics.SUBMISSIONS.labels(outcome="failed", reason="not_found").inc()
        metrics.SYNCS_COMPLETED.labels(result="synced").inc(2)
        metrics.API_REQUESTS.labels(operation="sync_node_pool", code="202").inc(3)
        metrics.API_REQUESTS.labels(operation="sync_node_pool", code="429").inc()
        metrics.API_REQUEST_DURATION.labels(operation="sync_node_pool").observe(0.1 * (step % 7))
        metrics.API_REQUEST_DURATION.labels(operation="show_node_pool").observe(0.05)
        metrics.RETRIES.labels(reason="throttled").inc()
        metrics.THROTTLED.labels(source="api").inc()
        metrics.THROTTLED.labels(source="local").inc(2)
        metrics.RATE_LIMIT_WAIT.observe(0.02 * (step % 5))
        metrics.TARGETS_SKIPPED.labels(reason="error_budget").inc()
        metrics.MESSAGES.labels("default", "submit_sync").inc(4)
        metrics.MESSAGE_ERRORS.labels("default", "submit_sync").inc()
        metrics.MESSAGE_DURATION.labels("default", "submit_sync").observe(0.2)
        time.sleep(0.2)
    """
)


def _dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (panel title, expr) for every query of every panel, rows included."""
    found: list[tuple[str, str]] = []
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets") or []:
            found.append((panel["title"], target["expr"]))
    return found


def _runnable(expr: str) -> str:
    # Grafana replaces $__rate_interval before sending a query. A minute covers many 1 s scrapes.
    return expr.replace("$__rate_interval", "1m")


def test_dashboard_json_is_regenerated() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_dashboard_uses_required_metrics() -> None:
    expressions = " ".join(expr for _, expr in _expressions(_dashboard()))

    for name in REQUIRED_METRICS:
        assert name in expressions, f"no panel queries {name}"


def test_dashboard_has_datasource_variable() -> None:
    dashboard = _dashboard()
    variables = dashboard["templating"]["list"]
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]

    assert {"name": "datasource", "type": "datasource", "query": "prometheus"}.items() <= variables[
        0
    ].items()
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in panels)


@dataclass
class ScrapedStack:
    prometheus: PrometheusHandle
    writer: subprocess.Popen[str]
    server: metrics.MetricsServer


def _seed_redis(client: redis_py.Redis) -> None:
    now = time.time()
    campaigns = {
        "dash-running": ("running", "", {"pending": 7, "accepted": 2, "synced": 11}),
        "dash-paused": ("paused", "error_budget: 6 failures", {"pending": 3, "failed": 6}),
        "dash-finished": ("finished", "", {"synced": 20}),
    }
    for campaign_id, (state, reason, counts) in campaigns.items():
        client.zadd("cce-sync:campaigns", {campaign_id: now})
        client.hset(f"cce-sync:campaign:{campaign_id}", mapping={"state": state, "reason": reason})
        for target_state, count in counts.items():
            client.hset(f"cce-sync:campaign:{campaign_id}:counts", target_state, count)

    namespace = metrics.DEFAULT_BROKER_NAMESPACE
    client.hset(f"{namespace}:default.msgs", mapping={"m1": "x", "m2": "x"})
    client.hset(f"{namespace}:default.DQ.msgs", mapping={"m3": "x"})
    client.zadd(f"{namespace}:default.XQ", {"m4": now})
    # A heartbeat an hour ahead stays recent for the whole test.
    client.zadd(f"{namespace}:__heartbeats__", {"dash-worker": (now + 3600) * 1000})


def _start_writer(directory: Path) -> subprocess.Popen[str]:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    if writer.stdout.readline().strip() != "ready":
        writer.kill()
        _, stderr = writer.communicate(timeout=10)
        pytest.fail(f"metrics writer did not start: {stderr}")
    return writer


@pytest.fixture(scope="module")
def scraped_stack(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScrapedStack]:
    tmp_path = tmp_path_factory.mktemp("dashboard")
    client = redis_py.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)
    client.flushall()
    _seed_redis(client)

    directory = tmp_path / "metrics"
    directory.mkdir()
    writer = _start_writer(directory)
    registry = metrics.build_registry(multiprocess_dir=directory, redis_client=client)
    server = metrics.serve_metrics("127.0.0.1", 0, registry)
    try:
        prometheus = start_prometheus(tmp_path, [f"127.0.0.1:{server.port}"])
    except BaseException:
        server.close()
        writer.kill()
        writer.communicate(timeout=10)
        raise

    yield ScrapedStack(prometheus=prometheus, writer=writer, server=server)

    prometheus.stop()
    server.close()
    if writer.stdin:
        writer.stdin.close()
    writer.wait(timeout=10)
    client.close()


def test_every_dashboard_query_parses(scraped_stack: ScrapedStack) -> None:
    url = scraped_stack.prometheus.url
    for title, expr in _expressions(_dashboard()):
        try:
            query(url, _runnable(expr))
        except Exception as error:
            pytest.fail(f"panel {title!r}: {error}")


def test_scrape_target_is_up(scraped_stack: ScrapedStack) -> None:
    result = wait_for_result(scraped_stack.prometheus.url, 'up{job="cce-sync"} == 1')

    assert len(result) == 1


def test_every_dashboard_query_returns_data(scraped_stack: ScrapedStack) -> None:
    url = scraped_stack.prometheus.url
    # rate() needs two scrapes inside its window, so the test waits for them once.
    wait_for_result(url, "rate(cce_sync_submissions_total[1m]) > 0", timeout_seconds=30)

    empty: list[str] = []
    for title, expr in _expressions(_dashboard()):
        if not query(url, _runnable(expr)):
            empty.append(f"{title}: {expr}")

    assert empty == []


def test_core_values_match_what_was_recorded(scraped_stack: ScrapedStack) -> None:
    url = scraped_stack.prometheus.url

    targets = wait_for_result(url, 'max(cce_sync_targets{state="pending"})')
    paused = wait_for_result(url, 'max(cce_sync_campaigns_paused{reason="error_budget"})')
    throttled = wait_for_result(url, 'sum by (source) (cce_sync_throttled_total{source="local"})')
    workers = wait_for_result(url, "sum(cce_sync_worker_processes)")
    skipped = wait_for_result(
        url, 'sum by (reason) (cce_sync_targets_skipped_total{reason="error_budget"})'
    )
    skip_reasons = wait_for_result(url, "count(cce_sync_targets_skipped_total)")

    assert float(targets[0]["value"][1]) == 10
    assert float(paused[0]["value"][1]) == 1
    assert float(throttled[0]["value"][1]) > 0
    assert float(workers[0]["value"][1]) == 1
    assert float(skipped[0]["value"][1]) > 0
    # initialize_series creates one zero series per skip reason.
    assert float(skip_reasons[0]["value"][1]) == 4
