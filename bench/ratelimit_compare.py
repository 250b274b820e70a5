"""Compare Redis-backed rate limiters against a strict 8 requests/s limit.

Each candidate limiter is configured for 8 requests per second. Two processes of 8 threads
each take every grant they can for a fixed time, against a private redis-server that this
script starts on a free loopback port. Every grant's send time (wall
clock, after any sleep the limiter asks for) is recorded. The script then replays the merged
send times through a strict server-side limit: at most 8 requests in any 1 s sliding window,
rejected requests not counted. It reports:

* utilization: accepted requests / (8 x run seconds), the share of the allowed rate used;
* throttled: rejected / sent, the share that a strict server would answer with 429;
* peak: most sends in any 1 s window;
* calls per grant: limiter calls (Redis round trips or more) per granted request;
* throttled by a token bucket: the same replay through a more tolerant server, a token bucket
  of 8 tokens refilled at 8 per second (the shape of the cce-sync simulator's limit).

The bar for cce-sync is utilization >= 0.95 with throttled <= 5%.

Run: ``.venv/bin/python bench/ratelimit_compare.py [--seconds 15] [--json results.json]``
(about 3 minutes with the defaults).
Needs ``redis-server`` on PATH and the ``bench`` extra (pyrate-limiter, limits).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import redis

ALLOWED_PER_SECOND = 8
PROCESSES = 2
THREADS_PER_PROCESS = 8
BUCKET = "bench|project"

#: Pause of the polling candidates (those that only return granted or not) after a rejection,
#: drawn uniformly from this range in seconds so that threads do not poll in lockstep.
POLL_SECONDS = (0.005, 0.015)

#: Delay between launching the child processes and the common start time, so that imports and
#: connections are done before the first grant request.
START_DELAY_SECONDS = 2.0

#: Candidate name -> what it is, for the report.
CANDIDATES: dict[str, str] = {
    "cce-sync-gcra": "worker.ratelimit.RateLimiter, 8/s, burst 1, reserve and sleep",
    "cce-sync-gcra-margin": "worker.ratelimit.RateLimiter, 7.9/s (1.25% margin), burst 1",
    "dramatiq-window": "dramatiq WindowRateLimiter(limit=8, window=1), polling",
    "dramatiq-bucket": "dramatiq BucketRateLimiter(limit=8, bucket=1000), polling",
    "pyrate-log": "pyrate-limiter RedisBucket (sliding log) Rate(8, SECOND), blocking",
    "pyrate-gcra": "pyrate-limiter GCRA on RedisStateStore Rate(8, SECOND, burst=1), blocking",
    "pyrate-gcra-buffer0": "as pyrate-gcra, with Limiter(buffer_ms=0) instead of the default 50",
    "limits-moving": "limits MovingWindowRateLimiter 8/second, polling",
    "limits-sliding-counter": "limits SlidingWindowCounterRateLimiter 8/second, polling",
}


# Child side: one process driving one candidate.


class Counter:
    """Thread-safe count of limiter calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, amount: int = 1) -> None:
        with self._lock:
            self.value += amount


def _poll_sleep() -> None:
    time.sleep(random.uniform(*POLL_SECONDS))


