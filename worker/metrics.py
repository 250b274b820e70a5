"""Every cce-sync metric, the dramatiq metrics middleware and the exposition server.

Metrics are module-level objects; other modules import and update them
(``SUBMISSIONS.labels(outcome="accepted", reason="").inc()``). Label values come from small
fixed sets: never a campaign, cluster, pool or request ID.

Multiprocess mode
-----------------
``cce-sync worker`` runs several dramatiq worker processes and one exposition process per host.
Each worker process writes its samples to memory-mapped files in a shared directory, and the
exposition process merges those files (prometheus-client's multiprocess mode) with state read
from Redis at scrape time.

prometheus-client decides between in-memory and file-backed values once, when
``prometheus_client`` is first imported in a process, by looking at the environment variable
``PROMETHEUS_MULTIPROC_DIR``. Importing this module imports ``prometheus_client`` and opens the
files of the metrics without labels. Hence the rule for a runner:

1. Call `worker.metrics_files.prepare_multiprocess_dir` (which imports no metrics) before the
   first import of this module, or of anything that imports ``prometheus_client``, in any
   process that forks workers. It creates the directory, removes the files of an earlier run
   and sets the variable. A process that imported ``prometheus_client`` earlier, and every
   child forked from it, keeps in-memory values that the exposition server never reads.
   Spawned children (``dramatiq --use-spawn`` or a subprocess) re-import and so follow the
   variable they inherit.
2. Add `DramatiqMetrics` to the broker and run `run_exposition_server` as a dramatiq fork
   function (``--fork-function worker.metrics:run_exposition_server``).

`prepare_multiprocess_dir` is also importable from here, for callers that create the directory
and set the variable before importing this module.

Counters and histograms of exited processes stay in the directory so that totals never go
backwards. Gauges use the ``live*`` modes: the exposition server drops the files of processes
that no longer exist at each scrape (same host, so the same PID namespace), and `DramatiqMetrics`
removes its own files when a worker shuts down.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

import prometheus_client
import redis
from dramatiq.broker import Broker, MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import Middleware
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector, CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.metrics_files import (
    MULTIPROCESS_DIR_VARIABLE as MULTIPROCESS_DIR_VARIABLE,
)
from worker.metrics_files import (
    multiprocess_enabled as multiprocess_enabled,
)
from worker.metrics_files import (
    prepare_multiprocess_dir as prepare_multiprocess_dir,
)
from worker.settings import Settings, get_settings

logger = logging.getLogger(__name__)

#: Values of the ``operation`` label of the API metrics.
OPERATIONS: Final = (
    "sync_node_pool",
    "show_node_pool",
    "list_node_pools",
    "list_clusters",
    "show_job",
)

#: Values of ``reason`` on failed submissions and of a paused campaign's reason.
FAILURE_REASONS: Final = (
    "invalid_request",
    "not_found",
    "forbidden",
    "quota",
    "auth",
    "conflict",
    "retries_exhausted",
    "expired",
    "sync_failed",
    "secret_unavailable",
    "error_budget",
    "window_closed",
    "cancelled",
)

TARGET_STATES: Final = (
    "pending",
    "submitting",
    "accepted",
    "synced",
    "sync_failed",
    "failed",
    "skipped",
)
CAMPAIGN_STATES: Final = ("pending", "running", "paused", "finished", "cancelled")

#: Values of ``reason`` in ``cce_sync_campaigns_paused``: a failure reason (auth, ...),
#: ``operator``, ``window``, or ``other`` for any reason outside this set.
PAUSE_REASONS: Final = frozenset({*FAILURE_REASONS, "operator", "window"})

#: Values of ``reason`` in ``cce_sync_targets_skipped_total``: why a campaign ended its pending
#: targets without submitting them. Such a campaign finishes rather than pausing.
SKIP_REASONS: Final = ("error_budget", "window_closed", "cancelled", "dry_run")

#: Campaigns whose targets count in ``cce_sync_targets``.
ACTIVE_CAMPAIGN_STATES: Final = frozenset({"pending", "running", "paused"})

THROTTLE_SOURCES: Final = ("api", "local")
SYNC_RESULTS: Final = ("synced", "sync_failed")

#: Upper bounds, in seconds, of one CCE API call; the client's default deadline is 60 s.
API_DURATION_BUCKETS_SECONDS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Upper bounds, in seconds, of waits and runs that reach minutes: a rate-limiter wait (short
#: waits are slept in place, longer ones become delayed messages) and one actor run (dramatiq's
#: time limit here is 5 minutes).
LONG_DURATION_BUCKETS_SECONDS: Final = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)

# --- Metrics updated by the campaign code -------------------------------------------------------

SUBMISSIONS = prometheus_client.Counter(
    "cce_sync_submissions_total",
    "Sync submissions that reached a final outcome: accepted by CCE, or failed with a reason.",
    ["outcome", "reason"],
)
SYNCS_COMPLETED = prometheus_client.Counter(
    "cce_sync_syncs_completed_total",
    "Accepted syncs followed to their end, by result.",
    ["result"],
)
API_REQUESTS = prometheus_client.Counter(
    "cce_sync_api_requests_total",
    "CCE API calls by operation and HTTP status code (or connect_error, timeout, reset).",
    ["operation", "code"],
)
API_REQUEST_DURATION = prometheus_client.Histogram(
    "cce_sync_api_request_duration_seconds",
    "Duration of one CCE API call, from connect to the last byte of the response.",
    ["operation"],
    buckets=API_DURATION_BUCKETS_SECONDS,
)
RETRIES = prometheus_client.Counter(
    "cce_sync_retries_total",
    "Submissions scheduled for another attempt, by the reason of the retry.",
    ["reason"],
)
THROTTLED = prometheus_client.Counter(
    "cce_sync_throttled_total",
    "Requests held back by throttling: 429 from CCE (source=api) or the shared limiter (local).",
    ["source"],
)
TARGETS_SKIPPED = prometheus_client.Counter(
    "cce_sync_targets_skipped_total",
    "Pending targets that a campaign ended in state skipped without a submission, by reason.",
    ["reason"],
)
RATE_LIMIT_WAIT = prometheus_client.Histogram(
    "cce_sync_rate_limit_wait_seconds",
    "Time the shared rate limiter made a request wait before sending.",
    buckets=LONG_DURATION_BUCKETS_SECONDS,
)

# --- Metrics of dramatiq itself, updated by DramatiqMetrics --------------------------------------

_MESSAGE_LABELS: Final = ["queue_name", "actor_name"]

MESSAGES = prometheus_client.Counter(
    "cce_sync_dramatiq_messages_total",
    "dramatiq messages processed (including skipped ones).",
    _MESSAGE_LABELS,
)
MESSAGE_ERRORS = prometheus_client.Counter(
    "cce_sync_dramatiq_message_errors_total",
    "dramatiq messages whose actor raised an exception.",
    _MESSAGE_LABELS,
)
MESSAGE_RETRIES = prometheus_client.Counter(
    "cce_sync_dramatiq_message_retries_total",
    "dramatiq messages re-enqueued by dramatiq's Retries middleware.",
    _MESSAGE_LABELS,
)
MESSAGE_REJECTS = prometheus_client.Counter(
    "cce_sync_dramatiq_message_rejects_total",
    "dramatiq messages moved to the dead-letter queue.",
    _MESSAGE_LABELS,
)
MESSAGES_IN_PROGRESS = prometheus_client.Gauge(
    "cce_sync_dramatiq_messages_inprogress",
    "dramatiq messages being processed now.",
    _MESSAGE_LABELS,
    multiprocess_mode="livesum",
)
DELAYED_MESSAGES_IN_PROGRESS = prometheus_client.Gauge(
    "cce_sync_dramatiq_delayed_messages_inprogress",
    "Delayed dramatiq messages held in worker memory until their time comes.",
    _MESSAGE_LABELS,
    multiprocess_mode="livesum",
)
MESSAGE_DURATION = prometheus_client.Histogram(
    "cce_sync_dramatiq_message_duration_seconds",
    "Time spent processing one dramatiq message.",
    _MESSAGE_LABELS,
    buckets=LONG_DURATION_BUCKETS_SECONDS,
)
WORKER_PROCESSES = prometheus_client.Gauge(
    "cce_sync_worker_processes",
    "dramatiq worker processes running on this host.",
    multiprocess_mode="livesum",
)


def initialize_series() -> None:
    """Create the zero-valued series of every known label combination.

    A counter series that first appears with the value 1 hides that first increment from
    ``rate()`` and ``increase()``. Creating the series at zero when a worker boots makes the first
    failure or throttle visible to the alert rules.
    """
    SUBMISSIONS.labels(outcome="accepted", reason="")
    for reason in FAILURE_REASONS:
        SUBMISSIONS.labels(outcome="failed", reason=reason)
    for result in SYNC_RESULTS:
        SYNCS_COMPLETED.labels(result=result)
    for source in THROTTLE_SOURCES:
        THROTTLED.labels(source=source)
    for reason in SKIP_REASONS:
        TARGETS_SKIPPED.labels(reason=reason)
    for operation in OPERATIONS:
        API_REQUEST_DURATION.labels(operation=operation)


# --- Multiprocess directory ----------------------------------------------------------------------


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_gauge_pids(directory: Path) -> set[int]:
    pids: set[int] = set()
    for live_file in directory.glob("gauge_live*_*.db"):
        pid_text = live_file.stem.rsplit("_", 1)[-1]
        if pid_text.isdigit():
            pids.add(int(pid_text))
    return pids


def remove_dead_process_gauges(path: str | os.PathLike[str]) -> list[int]:
    """Remove the live-gauge files of processes that no longer exist.

    Only valid where every writer to `path` shares this process's PID namespace (one host or
    one pod), because a PID is checked with ``kill(pid, 0)``.

    Returns:
        The PIDs whose files were removed.
    """
    directory = Path(path)
    dead = sorted(pid for pid in _live_gauge_pids(directory) if not _pid_exists(pid))
    for pid in dead:
        mark_process_dead(pid, str(directory))
    if dead:
        logger.info("Removed live gauges of exited worker processes %s", dead)
    return dead


class WorkerFilesCollector(Collector):
    """Merge of every worker process's metric files, after dropping the gauges of dead ones.

    Args:
        path: The multiprocess directory.
        remove_dead_gauges: Drop live gauges of exited processes before each collection.
    """

    def __init__(self, path: str | os.PathLike[str], *, remove_dead_gauges: bool = True) -> None:
        self._path = str(path)
        self._remove_dead_gauges = remove_dead_gauges
        self._merger = MultiProcessCollector(None, path=self._path)

    def collect(self) -> Iterable[Metric]:
        if self._remove_dead_gauges:
            remove_dead_process_gauges(self._path)
        yield from self._merger.collect()


# --- State read from Redis at scrape time --------------------------------------------------------

CAMPAIGNS_KEY: Final = "cce-sync:campaigns"
DEFAULT_BROKER_NAMESPACE: Final = "cce-sync-dramatiq"

#: Socket and connect timeout, in seconds, of the Redis client that a scrape uses.
SCRAPE_REDIS_TIMEOUT_SECONDS: Final = 2.0

#: Campaign IDs read per Redis round trip.
CAMPAIGN_BATCH_SIZE: Final = 500

#: Seconds between two discoveries of dramatiq's queue names (a SCAN of the keyspace).
QUEUE_DISCOVERY_INTERVAL_SECONDS: Final = 60.0

#: Upper bound on dramatiq queue names reported, so a namespace full of unexpected keys cannot
#: make a scrape unbounded.
MAX_QUEUES: Final = 100


def _campaign_key(campaign_id: str) -> str:
    return f"cce-sync:campaign:{campaign_id}"


def _counts_key(campaign_id: str) -> str:
    return f"cce-sync:campaign:{campaign_id}:counts"


@dataclass
class _FleetState:
    campaigns: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CAMPAIGN_STATES, 0))
    targets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TARGET_STATES, 0))
    paused: dict[str, int] = field(default_factory=dict)


def _as_int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _pause_reason_label(reason: str) -> str:
    # A stored reason may carry detail after a colon ("auth: 401 APIGW.0301"). The label keeps
    # only a known leading word, so its values stay a small fixed set.
    head = reason.split(":", 1)[0].strip()
    if head in PAUSE_REASONS:
        return head
    return "other"


class FleetStateCollector(Collector):
    """Gauges computed from Redis at scrape time.

    Exposes ``cce_sync_campaigns{state}``, ``cce_sync_targets{state}`` (summed over pending,
    running and paused campaigns), ``cce_sync_campaigns_paused{reason}``, the dramatiq queue
    depths ``cce_sync_queue_messages{queue_name}`` and ``cce_sync_dead_letter_messages{queue_name}``,
    the fleet-wide ``cce_sync_dramatiq_workers`` (processes whose heartbeat is recent) and
    ``cce_sync_state_up`` (1 when the scrape read Redis). These values are fleet-wide, so every host's
    endpoint reports the same numbers: aggregate them with ``max``, not ``sum``.

    A Redis error is logged and yields only ``cce_sync_state_up 0``, so the scrape of the
    worker metrics still succeeds.

    Args:
        client: Redis client with ``decode_responses=True`` and socket timeouts.
        broker_namespace: dramatiq's key prefix in Redis.
        heartbeat_timeout_seconds: Age after which a worker heartbeat no longer counts.
        clock: Source of the current time in seconds since the epoch.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        broker_namespace: str = DEFAULT_BROKER_NAMESPACE,
        heartbeat_timeout_seconds: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._namespace = broker_namespace
        self._heartbeat_timeout_seconds = heartbeat_timeout_seconds
        self._clock = clock
        self._failing = False
        self._queue_names_cache: list[str] | None = None
        self._queue_names_expiry = 0.0

    def collect(self) -> Iterable[Metric]:
        try:
            fleet = self._read_fleet()
            queues = self._read_queues()
            workers = self._count_workers()
        except redis.RedisError as error:
            self._log_failure(error)
            return [
                _gauge(
                    "cce_sync_state_up", "1 when this scrape read the campaign state from Redis.", 0
                )
            ]

        if self._failing:
            logger.info("Metrics collector reads Redis again")
            self._failing = False
        return [
            _gauge(
                "cce_sync_state_up", "1 when this scrape read the campaign state from Redis.", 1
            ),
            *self._fleet_metrics(fleet),
            *self._queue_metrics(queues),
            _gauge(
                "cce_sync_dramatiq_workers",
                "dramatiq worker processes, fleet-wide, whose heartbeat is recent.",
                workers,
            ),
        ]

    def _log_failure(self, error: redis.RedisError) -> None:
        # One warning per outage; later failures of the same outage go to debug.
        if self._failing:
            logger.debug("Metrics collector still cannot read Redis: %s", error)
            return
        self._failing = True
        logger.warning("Metrics collector cannot read Redis: %s", error)

    def _campaign_ids(self) -> Iterator[list[str]]:
        total = int(self._client.zcard(CAMPAIGNS_KEY))
        for start in range(0, total, CAMPAIGN_BATCH_SIZE):
            batch = self._client.zrange(CAMPAIGNS_KEY, start, start + CAMPAIGN_BATCH_SIZE - 1)
            if batch:
                yield [str(campaign_id) for campaign_id in batch]

    def _read_fleet(self) -> _FleetState:
        fleet = _FleetState()
        for batch in self._campaign_ids():
            pipeline = self._client.pipeline(transaction=False)
            for campaign_id in batch:
                pipeline.hmget(_campaign_key(campaign_id), ["state", "reason"])
            headers = pipeline.execute()

            active: list[str] = []
            for campaign_id, (state, reason) in zip(batch, headers, strict=True):
                if state not in fleet.campaigns:
                    continue
                fleet.campaigns[state] += 1
                if state == "paused":
                    label = _pause_reason_label(reason or "")
                    fleet.paused[label] = fleet.paused.get(label, 0) + 1
                if state in ACTIVE_CAMPAIGN_STATES:
                    active.append(campaign_id)

            self._add_target_counts(fleet, active)
        return fleet

    def _add_target_counts(self, fleet: _FleetState, campaign_ids: Sequence[str]) -> None:
        if not campaign_ids:
            return
        pipeline = self._client.pipeline(transaction=False)
        for campaign_id in campaign_ids:
            pipeline.hgetall(_counts_key(campaign_id))
        for counts in pipeline.execute():
            for state, count in counts.items():
                if state in fleet.targets:
                    fleet.targets[state] += _as_int(count)

    def _queue_names(self) -> list[str]:
        # SCAN walks the whole keyspace, so discovered names are reused for a while.
        now = self._clock()
        if self._queue_names_cache is not None and now < self._queue_names_expiry:
            return self._queue_names_cache

        prefix = f"{self._namespace}:"
        names: list[str] = []
        for key in self._client.scan_iter(match=f"{prefix}*.msgs", count=1000):
            name = str(key)[len(prefix) : -len(".msgs")]
            if name.endswith(".XQ") or name.startswith("__"):
                continue
            names.append(name)
            if len(names) >= MAX_QUEUES:
                break

        self._queue_names_cache = sorted(set(names))
        self._queue_names_expiry = now + QUEUE_DISCOVERY_INTERVAL_SECONDS
        return self._queue_names_cache

    def _read_queues(self) -> dict[str, tuple[int, int | None]]:
        """Return queue name -> (messages stored, dead letters or None for a delay queue)."""
        names = self._queue_names()
        if not names:
            return {}

        prefix = f"{self._namespace}:"
        pipeline = self._client.pipeline(transaction=False)
        for name in names:
            pipeline.hlen(f"{prefix}{name}.msgs")
            pipeline.zcard(f"{prefix}{name}.XQ")
        sizes = pipeline.execute()

        queues: dict[str, tuple[int, int | None]] = {}
        for index, name in enumerate(names):
            # A delay queue (suffix .DQ) sends its dead letters to its parent queue's set.
            dead_letters = None if name.endswith(".DQ") else int(sizes[2 * index + 1])
            queues[name] = (int(sizes[2 * index]), dead_letters)
        return queues

    def _count_workers(self) -> int:
        now_ms = self._clock() * 1000
        cutoff_ms = now_ms - self._heartbeat_timeout_seconds * 1000
        return int(self._client.zcount(f"{self._namespace}:__heartbeats__", cutoff_ms, "+inf"))

    def _fleet_metrics(self, fleet: _FleetState) -> list[Metric]:
        campaigns = GaugeMetricFamily(
            "cce_sync_campaigns", "Campaigns by state, fleet-wide.", labels=["state"]
        )
        for state, count in sorted(fleet.campaigns.items()):
            campaigns.add_metric([state], count)

        targets = GaugeMetricFamily(
            "cce_sync_targets",
            "Targets of pending, running and paused campaigns by state, fleet-wide.",
            labels=["state"],
        )
        for state, count in fleet.targets.items():
            targets.add_metric([state], count)

        paused = GaugeMetricFamily(
            "cce_sync_campaigns_paused",
            "Paused campaigns by the leading word of their pause reason (auth, operator, window).",
            labels=["reason"],
        )
        for reason, count in sorted(fleet.paused.items()):
            paused.add_metric([reason], count)
        return [campaigns, targets, paused]

    def _queue_metrics(self, queues: dict[str, tuple[int, int | None]]) -> list[Metric]:
        stored = GaugeMetricFamily(
            "cce_sync_queue_messages",
            "Messages stored in a dramatiq queue: waiting, prefetched or being processed.",
            labels=["queue_name"],
        )
        dead = GaugeMetricFamily(
            "cce_sync_dead_letter_messages",
            "Messages in a dramatiq queue's dead-letter set.",
            labels=["queue_name"],
        )
        for name, (messages, dead_letters) in sorted(queues.items()):
            stored.add_metric([name], messages)
            if dead_letters is not None:
                dead.add_metric([name], dead_letters)
        return [stored, dead]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


