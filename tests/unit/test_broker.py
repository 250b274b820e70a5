"""The worker-side middleware of the broker, on dramatiq's in-memory stub broker."""

from __future__ import annotations

import time

import dramatiq
from dramatiq.brokers.stub import StubBroker

from worker.broker import ConsumerWatchdog


def test_watchdog_replaces_dead_consumer() -> None:
    broker = StubBroker(middleware=[ConsumerWatchdog(interval_seconds=0.05)])
    broker.emit_after("process_boot")

    def watched() -> None:
        return None

    dramatiq.actor(broker=broker, queue_name="watched")(watched)
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        crashed = worker.consumers["watched"]
        crashed.stop()
        crashed.join(timeout=5)
        # A thread that ended by an exception keeps running=True; stop() cleared it.
        crashed.running = True

        deadline = time.monotonic() + 5
        while worker.consumers["watched"] is crashed and time.monotonic() < deadline:
            time.sleep(0.02)
        replacement = worker.consumers["watched"]
        replacement_alive = replacement.is_alive()
    finally:
        worker.stop()

    assert replacement is not crashed
    assert replacement_alive is True
    assert crashed.is_alive() is False


def test_watchdog_ignores_stopped_consumer() -> None:
    broker = StubBroker(middleware=[ConsumerWatchdog(interval_seconds=0.05)])
    broker.emit_after("process_boot")

    def idle() -> None:
        return None

    dramatiq.actor(broker=broker, queue_name="idle")(idle)
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        stopped = worker.consumers["idle"]
        stopped.stop()
        stopped.join(timeout=5)
        time.sleep(0.3)
        current = worker.consumers["idle"]
    finally:
        worker.stop()

    assert current is stopped
