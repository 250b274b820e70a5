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


#: prctl option that asks Linux to signal this process when its parent exits.
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
    return redis.Redis.from_url(
        url or settings.redis_url,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        socket_keepalive=True,
        health_check_interval=30,
        retry_on_timeout=False,
        decode_responses=decode_responses,
    )


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
