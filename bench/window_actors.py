"""Baseline for `bench.pipeline`: node pool syncs rate limited by dramatiq's WindowRateLimiter.

This is the plain dramatiq recipe, used only for comparison: each message POSTs one signed sync
with `worker.cce.client.CceClient`, guarded by ``WindowRateLimiter(limit=8, window=1)`` on a
Redis backend. When the window is full, or CCE responds with 429, the actor raises and
dramatiq's `Retries` middleware sends the message again after an exponential backoff. There is no claim,
pool lock, baseline read or reconciliation, so each message does one POST attempt and nothing
else.

Run it with dramatiq's command line (the benchmark does this)::

    dramatiq bench.window_actors --processes 2 --threads 8 --queues bench-window

Configuration comes from the environment, read when the module is imported because dramatiq
needs the broker before it declares the actor: ``REDIS_URL``, ``CCE_SYNC_ENDPOINT`` and
``HUAWEICLOUD_SDK_AK`` / ``HUAWEICLOUD_SDK_SK`` as for `cce-sync worker`, plus:

* ``BENCH_WINDOW_LIMIT``: operations per window (default 8);
* ``BENCH_WINDOW_MIN_BACKOFF_MS`` / ``BENCH_WINDOW_MAX_BACKOFF_MS``: bounds of the retry backoff
  in milliseconds (defaults 100 and 1000).
"""

from __future__ import annotations

import functools
import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from bench import WINDOW_ACTOR_NAME, WINDOW_BROKER_NAMESPACE, WINDOW_QUEUE_NAME
from worker.broker import redis_client
from worker.cce.client import CceClient
from worker.cce.models import UpgradeNodePoolSpec
from worker.settings import get_settings

#: Prefix of the WindowRateLimiter's keys; the project ID follows it.
LIMITER_KEY_PREFIX = "bench-window:ratelimit:"

DEFAULT_LIMIT = 8
DEFAULT_MIN_BACKOFF_MS = 100
DEFAULT_MAX_BACKOFF_MS = 1000
#: Retries per message before dramatiq gives up on it; high enough that no message is lost
#: while 16 threads compete for 8 slots a second.
MAX_RETRIES = 200


def _int_from_environment(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    return int(text) if text else default


# dramatiq's broker and the limiter backend work on bytes; both clients get the socket timeouts
# of cce-sync's settings.
_SETTINGS = get_settings()
BROKER = RedisBroker(
    client=redis_client(_SETTINGS, decode_responses=False), namespace=WINDOW_BROKER_NAMESPACE
)
dramatiq.set_broker(BROKER)
BACKEND = RedisBackend(client=redis_client(_SETTINGS, decode_responses=False))
LIMIT = _int_from_environment("BENCH_WINDOW_LIMIT", DEFAULT_LIMIT)


@functools.cache
def _limiter(project_id: str) -> WindowRateLimiter:
    return WindowRateLimiter(BACKEND, LIMITER_KEY_PREFIX + project_id, limit=LIMIT, window=1)


@functools.cache
def _client() -> CceClient:
    return CceClient.from_settings(get_settings())


@dramatiq.actor(
    actor_name=WINDOW_ACTOR_NAME,
    queue_name=WINDOW_QUEUE_NAME,
    max_retries=MAX_RETRIES,
    min_backoff=_int_from_environment("BENCH_WINDOW_MIN_BACKOFF_MS", DEFAULT_MIN_BACKOFF_MS),
    max_backoff=_int_from_environment("BENCH_WINDOW_MAX_BACKOFF_MS", DEFAULT_MAX_BACKOFF_MS),
)
def sync_pool(region: str, project_id: str, cluster_id: str, nodepool_id: str) -> None:
    """POST one node pool sync once the window has room.

    Raises:
        dramatiq.RateLimitExceeded: the window is full; dramatiq retries after a backoff.
        worker.cce.errors.CceError: the POST failed (a 429 included); dramatiq retries it too.
    """
    spec = UpgradeNodePoolSpec.model_validate({"maxUnavailable": 1, "nodePoolID": nodepool_id})
    with _limiter(project_id).acquire():
        _client().sync_node_pool(
            region=region,
            project_id=project_id,
            cluster_id=cluster_id,
            nodepool_id=nodepool_id,
            spec=spec,
        )