def _build_taker(candidate: str, url: str, calls: Counter) -> Callable[[float], bool]:
    """Return a function that blocks until one grant (True) or until the deadline (False)."""
    client = redis.Redis.from_url(url, socket_timeout=5)

    if candidate in ("cce-sync-gcra", "cce-sync-gcra-margin"):
        from worker.ratelimit import RateLimiter

        limiter = RateLimiter(client)
        ceiling = ALLOWED_PER_SECOND if candidate == "cce-sync-gcra" else ALLOWED_PER_SECOND - 0.1

        def take_gcra(deadline: float) -> bool:
            while time.time() < deadline:
                calls.add()
                permit = limiter.acquire(BUCKET, ceiling_per_second=ceiling, max_wait_seconds=0.5)
                time.sleep(permit.wait_seconds)
                if permit.granted:
                    return True
            return False

        return take_gcra

    if candidate.startswith("dramatiq-"):
        from dramatiq.rate_limits import BucketRateLimiter, WindowRateLimiter
        from dramatiq.rate_limits.backends import RedisBackend

        backend = RedisBackend(client=client)
        dramatiq_limiter: WindowRateLimiter | BucketRateLimiter
        if candidate == "dramatiq-window":
            dramatiq_limiter = WindowRateLimiter(
                backend, BUCKET, limit=ALLOWED_PER_SECOND, window=1
            )
        else:
            dramatiq_limiter = BucketRateLimiter(
                backend, BUCKET, limit=ALLOWED_PER_SECOND, bucket=1000
            )

        def take_dramatiq(deadline: float) -> bool:
            while time.time() < deadline:
                calls.add()
                with dramatiq_limiter.acquire(raise_on_failure=False) as acquired:
                    if acquired:
                        return True
                _poll_sleep()
            return False

        return take_dramatiq

    if candidate.startswith("pyrate-"):
        from pyrate_limiter import (
            GCRA,
            AbstractBucket,
            Duration,
            Limiter,
            Rate,
            RedisBucket,
            RedisStateStore,
            StateBucket,
        )

        bucket: AbstractBucket
        if candidate == "pyrate-log":
            bucket = RedisBucket.init([Rate(ALLOWED_PER_SECOND, Duration.SECOND)], client, BUCKET)
        else:
            rate = Rate(ALLOWED_PER_SECOND, Duration.SECOND, burst=1)
            store = RedisStateStore(client, BUCKET)
            bucket = StateBucket([rate], algorithm=GCRA(), store=store)
        buffer_ms = 0 if candidate == "pyrate-gcra-buffer0" else 50
        pyrate_limiter = Limiter(bucket, buffer_ms=buffer_ms)

        def take_pyrate(deadline: float) -> bool:
            remaining = deadline - time.time()
            if remaining <= 0:
                return False
            calls.add()
            try:
                return bool(pyrate_limiter.try_acquire("bench", blocking=True, timeout=remaining))
            except TimeoutError:
                return False

        return take_pyrate

    if candidate.startswith("limits-"):
        import limits
        from limits.storage import RedisStorage
        from limits.strategies import (
            MovingWindowRateLimiter,
            SlidingWindowCounterRateLimiter,
        )

        storage = RedisStorage(url)
        item = limits.RateLimitItemPerSecond(ALLOWED_PER_SECOND)
        limits_limiter: MovingWindowRateLimiter | SlidingWindowCounterRateLimiter
        if candidate == "limits-moving":
            limits_limiter = MovingWindowRateLimiter(storage)
        else:
            limits_limiter = SlidingWindowCounterRateLimiter(storage)

        def take_limits(deadline: float) -> bool:
            while time.time() < deadline:
                calls.add()
                if limits_limiter.hit(item, BUCKET):
                    return True
                _poll_sleep()
            return False

        return take_limits

    raise ValueError(f"unknown candidate {candidate!r}; expected one of {sorted(CANDIDATES)}")


