"""Run the simulator: the `SimulatorServer` Python API and the `cce-sync simulator` command.

Tests and benchmarks start the server in-process::

    with SimulatorServer(projects=1, clusters_per_project=3, credentials={"AK": "SK"}) as sim:
        client = CceClient(..., endpoint_override=sim.url)
        ...
        assert all(count == 1 for count in sim.audit().values())

The command runs the same server in the foreground until SIGINT or SIGTERM (or for
`--duration-seconds`), and prints its URL on the first line of standard output.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from types import FrameType, TracebackType
from typing import Final

from simulator.app import SimulatorHTTPServer, SimulatorState
from simulator.audit import AuditRecord
from simulator.auth import Authenticator
from simulator.faults import FaultInjector, Faults
from simulator.fleet import DEFAULT_JOB_SECONDS, DEFAULT_REGION, Clock, Fleet, FleetOptions
from simulator.throttling import ProjectThrottle

logger = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
#: Seconds a keep-alive connection may stay idle (or a request may take to arrive) before the
#: server closes it.
DEFAULT_IDLE_TIMEOUT_SECONDS: Final = 30.0
DEFAULT_STOP_TIMEOUT_SECONDS: Final = 5.0
#: Interval at which the serving thread checks for shutdown, in seconds.
_POLL_INTERVAL_SECONDS: Final = 0.2


class SimulatorServer:
    """A CCE stand-in on a real socket, served from a background thread.

    Keyword-only arguments:
        projects, clusters_per_project, pools_per_cluster, nodes_per_pool, seed, region,
        unavailable_clusters_per_project: the generated fleet (see `FleetOptions`).
        rate_per_second: sync POSTs allowed per second per project (token bucket with one
            second of burst); None disables throttling.
        faults: injected faults; change them later with `set_faults`.
        credentials: access key ID -> secret key accepted for AK/SK signing.
        tokens: accepted `X-Auth-Token` values. With no credentials and no tokens,
            authentication is off.
        job_seconds: how long a sync job runs, in seconds of `clock`.
        host, port: where to listen; port 0 picks a free port (read it from `url`).
        send_retry_after: add Retry-After (seconds) to 429 throttling responses.
        clock: seconds source for jobs and throttling; a fake clock makes jobs step on demand.
        idle_timeout_seconds: socket timeout of each connection.
        max_skew_seconds: accepted difference between X-Sdk-Date and the server clock.
    """

    def __init__(
        self,
        *,
        projects: int = 2,
        clusters_per_project: int = 20,
        pools_per_cluster: int = 2,
        nodes_per_pool: int = 3,
        seed: int = 0,
        region: str = DEFAULT_REGION,
        unavailable_clusters_per_project: int = 0,
        rate_per_second: float | None = None,
        faults: Faults | None = None,
        credentials: Mapping[str, str] | None = None,
        tokens: Collection[str] | None = None,
        job_seconds: float = DEFAULT_JOB_SECONDS,
        host: str = DEFAULT_HOST,
        port: int = 0,
        send_retry_after: bool = False,
        clock: Clock = time.monotonic,
        idle_timeout_seconds: float = DEFAULT_IDLE_TIMEOUT_SECONDS,
        max_skew_seconds: int = 900,
    ) -> None:
        options = FleetOptions(
            projects=projects,
            clusters_per_project=clusters_per_project,
            pools_per_cluster=pools_per_cluster,
            nodes_per_pool=nodes_per_pool,
            seed=seed,
            region=region,
            unavailable_clusters_per_project=unavailable_clusters_per_project,
        )
        self._state = SimulatorState(
            fleet=Fleet(options, clock=clock, job_seconds=job_seconds),
            throttle=ProjectThrottle(rate_per_second, clock=clock),
            faults=FaultInjector(faults, seed=seed),
            authenticator=Authenticator(
                credentials=credentials, tokens=tokens, max_skew_seconds=max_skew_seconds
            ),
            send_retry_after=send_retry_after,
        )
        self._host = host
        self._port = port
        self._idle_timeout_seconds = idle_timeout_seconds
        self._http: SimulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> SimulatorServer:
        """Bind the socket and serve from a daemon thread; returns self.

        Raises:
            OSError: the address is in use or cannot be bound.
            RuntimeError: the server is already running.
        """
        if self._http is not None:
            raise RuntimeError("simulator is already running; call stop() first")
        self._http = SimulatorHTTPServer(
            (self._host, self._port), self._state, idle_timeout_seconds=self._idle_timeout_seconds
        )
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_SECONDS},
            name="cce-simulator",
            daemon=True,
        )
        self._thread.start()
        logger.info("simulator listening on %s", self.url)
        return self

    def stop(self, timeout_seconds: float = DEFAULT_STOP_TIMEOUT_SECONDS) -> None:
        """Stop accepting, close open connections and wait up to `timeout_seconds`.

        Safe to call twice or before start.
        """
        http, thread = self._http, self._thread
        if http is None or thread is None:
            return
        self._http = self._thread = None
        http.shutdown()
        http.close_connections()
        http.server_close()
        thread.join(timeout_seconds)
        if thread.is_alive():
            logger.warning("simulator thread did not stop within %.1f s", timeout_seconds)
        logger.info("simulator stopped")

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Access for tests and benchmarks

    @property
    def url(self) -> str:
        """Base URL such as `http://127.0.0.1:40123`, available while running."""
        if self._http is None:
            raise RuntimeError("simulator is not running; call start() first")
        host, port = self._http.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else host
        if ":" in host_text:
            host_text = f"[{host_text}]"
        return f"http://{host_text}:{port}"

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("simulator is not running; call start() first")
        return int(self._http.server_address[1])

    @property
    def fleet(self) -> Fleet:
        return self._state.fleet

    def audit(self) -> dict[str, int]:
        """Return pool key (`region/project/cluster/pool`) -> number of accepted syncs."""
        return self._state.audit.counts()

    def audit_records(self) -> list[AuditRecord]:
        return self._state.audit.records()

    def stats(self) -> dict[str, int]:
        """Return request counts by outcome (requests, accepted, throttled, ...)."""
        return self._state.stats.snapshot()

    @property
    def faults(self) -> Faults:
        return self._state.faults.faults

    def set_faults(self, faults: Faults | None = None, **changes: float) -> Faults:
        """Replace the faults, or change the named ones (`set_faults(reset=0.1)`)."""
        if faults is not None:
            self._state.faults.replace(faults)
        return self._state.faults.update(changes)

    def set_rate(self, rate_per_second: float | None) -> None:
        """Change the per-project sync rate limit. None disables throttling."""
        self._state.throttle.set_rate(rate_per_second)


# Command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cce-sync simulator",
        description="Serve a simulated CCE API for a generated fleet (for tests, demos and "
        "benchmarks). Admin routes: GET /_sim/audit, /_sim/fleet, /_sim/stats, /_sim/faults; "
        "POST /_sim/faults, /_sim/throttle.",
    )
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)")
    add("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default 0)")

    add("--seed", type=int, default=0, help="seed of the fleet IDs and fault draws (default 0)")
    add("--region", default=DEFAULT_REGION, help="region used in audit keys (default %(default)s)")
    add("--projects", type=int, default=2, help="number of projects (default 2)")
    add("--clusters-per-project", type=int, default=20, help="clusters per project (default 20)")
    add("--pools-per-cluster", type=int, default=2, help="pools per cluster besides DefaultPool")
    add("--nodes-per-pool", type=int, default=3, help="nodes per pool (default 3)")

    add(
        "--unavailable-clusters",
        type=int,
        default=0,
        help="clusters per project in phase Unavailable",
    )

    add(
        "--rate-per-second",
        type=float,
        default=None,
        help="sync POSTs per second per project before 429 APIGW.0308 (default: unlimited)",
    )
    add(
        "--retry-after",
        action="store_true",
        help="send Retry-After (seconds) with 429 throttling responses",
    )
    add(
        "--job-seconds",
        type=float,
        default=DEFAULT_JOB_SECONDS,
        help="duration of a sync job in seconds (default %(default)s)",
    )

    add("--job-failure", type=float, default=0.0, help="probability that a sync job ends Failed")

    add("--fault-5xx", type=float, default=0.0, help="probability of an injected 500 per request")
    add(
        "--fault-reset",
        type=float,
        default=0.0,
        help="probability of a TCP reset before processing a request",
    )
    add(
        "--fault-drop-after-accept",
        type=float,
        default=0.0,
        help="probability that an accepted sync gets a TCP reset instead of its response",
    )
    add("--drop-delay-ms", type=float, default=0.0, help="delay before that reset, in milliseconds")
    add("--latency-ms", type=float, default=0.0, help="delay added to every API request, in ms")
    add("--fault-slow", type=float, default=0.0, help="probability of an extra --slow-ms delay")
    add("--slow-ms", type=float, default=0.0, help="extra delay of slow requests, in ms")

    add("--ak", help="access key ID accepted for AK/SK signatures (needs --sk)")
    add("--sk", help="secret key of --ak (visible in the process list; use only for test keys)")
    add("--token", action="append", default=[], help="accepted X-Auth-Token value (repeatable)")

    add("--duration-seconds", type=float, default=None, help="stop after this many seconds")
    add("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def server_from_args(args: argparse.Namespace) -> SimulatorServer:
    """Build a (not yet started) server from parsed command-line arguments.

    Raises:
        ValueError: an option is out of range.
    """
    if (args.ak is None) != (args.sk is None):
        raise ValueError("--ak and --sk must be given together")
    faults = Faults(
        error_5xx=args.fault_5xx,
        reset=args.fault_reset,
        drop_after_accept=args.fault_drop_after_accept,
        drop_delay_ms=args.drop_delay_ms,
        latency_ms=args.latency_ms,
        slow=args.fault_slow,
        slow_ms=args.slow_ms,
        job_failure=args.job_failure,
    )
    return SimulatorServer(
        projects=args.projects,
        clusters_per_project=args.clusters_per_project,
        pools_per_cluster=args.pools_per_cluster,
        nodes_per_pool=args.nodes_per_pool,
        seed=args.seed,
        region=args.region,
        unavailable_clusters_per_project=args.unavailable_clusters,
        rate_per_second=args.rate_per_second,
        faults=faults,
        credentials={args.ak: args.sk} if args.ak is not None else None,
        tokens=args.token,
        job_seconds=args.job_seconds,
        host=args.host,
        port=args.port,
        send_retry_after=args.retry_after,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run `cce-sync simulator`; returns the exit status (0 stopped cleanly, 1 failed to start)."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )

    try:
        server = server_from_args(args)
        server.start()
    except (ValueError, OSError) as error:
        print(f"cce-sync simulator: {error}", file=sys.stderr)
        return 1

    stop = threading.Event()
    _install_signal_handlers(stop)
    print(server.url, flush=True)
    if not (args.ak or args.token):
        logger.warning("authentication is off: no --ak/--sk and no --token given")
    try:
        deadline = (
            None if args.duration_seconds is None else time.monotonic() + args.duration_seconds
        )
        while not stop.wait(_POLL_INTERVAL_SECONDS):
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        server.stop()
    return 0


def _install_signal_handlers(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("received signal %d, stopping", signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
