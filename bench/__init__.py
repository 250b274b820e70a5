"""Benchmarks of cce-sync, run with `make bench` (``python -m bench.pipeline``).

Names shared between the benchmark driver and the baseline actor module live here, so that the
driver can enqueue baseline messages without importing that module, whose import builds a broker.
"""

from __future__ import annotations

#: Queue of the WindowRateLimiter baseline actor (`bench.window_actors.sync_pool`).
WINDOW_QUEUE_NAME = "bench-window"
#: Namespace of the baseline's dramatiq keys in Redis, apart from cce-sync's.
WINDOW_BROKER_NAMESPACE = "bench-window-dramatiq"
#: Actor name of the baseline, as dramatiq messages carry it.
WINDOW_ACTOR_NAME = "sync_pool"