def run_child(candidate: str, url: str, start_at: float, seconds: float, threads: int) -> None:
    """Drive one candidate from this process and print the grant times as JSON."""
    calls = Counter()
    take = _build_taker(candidate, url, calls)
    grants: list[float] = []
    lock = threading.Lock()
    deadline = start_at + seconds

    def drive() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        while time.time() < deadline:
            if not take(deadline):
                break
            sent_at = time.time()
            with lock:
                grants.append(sent_at)

    workers = [threading.Thread(target=drive, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=deadline - time.time() + 30)
    json.dump({"grants": grants, "calls": calls.value}, sys.stdout)


# Parent side: the Redis server, the runs and the analysis.


@dataclass
class Result:
    """Measurements of one candidate run."""

    candidate: str
    description: str
    seconds: float
    sent: int
    accepted: int
    throttled: int
    utilization: float
    throttled_share: float
    peak_per_second: int
    calls_per_grant: float
    token_bucket_throttled_share: float


def strict_sliding_limit(
    times: list[float], limit: int, window_seconds: float = 1.0
) -> tuple[int, int]:
    """Replay send times through a strict sliding-window limit; return (accepted, rejected).

    A request at time t is accepted when fewer than `limit` accepted requests lie in
    (t - window_seconds, t]. Rejected requests do not count against later ones.
    """
    accepted_times: collections.deque[float] = collections.deque()
    accepted = 0
    rejected = 0
    for moment in sorted(times):
        while accepted_times and accepted_times[0] <= moment - window_seconds:
            accepted_times.popleft()
        if len(accepted_times) < limit:
            accepted_times.append(moment)
            accepted += 1
        else:
            rejected += 1
    return accepted, rejected


def token_bucket_limit(times: list[float], rate_per_second: float, capacity: float) -> int:
    """Replay send times through a token bucket that starts full; return the rejected count."""
    tokens = capacity
    previous: float | None = None
    rejected = 0
    for moment in sorted(times):
        if previous is not None:
            tokens = min(capacity, tokens + (moment - previous) * rate_per_second)
        previous = moment
        if tokens >= 1:
            tokens -= 1
        else:
            rejected += 1
    return rejected


def peak_in_window(times: list[float], window_seconds: float = 1.0) -> int:
    """Return the most times within any half-open window of the given length."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window_seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


def analyse(
    candidate: str, all_times: list[float], calls: int, start_at: float, seconds: float
) -> Result:
    """Measure the sends within [start_at, start_at + seconds).

    Sends after the end (slots reserved before it) are left out, so that no candidate is
    credited for more than the run time.
    """
    times = [moment for moment in all_times if start_at <= moment < start_at + seconds]
    accepted, rejected = strict_sliding_limit(times, ALLOWED_PER_SECOND)
    sent = len(times)
    return Result(
        candidate=candidate,
        description=CANDIDATES[candidate],
        seconds=seconds,
        sent=sent,
        accepted=accepted,
        throttled=rejected,
        utilization=accepted / (ALLOWED_PER_SECOND * seconds),
        throttled_share=rejected / sent if sent else 0.0,
        peak_per_second=peak_in_window(times),
        calls_per_grant=calls / len(all_times) if all_times else float("inf"),
        token_bucket_throttled_share=(
            token_bucket_limit(times, ALLOWED_PER_SECOND, ALLOWED_PER_SECOND) / sent
            if sent
            else 0.0
        ),
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """Start a throwaway redis-server on a free loopback port; yield its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found on PATH; install it (Debian: redis-server)")
    with tempfile.TemporaryDirectory(prefix="ratelimit-bench-") as directory:
        port = _free_port()
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=directory,
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_for_redis(url)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_for_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            client.close()


def run_candidate(candidate: str, url: str, seconds: float) -> Result:
    """Run one candidate in fresh child processes against an emptied Redis."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    client.flushdb()
    client.close()

    start_at = time.time() + START_DELAY_SECONDS
    command = [sys.executable, str(Path(__file__).resolve()), "--child", candidate]
    command += ["--url", url, "--start-at", repr(start_at), "--seconds", repr(seconds)]
    command += ["--threads", str(THREADS_PER_PROCESS)]
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)
        for _ in range(PROCESSES)
    ]
    outputs = [
        child.communicate(timeout=START_DELAY_SECONDS + seconds + 60)[0] for child in children
    ]
    for child in children:
        if child.returncode != 0:
            raise RuntimeError(
                f"{candidate}: child process failed with exit code {child.returncode}"
            )

    times: list[float] = []
    calls = 0
    for output in outputs:
        report = json.loads(output)
        times.extend(report["grants"])
        calls += report["calls"]
    return analyse(candidate, times, calls, start_at, seconds)


def _environment_report() -> dict[str, str]:
    versions = {}
    for package in ("redis", "dramatiq", "pyrate-limiter", "limits"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    server = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "redis_server": server,
        **versions,
    }


def print_table(results: list[Result]) -> None:
    print(
        "| candidate | sent | utilization | throttled | peak in 1 s | calls/grant "
        "| throttled (token bucket) |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    for result in results:
        print(
            f"| {result.candidate} | {result.sent} | {result.utilization:.3f} "
            f"| {result.throttled_share:.1%} | {result.peak_per_second} "
            f"| {result.calls_per_grant:.1f} | {result.token_bucket_throttled_share:.1%} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="run time per candidate (s)")
    parser.add_argument(
        "--candidates",
        default=",".join(CANDIDATES),
        help="comma-separated candidates to run (default: all)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=THREADS_PER_PROCESS, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)

    if arguments.child:
        run_child(
            arguments.child, arguments.url, arguments.start_at, arguments.seconds, arguments.threads
        )
        return 0

    candidates = [name.strip() for name in arguments.candidates.split(",") if name.strip()]
    unknown = sorted(set(candidates) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidates {unknown}; expected names from {sorted(CANDIDATES)}")

    environment = _environment_report()
    results = []
    with private_redis() as url:
        for candidate in candidates:
            print(f"running {candidate} for {arguments.seconds:g} s", file=sys.stderr)
            results.append(run_candidate(candidate, url, arguments.seconds))

    for key, value in environment.items():
        print(f"{key}: {value}")
    print(
        f"{PROCESSES} processes x {THREADS_PER_PROCESS} threads, {arguments.seconds:g} s each, "
        f"strict limit {ALLOWED_PER_SECOND} per 1 s sliding window"
    )
    print_table(results)
    if arguments.json:
        document = {"environment": environment, "results": [asdict(r) for r in results]}
        arguments.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
