"""Metrics in multiprocess mode, the exposition server and the dramatiq middleware."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import httpx
import prometheus_client
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries
from prometheus_client.parser import text_string_to_metric_families

from worker import metrics

#: A worker stand-in: records metrics into PROMETHEUS_MULTIPROC_DIR, prints "ready", then waits
#: until its stdin closes (or it is killed).
CHILD_SCRIPT = textwrap.dedent(
    """
    import sys
    from worker import metrics

    assert metrics.multiprocess_enabled(), "child did not start in multiprocess mode"
    for _ in range(int(sys.argv[1])):
        metrics.SUBMISSIONS.labels(outcome="accepted", reason="").inc()
    metrics.SUBMISSIONS.labels(outcome="failed", reason="not_found").inc()
    metrics.API_REQUEST_DURATION.labels(operation="sync_node_pool").observe(0.3)
    metrics.RATE_LIMIT_WAIT.observe(0.02)
    metrics.TARGETS_SKIPPED.labels(reason="window_closed").inc()
    metrics.WORKER_PROCESSES.set(1)
    metrics.MESSAGES_IN_PROGRESS.labels("default", "submit_sync").inc()
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def _sample_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def _value(text: str, name: str, **labels: str) -> float | None:
    return _sample_values(text).get((name, tuple(sorted(labels.items()))))


def _scrape(directory: Path) -> str:
    registry = metrics.build_registry(multiprocess_dir=directory)
    return prometheus_client.generate_latest(registry).decode()


