"""Helpers that run cce-sync commands as real processes for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from worker.embedded import free_port

BIN = Path(sys.executable).parent
CCE_SYNC = str(BIN / "cce-sync")


class WorkerProcess:
    """`cce-sync worker` in its own process group, so that a kill reaches every child.

    Args:
        env: Environment of the worker (REDIS_URL, CCE_SYNC_ENDPOINT, credentials, ...).
        log_path: File that receives the worker's stdout and stderr.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        log_path: Path,
        processes: int = 2,
        threads: int = 4,
        metrics_port: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.processes = processes
        self.threads = threads
        self.metrics_port = metrics_port or free_port()
        self.extra_args = extra_args
        self.metrics_dir = log_path.parent / f"metrics-{self.metrics_port}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> WorkerProcess:
        command = [
            CCE_SYNC,
            "worker",
            "--processes", str(self.processes),
            "--threads", str(self.threads),
            "--metrics-port", str(self.metrics_port),
            "--metrics-dir", str(self.metrics_dir),
            "--shutdown-seconds", "20",
            *self.extra_args,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    def wait_metrics(self, timeout: float = 30.0) -> None:
        """Wait until the metrics endpoint responds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.metrics_url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"worker metrics did not come up; log:\n{self.log_tail()}")

    def metrics_text(self) -> str:
        return httpx.get(self.metrics_url, timeout=5).text

    def kill(self) -> None:
        """Kill the worker and all its children with SIGKILL, as a node failure would."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 40.0) -> int | None:
        """Send SIGTERM to the main process, as Kubernetes does, and wait for a clean exit.

        Only the main process is signalled: dramatiq forwards SIGTERM to its children, and a
        child that receives a second SIGTERM exits at once instead of finishing its messages.
        The whole group is killed if it does not stop within `timeout` seconds.
        """
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


def run_cli(
    environment: Mapping[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `cce-sync ARGS` with `environment` and return its completed process (60 s limit)."""
    return subprocess.run(
        [CCE_SYNC, *args],
        input=stdin,
        env=dict(environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum the samples of `name` in a Prometheus text exposition whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != name:
                continue
            if all(sample.labels.get(key) == value for key, value in (labels or {}).items()):
                total += sample.value
    return total


def wait_until(predicate, *, timeout: float, interval: float = 0.25, message: str = "") -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(message or f"condition not met within {timeout} s")
