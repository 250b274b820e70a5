"""A real Prometheus server for tests, on loopback, with its own storage directory.

`start_prometheus` runs ``/usr/bin/prometheus`` (Debian package ``prometheus``) on 127.0.0.1
with a scrape config that lists only the given loopback targets. `query` runs an instant PromQL
query against it. Import these helpers explicitly; they are not pytest fixtures by themselves.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

PROMETHEUS_BINARY = "prometheus"
PROMTOOL_BINARY = "promtool"

#: Seconds between two scrapes; short so that tests see rates after a few seconds.
SCRAPE_INTERVAL_SECONDS = 1

READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


class PrometheusQueryError(RuntimeError):
    """Prometheus rejected a query (bad syntax, unknown function) or sent no valid response."""


@dataclass
class PrometheusHandle:
    """A running Prometheus. `url` is its base URL, and `stop` ends it and waits for the exit."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def find_binary(name: str) -> str:
    """Return the path of a Prometheus tool, or skip the test when it is not installed."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package 'prometheus')")
    return path


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _check_loopback(target: str) -> None:
    host = target.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(
            f"scrape target {target!r} is not on loopback; tests scrape only 127.0.0.1"
        )


def write_config(
    directory: Path,
    targets: Sequence[str],
    *,
    job: str = "cce-sync",
    rule_files: Sequence[Path] = (),
) -> Path:
    """Write a Prometheus config that scrapes `targets` (``127.0.0.1:PORT``) as job `job`."""
    for target in targets:
        _check_loopback(target)
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL_SECONDS}s",
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def start_prometheus(
    tmp_path: Path,
    targets: Sequence[str],
    *,
    job: str = "cce-sync",
    rule_files: Sequence[Path] = (),
) -> PrometheusHandle:
    """Start Prometheus on 127.0.0.1 scraping `targets` every second; wait until it is ready.

    Storage and the log file live under `tmp_path`. Raises RuntimeError with the server log
    when it does not become ready within 30 seconds.
    """
    binary = find_binary(PROMETHEUS_BINARY)
    directory = tmp_path / "prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    config_path = write_config(directory, targets, job=job, rule_files=rule_files)

    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    handle = PrometheusHandle(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        _wait_ready(handle)
    except BaseException:
        handle.stop()
        raise
    return handle


def _wait_ready(handle: PrometheusHandle) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            raise RuntimeError(
                f"prometheus exited with {handle.process.returncode}:\n{handle.log()}"
            )
        try:
            if httpx.get(f"{handle.url}/-/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"prometheus not ready after {READY_TIMEOUT_SECONDS} s:\n{handle.log()}")


@contextmanager
def running_prometheus(
    tmp_path: Path, targets: Sequence[str], **options: Any
) -> Iterator[PrometheusHandle]:
    """Context manager form of `start_prometheus` that always stops the server."""
    handle = start_prometheus(tmp_path, targets, **options)
    try:
        yield handle
    finally:
        handle.stop()


def query(url: str, promql: str, *, at: float | None = None) -> list[dict[str, Any]]:
    """Run an instant query and return its result list (``data.result``).

    Raises:
        PrometheusQueryError: When Prometheus responds with an error (the message includes its
            ``errorType`` and ``error``) or a non-JSON response.
    """
    params: dict[str, str] = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    response = httpx.get(f"{url}/api/v1/query", params=params, timeout=10.0)
    try:
        body = response.json()
    except ValueError as error:
        raise PrometheusQueryError(
            f"query {promql!r}: HTTP {response.status_code}, not JSON"
        ) from error
    if body.get("status") != "success":
        raise PrometheusQueryError(
            f"query {promql!r} failed: {body.get('errorType')}: {body.get('error')}"
        )
    result = body["data"]["result"]
    return list(result) if isinstance(result, list) else [result]


def wait_for_result(
    url: str, promql: str, *, timeout_seconds: float = 30.0, interval_seconds: float = 0.5
) -> list[dict[str, Any]]:
    """Repeat `query` until it returns at least one series; raise AssertionError on timeout."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = query(url, promql)
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{promql!r} returned no series within {timeout_seconds} s")
        time.sleep(interval_seconds)
