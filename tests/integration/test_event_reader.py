"""`EventReader` against a private redis-server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from worker.events import (
    CAMPAIGN_ACCEPTED,
    CAMPAIGN_FINISHED,
    EVENTS_STREAM,
    TARGET_SYNCED,
    EventReader,
    Events,
)


@pytest.fixture(params=[True, False], ids=["str", "bytes"])
def client(redis_url: str, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url, decode_responses=request.param, socket_timeout=10)
    yield connection
    connection.close()


def publish_campaign(events: Events, campaign_id: str) -> None:
    events.publish(CAMPAIGN_ACCEPTED, campaign_id, {"targets": 1})
    events.publish(TARGET_SYNCED, campaign_id, {"target": "r/p/c/np"})
    events.publish(CAMPAIGN_FINISHED, campaign_id, {"state": "finished"})


def test_read_from_start_in_order(client: redis.Redis) -> None:
    publish_campaign(Events(client), "a")

    events = EventReader(client).read()

    assert [event.type for event in events] == [CAMPAIGN_ACCEPTED, TARGET_SYNCED, CAMPAIGN_FINISHED]
    assert events[0].campaign_id == "a"
    assert events[0].data == {"targets": 1}


def test_read_resumes_after_last_id(client: redis.Redis) -> None:
    events = Events(client)
    reader = EventReader(client)
    events.publish(CAMPAIGN_ACCEPTED, "a")
    first = reader.read()

    events.publish(CAMPAIGN_FINISHED, "a")
    second = reader.read()

    assert [event.type for event in first] == [CAMPAIGN_ACCEPTED]
    assert [event.type for event in second] == [CAMPAIGN_FINISHED]
    assert reader.last_id == second[0].id
    assert reader.read() == []


def test_filter_by_campaign_and_type(client: redis.Redis) -> None:
    events = Events(client)
    publish_campaign(events, "a")
    publish_campaign(events, "b")

    by_campaign = EventReader(client, campaign_id="b").read()
    by_type = EventReader(client, event_types=[CAMPAIGN_FINISHED]).read()

    assert {event.campaign_id for event in by_campaign} == {"b"}
    assert len(by_campaign) == 3
    assert [event.campaign_id for event in by_type] == ["a", "b"]


def test_dollar_start_skips_existing(client: redis.Redis) -> None:
    events = Events(client)
    publish_campaign(events, "old")
    reader = EventReader(client, start_id="$")

    events.publish(CAMPAIGN_ACCEPTED, "new")

    assert [event.campaign_id for event in reader.read()] == ["new"]


def test_dollar_start_on_missing_stream(client: redis.Redis) -> None:
    reader = EventReader(client, start_id="$")

    Events(client).publish(CAMPAIGN_ACCEPTED, "first")

    assert [event.campaign_id for event in reader.read()] == ["first"]


def test_batches_cover_long_stream(client: redis.Redis) -> None:
    events = Events(client)
    for index in range(25):
        events.publish(CAMPAIGN_ACCEPTED, f"c{index}")
    reader = EventReader(client, batch_size=10)

    batches = [reader.read() for _ in range(4)]

    assert [len(batch) for batch in batches] == [10, 10, 5, 0]


def test_blocking_read_returns_new_event(client: redis.Redis) -> None:
    reader = EventReader(client, start_id="$")
    timer = threading.Timer(0.2, Events(client).publish, args=(CAMPAIGN_ACCEPTED, "late"))
    timer.start()

    started = time.monotonic()
    events = reader.read(block_seconds=5)
    timer.join()

    assert [event.campaign_id for event in events] == ["late"]
    assert time.monotonic() - started < 4


def test_follow_until_finished(client: redis.Redis) -> None:
    events = Events(client)
    events.publish(CAMPAIGN_ACCEPTED, "a")
    reader = EventReader(client, campaign_id="a")
    timer = threading.Timer(0.2, publish_campaign, args=(events, "a"))
    timer.start()

    followed = list(
        reader.follow(
            block_seconds=0.5,
            timeout_seconds=10,
            until=lambda event: event.type == CAMPAIGN_FINISHED,
        )
    )
    timer.join()

    assert [event.type for event in followed] == [
        CAMPAIGN_ACCEPTED,
        CAMPAIGN_ACCEPTED,
        TARGET_SYNCED,
        CAMPAIGN_FINISHED,
    ]


def test_follow_stops_at_timeout(client: redis.Redis) -> None:
    started = time.monotonic()

    followed = list(EventReader(client).follow(block_seconds=0.1, timeout_seconds=0.3))

    assert followed == []
    assert time.monotonic() - started < 2


def test_follow_stops_on_event(client: redis.Redis) -> None:
    stop = threading.Event()
    stop.set()

    assert list(EventReader(client).follow(stop=stop)) == []


def test_entry_without_type_skipped(client: redis.Redis) -> None:
    client.xadd(EVENTS_STREAM, {"campaign_id": "x", "data": "{}"})
    client.xadd(EVENTS_STREAM, {"type": CAMPAIGN_ACCEPTED, "campaign_id": "y", "data": "not json"})

    events = EventReader(client).read()

    assert [(event.campaign_id, event.data) for event in events] == [("y", {})]


def test_follow_resumes_after_last_yielded(client: redis.Redis) -> None:
    events = Events(client)
    publish_campaign(events, "a")
    reader = EventReader(client)

    for event in reader.follow(block_seconds=0.1, timeout_seconds=5):
        if event.type == TARGET_SYNCED:
            break

    assert [event.type for event in reader.read()] == [CAMPAIGN_FINISHED]
