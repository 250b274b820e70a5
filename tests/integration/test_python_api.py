"""The Python API that other programs import: `producers.submit` and `producers.EventReader`."""

from __future__ import annotations

import pytest
import redis as redis_py
from document_fixtures import base_document

import producers
from worker.campaigns.document import DocumentError
from worker.settings import Settings


def test_submit_and_read_events(redis: redis_py.Redis, redis_url: str) -> None:
    enqueued: list[str] = []
    settings = Settings(REDIS_URL=redis_url)

    result = producers.submit(
        base_document(), client=redis, settings=settings, enqueue=enqueued.append
    )
    again = producers.submit(
        base_document(), client=redis, settings=settings, enqueue=enqueued.append
    )
    events = producers.EventReader(redis, start_id="0").read()

    assert result.created is True
    assert again.created is False
    assert again.campaign_id == result.campaign_id
    assert enqueued == [result.campaign_id]
    assert [event.type for event in events] == ["campaign.accepted"]
    assert events[0].campaign_id == result.campaign_id


def test_submit_rejects_invalid_document(redis: redis_py.Redis, redis_url: str) -> None:
    document = base_document()
    document["spec"]["sync"] = {"maxUnavailable": 0}

    with pytest.raises(DocumentError, match=r"spec\.sync\.maxUnavailable"):
        producers.submit(
            document, client=redis, settings=Settings(REDIS_URL=redis_url), enqueue=print
        )
    assert redis.dbsize() == 0