def _start_child(directory: Path, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, str(count)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line.strip() != "ready":
        child.kill()
        _, stderr = child.communicate(timeout=10)
        pytest.fail(f"metrics child did not start: {stderr}")
    return child


@pytest.fixture()
def children(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)


def test_exposition_sums_two_processes(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    children.append(_start_child(directory, 3))
    children.append(_start_child(directory, 4))

    text = _scrape(directory)

    assert _value(text, "cce_sync_submissions_total", outcome="accepted", reason="") == 7
    assert _value(text, "cce_sync_submissions_total", outcome="failed", reason="not_found") == 2
    assert (
        _value(text, "cce_sync_api_request_duration_seconds_count", operation="sync_node_pool") == 2
    )
    assert _value(text, "cce_sync_rate_limit_wait_seconds_count") == 2
    assert _value(text, "cce_sync_targets_skipped_total", reason="window_closed") == 2
    assert _value(text, "cce_sync_worker_processes") == 2
    assert (
        _value(
            text,
            "cce_sync_dramatiq_messages_inprogress",
            queue_name="default",
            actor_name="submit_sync",
        )
        == 2
    )


def test_killed_process_gauges_removed(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    survivor = _start_child(directory, 3)
    victim = _start_child(directory, 4)
    children.extend([survivor, victim])

    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    text = _scrape(directory)

    assert _value(text, "cce_sync_worker_processes") == 1
    assert (
        _value(
            text,
            "cce_sync_dramatiq_messages_inprogress",
            queue_name="default",
            actor_name="submit_sync",
        )
        == 1
    )
    # Counters of the dead process stay, so totals never go backwards.
    assert _value(text, "cce_sync_submissions_total", outcome="accepted", reason="") == 7
    assert not list(directory.glob(f"gauge_live*_{victim.pid}.db"))
    assert list(directory.glob(f"gauge_live*_{survivor.pid}.db"))


def test_remove_dead_process_gauges_keeps_live(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    survivor = _start_child(directory, 1)
    victim = _start_child(directory, 1)
    children.extend([survivor, victim])
    victim.kill()
    victim.wait(timeout=10)

    removed = metrics.remove_dead_process_gauges(directory)

    assert removed == [victim.pid]
    assert list(directory.glob(f"gauge_livesum_{survivor.pid}.db"))


def test_prepare_multiprocess_dir_removes_stale_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(metrics.MULTIPROCESS_DIR_VARIABLE, "unset-by-test")
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"stale")
    (directory / "gauge_livesum_999999.db").write_bytes(b"stale")
    (directory / "notes.txt").write_text("not a metrics file")

    prepared = metrics.prepare_multiprocess_dir(directory)

    assert prepared == directory.resolve()
    assert not list(directory.glob("*_999999.db"))
    assert (directory / "notes.txt").exists()
    assert os.environ[metrics.MULTIPROCESS_DIR_VARIABLE] == str(directory.resolve())


def test_prepare_multiprocess_dir_creates_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(metrics.MULTIPROCESS_DIR_VARIABLE, "unset-by-test")
    directory = tmp_path / "a" / "b"

    metrics.prepare_multiprocess_dir(directory)

    assert directory.is_dir()


def test_serve_metrics_over_http(tmp_path: Path) -> None:
    metrics.THROTTLED.labels(source="local").inc()
    server = metrics.serve_metrics("127.0.0.1", 0)
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
    finally:
        server.close()

    assert response.status_code == 200
    assert "cce_sync_throttled_total" in response.text


def test_serve_metrics_port_in_use_names_setting() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]

        with pytest.raises(metrics.MetricsPortInUseError) as raised:
            metrics.serve_metrics("127.0.0.1", port)

    message = str(raised.value)
    assert raised.value.errno == errno.EADDRINUSE
    assert f"metrics port {port}" in message
    assert "CCE_SYNC_METRICS_PORT" in message
    assert "--metrics-port" in message


def test_check_port_free_raises_when_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]

        with pytest.raises(metrics.MetricsPortInUseError, match="CCE_SYNC_METRICS_PORT"):
            metrics.check_port_free("127.0.0.1", port)


def test_check_port_free_accepts_free_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    metrics.check_port_free("127.0.0.1", port)


def test_initialize_series_creates_zero_counters() -> None:
    metrics.initialize_series()

    registry = prometheus_client.REGISTRY
    failed = {"outcome": "failed", "reason": "error_budget"}
    assert registry.get_sample_value("cce_sync_submissions_total", failed) is not None
    assert registry.get_sample_value("cce_sync_throttled_total", {"source": "api"}) is not None


def test_initialize_series_creates_skip_reasons() -> None:
    metrics.initialize_series()

    registry = prometheus_client.REGISTRY
    for reason in ("error_budget", "window_closed", "cancelled", "dry_run"):
        value = registry.get_sample_value("cce_sync_targets_skipped_total", {"reason": reason})
        assert value is not None, f"no zero series for reason {reason}"


def test_targets_skipped_counts_by_reason() -> None:
    labels = {"reason": "error_budget"}
    before = _sample("cce_sync_targets_skipped_total", **labels)

    metrics.TARGETS_SKIPPED.labels(reason="error_budget").inc(3)

    assert _sample("cce_sync_targets_skipped_total", **labels) - before == 3


def _sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def test_dramatiq_middleware_counts_messages() -> None:
    # Retries with no retries marks a raising message failed, so the broker dead-letters it.
    broker = StubBroker(middleware=[Retries(max_retries=0)])
    broker.add_middleware(metrics.DramatiqMetrics())
    broker.emit_after("process_boot")
    queue = "metrics-test"

    def metrics_ok() -> None:
        return None

    def metrics_fails() -> None:
        raise RuntimeError("expected by the test")

    ok = dramatiq.actor(broker=broker, queue_name=queue)(metrics_ok)
    fails = dramatiq.actor(broker=broker, queue_name=queue)(metrics_fails)
    labels_ok = {"queue_name": queue, "actor_name": "metrics_ok"}
    labels_fails = {"queue_name": queue, "actor_name": "metrics_fails"}
    before_ok = _sample("cce_sync_dramatiq_messages_total", **labels_ok)
    before_errors = _sample("cce_sync_dramatiq_message_errors_total", **labels_fails)
    before_rejects = _sample("cce_sync_dramatiq_message_rejects_total", **labels_fails)

    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        ok.send()
        ok.send()
        fails.send()
        broker.join(queue, timeout=10_000, fail_fast=False)
        worker.join()
    finally:
        worker.stop()

    assert _sample("cce_sync_dramatiq_messages_total", **labels_ok) - before_ok == 2
    assert _sample("cce_sync_dramatiq_message_errors_total", **labels_fails) - before_errors == 1
    assert _sample("cce_sync_dramatiq_message_rejects_total", **labels_fails) - before_rejects == 1
    assert _sample("cce_sync_dramatiq_messages_inprogress", **labels_ok) == 0
    assert _sample("cce_sync_dramatiq_message_duration_seconds_count", **labels_ok) >= 2
    assert _sample("cce_sync_worker_processes") == 0


def test_delayed_gauge_returns_to_zero() -> None:
    broker = StubBroker(middleware=[Retries(max_retries=0)])
    broker.add_middleware(metrics.DramatiqMetrics())
    broker.emit_after("process_boot")
    queue = "metrics-delay-test"

    def metrics_delayed() -> None:
        return None

    delayed = dramatiq.actor(broker=broker, queue_name=queue)(metrics_delayed)
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        delayed.send_with_options(delay=200)
        delayed.send_with_options(delay=200)
        broker.join(queue + ".DQ", timeout=10_000)
        broker.join(queue, timeout=10_000)
        worker.join()
    finally:
        worker.stop()

    for queue_name in (queue, queue + ".DQ"):
        labels = {"queue_name": queue_name, "actor_name": "metrics_delayed"}
        assert _sample("cce_sync_dramatiq_delayed_messages_inprogress", **labels) == 0


RUNNER_ORDER_SCRIPT = textwrap.dedent(
    """
    import sys
    from worker.metrics_files import prepare_multiprocess_dir

    assert "prometheus_client" not in sys.modules
    prepare_multiprocess_dir(sys.argv[1])
    from worker import metrics

    metrics.SUBMISSIONS.labels(outcome="accepted", reason="").inc()
    print(metrics.multiprocess_enabled())
    """
)


def test_runner_order_enables_multiprocess(tmp_path: Path) -> None:
    directory = tmp_path / "not-yet-created"
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}

    result = subprocess.run(
        [sys.executable, "-c", RUNNER_ORDER_SCRIPT, str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert (
        _value(_scrape(directory), "cce_sync_submissions_total", outcome="accepted", reason="") == 1
    )
