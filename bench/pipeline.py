"""End-to-end benchmark: the share of the allowed sync rate a campaign uses, and its 429s.

Every scenario runs the same campaign: one sync POST per node pool of a simulated fleet with one
project, so the simulator's per-project limit is the binding one. Each scenario gets a fresh
in-process `simulator.server.SimulatorServer` that allows ``--allowed-rate`` POSTs per second
(a token bucket with one second of burst) and responds with 429 ``APIGW.0308`` beyond it.
The scenarios:

* ``cce-sync``: `cce-sync worker` processes with ``CCE_SYNC_RATE_PER_SECOND`` equal to the
  allowed rate, the campaign submitted with `cce-sync submit` (``trackCompletion: false`` and
  ``maxInFlight`` equal to the number of pools, so that only the rate limits pace it);
* ``cce-sync 4x``: the same with ``CCE_SYNC_RATE_PER_SECOND`` at four times the allowed rate, so
  that only the adaptive decrease after 429s keeps the pipeline near the limit;
* ``dramatiq window``: plain dramatiq actors (`bench.window_actors`) guarded by
  ``WindowRateLimiter(limit=allowed rate, window=1)``, one message enqueued per pool;
* ``cce-sync, default maxInFlight``: the first scenario with the document's default
  ``maxInFlight`` of 10.

All workers run as 2 processes of 8 threads on a private ``redis-server`` (one database per
scenario). Everything is measured on the simulator's side:

* utilization: accepted POSTs per second over the span from the first to the last accepted POST,
  computed as (accepted - 1) / span, divided by the allowed rate;
* throttled share: 429 responses / sync POSTs received (accepted + throttled + conflicts);
* peak: the most accepted POSTs in any 1 s interval.

Run: ``.venv/bin/python -m bench.pipeline`` (``make bench``), about 90 seconds. Results are
printed and written between markers into docs/benchmarks.md (``--no-write`` skips that).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from bench import WINDOW_ACTOR_NAME, WINDOW_BROKER_NAMESPACE, WINDOW_QUEUE_NAME
from simulator.server import SimulatorServer
from worker.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks.md"
BEGIN_MARKER = "<!-- bench.pipeline results: begin (generated, do not edit) -->"
END_MARKER = "<!-- bench.pipeline results: end -->"

#: Credentials that only the benchmark's own simulator accepts.
BENCH_AK = "BENCHACCESSKEY000000"
BENCH_SK = "bench-secret-key-000000000000000000000000"

DEFAULT_POOLS = 120
DEFAULT_ALLOWED_RATE = 8.0
#: CCE_SYNC_RATE_PER_SECOND of the overdriven scenario, as a multiple of the allowed rate.
OVERDRIVE_FACTOR = 4.0
PROCESSES = 2
THREADS = 8
POOLS_PER_CLUSTER = 2

#: Maximum wait for the worker processes to log that they are ready, in seconds.
READY_TIMEOUT_SECONDS = 60.0
#: Default maximum wait for every pool to be accepted, per scenario, in seconds.
DEFAULT_SCENARIO_TIMEOUT_SECONDS = 90.0
#: Maximum wait for the workers to stop after SIGTERM before they are killed, in seconds.
STOP_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.2

#: Targets for the report (utilization at least, throttled share at most).
TARGET_UTILIZATION = 0.95
TARGET_THROTTLED_SHARE = 0.05

#: Environment variables of the calling shell that must not reach the workers.
_ENV_PREFIXES = (
    "CCE_SYNC_",
    "HUAWEICLOUD_SDK_",
    "CLOUD_SDK_",
    "REDIS_URL",
    "PROMETHEUS_",
    "dramatiq_",
)


@dataclass(frozen=True)
class Scenario:
    """One benchmark run: which workers, at which configured rate."""

    name: str
    kind: str
    """``cce-sync`` or ``window``."""
    worker_rate_per_second: float
    max_in_flight: int | None = None
    """``policy.maxInFlight`` of the cce-sync campaign; None keeps the document default (10)."""
    overdriven: bool = False
    """Judged by its count of 429s instead of utilization."""


@dataclass(frozen=True)
class Result:
    """Counts and rates that the simulator recorded during one scenario."""

    scenario: Scenario
    completed: bool
    accepted: int
    throttled: int
    posts: int
    duplicates: int
    span_seconds: float
    accepted_per_second: float
    utilization: float
    throttled_share: float
    peak_per_second: int
    wall_seconds: float
    local_waits: int | None
    """Re-enqueues of cce-sync's workers for the local rate limiter (None for the baseline)."""