# --- Exposition server ---------------------------------------------------------------------------


class MetricsPortInUseError(OSError):
    """The metrics port is taken by another process."""


@dataclass
class MetricsServer:
    """A running exposition server; `close` stops it and releases the port."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        host = str(self.server.server_address[0])
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def build_registry(
    *,
    multiprocess_dir: str | os.PathLike[str] | None = None,
    redis_client: redis.Redis | None = None,
    broker_namespace: str = DEFAULT_BROKER_NAMESPACE,
    heartbeat_timeout_seconds: float = 15.0,
) -> CollectorRegistry:
    """Build the registry a scrape reads.

    Args:
        multiprocess_dir: Directory of the worker processes' files; defaults to
            ``PROMETHEUS_MULTIPROC_DIR``. Without either, this process's own metrics are served
            (single-process mode, as in tests and ``cce-sync demo``).
        redis_client: Adds `FleetStateCollector` on this client when given.
        broker_namespace: dramatiq's key prefix, for queue depths and heartbeats.
        heartbeat_timeout_seconds: Age after which a worker heartbeat no longer counts.
    """
    directory = multiprocess_dir or os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    registry = CollectorRegistry(auto_describe=False)
    if directory:
        registry.register(WorkerFilesCollector(directory))
    else:
        registry.register(_DefaultRegistryCollector())

    if redis_client is not None:
        registry.register(
            FleetStateCollector(
                redis_client,
                broker_namespace=broker_namespace,
                heartbeat_timeout_seconds=heartbeat_timeout_seconds,
            )
        )
    return registry


class _DefaultRegistryCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        yield from prometheus_client.REGISTRY.collect()


def serve_metrics(host: str, port: int, registry: CollectorRegistry | None = None) -> MetricsServer:
    """Serve `registry` (default: `build_registry()`) over HTTP in a daemon thread.

    Every path, including ``/metrics``, returns the exposition. Port 0 picks a free port; read
    it from the returned server's `port`.

    Raises:
        MetricsPortInUseError: If another process listens on `port`. The message names the
            ``CCE_SYNC_METRICS_PORT`` setting and the ``--metrics-port`` option.
    """
    try:
        server, thread = prometheus_client.start_http_server(
            port, addr=host, registry=registry or build_registry()
        )
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise _port_in_use(host, port) from error
    logger.info("Serving metrics on %s:%d", host, server.server_port)
    return MetricsServer(server=server, thread=thread)


def run_exposition_server() -> int:
    """Run the host's exposition server until the process is stopped (a dramatiq fork function).

    Reads the host, port, Redis URL and heartbeat timeout from `worker.settings.Settings`
    (``CCE_SYNC_METRICS_HOST``, ``CCE_SYNC_METRICS_PORT``, ``REDIS_URL``) and the worker files
    from ``PROMETHEUS_MULTIPROC_DIR``.

    Returns:
        1 when the port is taken (the error is logged); otherwise it runs until dramatiq's
        SIGTERM handler exits the process.
    """
    # Imported here because worker.broker adds DramatiqMetrics to the broker, so it imports
    # this module.
    from worker.broker import BROKER_NAMESPACE, exit_with_parent, redis_client

    exit_with_parent()

    settings = get_settings()
    registry = build_registry(
        redis_client=_scrape_client(redis_client, settings),
        broker_namespace=BROKER_NAMESPACE,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
    )
    try:
        server = serve_metrics(settings.metrics_host, settings.metrics_port, registry)
    except MetricsPortInUseError as error:
        logger.error("Metrics endpoint not started: %s", error)
        return 1

    try:
        # The HTTP server runs in its own thread; this thread only waits for the stop signal.
        while server.thread.is_alive():
            server.thread.join(timeout=1.0)
    finally:
        server.close()
    return 0


def _scrape_client(
    build_client: Callable[[Settings], redis.Redis], settings: Settings
) -> redis.Redis:
    # A scrape must finish within Prometheus's scrape timeout (10 s by default), so Redis calls
    # made for it get short timeouts and no retries. Otherwise a hung Redis would make the whole
    # endpoint time out and hide the worker metrics along with the Redis gauges.
    timeout_seconds = min(settings.redis_socket_timeout_seconds, SCRAPE_REDIS_TIMEOUT_SECONDS)
    scrape_settings = settings.model_copy(
        update={
            "redis_socket_timeout_seconds": timeout_seconds,
            "redis_connect_timeout_seconds": timeout_seconds,
        }
    )
    client = build_client(scrape_settings)
    client.set_retry(Retry(NoBackoff(), 0))
    return client


def check_port_free(host: str, port: int) -> None:
    """Check that `port` can be bound on `host`, so a runner fails before starting workers.

    Port 0 always passes. Another process may still take the port between this check and the
    start of the exposition server.

    Raises:
        MetricsPortInUseError: With the same message as `serve_metrics`.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        probe = socket.create_server((host, port), family=family)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise _port_in_use(host, port) from error
    probe.close()


