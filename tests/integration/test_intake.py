"""The intake consumer against a private redis-server.

Most tests use `StoreSubmit`, a small submit function that checks a few document rules and stores
through the real `CampaignStore`, so the consumer's own logic is tested apart from the document
model. Tests at the end use the real `producers.submit.submit` and the `cce-sync intake` entry point.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py

from producers.intake import (
    CLAIM_MAX_PAGES,
    DEFAULT_GROUP,
    INTAKE_STREAM,
    REDACTED,
    REJECTED_COPY_MAX_BYTES,
    REJECTED_STREAM,
    Entry,
    IntakeConsumer,
    redact_passwords,
)
from worker.campaigns.document import DocumentError, FieldError
from worker.campaigns.store import CampaignStore, CreateResult
from worker.events import CAMPAIGN_ACCEPTED, CAMPAIGN_REJECTED, EVENTS_STREAM
from worker.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Upper bound, in seconds, on every wait in these tests.
WAIT_SECONDS = 20.0


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def client(redis: redis_py.Redis) -> redis_py.Redis:
    """A client with str responses on the emptied private server (the `redis` fixture)."""
    return redis


@pytest.fixture
def raw_client(redis_url: str) -> Iterator[redis_py.Redis]:
    """A client with bytes responses on the same server."""
    connection = redis_py.Redis.from_url(redis_url, socket_timeout=10)
    yield connection
    connection.close()


# -- a small submit function ------------------------------------------------------------------


class StoreSubmit:
    """Check a few document rules and store the campaign with `CampaignStore.create`."""

    def __init__(self, client: redis_py.Redis) -> None:
        self.store = CampaignStore(client)
        self.calls = 0

    def __call__(self, text: str) -> CreateResult:
        self.calls += 1
        document = json.loads(text)
        errors = []
        if document.get("kind") != "Campaign":
            errors.append(FieldError("kind", "must be 'Campaign'"))
        targets = (document.get("spec") or {}).get("targets")
        if not isinstance(targets, list) or not targets:
            errors.append(FieldError("spec.targets", "must be a non-empty list"))
        if errors:
            raise DocumentError(errors)

        campaign_id = document["metadata"]["id"]
        content = json.dumps(document["spec"], sort_keys=True)
        return self.store.create(
            campaign_id,
            name=document["metadata"].get("name", campaign_id),
            digest=hashlib.sha256(content.encode()).hexdigest(),
            document=document,
            targets=[
                {
                    "region": "ap-southeast-1",
                    "projectId": "p1",
                    "clusterId": target["clusterId"],
                    "nodePoolId": pool,
                    "nodeIDs": None,
                    "sync": {"maxUnavailable": 1},
                }
                for target in targets
                for pool in target["nodePools"]
            ],
            rules_pending=False,
        )


def campaign_document(campaign_id: str | None = "chg-1", *, pools: int = 2) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "weekly patch"}
    if campaign_id is not None:
        metadata["id"] = campaign_id
    return {
        "apiVersion": "cce-sync/v1",
        "kind": "Campaign",
        "metadata": metadata,
        "spec": {
            "region": "ap-southeast-1",
            "projectId": "p1",
            "sync": {"maxUnavailable": 1},
            "targets": [{"clusterId": "c1", "nodePools": [f"np{i}" for i in range(pools)]}],
        },
    }


def add_entry(client: redis_py.Redis, document: dict[str, Any] | str) -> str:
    text = document if isinstance(document, str) else json.dumps(document)
    return str(client.xadd(INTAKE_STREAM, {"campaign": text}))


def make_consumer(
    client: redis_py.Redis, submit_fn: Any, name: str = "c1", **options: Any
) -> IntakeConsumer:
    options.setdefault("block_ms", 50)
    consumer = IntakeConsumer(client, submit_fn=submit_fn, consumer_name=name, **options)
    consumer.ensure_group()
    return consumer


def pending_count(client: redis_py.Redis) -> int:
    return int(client.xpending(INTAKE_STREAM, DEFAULT_GROUP)["pending"])


def events_of(client: redis_py.Redis, event_type: str) -> list[dict[str, str]]:
    return [fields for _id, fields in client.xrange(EVENTS_STREAM) if fields["type"] == event_type]


def rejected_entries(client: redis_py.Redis) -> list[dict[str, str]]:
    return [fields for _id, fields in client.xrange(REJECTED_STREAM)]


# -- storing ----------------------------------------------------------------------------------


def test_valid_entry_stored_and_acknowledged(client: redis_py.Redis) -> None:
    submit = StoreSubmit(client)
    consumer = make_consumer(client, submit)
    add_entry(client, campaign_document("chg-1"))

    assert consumer.run_once() == 1

    campaign = CampaignStore(client).get("chg-1")
    assert campaign is not None
    assert campaign.target_total == 2
    assert pending_count(client) == 0
    assert [event["campaign_id"] for event in events_of(client, CAMPAIGN_ACCEPTED)] == ["chg-1"]
    assert rejected_entries(client) == []


def test_entries_added_before_group_are_read(client: redis_py.Redis) -> None:
    add_entry(client, campaign_document("chg-early"))
    consumer = make_consumer(client, StoreSubmit(client))

    consumer.run_once()

    assert CampaignStore(client).get("chg-early") is not None


def test_duplicate_metadata_id_stored_once(client: redis_py.Redis) -> None:
    submit = StoreSubmit(client)
    consumer = make_consumer(client, submit)
    first = add_entry(client, campaign_document("chg-dup"))
    second = add_entry(client, campaign_document("chg-dup"))

    outcomes = [consumer.handle(entry) for entry in _read_new(consumer)]

    assert outcomes == ["stored", "duplicate"]
    assert submit.calls == 2
    assert len(events_of(client, CAMPAIGN_ACCEPTED)) == 1
    assert pending_count(client) == 0
    assert first != second


def test_redelivered_entry_without_id_stored_once(client: redis_py.Redis) -> None:
    submit = StoreSubmit(client)
    consumer = make_consumer(client, submit)
    entry_id = add_entry(client, campaign_document(None))
    [entry] = _read_new(consumer)

    # A crash between storing and acknowledging delivers the same entry again.
    assert consumer.handle(entry) == "stored"
    assert consumer.handle(entry) == "duplicate"

    assert CampaignStore(client).get(f"intake-{entry_id}") is not None
    assert len(events_of(client, CAMPAIGN_ACCEPTED)) == 1


def test_separate_entries_without_id_are_two_campaigns(client: redis_py.Redis) -> None:
    consumer = make_consumer(client, StoreSubmit(client))
    add_entry(client, campaign_document(None))
    add_entry(client, campaign_document(None))

    consumer.run_once()

    assert len(events_of(client, CAMPAIGN_ACCEPTED)) == 2


def _read_new(consumer: IntakeConsumer) -> list[Entry]:
    response = consumer.client.xreadgroup(
        consumer.group, consumer.consumer_name, {consumer.stream: ">"}, count=10
    )
    return [
        Entry(entry_id, fields) for _stream, messages in response for entry_id, fields in messages
    ]


# -- rejecting --------------------------------------------------------------------------------


def test_malformed_json_rejected(client: redis_py.Redis) -> None:
    submit = StoreSubmit(client)
    consumer = make_consumer(client, submit)
    entry_id = add_entry(client, '{"kind": "Campaign", ')

    consumer.run_once()

    assert submit.calls == 0
    assert pending_count(client) == 0
    [copy] = rejected_entries(client)
    assert copy["entry_id"] == entry_id
    assert copy["reason"] == "invalid"
    assert "not valid JSON" in copy["error"]
    assert copy["campaign"] == '{"kind": "Campaign", '
    [event] = events_of(client, CAMPAIGN_REJECTED)
    assert event["campaign_id"] == ""
    assert json.loads(event["data"])["entry_id"] == entry_id


def test_json_that_is_not_an_object_rejected(client: redis_py.Redis) -> None:
    consumer = make_consumer(client, StoreSubmit(client))
    add_entry(client, "[1, 2, 3]")

    consumer.run_once()

    [copy] = rejected_entries(client)
    assert "must be a JSON object" in copy["error"]


def test_invalid_campaign_rejected_with_field_errors(client: redis_py.Redis) -> None:
    consumer = make_consumer(client, StoreSubmit(client))
    document = campaign_document("chg-bad")
    document["spec"]["targets"] = []
    entry_id = add_entry(client, document)

    consumer.run_once()

    assert CampaignStore(client).get("chg-bad") is None
    assert pending_count(client) == 0
    [copy] = rejected_entries(client)
    assert copy["campaign_id"] == "chg-bad"
    assert "spec.targets: must be a non-empty list" in copy["error"]
    [event] = events_of(client, CAMPAIGN_REJECTED)
    assert event["campaign_id"] == "chg-bad"
    data = json.loads(event["data"])
    assert data["entry_id"] == entry_id
    assert data["reason"] == "invalid"
    assert data["errors"] == [{"path": "spec.targets", "message": "must be a non-empty list"}]


def test_reused_id_with_other_content_rejected(client: redis_py.Redis) -> None:
    consumer = make_consumer(client, StoreSubmit(client))
    add_entry(client, campaign_document("chg-x", pools=1))
    add_entry(client, campaign_document("chg-x", pools=3))

    consumer.run_once()

    assert CampaignStore(client).counts("chg-x")["pending"] == 1
    [copy] = rejected_entries(client)
    assert copy["reason"] == "conflict"
    assert "already exists with different content" in copy["error"]
    [event] = events_of(client, CAMPAIGN_REJECTED)
    assert event["campaign_id"] == "chg-x"


def test_missing_campaign_field_rejected(client: redis_py.Redis) -> None:
    consumer = make_consumer(client, StoreSubmit(client))
    client.xadd(INTAKE_STREAM, {"document": "{}"})

    consumer.run_once()

    [copy] = rejected_entries(client)
    assert "no 'campaign' field" in copy["error"]
    assert copy["document"] == "{}"


def test_five_megabyte_entry_rejected(client: redis_py.Redis) -> None:
    submit = StoreSubmit(client)
    consumer = make_consumer(client, submit)
    document = campaign_document("chg-huge")
    document["metadata"]["labels"] = {"padding": "x" * (5 * 1024 * 1024)}
    text = json.dumps(document)
    add_entry(client, text)

    consumer.run_once()

    assert submit.calls == 0
    assert pending_count(client) == 0
    [copy] = rejected_entries(client)
    assert copy["reason"] == "too_large"
    assert f"is {len(text)} bytes, larger than the limit of 1000000 bytes" in copy["error"]
    assert len(copy["campaign"].encode()) <= REJECTED_COPY_MAX_BYTES
    assert copy["campaign_truncated_from_bytes"] == str(len(text))
    [event] = events_of(client, CAMPAIGN_REJECTED)
    assert json.loads(event["data"])["reason"] == "too_large"


def test_entry_that_is_not_utf8_rejected(
    client: redis_py.Redis, raw_client: redis_py.Redis
) -> None:
    consumer = make_consumer(raw_client, StoreSubmit(client))
    raw_client.xadd(INTAKE_STREAM, {"campaign": b'{"kind": "\xff\xfe"}'})
    add_entry(client, campaign_document("chg-after"))

    assert consumer.run_once() == 2

    [copy] = rejected_entries(client)
    assert "not valid UTF-8 (byte 10)" in copy["error"]
    assert CampaignStore(client).get("chg-after") is not None


def test_rejected_copy_redacts_passwords(client: redis_py.Redis) -> None:
    consumer = make_consumer(client, StoreSubmit(client))
    document = campaign_document("chg-secret")
    document["kind"] = "Other"
    document["spec"]["sync"]["nodeTemplate"] = {
        "login": {"userPassword": {"username": "root", "password": "S3cret!pass"}}
    }
    add_entry(client, document)

    consumer.run_once()

    [copy] = rejected_entries(client)
    assert "S3cret" not in copy["campaign"]
    stored = json.loads(copy["campaign"])
    assert stored["spec"]["sync"]["nodeTemplate"]["login"]["userPassword"]["password"] == REDACTED
    assert "S3cret" not in client.xrange(EVENTS_STREAM)[-1][1]["data"]


def test_redact_passwords_in_text_that_does_not_parse() -> None:
    text = '{"userPassword": {"password": "abc\\"def", "username": "root"}, "x": '

    redacted = redact_passwords(text)

    assert "abc" not in redacted
    assert '"username": "root"' in redacted


def test_rejected_stream_is_trimmed(client: redis_py.Redis) -> None:
    consumer = make_consumer(client, StoreSubmit(client), rejected_max_length=10, batch_size=50)
    for _ in range(300):
        add_entry(client, "not json")

    for _ in range(10):
        consumer.run_once()

    assert pending_count(client) == 0
    assert client.xlen(REJECTED_STREAM) < 300


# -- failures and redelivery ------------------------------------------------------------------


def test_unexpected_error_leaves_entry_pending(client: redis_py.Redis) -> None:
    def broken_submit(_text: str) -> CreateResult:
        raise RuntimeError("store unavailable")

    consumer = make_consumer(client, broken_submit)
    add_entry(client, campaign_document("chg-later"))

    consumer.run_once()

    assert pending_count(client) == 1
    assert rejected_entries(client) == []


def test_failed_entry_retried_after_claim_idle(client: redis_py.Redis) -> None:
    submit = StoreSubmit(client)
    failures = iter([RuntimeError("first attempt fails")])

    def flaky_submit(text: str) -> CreateResult:
        for error in failures:
            raise error
        return submit(text)

    consumer = make_consumer(client, flaky_submit, claim_idle_ms=100)
    add_entry(client, campaign_document("chg-retry"))
    consumer.run_once()
    assert pending_count(client) == 1

    _run_until(consumer, lambda: pending_count(client) == 0)

    assert CampaignStore(client).get("chg-retry") is not None


def test_entry_rejected_after_max_deliveries(client: redis_py.Redis) -> None:
    def broken_submit(_text: str) -> CreateResult:
        raise RuntimeError("always fails")

    consumer = make_consumer(client, broken_submit, claim_idle_ms=50, max_deliveries=3)
    add_entry(client, campaign_document("chg-poison"))
    consumer.run_once()
    assert pending_count(client) == 1

    _run_until(consumer, lambda: pending_count(client) == 0)

    [copy] = rejected_entries(client)
    assert copy["reason"] == "undeliverable"
    assert "delivered 4 times without being stored (limit 3)" in copy["error"]
    [event] = events_of(client, CAMPAIGN_REJECTED)
    assert event["campaign_id"] == "chg-poison"


def test_deleted_pending_entry_dropped(client: redis_py.Redis) -> None:
    consumer = make_consumer(client, StoreSubmit(client), claim_idle_ms=50)
    entry_id = add_entry(client, campaign_document("chg-gone"))
    _read_new(make_consumer(client, StoreSubmit(client), name="crashed"))
    client.xdel(INTAKE_STREAM, entry_id)
    time.sleep(0.1)

    consumer.run_once()

    assert pending_count(client) == 0
    assert CampaignStore(client).get("chg-gone") is None


def test_claim_pass_is_bounded(client: redis_py.Redis) -> None:
    idle = make_consumer(client, StoreSubmit(client), name="crashed", batch_size=100)
    for index in range(60):
        add_entry(client, campaign_document(f"chg-{index}", pools=1))
    _read_new_all(idle)
    time.sleep(0.1)
    consumer = make_consumer(client, StoreSubmit(client), claim_idle_ms=50, batch_size=2)

    handled = consumer.claim_idle()

    assert handled == 2 * CLAIM_MAX_PAGES
    _run_until(consumer, lambda: pending_count(client) == 0)


def test_own_pending_entries_handled_after_restart(client: redis_py.Redis) -> None:
    before = make_consumer(client, StoreSubmit(client), name="pod-0")
    add_entry(client, campaign_document("chg-restart"))
    _read_new(before)

    after = make_consumer(client, StoreSubmit(client), name="pod-0")
    assert after.process_own_pending() == 1

    assert pending_count(client) == 0
    assert CampaignStore(client).get("chg-restart") is not None


def _read_new_all(consumer: IntakeConsumer) -> None:
    consumer.client.xreadgroup(
        consumer.group, consumer.consumer_name, {consumer.stream: ">"}, count=1000
    )


def _run_until(
    consumer: IntakeConsumer, condition: Any, timeout_seconds: float = WAIT_SECONDS
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        consumer.run_once()
        time.sleep(0.02)


# -- processes --------------------------------------------------------------------------------


def child_consumer(url: str, name: str, store_first: bool, real_submit: bool) -> None:
    """Run a consumer whose submit call hangs, so the process can be killed before the ack."""
    client = redis_py.Redis.from_url(url, decode_responses=True)
    store = real_submit_fn(client, url, []) if real_submit else StoreSubmit(client)

    def submit_then_hang(text: str) -> Any:
        if store_first:
            store(text)
        client.set("test:child-in-submit", "1")
        time.sleep(300)
        raise AssertionError("the test kills this process before the sleep ends")

    consumer = IntakeConsumer(client, submit_fn=submit_then_hang, consumer_name=name, block_ms=100)
    consumer.run(threading.Event())


def _start_child(
    url: str, name: str, *, store_first: bool, real_submit: bool
) -> subprocess.Popen[bytes]:
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "import test_intake; "
        f"test_intake.child_consumer({url!r}, {name!r}, {store_first!r}, {real_submit!r})"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env={**os.environ})


def _wait_for_key(client: redis_py.Redis, key: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not client.exists(key):
        assert process.poll() is None, f"child exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{key} not set in time"
        time.sleep(0.05)


@pytest.mark.parametrize("real_submit", [False, True], ids=["store-submit", "real-submit"])
@pytest.mark.parametrize("store_first", [False, True], ids=["before-store", "after-store"])
def test_killed_consumer_entry_claimed(
    client: redis_py.Redis, redis_url: str, store_first: bool, real_submit: bool
) -> None:
    entry_id = add_entry(client, campaign_document("chg-killed"))
    child = _start_child(redis_url, "doomed", store_first=store_first, real_submit=real_submit)
    try:
        _wait_for_key(client, "test:child-in-submit", child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)

    [pending] = client.xpending_range(INTAKE_STREAM, DEFAULT_GROUP, "-", "+", 10)
    assert pending["message_id"] == entry_id
    assert pending["consumer"] == "doomed"

    submit_fn = real_submit_fn(client, redis_url, []) if real_submit else StoreSubmit(client)
    survivor = make_consumer(client, submit_fn, name="survivor", claim_idle_ms=200)
    _run_until(survivor, lambda: pending_count(client) == 0)

    assert CampaignStore(client).get("chg-killed") is not None
    assert len(events_of(client, CAMPAIGN_ACCEPTED)) == 1
    assert rejected_entries(client) == []


def test_run_stops_and_leaves_group(client: redis_py.Redis) -> None:
    consumer = make_consumer(client, StoreSubmit(client), name="leaving", block_ms=100)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    add_entry(client, campaign_document("chg-threaded"))
    deadline = time.monotonic() + WAIT_SECONDS
    while CampaignStore(client).get("chg-threaded") is None and time.monotonic() < deadline:
        time.sleep(0.02)

    stop.set()
    thread.join(timeout=5)

    assert not thread.is_alive()
    assert CampaignStore(client).get("chg-threaded") is not None
    consumers = client.xinfo_consumers(INTAKE_STREAM, DEFAULT_GROUP)
    assert "leaving" not in [info["name"] for info in consumers]


def test_run_retries_when_redis_is_down() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe socket is closed.
    down = redis_py.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    consumer = IntakeConsumer(down, submit_fn=StoreSubmit(down), consumer_name="c1", block_ms=50)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))

    thread.start()
    time.sleep(0.3)
    stop.set()
    # redis-py retries a refused connection for a few seconds before raising.
    thread.join(timeout=20)

    assert not thread.is_alive()


# -- the real submit function and command -----------------------------------------------------


def real_submit_fn(client: redis_py.Redis, url: str, enqueued: list[str]) -> Any:
    """`producers.submit.submit` on the private server, recording expansions in `enqueued`."""
    from producers.submit import submit

    settings = Settings(REDIS_URL=url)
    return functools.partial(submit, client=client, settings=settings, enqueue=enqueued.append)


def test_real_submit_stores_campaign(client: redis_py.Redis, redis_url: str) -> None:
    enqueued: list[str] = []
    consumer = make_consumer(client, real_submit_fn(client, redis_url, enqueued))
    add_entry(client, campaign_document("chg-real"))

    consumer.run_once()

    campaign = CampaignStore(client).get("chg-real")
    assert campaign is not None
    assert campaign.target_total == 2
    assert enqueued == ["chg-real"]
    assert pending_count(client) == 0


def test_real_submit_duplicate_stored_once(client: redis_py.Redis, redis_url: str) -> None:
    enqueued: list[str] = []
    consumer = make_consumer(client, real_submit_fn(client, redis_url, enqueued))
    add_entry(client, campaign_document("chg-twice"))
    add_entry(client, campaign_document("chg-twice"))

    consumer.run_once()

    assert enqueued == ["chg-twice"]
    assert len(events_of(client, CAMPAIGN_ACCEPTED)) == 1
    assert pending_count(client) == 0
    assert rejected_entries(client) == []


def test_real_submit_generates_id_from_entry(client: redis_py.Redis, redis_url: str) -> None:
    enqueued: list[str] = []
    consumer = make_consumer(client, real_submit_fn(client, redis_url, enqueued))
    entry_id = add_entry(client, campaign_document(None))

    consumer.run_once()

    assert enqueued == [f"intake-{entry_id}"]


def test_real_submit_invalid_document_rejected(client: redis_py.Redis, redis_url: str) -> None:
    consumer = make_consumer(client, real_submit_fn(client, redis_url, []))
    document = campaign_document("chg-invalid")
    document["spec"]["sync"]["maxUnavailable"] = 0
    add_entry(client, document)

    consumer.run_once()

    assert CampaignStore(client).get("chg-invalid") is None
    [copy] = rejected_entries(client)
    assert "spec.sync.maxUnavailable" in copy["error"]
    [event] = events_of(client, CAMPAIGN_REJECTED)
    assert event["campaign_id"] == "chg-invalid"
    paths = [error["path"] for error in json.loads(event["data"])["errors"]]
    assert paths == ["spec.sync.maxUnavailable"]


def test_real_submit_inline_password_never_copied(client: redis_py.Redis, redis_url: str) -> None:
    consumer = make_consumer(client, real_submit_fn(client, redis_url, []))
    document = campaign_document("chg-password")
    document["spec"]["sync"]["nodeTemplate"] = {
        "login": {"userPassword": {"username": "root", "password": "Xy7!secret-pass"}}
    }
    add_entry(client, document)

    consumer.run_once()

    # Without CCE_SYNC_SECRET_KEY an inline password is rejected, and the copy hides it.
    [copy] = rejected_entries(client)
    assert "Xy7!secret" not in json.dumps(copy)
    assert "Xy7!secret" not in json.dumps(client.xrange(EVENTS_STREAM))


def _start_intake_command(redis_url: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "REDIS_URL": redis_url,
        "HUAWEICLOUD_SDK_AK": "TESTACCESSKEY0000000",
        "HUAWEICLOUD_SDK_SK": "test-secret-key-not-valid-anywhere",
    }
    code = (
        "from producers.intake import main; "
        "raise SystemExit(main(['--consumer-name', 'command', '--block-ms', '200']))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_intake_command_stops_on_signal(
    client: redis_py.Redis, redis_url: str, stop_signal: signal.Signals
) -> None:
    process = _start_intake_command(redis_url)
    try:
        add_entry(client, campaign_document("chg-command"))
        deadline = time.monotonic() + WAIT_SECONDS
        while CampaignStore(client).get("chg-command") is None or pending_count(client):
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < deadline, "entry not stored and acknowledged in time"
            time.sleep(0.05)

        process.send_signal(stop_signal)
        output, _ = process.communicate(timeout=WAIT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    assert process.returncode == 0, output.decode()
    assert "stored as campaign chg-command" in output.decode()
    assert pending_count(client) == 0
    consumers = client.xinfo_consumers(INTAKE_STREAM, DEFAULT_GROUP)
    assert "command" not in [info["name"] for info in consumers]