# -- measurement ----------------------------------------------------------------------------


def peak_in_window(times: Sequence[float], window_seconds: float = 1.0) -> int:
    """Return the most timestamps that fall in any half-open interval of `window_seconds`."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window_seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


def measure(
    scenario: Scenario,
    simulator: SimulatorServer,
    *,
    allowed_rate: float,
    completed: bool,
    wall_seconds: float,
    local_waits: int | None,
) -> Result:
    """Summarize the simulator's audit records and counters after a scenario."""
    times = sorted(record.accepted_at for record in simulator.audit_records())
    stats = simulator.stats()
    accepted = len(times)
    throttled = stats["throttled"]
    posts = accepted + throttled + stats["conflicts"]
    span = times[-1] - times[0] if accepted > 1 else 0.0
    per_second = (accepted - 1) / span if span > 0 else 0.0
    duplicates = sum(count - 1 for count in simulator.audit().values())
    return Result(
        scenario=scenario,
        completed=completed,
        accepted=accepted,
        throttled=throttled,
        posts=posts,
        duplicates=duplicates,
        span_seconds=span,
        accepted_per_second=per_second,
        utilization=per_second / allowed_rate,
        throttled_share=throttled / posts if posts else 0.0,
        peak_per_second=peak_in_window(times),
        wall_seconds=wall_seconds,
        local_waits=local_waits,
    )


# -- processes ------------------------------------------------------------------------------


def base_environment(redis_url: str, simulator_url: str) -> dict[str, str]:
    """Environment of a worker: the caller's, minus its cce-sync settings, plus the bench's."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(_ENV_PREFIXES)
    }
    environment.update(
        {
            "REDIS_URL": redis_url,
            "CCE_SYNC_ENDPOINT": simulator_url,
            "HUAWEICLOUD_SDK_AK": BENCH_AK,
            "HUAWEICLOUD_SDK_SK": BENCH_SK,
            "CCE_SYNC_METRICS_HOST": "127.0.0.1",
            "PYTHONPATH": str(ROOT),
        }
    )
    return environment


class WorkerGroup:
    """Worker processes in their own process group, so that a signal reaches every child."""

    def __init__(self, command: Sequence[str], environment: Mapping[str, str], log_path: Path):
        self.command = list(command)
        self.environment = dict(environment)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerGroup:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.environment,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, processes: int) -> None:
        """Wait until every worker process logged that it is ready.

        Raises:
            RuntimeError: the workers exited or were not ready within `READY_TIMEOUT_SECONDS`.
        """
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.log_text().count("Worker process is ready for action.") >= processes:
                return
            if self.process is None or self.process.poll() is not None:
                break
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"workers did not start; log:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        """Send SIGTERM to the main process; kill the group if it is still running after
        STOP_TIMEOUT_SECONDS (dramatiq forwards SIGTERM to its children itself)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running(group: WorkerGroup, processes: int) -> Iterator[WorkerGroup]:
    group.start()
    try:
        group.wait_ready(processes)
        yield group
    finally:
        group.stop()


# -- scenarios ------------------------------------------------------------------------------


def campaign_document(
    simulator: SimulatorServer, campaign_id: str, pools: int, max_in_flight: int | None
) -> dict[str, object]:
    """Build a campaign that syncs the first `pools` pools once, without completion tracking.

    `max_in_flight` None leaves ``policy.maxInFlight`` at the document's default.
    """
    by_cluster: dict[tuple[str, str], list[str]] = {}
    for pool in list(simulator.fleet.pools(include_default=False))[:pools]:
        by_cluster.setdefault((pool.project_id, pool.cluster_id), []).append(pool.id)
    targets = [
        {"projectId": project_id, "clusterId": cluster_id, "nodePools": pool_ids}
        for (project_id, cluster_id), pool_ids in by_cluster.items()
    ]
    policy: dict[str, object] = {"trackCompletion": False}
    if max_in_flight is not None:
        policy["maxInFlight"] = max_in_flight
    return {
        "apiVersion": "cce-sync/v1",
        "kind": "Campaign",
        "metadata": {"id": campaign_id, "name": f"benchmark {campaign_id}"},
        "spec": {
            "region": simulator.fleet.region,
            "sync": {"maxUnavailable": 1},
            "targets": targets,
            "policy": policy,
        },
    }