def _port_in_use(host: str, port: int) -> MetricsPortInUseError:
    return MetricsPortInUseError(
        errno.EADDRINUSE,
        f"metrics port {port} on {host} is already in use; choose a free port with "
        "CCE_SYNC_METRICS_PORT or `cce-sync worker --metrics-port`",
    )


# --- dramatiq middleware -------------------------------------------------------------------------


class DramatiqMetrics(Middleware):
    """dramatiq middleware that records message metrics into this module's metrics.

    Unlike dramatiq's own Prometheus middleware it creates no directory at import and starts no
    server: the files go to ``PROMETHEUS_MULTIPROC_DIR`` and `run_exposition_server` serves them.
    """

    def __init__(self) -> None:
        self._start_times: dict[str, float] = {}
        # Labels of the delayed messages this process holds, by message ID.
        self._delayed: dict[str, tuple[str, str]] = {}

    def after_process_boot(self, broker: Broker) -> None:
        if os.environ.get(MULTIPROCESS_DIR_VARIABLE) and not multiprocess_enabled():
            logger.error(
                "%s is set but prometheus_client was imported before it in process %d; this "
                "process's metrics are not exported",
                MULTIPROCESS_DIR_VARIABLE,
                os.getpid(),
            )
        initialize_series()

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        WORKER_PROCESSES.set(1)

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        WORKER_PROCESSES.set(0)
        directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
        if directory and multiprocess_enabled():
            mark_process_dead(os.getpid(), directory)

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int) -> None:
        # A delayed message leaves this process's memory when dramatiq enqueues it on its
        # main queue at its ETA; any process may then run it.
        held = self._delayed.pop(message.message_id, None)
        if held is not None and not delay:
            DELAYED_MESSAGES_IN_PROGRESS.labels(*held).dec()
        if "retries" in message.options:
            MESSAGE_RETRIES.labels(*_message_labels(message)).inc()

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        MESSAGE_REJECTS.labels(*_message_labels(message)).inc()

    def before_delay_message(self, broker: Broker, message: MessageProxy) -> None:
        if message.message_id in self._delayed:
            return
        labels = _message_labels(message)
        self._delayed[message.message_id] = labels
        DELAYED_MESSAGES_IN_PROGRESS.labels(*labels).inc()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        labels = _message_labels(message)
        MESSAGES_IN_PROGRESS.labels(*labels).inc()
        self._start_times[message.message_id] = time.monotonic()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        labels = _message_labels(message)
        started = self._start_times.pop(message.message_id, None)
        if started is not None:
            MESSAGE_DURATION.labels(*labels).observe(time.monotonic() - started)
            MESSAGES_IN_PROGRESS.labels(*labels).dec()

        MESSAGES.labels(*labels).inc()
        if exception is not None:
            MESSAGE_ERRORS.labels(*labels).inc()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self.after_process_message(broker, message)


def _message_labels(message: Message[Any] | MessageProxy) -> tuple[str, str]:
    return message.queue_name, message.actor_name
