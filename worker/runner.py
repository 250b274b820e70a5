"""`cce-sync worker`: dramatiq worker processes, the metrics endpoint and housekeeping.

The runner checks the settings, then locks and prepares prometheus-client's multiprocess
directory. It then hands over to dramatiq's command line with the actors module, the thread and
process counts, and fork functions for the `/metrics` exposition server, housekeeping and (with
`--intake`) the stream consumer. SIGTERM makes dramatiq stop taking messages and
wait up to `--shutdown-seconds` for running ones. A message interrupted after that comes back to
another worker once the heartbeat timeout has passed.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from worker.settings import Settings, get_settings

logger = logging.getLogger(__name__)

#: dramatiq waits this long for running messages after SIGTERM, in seconds. Kubernetes'
#: terminationGracePeriodSeconds in deploy/k8s is set above it.
DEFAULT_SHUTDOWN_SECONDS = 45


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `worker` options to `parser`."""
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per process (default: 8)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of the /metrics endpoint (default: CCE_SYNC_METRICS_PORT or 9191; 0 disables it)",
    )
    parser.add_argument(
        "--metrics-dir",
        default=None,
        help="prometheus-client multiprocess directory (default: a directory per metrics port "
        "under the system temp directory; emptied at start)",
    )
    parser.add_argument(
        "--shutdown-seconds",
        type=int,
        default=DEFAULT_SHUTDOWN_SECONDS,
        help=f"how long SIGTERM waits for running messages (default: {DEFAULT_SHUTDOWN_SECONDS})",
    )
    parser.add_argument(
        "--intake", action="store_true", help="also consume the cce-sync:intake stream"
    )
    parser.add_argument("--verbose", "-v", action="count", default=0, help="more log output")


def dramatiq_arguments(args: argparse.Namespace, *, metrics_enabled: bool) -> list[str]:
    """Return the dramatiq command line for these options."""
    argv = [
        "worker.actors",
        "--processes",
        str(args.processes),
        "--threads",
        str(args.threads),
        "--queues",
        "cce-sync",
        "--worker-shutdown-timeout",
        str(args.shutdown_seconds * 1000),
        "--fork-function",
        "worker.housekeeping:run",
    ]
    if metrics_enabled:
        argv += ["--fork-function", "worker.metrics:run_exposition_server"]
    if args.intake:
        argv += ["--fork-function", "producers.intake:run_forked"]
    argv += ["-v"] * args.verbose
    return argv


#: Open lock file of this worker's metrics directory; kept open (and inherited by the worker
#: processes) for as long as the worker runs.
_metrics_dir_lock: int | None = None


def _lock_metrics_dir(directory: Path) -> bool:
    """Take an exclusive lock on the metrics directory; return False if another worker has it.

    Starting a worker empties its metrics directory, which would silently wipe the counters of
    a running worker that uses the same directory.
    """
    global _metrics_dir_lock
    descriptor = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return False
    _metrics_dir_lock = descriptor
    return True


def configuration_problem(settings: Settings) -> str | None:
    """Return why the workers could not call CCE with these settings, or None when they can.

    Checked at start so that a missing credential or a rejected endpoint stops the worker with
    one clear line, instead of failing every message later.
    """
    from worker.cce.credentials import from_settings
    from worker.cce.endpoints import endpoint_for
    from worker.cce.errors import ConfigurationError, CredentialsError

    try:
        from_settings(settings)
        if settings.endpoint:
            endpoint_for("ap-southeast-1", settings.endpoint)
    except (ConfigurationError, CredentialsError) as error:
        return str(error)
    return None


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run the workers until SIGTERM or SIGINT; return dramatiq's exit code."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="cce-sync worker")
        add_arguments(parser)
        args = parser.parse_args(args)

    if args.processes < 1 or args.threads < 1:
        raise SystemExit("cce-sync worker: --processes and --threads must be at least 1")

    settings = get_settings()
    problem = configuration_problem(settings)
    if problem:
        print(f"cce-sync worker: {problem}", file=sys.stderr)
        return 2

    port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    os.environ["CCE_SYNC_METRICS_PORT"] = str(port)
    # Forked processes inherit the cached settings: read them again with the port set.
    get_settings.cache_clear()
    settings = get_settings()
    metrics_dir = Path(args.metrics_dir or Path(tempfile.gettempdir()) / f"cce-sync-metrics-{port}")

    # prometheus-client chooses its multiprocess storage when it is imported, so the directory
    # must exist and be in the environment before this process imports it.
    metrics_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from worker import metrics

    # Check the port before touching the directory: a second worker started by mistake on the
    # same port must not delete the running worker's metric files.
    if port:
        try:
            metrics.check_port_free(settings.metrics_host, port)
        except metrics.MetricsPortInUseError as error:
            print(f"cce-sync worker: {error}", file=sys.stderr)
            return 1
    if not _lock_metrics_dir(metrics_dir):
        print(
            f"cce-sync worker: metrics directory {metrics_dir} is used by another running "
            "worker; give each worker its own --metrics-dir",
            file=sys.stderr,
        )
        return 1
    metrics.prepare_multiprocess_dir(metrics_dir)

    from dramatiq import cli

    argv = dramatiq_arguments(args, metrics_enabled=port != 0)
    logger.info("starting dramatiq: %s", " ".join(argv))
    return int(cli.main(cli.make_argument_parser().parse_args(argv)))