def start_cce_sync(
    environment: Mapping[str, str],
    simulator: SimulatorServer,
    name: str,
    options: argparse.Namespace,
    max_in_flight: int | None,
) -> None:
    """Submit the campaign through `cce-sync submit`, as an operator would."""
    document = campaign_document(simulator, name, options.pools, max_in_flight)
    completed = subprocess.run(
        [str(BIN / "cce-sync"), "submit", "-", "--json"],
        input=json.dumps(document),
        env=dict(environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"cce-sync submit failed: {completed.stderr.strip()}")


def start_window(redis_url: str, simulator: SimulatorServer, pools: int) -> None:
    """Enqueue one baseline message per pool, straight onto the baseline's queue."""
    client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
    broker = RedisBroker(client=client, namespace=WINDOW_BROKER_NAMESPACE)
    try:
        for pool in list(simulator.fleet.pools(include_default=False))[:pools]:
            message: Message[None] = Message(
                queue_name=WINDOW_QUEUE_NAME,
                actor_name=WINDOW_ACTOR_NAME,
                args=(simulator.fleet.region, pool.project_id, pool.cluster_id, pool.id),
                kwargs={},
                options={},
            )
            broker.enqueue(message)
    finally:
        broker.close()


def wait_accepted(simulator: SimulatorServer, pools: int, timeout_seconds: float) -> bool:
    """Wait until the simulator accepted a sync for `pools` pools; False after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if len(simulator.audit()) >= pools:
            return True
        time.sleep(POLL_SECONDS)
    return False


def local_waits(metrics_url: str) -> int | None:
    """Read cce_sync_throttled_total{source="local"} from a worker's metrics endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(metrics_url, timeout=5).text
    except httpx.HTTPError:
        return None
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cce_sync_throttled_total" and sample.labels.get("source") == "local":
                total += sample.value
    return int(total)


def run_scenario(
    scenario: Scenario,
    *,
    redis_server: EmbeddedRedis,
    database: int,
    options: argparse.Namespace,
    work_dir: Path,
) -> Result:
    """Run one scenario on a fresh simulator and an empty Redis database."""
    redis_url = f"redis://127.0.0.1:{redis_server.port}/{database}"
    simulator = SimulatorServer(
        projects=1,
        clusters_per_project=-(-options.pools // POOLS_PER_CLUSTER),
        pools_per_cluster=POOLS_PER_CLUSTER,
        rate_per_second=options.allowed_rate,
        credentials={BENCH_AK: BENCH_SK},
        job_seconds=1.0,
    ).start()
    try:
        environment = base_environment(redis_url, simulator.url)
        log_path = work_dir / f"{scenario.kind}-{database}.log"
        if scenario.kind == "cce-sync":
            return _run_cce_sync(scenario, simulator, environment, options, log_path, work_dir)
        return _run_window(scenario, simulator, environment, options, log_path, redis_url)
    finally:
        simulator.stop()


def _run_cce_sync(
    scenario: Scenario,
    simulator: SimulatorServer,
    environment: dict[str, str],
    options: argparse.Namespace,
    log_path: Path,
    work_dir: Path,
) -> Result:
    environment["CCE_SYNC_RATE_PER_SECOND"] = repr(scenario.worker_rate_per_second)
    metrics_port = free_port()
    command = [
        str(BIN / "cce-sync"),
        "worker",
        "--processes", str(PROCESSES),
        "--threads", str(THREADS),
        "--metrics-port", str(metrics_port),
        "--metrics-dir", str(work_dir / f"metrics-{metrics_port}"),
        "--shutdown-seconds", "10",
    ]  # fmt: skip
    with running(WorkerGroup(command, environment, log_path), PROCESSES):
        started = time.monotonic()
        start_cce_sync(
            environment, simulator, f"bench-{metrics_port}", options, scenario.max_in_flight
        )
        completed = wait_accepted(simulator, options.pools, options.timeout_seconds)
        wall_seconds = time.monotonic() - started
        waits = local_waits(f"http://127.0.0.1:{metrics_port}/metrics")
    return measure(
        scenario,
        simulator,
        allowed_rate=options.allowed_rate,
        completed=completed,
        wall_seconds=wall_seconds,
        local_waits=waits,
    )


def _run_window(
    scenario: Scenario,
    simulator: SimulatorServer,
    environment: dict[str, str],
    options: argparse.Namespace,
    log_path: Path,
    redis_url: str,
) -> Result:
    environment["BENCH_WINDOW_LIMIT"] = str(int(scenario.worker_rate_per_second))
    command = [
        str(BIN / "dramatiq"),
        "bench.window_actors",
        "--processes", str(PROCESSES),
        "--threads", str(THREADS),
        "--queues", WINDOW_QUEUE_NAME,
        "--path", str(ROOT),
    ]  # fmt: skip
    with running(WorkerGroup(command, environment, log_path), PROCESSES):
        started = time.monotonic()
        start_window(redis_url, simulator, options.pools)
        completed = wait_accepted(simulator, options.pools, options.timeout_seconds)
        wall_seconds = time.monotonic() - started
    return measure(
        scenario,
        simulator,
        allowed_rate=options.allowed_rate,
        completed=completed,
        wall_seconds=wall_seconds,
        local_waits=None,
    )


# -- report ---------------------------------------------------------------------------------


def _verdicts(result: Result, pools: int) -> list[str]:
    """Return the targets this result misses (empty when it meets them all)."""
    missed = []
    if not result.completed:
        missed.append(f"only {result.accepted} of {pools} pools accepted before the timeout")
    if result.scenario.overdriven:
        if result.throttled >= pools / 2:
            missed.append(f"{result.throttled} throttled responses, target < {pools / 2:g}")
        return missed
    if result.utilization < TARGET_UTILIZATION:
        missed.append(f"utilization {result.utilization:.3f} < {TARGET_UTILIZATION}")
    if result.throttled_share > TARGET_THROTTLED_SHARE:
        missed.append(
            f"throttled share {result.throttled_share:.1%} > {TARGET_THROTTLED_SHARE:.0%}"
        )
    return missed


def results_table(results: Sequence[Result], pools: int) -> str:
    """Format the results as a Markdown table."""
    lines = [
        "| scenario | worker rate (/s) | maxInFlight | accepted | throttled (429) | sync POSTs | throttled share "
        "| span (s) | accepted/s | utilization | peak in 1 s | local waits | wall (s) "
        "| targets |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        missed = _verdicts(result, pools)
        waits = "n/a" if result.local_waits is None else str(result.local_waits)
        if result.scenario.kind != "cce-sync":
            cap = "n/a"
        else:
            cap = str(result.scenario.max_in_flight or "10 (default)")
        lines.append(
            f"| {result.scenario.name} | {result.scenario.worker_rate_per_second:g} | {cap} "
            f"| {result.accepted} | {result.throttled} | {result.posts} "
            f"| {result.throttled_share:.1%} | {result.span_seconds:.2f} "
            f"| {result.accepted_per_second:.2f} | {result.utilization:.3f} "
            f"| {result.peak_per_second} | {waits} | {result.wall_seconds:.1f} "
            f"| {'met' if not missed else 'missed: ' + '; '.join(missed)} |"
        )
    return "\n".join(lines)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kibibytes = int(line.split()[1])
                return f"{kibibytes / 1024 / 1024:.1f} GiB"
    return "unknown"


def _redis_server_version(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis(port=redis_server.port, socket_timeout=5, decode_responses=True)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def environment_lines(redis_server: EmbeddedRedis, command: str) -> list[str]:
    """Describe the run: command, machine, Python, packages and date."""
    packages = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("dramatiq", "redis", "httpx", "cce-sync")
    )
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- Command: `{command}`",
        f"- Date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {cpus} CPUs (nproc), {_cpu_model()}, {_memory()} memory, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {packages}; "
        f"redis-server {_redis_server_version(redis_server)}",
    ]


def report(
    results: Sequence[Result], options: argparse.Namespace, environment: Sequence[str]
) -> str:
    """Build the generated Markdown section."""
    setup = (
        f"Setup: {options.pools} pools in 1 project, simulator limit {options.allowed_rate:g} "
        f"sync POSTs/s per project (token bucket, capacity {options.allowed_rate:g}), "
        f"workers {PROCESSES} processes x {THREADS} threads, trackCompletion false. "
        f"Targets: utilization >= {TARGET_UTILIZATION} and throttled share <= "
        f"{TARGET_THROTTLED_SHARE:.0%}; for the 4x row, fewer than {options.pools / 2:g} "
        "throttled responses."
    )
    lines = [BEGIN_MARKER, "", *environment, "", setup, ""]
    lines += [results_table(results, options.pools), "", END_MARKER]
    return "\n".join(lines)


def write_report(path: Path, section: str) -> None:
    """Replace the text between the markers in `path` (append the section when they are absent)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    begin = text.find(BEGIN_MARKER)
    end = text.find(END_MARKER)
    if begin == -1 or end == -1 or end < begin:
        updated = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        updated = text[:begin] + section + text[end + len(END_MARKER) :]
    path.write_text(updated)


# -- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description="Measure rate-limit utilization and throttling of a campaign against the "
        "simulator, for cce-sync and for dramatiq's WindowRateLimiter.",
    )
    parser.add_argument(
        "--pools", type=int, default=DEFAULT_POOLS, help="pools in the campaign (default 120)"
    )
    parser.add_argument(
        "--allowed-rate",
        type=float,
        default=DEFAULT_ALLOWED_RATE,
        help="simulator limit in sync POSTs per second per project (default 8)",
    )
    parser.add_argument(
        "--timeout-seconds",
        type=float,
        default=DEFAULT_SCENARIO_TIMEOUT_SECONDS,
        help="maximum wait for all pools to be accepted, per scenario (default 90)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=["cce-sync", "cce-sync-4x", "window", "cce-sync-default-cap"],
        help="run only this scenario (repeatable; default: all four)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="Markdown file whose generated section is replaced (default docs/benchmarks.md)",
    )
    parser.add_argument("--no-write", action="store_true", help="only print the results")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the worker logs and print their directory"
    )
    return parser


def scenarios(options: argparse.Namespace) -> list[Scenario]:
    rate = options.allowed_rate
    uncapped = options.pools
    every = {
        "cce-sync": Scenario("cce-sync", "cce-sync", rate, max_in_flight=uncapped),
        "cce-sync-4x": Scenario(
            "cce-sync 4x",
            "cce-sync",
            rate * OVERDRIVE_FACTOR,
            max_in_flight=uncapped,
            overdriven=True,
        ),
        "window": Scenario("dramatiq window", "window", rate),
        "cce-sync-default-cap": Scenario("cce-sync, default maxInFlight", "cce-sync", rate),
    }
    chosen = options.scenario or list(every)
    return [every[name] for name in chosen]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenarios and report; returns 1 when a scenario did not finish in time."""
    options = build_parser().parse_args(argv)
    if options.pools < 2 or options.allowed_rate <= 0:
        raise SystemExit("--pools must be at least 2 and --allowed-rate positive")
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = " ".join([str(python), "-m", "bench.pipeline", *arguments])

    work_dir = Path(tempfile.mkdtemp(prefix="cce-sync-bench-"))
    results = []
    with EmbeddedRedis() as redis_server:
        for database, scenario in enumerate(scenarios(options), start=1):
            print(f"running {scenario.name} ...", flush=True)
            result = run_scenario(
                scenario,
                redis_server=redis_server,
                database=database,
                options=options,
                work_dir=work_dir,
            )
            results.append(result)
        environment = environment_lines(redis_server, command.strip())

    section = report(results, options, environment)
    print(section)
    if not options.no_write:
        write_report(options.output, section)
        print(f"wrote {options.output}")
    if options.keep_logs:
        print(f"worker logs: {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    # A missed target is a result to read, not a failure; a scenario that never finished is.
    return 0 if all(result.completed for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
