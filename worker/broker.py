"""The dramatiq broker and the one place that builds Redis clients.

Every Redis client in cce-sync comes from `redis_client()`, so every connection has a connect
timeout, a socket timeout and health checks. dramatiq's `RedisBroker(url=...)` would build its own
connection pool from the URL and silently drop keyword timeouts, so the broker is given a client.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import sys
import threading

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from worker.settings import Settings, get_settings

logger = logging.getLogger(__name__)

#: Namespace of dramatiq's queues in Redis; the campaign data uses the `cce-sync:` prefix.
BROKER_NAMESPACE = "cce-sync-dramatiq"

#: Chance, per million broker commands, that a command also requeues the messages of workers
#: whose heartbeat stopped. dramatiq's default (1,000) leaves a killed worker's messages stranded
#: for minutes on a quiet queue; 50,000 (5%) brings them back within seconds at negligible cost.
MAINTENANCE_CHANCE_PER_MILLION = 50_000

#: Upper bound on one actor run, in milliseconds. A run only does a few HTTP calls with their own
#: deadlines; anything longer is a hang.
ACTOR_TIME_LIMIT_MS = 5 * 60 * 1000


#: prctl option that makes Linux signal this process when its parent exits.
_PR_SET_PDEATHSIG = 1


def exit_with_parent() -> None:
    """Make the kernel send SIGTERM to this process when its parent process exits (Linux only).

    dramatiq's main process starts the worker and fork processes. If it is killed with SIGKILL,
    its children would otherwise live on as orphans: still consuming messages, holding the
    metrics port and writing metric files that the next `cce-sync worker` deletes. On other
    systems this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning(
            "cannot ask to be stopped with the parent process (errno %d)", ctypes.get_errno()
        )
        return
    if os.getppid() == 1:
        # The parent exited before the request took effect.
        os.kill(os.getpid(), signal.SIGTERM)


class ExitWithParent(Middleware):
    """Stops each worker process when dramatiq's main process is gone (see `exit_with_parent`)."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        exit_with_parent()


#: How often the consumer watchdog looks for dead consumer threads, in seconds.
CONSUMER_CHECK_SECONDS = 5.0


class ConsumerWatchdog(Middleware):
    """Restarts dramatiq consumer threads that died, within each worker process.

    In dramatiq 2.2, a consumer thread that meets an error while Redis is unreachable tries to
    requeue its messages, and when that also fails the exception ends the thread. The delay-queue
    consumer is the one usually hit, and without it the process never runs a delayed message
    again (every retry, wait and completion check). This middleware starts a new consumer for the
    queue. Messages the dead thread held stay unacknowledged until the process exits;
    housekeeping re-sends the targets they were for.

    NOTE: this relies on dramatiq's `Worker.consumers` and `Worker._add_consumer`, which are not
    public API; check them when upgrading dramatiq.
    """

    def __init__(self, *, interval_seconds: float = CONSUMER_CHECK_SECONDS) -> None:
        self.interval_seconds = interval_seconds
        self._stop = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        thread = threading.Thread(
            target=self._watch, args=(worker,), name="consumer-watchdog", daemon=True
        )
        thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _watch(self, worker: dramatiq.Worker) -> None:
        while not self._stop.wait(self.interval_seconds):
            for queue_name, consumer in list(worker.consumers.items()):
                # A consumer stopped on purpose has running False; a crashed one keeps True.
                if consumer.is_alive() or not consumer.running or self._stop.is_set():
                    continue
                logger.error("dramatiq consumer for queue %s died; starting a new one", queue_name)
                del worker.consumers[queue_name]
                worker._add_consumer(queue_name, delay=queue_name.endswith(".DQ"))


class RedisUrlError(ValueError):
    """``REDIS_URL`` (or the URL given) cannot be parsed; the message never repeats the URL."""


def redis_client(
    settings: Settings | None = None, *, url: str | None = None, decode_responses: bool = True
) -> redis.Redis:
    """Build a Redis client with timeouts from the settings.

    Args:
        settings: Source of the URL and timeouts; the process settings when omitted.
        url: Overrides the settings' `redis_url`.
        decode_responses: Return `str` values (the default). Pass False to receive `bytes`, for
            readers of data that other systems wrote and that may not be valid UTF-8.
    """
    settings = settings or get_settings()
    try:
        return redis.Redis.from_url(
            url or settings.redis_url,
            socket_timeout=settings.redis_socket_timeout_seconds,
            socket_connect_timeout=settings.redis_connect_timeout_seconds,
            socket_keepalive=True,
            health_check_interval=30,
            retry_on_timeout=False,
            decode_responses=decode_responses,
        )
    except ValueError as error:
        # redis-py names the accepted schemes; the URL itself may contain a password.
        raise RedisUrlError(f"invalid REDIS_URL: {error}") from None


def _broker_client(settings: Settings) -> redis.Redis:
    # dramatiq's Redis broker works on bytes, so its client must not decode responses.
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        socket_keepalive=True,
        health_check_interval=30,
    )


def build_broker(settings: Settings | None = None) -> RedisBroker:
    """Build the Redis broker with cce-sync's middleware and heartbeat settings.

    dramatiq's own `Retries` middleware is kept with zero retries, because cce-sync decides
    retries itself and waits for the rate limiter without using up attempts. An unexpected
    exception is logged by dramatiq and its message goes to the dead-letter queue.
    """
    from worker.metrics import DramatiqMetrics

    settings = settings or get_settings()
    middleware = [
        ExitWithParent(),
        ConsumerWatchdog(),
        DramatiqMetrics(),
        AgeLimit(),
        TimeLimit(time_limit=ACTOR_TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=0),
        CurrentMessage(),
    ]
    broker = RedisBroker(
        client=_broker_client(settings),
        namespace=BROKER_NAMESPACE,
        middleware=middleware,
        maintenance_chance=MAINTENANCE_CHANCE_PER_MILLION,
        heartbeat_timeout=int(settings.heartbeat_timeout_seconds * 1000),
    )
    return broker


@functools.cache
def setup_broker() -> RedisBroker:
    """Build the broker once per process and make it dramatiq's global broker."""
    broker = build_broker()
    dramatiq.set_broker(broker)
    return broker
